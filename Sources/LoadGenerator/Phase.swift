// One measured phase: flows started at a fixed rate (open loop) or kept in flight as fast
// as the system answers (closed loop), with a warm-up, a progress line every second and a
// drain at the end.
import Foundation

public struct PhasePlan: Sendable {
    public enum Load: Sendable {
        /// Start flows so that `requestsPerSecond` are offered, whatever the replies do.
        case rate(requestsPerSecond: Double)
        /// Keep `concurrency` flows in flight (unanswered calls do not count once rung).
        case max(concurrency: Int)
    }

    public var name: String
    public var load: Load
    public var warmup: Duration
    public var duration: Duration
    public var mix: FlowMix
    /// Whether answered flows send the ring receipt: a rate phase offers its requests/s
    /// either way.
    public var ringReceipts: Bool

    public init(name: String, load: Load, warmup: Duration, duration: Duration, mix: FlowMix, ringReceipts: Bool = true) {
        self.name = name
        self.load = load
        self.warmup = warmup
        self.duration = duration
        self.mix = mix
        self.ringReceipts = ringReceipts
    }
}

/// What one phase measured.
public struct PhaseFigures: Codable, Sendable {
    public var windowSeconds: Double
    public var requests: Int
    public var requestsPerSecond: Double
    public var flows: Int
    public var flowsPerSecond: Double
    public var flowsByKind: [String: Int]
    public var flowsFailed: [String: Int]
    public var latency: [String: LatencySummary]
    public var requestReplyByType: [String: LatencySummary]
    public var errors: [String: Int]
    /// CPU of the co-located processes during the window (Linux; empty elsewhere).
    public var cpu: [String: CPUUsage] = [:]
    /// SQL statements the database ran per request in the window, every client together
    /// (pg_stat_statements; nil when it is not loaded).
    public var statementsPerRequest: Double?
    /// Round trips to the database per request in the window, the services together (their
    /// /metrics; Ringing's phases only, nil for a build that does not report them). Fewer than
    /// the statements where several go in one round trip (pipelines).
    public var roundTripsPerRequest: Double?

    enum CodingKeys: String, CodingKey {
        case windowSeconds = "window_s"
        case requests
        case requestsPerSecond = "requests_per_s"
        case flows
        case flowsPerSecond = "flows_per_s"
        case flowsByKind = "flows_by_kind"
        case flowsFailed = "flows_failed"
        case latency
        case requestReplyByType = "request_reply_by_type"
        case errors
        case cpu = "cpu_by_process"
        case statementsPerRequest = "statements_per_request"
        case roundTripsPerRequest = "round_trips_per_request"
    }

    public init(
        windowSeconds: Double, requests: Int, requestsPerSecond: Double, flows: Int, flowsPerSecond: Double,
        flowsByKind: [String: Int], flowsFailed: [String: Int], latency: [String: LatencySummary],
        requestReplyByType: [String: LatencySummary], errors: [String: Int], cpu: [String: CPUUsage] = [:]
    ) {
        self.windowSeconds = windowSeconds
        self.requests = requests
        self.requestsPerSecond = requestsPerSecond
        self.flows = flows
        self.flowsPerSecond = flowsPerSecond
        self.flowsByKind = flowsByKind
        self.flowsFailed = flowsFailed
        self.latency = latency
        self.requestReplyByType = requestReplyByType
        self.errors = errors
        self.cpu = cpu
    }

    /// Reports written before the CPU or the statements were part of the JSON read with none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            windowSeconds: try c.decode(Double.self, forKey: .windowSeconds), requests: try c.decode(Int.self, forKey: .requests),
            requestsPerSecond: try c.decode(Double.self, forKey: .requestsPerSecond),
            flows: try c.decode(Int.self, forKey: .flows), flowsPerSecond: try c.decode(Double.self, forKey: .flowsPerSecond),
            flowsByKind: try c.decode([String: Int].self, forKey: .flowsByKind),
            flowsFailed: try c.decode([String: Int].self, forKey: .flowsFailed),
            latency: try c.decode([String: LatencySummary].self, forKey: .latency),
            requestReplyByType: try c.decode([String: LatencySummary].self, forKey: .requestReplyByType),
            errors: try c.decode([String: Int].self, forKey: .errors),
            cpu: try c.decodeIfPresent([String: CPUUsage].self, forKey: .cpu) ?? [:])
        statementsPerRequest = try c.decodeIfPresent(Double.self, forKey: .statementsPerRequest)
        roundTripsPerRequest = try c.decodeIfPresent(Double.self, forKey: .roundTripsPerRequest)
    }
}

public struct PhaseResult: Codable, Sendable {
    public var name: String
    /// `rate` or `max`.
    public var load: String
    public var offeredRequestsPerSecond: Double?
    public var concurrency: Int?
    public var figures: PhaseFigures

    enum CodingKeys: String, CodingKey {
        case name, load
        case offeredRequestsPerSecond = "offered_requests_per_s"
        case concurrency, figures
    }
}

enum PhaseRunner {
    static func run(
        _ plan: PhasePlan, driver: any FlowDriver, pairs: PairPool, statements: StatementCounter? = nil,
        roundTrips: RoundTripCounter? = nil,
        progress: @escaping @Sendable (String) -> Void
    ) async throws -> PhaseResult {
        let recorder = Recorder()
        let picker = FlowPicker(plan.mix)
        let start = ContinuousClock.now
        let measureFrom = start + plan.warmup
        let end = measureFrom + plan.duration
        recorder.setWindow(start: measureFrom, end: end)
        let reporter = Task {
            var last = (requests: 0, flows: 0)
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                let now = recorder.progress
                let elapsed = (ContinuousClock.now - start).seconds
                let stage = ContinuousClock.now < measureFrom ? "warm-up" : ContinuousClock.now < end ? "measuring" : "draining"
                progress(
                    "\(plan.name): \(String(format: "%5.1f", elapsed)) s \(stage)  requests \(now.requests) (\(now.requests - last.requests)/s)  "
                        + "flows \(now.flows) (\(now.flows - last.flows)/s)  in flight \(now.inFlight)  errors \(now.errors)")
                last = (now.requests, now.flows)
            }
        }
        defer { reporter.cancel() }
        let cpu = Task {
            try? await Task.sleep(until: measureFrom)
            let start = CPUSampler.snapshot()
            async let statementsBefore = statements?.count()
            async let roundTripsBefore = roundTrips?.count()
            let before = (await statementsBefore, await roundTripsBefore)
            try? await Task.sleep(until: end)
            async let statementsAfter = statements?.count()
            async let roundTripsAfter = roundTrips?.count()
            return (start, CPUSampler.snapshot(), before, (await statementsAfter, await roundTripsAfter))
        }

        try await withThrowingTaskGroup(of: Void.self) { group in
            switch plan.load {
            case .rate(let requestsPerSecond):
                let flowsPerSecond = requestsPerSecond / plan.mix.averageRequests(ringReceipts: plan.ringReceipts)
                var started = 0
                while ContinuousClock.now < end {
                    let due = Int((ContinuousClock.now - start).seconds * flowsPerSecond)
                    while started < due {
                        let flow = try await Flow.next(picker, pairs, recorder)
                        group.addTask { await flow.run(driver, recorder, pairs, release: {}) }
                        started += 1
                    }
                    try await Task.sleep(for: .milliseconds(1))
                }
            case .max(let concurrency):
                for _ in 0..<concurrency {
                    group.addTask {
                        try await withThrowingTaskGroup(of: Void.self) { flows in
                            while ContinuousClock.now < end {
                                let flow = try await Flow.next(picker, pairs, recorder)
                                let released = Slot<Void>()
                                flows.addTask {
                                    await flow.run(driver, recorder, pairs, release: { released.complete(.success(())) })
                                }
                                try await released.value()
                            }
                            try await flows.waitForAll()
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        var figures = recorder.summary(seconds: plan.duration.seconds)
        let (cpuStart, cpuEnd, (statementsBefore, roundTripsBefore), (statementsAfter, roundTripsAfter)) = await cpu.value
        figures.cpu = CPUSampler.usage(
            from: cpuStart, to: cpuEnd, seconds: plan.duration.seconds, requests: figures.requests)
        if let statementsBefore, let statementsAfter, figures.requests > 0 {
            figures.statementsPerRequest = StatementCounter.perRequest(statementsAfter - statementsBefore, figures.requests)
        }
        if let roundTripsBefore, let roundTripsAfter, figures.requests > 0 {
            figures.roundTripsPerRequest = StatementCounter.perRequest(roundTripsAfter - roundTripsBefore, figures.requests)
        }
        switch plan.load {
        case .rate(let offered):
            return PhaseResult(name: plan.name, load: "rate", offeredRequestsPerSecond: offered, figures: figures)
        case .max(let concurrency):
            return PhaseResult(name: plan.name, load: "max", concurrency: concurrency, figures: figures)
        }
    }
}

/// One flow about to start: its kind and its pair, counted as in flight.
private struct Flow: Sendable {
    let kind: FlowKind
    let pair: Pair

    static func next(_ picker: FlowPicker, _ pairs: PairPool, _ recorder: Recorder) async throws -> Flow {
        let flow = Flow(kind: picker.next(), pair: try await pairs.take())
        recorder.flowStarted()
        return flow
    }

    /// Runs it to the end, then counts it and hands the pair back (unless the flow failed).
    func run(_ driver: any FlowDriver, _ recorder: Recorder, _ pairs: PairPool, release: @Sendable () -> Void) async {
        let ok = await driver.run(kind, pair, recorder: recorder, release: release)
        recorder.flowFinished(kind, succeeded: ok)
        pairs.give(pair, reusable: ok)
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}
