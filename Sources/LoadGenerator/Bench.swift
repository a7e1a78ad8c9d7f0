// The whole benchmark: the floor, then Ringing as fast as it goes, then Ringing at a fixed
// offered rate for latencies; one report with the floor beside Ringing's figures.
public import AMQPClient
public import Foundation
public import Logging
public import PostgresClient
import RingingAuth
import RingingContract

public struct BenchConfiguration: Codable, Sendable {
    public enum PhaseName: String, Codable, Sendable, CaseIterable {
        case floor, max, rate
    }

    /// Measured seconds per phase (after the warm-up).
    public var durationSeconds: Int = 20
    public var warmupSeconds: Int = 3
    /// Offered requests/s of the `rate` phases, one phase per rate.
    public var rates: [Double] = [500, 1000]
    /// Flows in flight in the `max` and `floor` phases.
    public var concurrency: Int = 64
    public var mix: FlowMix = .standard
    /// `timeout_s` of the unanswered calls.
    public var ringTimeoutSeconds: Int = 5
    /// Consumers of the floor program, each handling one request at a time.
    public var floorWorkers: Int = 16
    public var phases: [PhaseName] = PhaseName.allCases
    /// Idle seconds between phases.
    public var settleSeconds: Int = 10
    /// Whether answered flows send the ring receipt (`call.ringing`): off to compare with a
    /// revision from before it (`--no-ring-receipts`, recorded in the report's command line).
    public var ringReceipts = true
    /// Seconds of unmeasured flows before the first Ringing phase, followed by `ANALYZE` of
    /// Ringing's tables, so that the phases meet a database with statistics (recorded in the
    /// report's command line). Without it, a fresh database's tables are planned as empty
    /// until autovacuum's first analyze, which can take minutes while it vacuums the floor's.
    public var primeSeconds = 10

    public init() {}

    enum CodingKeys: String, CodingKey {
        case durationSeconds = "duration_s"
        case warmupSeconds = "warmup_s"
        case rates = "rates_requests_per_s"
        case concurrency, mix
        case ringTimeoutSeconds = "ring_timeout_s"
        case floorWorkers = "floor_workers"
        case phases
        case settleSeconds = "settle_s"
    }
}

/// Starts and stops the floor program (a process of its own, like the services).
public protocol FloorProcess: Sendable {
    func start() async throws
    func stop() async
}

public final class Bench: Sendable {
    let configuration: BenchConfiguration
    let amqp: AMQPURL
    let database: PostgresConfiguration
    let authSecret: String
    /// The services' /metrics, read for their round trips to the database (none: not measured).
    let serviceMetrics: [URL]
    let logger: Logger
    let progress: @Sendable (String) -> Void
    let runID: String

    public init(
        configuration: BenchConfiguration, amqp: AMQPURL, database: PostgresConfiguration, authSecret: String,
        serviceMetrics: [URL] = [], logger: Logger, progress: @escaping @Sendable (String) -> Void
    ) {
        self.configuration = configuration
        self.amqp = amqp
        self.database = database
        self.authSecret = authSecret
        self.serviceMetrics = serviceMetrics
        self.logger = logger
        self.progress = progress
        runID = String(UUID().uuidString.prefix(6)).lowercased()
    }

    public func run(floor: any FloorProcess, command: String) async throws -> BenchReport {
        let auth = try await AuthTokens(secret: authSecret)
        try await removeEarlierBenchCalls()
        var floorResult: PhaseResult?
        var physicalFloorResult: PhaseResult?
        var phases: [PhaseResult] = []
        let statements = StatementCounter(database: database, logger: logger)
        let roundTrips = serviceMetrics.isEmpty ? nil : RoundTripCounter(endpoints: serviceMetrics, logger: logger)
        if configuration.phases.contains(.floor) {
            progress("floor: starting the floor program (\(configuration.floorWorkers) workers)")
            try await floor.start()
            do {
                floorResult = try await withBroker(route: Floor.route, prefix: "bench-\(runID)-f") { broker in
                    try await PhaseRunner.run(
                        plan("floor", .max(concurrency: configuration.concurrency)),
                        driver: FloorFlows(broker: broker, ringReceipts: configuration.ringReceipts),
                        pairs: PairPool(prefix: "bench-\(runID)-f", auth: auth), statements: statements, progress: progress)
                }
                try await settle()
                physicalFloorResult = try await withBroker(route: PhysicalFloor.route, prefix: "bench-\(runID)-p") { broker in
                    try await PhaseRunner.run(
                        plan("floor-physical", .max(concurrency: configuration.concurrency)),
                        driver: FloorFlows(broker: broker, ringReceipts: configuration.ringReceipts),
                        pairs: PairPool(prefix: "bench-\(runID)-p", auth: auth),
                        statements: statements, progress: progress)
                }
            } catch {
                await floor.stop()
                throw error
            }
            await floor.stop()
        }
        let ringingPhases = configuration.phases.filter { $0 != .floor }
        let floorRan = floorResult != nil
        if !ringingPhases.isEmpty {
            phases = try await withBroker(route: .ringing, prefix: "bench-\(runID)") { broker in
                var phases: [PhaseResult] = []
                try await probe(broker, auth: auth)
                let driver = RingingFlows(
                    broker: broker, ringTimeout: configuration.ringTimeoutSeconds, ringReceipts: configuration.ringReceipts)
                let primed = try await prime(driver, auth: auth)
                let runs: [(PhasePlan.Load, String)] = ringingPhases.flatMap { phase in
                    phase == .max
                        ? [(.max(concurrency: configuration.concurrency), "ringing-max")]
                        : configuration.rates.map { (.rate(requestsPerSecond: $0), "ringing-\(Int($0))") }
                }
                for (load, name) in runs {
                    if !phases.isEmpty || floorRan || primed { try await settle() }
                    let pairs = PairPool(prefix: "bench-\(runID)-\(phases.count)", auth: auth)
                    try await pairs.prefill(configuration.concurrency)
                    phases.append(
                        try await PhaseRunner.run(
                            plan(name, load), driver: driver, pairs: pairs, statements: statements, roundTrips: roundTrips,
                            progress: progress))
                }
                return phases
            }
        }
        return BenchReport(
            command: command, machine: MachineInfo.current(), configuration: configuration, floor: floorResult,
            physicalFloor: physicalFloorResult, phases: phases)
    }

    /// Runs flows for `primeSeconds`, unmeasured, then analyzes Ringing's tables: the
    /// measured phases then run on the plans of a database with statistics, as in production,
    /// not on those of tables the planner still takes for empty.
    private func prime(_ driver: RingingFlows, auth: AuthTokens) async throws -> Bool {
        guard configuration.primeSeconds > 0 else { return false }
        let plan = PhasePlan(
            name: "prime", load: .max(concurrency: configuration.concurrency), warmup: .zero,
            duration: .seconds(configuration.primeSeconds), mix: configuration.mix, ringReceipts: configuration.ringReceipts)
        let pairs = PairPool(prefix: "bench-\(runID)-prime", auth: auth)
        try await pairs.prefill(configuration.concurrency)
        _ = try await PhaseRunner.run(plan, driver: driver, pairs: pairs, progress: progress)
        progress("prime: analyzing calls, call_participants, processed_requests, outbox")
        let connection = try await PostgresConnection.connect(configuration: database, logger: logger)
        do {
            try await connection.executeScript("ANALYZE calls, call_participants, processed_requests, outbox")
        } catch {
            await connection.close()
            throw BenchError("prime: ANALYZE of Ringing's tables failed: \(error)")
        }
        await connection.close()
        return true
    }

    /// A pause between phases, so that what one phase set off (autovacuum after its updates,
    /// a checkpoint) does not land in the next one's measurements.
    private func settle() async throws {
        guard configuration.settleSeconds > 0 else { return }
        progress("settling for \(configuration.settleSeconds) s before the next phase")
        try await Task.sleep(for: .seconds(configuration.settleSeconds))
    }

    private func plan(_ name: String, _ load: PhasePlan.Load) -> PhasePlan {
        // The floor draws the same mix; having no ring timer, its unanswered flows are a lone initiate.
        PhasePlan(
            name: name, load: load, warmup: .seconds(configuration.warmupSeconds),
            duration: .seconds(configuration.durationSeconds), mix: configuration.mix,
            ringReceipts: configuration.ringReceipts)
    }

    private func withBroker<T: Sendable>(
        route: BenchRoute, prefix: String, _ body: @Sendable (BenchBroker) async throws -> T
    ) async throws -> T {
        let broker = BenchBroker(url: amqp, route: route, userPrefix: prefix, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await broker.run() }
            defer { group.cancelAll() }
            do {
                try await broker.waitUntilReady()
            } catch {
                throw BenchError("cannot reach RabbitMQ at \(amqp): \(error). Is the stack running (scripts/up)?")
            }
            return try await body(broker)
        }
    }

    /// One request to each service before measuring, so that a missing service is one clear
    /// line rather than a phase full of timeouts.
    private func probe(_ broker: BenchBroker, auth: AuthTokens) async throws {
        let token = try await auth.mint(uid: "bench-\(runID)-probe")
        let checks: [(RequestType, String, String)] = [
            (.active, #"{"auth_token":"\#(token)"}"#, "call-control"),
            (.jwks, "{}", "token-service"),
        ]
        for (type, body, service) in checks {
            do {
                let answer = try await broker.request(routingKey: type.rawValue, body: Data(body.utf8), timeout: .seconds(10))
                if let error = answer.reply.error {
                    throw BenchError("\(service) refused the probe \(type.rawValue): \(error.code.rawValue): \(error.message)")
                }
            } catch let failure as WaitFailure {
                throw BenchError(
                    "\(service) did not answer \(type.rawValue) within 10 s (\(failure.code)). Start the services with scripts/up."
                )
            }
        }
    }

    /// Calls of earlier bench runs are deleted so that every run starts from the same tables.
    private func removeEarlierBenchCalls() async throws {
        let connection: PostgresConnection
        do { connection = try await PostgresConnection.connect(configuration: database, logger: logger) } catch {
            let reason = "\(error)".split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                .joined(separator: " ")
            throw BenchError("cannot reach PostgreSQL at \(database.redactedURL) (\(reason)); is the stack running (scripts/up)?")
        }
        progress("cleanup: deleting the calls of earlier bench runs (users bench-*)")
        try await connection.executeScript(
            """
            DELETE FROM calls WHERE initiator LIKE 'bench-%';
            DELETE FROM processed_requests WHERE actor LIKE 'bench-%';
            """)
        try? await connection.executeScript("VACUUM ANALYZE calls, call_participants, processed_requests, outbox")
        await connection.close()
    }
}
