// ringing-bench end to end, briefly and gently: the floor, a flat-out phase and a rate phase
// against a call-control and a token service of this process. Speed is not judged here (that
// is what the benchmark is for); that every flow completes and every figure is there is.
import AMQPClient
import Foundation
import LoadGenerator
import PostgresClient
import RingingAuth
import TestSupport
import Testing

@Suite struct BenchSmokeTests {
    /// The floor program in this process rather than as a child process.
    final class InProcessFloor: FloorProcess, @unchecked Sendable {
        let worker: FloorWorker
        private var task: Task<Void, any Error>?

        init() throws {
            worker = FloorWorker(
                amqp: try AMQPURL(TestEnvironment.amqpURL), database: try PostgresConfiguration(url: TestEnvironment.databaseURL),
                workers: 2, logger: Scenario.quietLogger("floor"))
        }

        func start() async throws {
            let ready = AsyncStream<Void>.makeStream()
            task = Task { [worker] in try await worker.run { ready.continuation.yield() } }
            for await _ in ready.stream { break }
        }

        func stop() async {
            task?.cancel()
            _ = await task?.result
        }
    }

    @Test func everyPhaseCompletesItsFlowsAndReportsEveryFigure() async throws {
        try await Scenario.run(tokens: true) { _ in
            var configuration = BenchConfiguration()
            configuration.durationSeconds = 2
            configuration.warmupSeconds = 0
            configuration.concurrency = 4
            configuration.rates = [40]
            configuration.floorWorkers = 2
            configuration.settleSeconds = 0
            let bench = Bench(
                configuration: configuration, amqp: try AMQPURL(TestEnvironment.amqpURL),
                database: try PostgresConfiguration(url: TestEnvironment.databaseURL), authSecret: AuthTokens.developmentSecret,
                logger: Scenario.quietLogger("bench"), progress: { _ in })
            let report = try await bench.run(floor: try InProcessFloor(), command: "BenchSmokeTests")

            let floor = try #require(report.floor)
            #expect(floor.figures.requests > 0)
            #expect(floor.figures.errors.isEmpty, "\(floor.figures.errors)")
            #expect(report.phases.map(\.name) == ["ringing-max", "ringing-40"])
            for phase in report.phases {
                #expect(phase.figures.errors.isEmpty, "\(phase.name): \(phase.figures.errors)")
                #expect(phase.figures.flowsFailed.isEmpty, "\(phase.name): \(phase.figures.flowsFailed)")
                #expect(phase.figures.flows > 0)
                for measure in ["request_reply", "time_to_ring", "time_to_ringing", "accept_to_accepted"] {
                    #expect((phase.figures.latency[measure]?.count ?? 0) > 0, "\(phase.name) has no \(measure)")
                }
                #expect(phase.figures.requestReplyByType["token.generate"] != nil)
                #expect(phase.figures.requestReplyByType["call.ringing"] != nil, "the answered flow sends the ring receipt")
                // The broker and the database are processes of their own here: their CPU is measured.
                for server in ["postgresql", "rabbitmq"] {
                    #expect((phase.figures.cpu[server]?.millisecondsPerRequest ?? 0) > 0, "\(phase.name): no CPU for \(server)")
                }
            }
            // 40 req/s for 2 s is 20 flows, two of them unanswered: their deadline is measured.
            let rated = report.phases[1]
            #expect((rated.figures.latency["timeout_lateness"]?.count ?? 0) >= 1)
            #expect(report.ringingToFloorRatio != nil)
            #expect(report.targets.count == 5)
            #expect(report.text.contains("time_to_ring"))
        }
    }
}
