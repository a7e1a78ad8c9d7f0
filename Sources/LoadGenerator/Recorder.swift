// What a phase measured: latency histograms (HdrHistogram), request and flow counts inside
// the measurement window, and errors by code.
import Histogram
import Synchronization

/// The latencies the report shows.
public enum Measure: String, Sendable, CaseIterable, Codable {
    /// Request published → its reply received (every request type).
    case requestReply = "request_reply"
    /// `call.initiate` published → `incoming_call.received` at the receiver.
    case timeToRing = "time_to_ring"
    /// `call.initiate` published → `outgoing_call.ringing` at the caller: the receiver's
    /// device got the ring and sent its receipt (answered flows). "Ringing…" on the caller's screen.
    case timeToRinging = "time_to_ringing"
    /// `call.accept` published → `outgoing_call.accepted` at the caller.
    case acceptToAccepted = "accept_to_accepted"
    /// The call's ring deadline (`expires_at`) → `outgoing_call.rejected` (unanswered) at the caller.
    case timeoutLateness = "timeout_lateness"
}

/// Percentiles of one latency, in milliseconds.
public struct LatencySummary: Codable, Sendable {
    public var count: UInt64
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double
    public var mean: Double

    enum CodingKeys: String, CodingKey {
        case count
        case p50 = "p50_ms"
        case p90 = "p90_ms"
        case p99 = "p99_ms"
        case p999 = "p99_9_ms"
        case max = "max_ms"
        case mean = "mean_ms"
    }

    init(count: UInt64, p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double) {
        (self.count, self.p50, self.p90, self.p99, self.p999, self.max, self.mean) = (count, p50, p90, p99, p999, max, mean)
    }

    init(_ histogram: Histogram<UInt64>) {
        func ms(_ microseconds: UInt64) -> Double { (Double(microseconds) / 1000 * 100).rounded() / 100 }
        count = histogram.totalCount
        p50 = ms(histogram.valueAtPercentile(50))
        p90 = ms(histogram.valueAtPercentile(90))
        p99 = ms(histogram.valueAtPercentile(99))
        p999 = ms(histogram.valueAtPercentile(99.9))
        max = ms(histogram.max)
        mean = (histogram.mean / 1000 * 100).rounded() / 100
    }
}

/// Thread-safe tally of one phase.
public final class Recorder: Sendable {
    struct State {
        var latencies: [Measure: Histogram<UInt64>] = [:]
        var requestLatencyByType: [String: Histogram<UInt64>] = [:]
        var requestsInWindow = 0
        var requestsTotal = 0
        var flowsInWindow: [FlowKind: Int] = [:]
        var flowsTotal = 0
        var flowsFailed: [FlowKind: Int] = [:]
        var errors: [String: Int] = [:]
        var inFlight = 0
        var window: (start: ContinuousClock.Instant, end: ContinuousClock.Instant) = (.now, .now + .seconds(86_400))
    }

    private let state = Mutex(State())

    public init() {}

    /// Samples completing before `start` (warm-up) are dropped; counts for rates are taken
    /// only between `start` and `end`.
    public func setWindow(start: ContinuousClock.Instant, end: ContinuousClock.Instant) {
        state.withLock { $0.window = (start, end) }
    }

    private static func histogram() -> Histogram<UInt64> {
        Histogram(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    private static func microseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        return UInt64(seconds) * 1_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000_000)
    }

    func record(_ measure: Measure, _ duration: Duration, completedAt: ContinuousClock.Instant = .now) {
        let value = Self.microseconds(duration)
        state.withLock { state in
            guard completedAt >= state.window.start else { return }
            _ = state.latencies[measure, default: Self.histogram()].record(value)
        }
    }

    /// A reply arrived for a request of `type` sent at `sent`.
    func reply(_ type: String, sent: ContinuousClock.Instant, arrived: ContinuousClock.Instant, errorCode: String?) {
        let value = Self.microseconds(arrived - sent)
        state.withLock { state in
            state.requestsTotal += 1
            guard arrived >= state.window.start else { return }
            if arrived <= state.window.end { state.requestsInWindow += 1 }
            _ = state.latencies[.requestReply, default: Self.histogram()].record(value)
            _ = state.requestLatencyByType[type, default: Self.histogram()].record(value)
            if let errorCode { state.errors[errorCode, default: 0] += 1 }
        }
    }

    /// A failure that is not a reply: `timeout`, `publish_failed`, `unexpected_status`, ...
    func error(_ code: String) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard now >= state.window.start else { return }
            state.errors[code, default: 0] += 1
        }
    }

    func flowStarted() {
        state.withLock { $0.inFlight += 1 }
    }

    func flowFinished(_ kind: FlowKind, succeeded: Bool) {
        let now = ContinuousClock.now
        state.withLock { state in
            state.inFlight -= 1
            state.flowsTotal += 1
            guard now >= state.window.start else { return }
            if succeeded {
                if now <= state.window.end { state.flowsInWindow[kind, default: 0] += 1 }
            } else {
                state.flowsFailed[kind, default: 0] += 1
            }
        }
    }

    /// For the progress line: requests and flows so far, flows in flight, errors.
    public var progress: (requests: Int, flows: Int, inFlight: Int, errors: Int) {
        state.withLock { ($0.requestsTotal, $0.flowsTotal, $0.inFlight, $0.errors.values.reduce(0, +)) }
    }

    /// The phase's figures over a window of `seconds`.
    func summary(seconds: Double) -> PhaseFigures {
        state.withLock { state in
            let completed = state.flowsInWindow.values.reduce(0, +)
            return PhaseFigures(
                windowSeconds: seconds,
                requests: state.requestsInWindow,
                requestsPerSecond: (Double(state.requestsInWindow) / seconds).rounded(),
                flows: completed,
                flowsPerSecond: (Double(completed) / seconds * 10).rounded() / 10,
                flowsByKind: Dictionary(uniqueKeysWithValues: state.flowsInWindow.map { ($0.key.rawValue, $0.value) }),
                flowsFailed: Dictionary(uniqueKeysWithValues: state.flowsFailed.map { ($0.key.rawValue, $0.value) }),
                latency: Dictionary(uniqueKeysWithValues: state.latencies.map { ($0.key.rawValue, LatencySummary($0.value)) }),
                requestReplyByType: state.requestLatencyByType.mapValues(LatencySummary.init),
                errors: state.errors)
        }
    }
}
