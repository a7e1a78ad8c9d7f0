// W3C trace context across AMQP (swift-distributed-tracing): a request's `traceparent` is
// extracted into a ServiceContext, and the events and notifications the request causes carry a
// child span of it, so a trace follows one call from the request to every device.
public import Instrumentation
import ServiceContextModule
public import W3CTraceContext

/// An `Instrument` that reads and writes the W3C `traceparent` and `tracestate` headers.
public struct W3CTracePropagation: Instrument {
    public init() {}

    public func extract<Carrier, Extract: Extractor>(
        _ carrier: Carrier, into context: inout ServiceContext, using extractor: Extract
    ) where Extract.Carrier == Carrier {
        guard let parent = extractor.extract(key: "traceparent", from: carrier),
            let trace = try? TraceContext(
                traceParentHeaderValue: parent, traceStateHeaderValue: extractor.extract(key: "tracestate", from: carrier))
        else { return }
        context.w3cTraceContext = trace
    }

    public func inject<Carrier, Inject: Injector>(
        _ context: ServiceContext, into carrier: inout Carrier, using injector: Inject
    ) where Inject.Carrier == Carrier {
        guard let trace = context.w3cTraceContext else { return }
        injector.inject(trace.traceParentHeaderValue, forKey: "traceparent", into: &carrier)
        if let state = trace.traceStateHeaderValue { injector.inject(state, forKey: "tracestate", into: &carrier) }
    }
}

private enum W3CTraceContextKey: ServiceContextKey {
    typealias Value = TraceContext
}

extension ServiceContext {
    /// The W3C trace context of the current span, if any.
    public var w3cTraceContext: TraceContext? {
        get { self[W3CTraceContextKey.self] }
        set { self[W3CTraceContextKey.self] = newValue }
    }
}

struct DictionaryExtractor: Extractor {
    func extract(key: String, from carrier: [String: String]) -> String? { carrier[key] }
}

struct DictionaryInjector: Injector {
    func inject(_ value: String, forKey key: String, into carrier: inout [String: String]) { carrier[key] = value }
}

public enum RingingTracing {
    /// Bootstraps swift-distributed-tracing with W3C propagation, once per process; the
    /// executables touch it first thing.
    public static let bootstrap: Void = { InstrumentationSystem.bootstrap(W3CTracePropagation()) }()

    /// The `traceparent` for what a request causes: the request's trace, a new span for this
    /// service's handling of it (same flags and state). Nil when the request had none, or it
    /// does not parse.
    public static func childTraceparent(of traceparent: String?) -> String? {
        guard let traceparent else { return nil }
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(["traceparent": traceparent], into: &context, using: DictionaryExtractor())
        guard let parent = context.w3cTraceContext else { return nil }
        context.w3cTraceContext = TraceContext(
            traceID: parent.traceID, spanID: .random(), flags: parent.flags, state: parent.state)
        var carrier: [String: String] = [:]
        InstrumentationSystem.instrument.inject(context, into: &carrier, using: DictionaryInjector())
        return carrier["traceparent"]
    }
}
