// The load generator's pure parts: the flow mix, the deterministic picker, the measurement
// window of the recorder, and how the report judges the targets.
import Foundation
import Testing

@testable import LoadGenerator

@Suite struct FlowMixTests {
    @Test func parsesKindsAndWeights() throws {
        let mix = try FlowMix(parsing: "answered=3, rejected=1")
        #expect(mix.weights == [.answered: 3, .rejected: 1])
        #expect(mix.requestsPerFlow == (3.0 * 6 + 1.0 * 2) / 4)
        #expect(mix.description == "answered=3,rejected=1")
    }

    @Test func standardMixAverages4Point7RequestsPerFlow() {
        // answered 6 (with the ring receipt) × 0.7 + 2 × 0.1 + 2 × 0.1 + 1 × 0.1
        #expect(abs(FlowMix.standard.requestsPerFlow - 4.7) < 1e-9)
    }

    @Test func withoutRingReceiptsAnAnsweredFlowIsOneRequestShorter() {
        #expect(abs(FlowMix.standard.averageRequests(ringReceipts: false) - 4.0) < 1e-9)
        #expect(abs(FlowMix.standard.averageRequests(ringReceipts: true) - 4.7) < 1e-9)
    }

    @Test(arguments: [
        ("answered=1,ringing=2", "'ringing=2'"), ("answered=-1", "answered must be a whole number"),
        ("answered=1=2", "'answered=1=2'"), ("answered=0,rejected=0", "at least one weight"),
    ])
    func namesWhatIsWrong(text: String, expected: String) {
        do {
            _ = try FlowMix(parsing: text)
            Issue.record("'\(text)' was accepted")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test func pickerFollowsTheWeightsExactly() {
        let picker = FlowPicker(FlowMix.standard)
        var counts: [FlowKind: Int] = [:]
        for _ in 0..<1000 { counts[picker.next(), default: 0] += 1 }
        #expect(counts == [.answered: 700, .rejected: 100, .cancelled: 100, .unanswered: 100])
    }

    @Test func pickerNeverPicksAZeroWeight() {
        let picker = FlowPicker(FlowMix(weights: [.answered: 1, .unanswered: 0]))
        #expect((0..<50).allSatisfy { _ in picker.next() == .answered })
    }
}

@Suite struct RecorderTests {
    @Test func countsOnlyInsideTheWindowAndDropsTheWarmUp() {
        let recorder = Recorder()
        let start = ContinuousClock.now
        recorder.setWindow(start: start + .seconds(10), end: start + .seconds(20))
        // Warm-up: neither counted nor measured.
        recorder.reply("call.initiate", sent: start, arrived: start + .milliseconds(5), errorCode: nil)
        // Inside the window.
        for index in 1...100 {
            let sent = start + .seconds(11)
            recorder.reply(
                "call.accept", sent: sent, arrived: sent + .milliseconds(index), errorCode: index == 1 ? "invalid_state" : nil)
        }
        // After the window (the drain): measured, not counted for the rate.
        recorder.reply("call.end", sent: start + .seconds(21), arrived: start + .seconds(21) + .milliseconds(1), errorCode: nil)
        let figures = recorder.summary(seconds: 10)
        #expect(figures.requests == 100)
        #expect(figures.requestsPerSecond == 10)
        #expect(figures.errors == ["invalid_state": 1])
        let latency = figures.latency[Measure.requestReply.rawValue]
        #expect(latency?.count == 101)
        #expect(latency.map { abs($0.p50 - 50) < 0.1 } == true, "\(String(describing: latency))")
        #expect(latency.map { abs($0.max - 100) < 0.1 } == true)
        #expect(figures.requestReplyByType["call.initiate"] == nil)
        #expect(figures.requestReplyByType["call.accept"]?.count == 100)
    }

    @Test func flowsAreCountedByKindAndFailuresApart() {
        let recorder = Recorder()
        recorder.setWindow(start: .now - .seconds(1), end: .now + .seconds(60))
        for kind in [FlowKind.answered, .answered, .rejected] {
            recorder.flowStarted()
            recorder.flowFinished(kind, succeeded: true)
        }
        recorder.flowStarted()
        recorder.flowFinished(.unanswered, succeeded: false)
        recorder.flowStarted()
        let figures = recorder.summary(seconds: 1)
        #expect(figures.flowsByKind == ["answered": 2, "rejected": 1])
        #expect(figures.flowsFailed == ["unanswered": 1])
        #expect(recorder.progress.inFlight == 1)
        #expect(recorder.progress.flows == 4)
    }
}

@Suite struct CPUSamplerTests {
    @Test func sharesAndMillisecondsPerRequest() {
        let usage = CPUSampler.usage(
            from: ["postgresql": 10, "rabbitmq": 5], to: ["postgresql": 13, "rabbitmq": 6, "call-control": 2], seconds: 10,
            requests: 1000)
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        #expect(usage["postgresql"]?.millisecondsPerRequest == 3)
        #expect(usage["rabbitmq"]?.millisecondsPerRequest == 1)
        // Started during the window: counted from zero.
        #expect(usage["call-control"]?.millisecondsPerRequest == 2)
        #expect(abs((usage["postgresql"]?.shareOfMachine ?? 0) - (0.3 / cores)) < 0.001)
    }
}

@Suite struct ReportTests {
    private func phase(
        _ name: String, _ load: String, rps: Double, offered: Double? = nil, ring: (Double, Double)? = nil,
        lateness: Double? = nil,
        errors: [String: Int] = [:]
    ) -> PhaseResult {
        var latency: [String: LatencySummary] = [:]
        if let ring {
            latency[Measure.timeToRing.rawValue] = LatencySummary(
                count: 10, p50: ring.0, p90: ring.1, p99: ring.1, p999: ring.1, max: ring.1, mean: ring.0)
        }
        if let lateness {
            latency[Measure.timeoutLateness.rawValue] = LatencySummary(
                count: 5, p50: 1, p90: lateness, p99: lateness, p999: lateness, max: lateness, mean: 1)
        }
        return PhaseResult(
            name: name, load: load, offeredRequestsPerSecond: offered, concurrency: load == "max" ? 64 : nil,
            figures: PhaseFigures(
                windowSeconds: 20, requests: Int(rps * 20), requestsPerSecond: rps, flows: 0, flowsPerSecond: 0, flowsByKind: [:],
                flowsFailed: [:], latency: latency, requestReplyByType: [:], errors: errors))
    }

    @Test func judgesEveryTarget() {
        let report = BenchReport(
            command: "ringing-bench", machine: MachineInfo.current(), configuration: BenchConfiguration(),
            floor: phase("floor", "max", rps: 1000),
            phases: [
                phase("ringing-max", "max", rps: 600, lateness: 100),
                phase("ringing-500", "rate", rps: 500, offered: 500, ring: (3, 9)),
                phase("ringing-1000", "rate", rps: 990, offered: 1000, ring: (4, 30), lateness: 300),
            ])
        #expect(report.ringingToFloorRatio == 0.6)
        let verdicts = Dictionary(uniqueKeysWithValues: report.targets.map { ($0.target, $0.met) })
        #expect(verdicts["≥ 50%"] == true)
        #expect(verdicts["≥ 3000, no errors"] == false)
        #expect(verdicts["≤ 5 ms"] == true)
        // p99 at 1000 req/s, not the 500 req/s phase's.
        #expect(verdicts["≤ 20 ms"] == false)
        // The worst phase's lateness.
        #expect(verdicts["≤ 250 ms"] == false)
        #expect(report.targets.contains { $0.value.contains("300.0 ms") })
        #expect(report.text.contains("[MISSED] Time-to-ring p99 at 1000 req/s offered: 30.00 ms"))
        #expect(report.text.contains("60%"))
    }

    /// With the physical floor measured, the report judges issue 17's targets against it.
    @Test func judgesAgainstThePhysicalFloorWhenItRan() throws {
        var max = phase("ringing-max", "max", rps: 1500)
        max.figures.cpu = [
            "postgresql": CPUUsage(shareOfMachine: 0.4, millisecondsPerRequest: 0.6),
            "rabbitmq": CPUUsage(shareOfMachine: 0.4, millisecondsPerRequest: 0.6),
        ]
        max.figures.statementsPerRequest = 2.25
        let written = BenchReport(
            command: "x", machine: MachineInfo.current(), configuration: BenchConfiguration(),
            floor: phase("floor", "max", rps: 1000), physicalFloor: phase("floor-physical", "max", rps: 2000),
            phases: [max, phase("ringing-1000", "rate", rps: 990, offered: 1000, ring: (8, 45), lateness: 200)])
        let report = try JSONDecoder.iso8601.decode(BenchReport.self, from: written.json)
        #expect(report.ringingToPhysicalFloorRatio == 0.75)
        #expect(report.ringingToFloorRatio == 1.5)
        let verdicts = Dictionary(uniqueKeysWithValues: report.targets.map { ($0.target, $0.met) })
        #expect(verdicts["≥ 60%"] == true)
        #expect(verdicts["≤ 1.1 ms"] == false, "1.2 ms of CPU per request")
        #expect(verdicts["≤ 10 ms"] == true)
        #expect(verdicts["≤ 40 ms"] == false)
        #expect(verdicts["≤ 250 ms"] == true)
        #expect(verdicts["≥ 50%"] == nil, "the logical floor is shown, not judged")
        #expect(report.phases[0].figures.statementsPerRequest == 2.25)
        #expect(report.text.contains("floor-physical"))
        #expect(report.text.contains("2.25"), "statements per request: \(report.text)")
    }

    /// Two runs written as JSON and read back side by side, the CPU of each process with them.
    @Test func twoReportsCompareSideBySide() throws {
        func report(_ rps: Double, cpu: Double) throws -> BenchReport {
            var max = phase("ringing-max", "max", rps: rps, ring: (10, 40))
            max.figures.cpu = [
                "postgresql": CPUUsage(shareOfMachine: 0.4, millisecondsPerRequest: cpu),
                "call-control": CPUUsage(shareOfMachine: 0.2, millisecondsPerRequest: 0.5),
            ]
            let written = BenchReport(
                command: "x", machine: MachineInfo.current(), configuration: BenchConfiguration(),
                floor: phase("floor", "max", rps: 900), phases: [max])
            return try JSONDecoder.iso8601.decode(BenchReport.self, from: written.json)
        }
        let text = BenchComparison(
            baselineLabel: "old", baseline: try report(500, cpu: 1.5), candidateLabel: "new",
            candidate: try report(1000, cpu: 0.5)
        ).text
        #expect(text.contains("500 → 1000") && text.contains("2.00×"), "\(text)")
        #expect(text.contains("2.00 → 1.00"), "CPU per request across the machine: \(text)")
        #expect(text.contains("postgresql 1.50 → 0.50"))
        #expect(text.contains("ringing-max time_to_ring"))
    }

    /// Statements per request and the physical floor are compared too, when both runs have them.
    @Test func statementsAndThePhysicalFloorCompare() {
        func report(_ statements: Double) -> BenchReport {
            var max = phase("ringing-max", "max", rps: 800)
            max.figures.statementsPerRequest = statements
            return BenchReport(
                command: "x", machine: MachineInfo.current(), configuration: BenchConfiguration(), floor: nil,
                physicalFloor: phase("floor-physical", "max", rps: 2500), phases: [max])
        }
        let text = BenchComparison(baselineLabel: "old", baseline: report(8.5), candidateLabel: "new", candidate: report(2.33))
            .text
        #expect(text.contains("8.50 → 2.33"), "\(text)")
        #expect(text.contains("floor-physical"))
    }

    @Test func jsonRoundTrips() throws {
        let report = BenchReport(
            command: "x", machine: MachineInfo.current(), configuration: BenchConfiguration(), floor: nil,
            phases: [phase("ringing-max", "max", rps: 10, errors: ["timeout": 2])])
        let decoded = try JSONDecoder.iso8601.decode(BenchReport.self, from: report.json)
        #expect(decoded.phases.first?.figures.errors == ["timeout": 2])
        #expect(decoded.configuration.mix.weights == FlowMix.standard.weights)
        let object = try JSONSerialization.jsonObject(with: report.json) as? [String: Any]
        #expect(object?["targets"] != nil)
        #expect(
            (object?["phases"] as? [[String: Any]])?.first?["figures"].map { ($0 as? [String: Any])?["requests_per_s"] != nil }
                == true)
    }
}

extension JSONDecoder {
    fileprivate static var iso8601: JSONDecoder {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }
}
