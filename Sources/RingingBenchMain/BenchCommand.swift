// ringing-bench: drives the seed flows against the running services and reports throughput
// and latencies beside the floor of this machine (see BENCHMARKS.md).
import AMQPClient
import ArgumentParser
import Foundation
import LoadGenerator
import Logging
import RingingAuth
import RingingService

@main
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringing-bench",
        abstract: "Load-test Ringing and compare it with the floor of this machine.",
        discussion: """
            Runs three phases against the broker and database of RINGING_AMQP_URL and RINGING_DATABASE_URL: \
            the floor (a minimal program doing the same broker and database work with no ringing logic), \
            Ringing as fast as it answers, and Ringing at a fixed offered rate. Needs call-control and \
            token-service running (scripts/up) with the same RINGING_AUTH_SECRET.
            """,
        subcommands: [Run.self, GatewayPhase.self, PushPhase.self, Compare.self, FloorWorkerCommand.self, DeleteQueues.self],
        defaultSubcommand: Run.self)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the benchmark and print the report (the default).")

    @Option(help: "Measured seconds per phase, after the warm-up.")
    var duration = 20

    @Option(help: "Seconds of warm-up per phase, not measured.")
    var warmup = 3

    @Option(help: "Requests/s offered in the rate phases, comma-separated: one phase per rate.")
    var rates = "500,1000"

    @Option(help: "Flows in flight in the floor and max phases.")
    var concurrency = 64

    @Option(help: "Flow mix as kind=weight: answered (initiate, accept, two tokens, end), rejected, cancelled, unanswered.")
    var mix = FlowMix.standard.description

    @Option(name: .customLong("ring-timeout"), help: "timeout_s of the unanswered calls (5…300).")
    var ringTimeout = 5

    @Option(name: .customLong("floor-workers"), help: "Consumers of the floor program, one request at a time each.")
    var floorWorkers = 16

    @Option(help: "Idle seconds between phases, so that one phase's aftermath stays out of the next.")
    var settle = 10

    @Option(
        help: """
            Seconds of unmeasured flows before the first Ringing phase, then ANALYZE of Ringing's \
            tables, so that the phases run on a database with statistics (0: none).
            """)
    var prime = 10

    @Option(help: "Phases to run, comma-separated: floor, max, rate.")
    var phases = "floor,max,rate"

    @Option(help: "Also write the report as JSON to this file.")
    var json: String?

    @Flag(
        name: .customLong("ring-receipts"), inversion: .prefixedNo,
        help: "Answered flows send the ring receipt (call.ringing); --no-ring-receipts for revisions without it.")
    var ringReceipts = true

    @Option(
        name: .customLong("service-metrics"),
        help: """
            The services' /metrics, comma-separated, read for their round trips to the database \
            (scripts/up's call-control and token service); an empty value: not measured.
            """)
    var serviceMetrics = "http://127.0.0.1:8081/metrics,http://127.0.0.1:8082/metrics"

    @Flag(help: "No progress lines on stderr.")
    var quiet = false

    func validate() throws {
        _ = try parsedServiceMetrics()
        guard duration >= 1 else { throw ValidationError("--duration must be at least 1 second, not \(duration)") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        guard prime >= 0 else { throw ValidationError("--prime must not be negative, not \(prime)") }
        guard settle >= 0 else { throw ValidationError("--settle must not be negative") }
        _ = try parsedRates()
        guard (1...10_000).contains(concurrency) else { throw ValidationError("--concurrency must be from 1 to 10000") }
        guard (5...300).contains(ringTimeout) else { throw ValidationError("--ring-timeout must be from 5 to 300 seconds") }
        guard (1...200).contains(floorWorkers) else { throw ValidationError("--floor-workers must be from 1 to 200") }
        _ = try parsedPhases()
        do { _ = try FlowMix(parsing: mix) } catch { throw ValidationError("\(error)") }
    }

    private func parsedRates() throws -> [Double] {
        try rates.split(separator: ",").map { text in
            guard let rate = Double(text.trimmingCharacters(in: .whitespaces)), rate > 0 else {
                throw ValidationError("--rates: '\(text)' is not a number of requests/s above 0")
            }
            return rate
        }
    }

    private func parsedServiceMetrics() throws -> [URL] {
        try serviceMetrics.split(separator: ",").map { text in
            let text = text.trimmingCharacters(in: .whitespaces)
            guard let url = URL(string: text), ["http", "https"].contains(url.scheme ?? ""), url.host != nil else {
                throw ValidationError(
                    "--service-metrics: '\(text)' is not an http:// URL (such as http://127.0.0.1:8081/metrics)")
            }
            return url
        }
    }

    private func parsedPhases() throws -> [BenchConfiguration.PhaseName] {
        try phases.split(separator: ",").map { name in
            guard let phase = BenchConfiguration.PhaseName(rawValue: name.trimmingCharacters(in: .whitespaces)) else {
                throw ValidationError("--phases: '\(name)' is not one of floor, max, rate")
            }
            return phase
        }
    }

    func run() async throws {
        RingingLogging.bootstrap(default: .warning)
        let logger = Logger(label: "ringing-bench")
        var configuration = BenchConfiguration()
        configuration.durationSeconds = duration
        configuration.warmupSeconds = warmup
        configuration.rates = try parsedRates()
        configuration.concurrency = concurrency
        configuration.mix = try FlowMix(parsing: mix)
        configuration.ringTimeoutSeconds = ringTimeout
        configuration.floorWorkers = floorWorkers
        configuration.phases = try parsedPhases()
        configuration.settleSeconds = settle
        configuration.primeSeconds = prime
        configuration.ringReceipts = ringReceipts
        let environment = Environment()
        let quiet = self.quiet
        do {
            let bench = Bench(
                configuration: configuration, amqp: try environment.amqpURL(account: "admin"),
                database: try environment.database(),
                authSecret: environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret),
                serviceMetrics: try parsedServiceMetrics(), logger: logger,
                progress: { line in if !quiet { FileHandle.standardError.write(Data((line + "\n").utf8)) } })
            let report = try await bench.run(
                floor: FloorChild(workers: floorWorkers), command: CommandLine.arguments.joined(separator: " "))
            print(report.text)
            if let json {
                let url = URL(fileURLWithPath: json)
                try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
                try report.json.write(to: url)
                FileHandle.standardError.write(Data("report written to \(json)\n".utf8))
            }
        } catch {
            FileHandle.standardError.write(Data("ringing-bench: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Two reports side by side (scripts/bench --compare REV writes them).
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print two reports written with --json side by side: throughput, CPU per request, latencies.")

    @Argument(help: "The baseline's JSON report.")
    var baseline: String

    @Argument(help: "The candidate's JSON report.")
    var candidate: String

    @Option(help: "What to call the baseline.")
    var baselineLabel = "baseline"

    @Option(help: "What to call the candidate.")
    var candidateLabel = "candidate"

    func run() throws {
        var reports: [BenchReport] = []
        for path in [baseline, candidate] {
            do { reports.append(try BenchComparison.report(at: URL(fileURLWithPath: path))) } catch {
                throw ValidationError("\(path) is not a report written by ringing-bench run --json: \(error)")
            }
        }
        print(
            BenchComparison(
                baselineLabel: baselineLabel, baseline: reports[0], candidateLabel: candidateLabel, candidate: reports[1]
            ).text)
    }
}

/// The gateway phase: idle sockets held by one gateway, and rings through it beside rings over AMQP.
struct GatewayPhase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Hold idle WebSockets on one gateway and ring through it, beside the same rings over AMQP.",
        discussion: """
            Needs the stack with a gateway (scripts/up). Each socket is a file descriptor in this process and \
            in the gateway: raise `ulimit -n` above --sockets for both (scripts/bench does).
            """)

    @Option(help: "The gateway's WebSocket URL.")
    var url = "ws://127.0.0.1:8080/v1/ws"

    @Option(help: "Idle sockets to hold.")
    var sockets = 10_000

    @Option(help: "Caller/receiver pairs ringing.")
    var pairs = 200

    @Option(help: "Rings per second, each way.")
    var rate = 200.0

    @Option(help: "Measured seconds of ringing, each way.")
    var duration = 20

    @Option(name: .customLong("gateway-pid"), help: "The gateway's process id, for its resident memory per socket.")
    var gatewayPID: Int32?

    @Option(help: "Also write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        guard (0...1_000_000).contains(sockets) else { throw ValidationError("--sockets must be from 0 to 1000000") }
        guard (1...10_000).contains(pairs) else { throw ValidationError("--pairs must be from 1 to 10000") }
        guard rate > 0 else { throw ValidationError("--rate must be above 0 rings/s") }
        guard duration >= 1 else { throw ValidationError("--duration must be at least 1 second") }
    }

    func run() async throws {
        RingingLogging.bootstrap(default: .error)
        var configuration = GatewayBenchConfiguration()
        configuration.gatewayURL = url
        configuration.idleSockets = sockets
        configuration.pairs = pairs
        configuration.ringsPerSecond = rate
        configuration.durationSeconds = duration
        configuration.gatewayPID = gatewayPID
        let environment = Environment()
        do {
            let bench = try await GatewayBench(
                configuration: configuration, amqp: try environment.amqpURL(account: "admin"),
                authSecret: environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret),
                logger: Logger(label: "ringing-bench"),
                progress: { line in FileHandle.standardError.write(Data((line + "\n").utf8)) })
            let report = try await bench.run()
            try emit(report, text: report.text, json: json)
        } catch {
            FileHandle.standardError.write(Data("ringing-bench gateway: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

struct PushPhase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push rings through one push-notifier to local APNs and FCM stand-ins: pushes/s and latency.",
        discussion: """
            Needs the broker and the database (scripts/stack start) and no other push-notifier consuming \
            push-notifier.notifications (scripts/bench stops the stack's). Starts its own notifier, trusting the \
            stand-ins' CA; RINGING_PUSH_NOTIFIER_AMQP_URL and RINGING_CALL_CONTROL_AMQP_URL name the two broker \
            accounts (scripts/stack amqp-url), RINGING_DATABASE_URL the database.
            """)

    @Option(help: "Notifications published at once for the flat-out measurement.")
    var notifications = 10_000

    @Option(help: "Offered notifications/s of the rate measurement.")
    var rate = 500.0

    @Option(help: "Seconds of the rate measurement.")
    var duration = 10

    @Option(help: "Users with one device each (half iPhones, half Android phones).")
    var users = 1_000

    @Option(help: "The push-notifier executable (default: the one beside ringing-bench).")
    var notifier: String?

    @Option(help: "RINGING_PUSH_CONCURRENCY of the notifier.")
    var concurrency: Int?

    @Option(help: "Also write the report as JSON to this file.")
    var json: String?

    func validate() throws {
        guard (1...1_000_000).contains(notifications) else { throw ValidationError("--notifications must be from 1 to 1000000") }
        guard rate > 0 else { throw ValidationError("--rate must be above 0 notifications/s") }
        guard duration >= 1 else { throw ValidationError("--duration must be at least 1 second") }
        guard (1...100_000).contains(users) else { throw ValidationError("--users must be from 1 to 100000") }
    }

    func run() async throws {
        RingingLogging.bootstrap(default: .error)
        var configuration = PushBenchConfiguration()
        configuration.flatOutNotifications = notifications
        configuration.rate = rate
        configuration.durationSeconds = duration
        configuration.users = users
        configuration.notifierConcurrency = concurrency
        configuration.notifierPath =
            notifier
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("push-notifier").path
        let environment = Environment()
        do {
            let bench = PushBench(
                configuration: configuration,
                notifierAMQP: environment.string(
                    "RINGING_PUSH_NOTIFIER_AMQP_URL", default: "amqp://push-notifier:push-notifier@127.0.0.1:5672/"),
                callControlAMQP: environment.string(
                    "RINGING_CALL_CONTROL_AMQP_URL", default: "amqp://call-control:call-control@127.0.0.1:5672/"),
                databaseURL: environment.string(
                    "RINGING_DATABASE_URL", default: "postgres://ringing:ringing@127.0.0.1:5432/ringing"),
                logger: Logger(label: "ringing-bench"),
                progress: { line in FileHandle.standardError.write(Data((line + "\n").utf8)) })
            let report = try await bench.run()
            try emit(report, text: report.text, json: json)
        } catch {
            FileHandle.standardError.write(Data("ringing-bench push: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Internal: removes queues that would take a copy of every message the bench sends (the test
/// suite's capture queues, which expire 5 minutes after the tests; in `--compare`, queues of
/// services the baseline does not have), so that the broker does not spend the run on them.
struct DeleteQueues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "delete-queues", abstract: "Delete the named queues (used by scripts/bench).", shouldDisplay: false)

    @Argument(help: "Queue names.")
    var queues: [String] = []

    func run() async throws {
        RingingLogging.bootstrap(default: .warning)
        guard !queues.isEmpty else { return }
        let connection = AMQPConnection(
            configuration: AMQPConfiguration(
                url: try Environment().amqpURL(account: "admin"), connectionName: "ringing-bench delete"),
            logger: Logger(label: "ringing-bench"))
        let loop = Task { await connection.run() }
        defer { loop.cancel() }
        var dropped = 0
        for queue in queues {
            let messages = try await connection.deleteQueue(queue)
            dropped += Int(messages)
        }
        FileHandle.standardError.write(Data("bench: deleted \(queues.count) queues holding \(dropped) messages\n".utf8))
    }
}

/// Internal: the floor program, started by `run` as a process of its own.
struct FloorWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "floor-worker", abstract: "The floor program (started by run; prints 'floor ready').",
        shouldDisplay: false)

    @Option var workers = 16

    func run() async throws {
        RingingLogging.bootstrap(default: .warning)
        var logger = Logger(label: "ringing-bench.floor")
        logger.logLevel = .warning
        let environment = Environment()
        let worker = FloorWorker(
            amqp: try environment.amqpURL(account: "admin"), database: try environment.database(), workers: workers,
            logger: logger)
        try await worker.run {
            FileHandle.standardOutput.write(Data("floor ready\n".utf8))
        }
    }
}

/// The floor program as a child process of this executable.
final class FloorChild: FloorProcess, @unchecked Sendable {
    let workers: Int
    private let process = Process()
    private let lock = NSLock()
    private var exited: CheckedContinuation<Void, Never>?
    private var hasExited = false

    init(workers: Int) {
        self.workers = workers
    }

    func start() async throws {
        process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        process.arguments = ["floor-worker", "--workers", "\(workers)"]
        let output = Pipe()
        process.standardOutput = output
        process.terminationHandler = { [self] _ in
            let waiter = lock.withLock { () -> CheckedContinuation<Void, Never>? in
                hasExited = true
                defer { exited = nil }
                return exited
            }
            waiter?.resume()
        }
        try process.run()
        // Its one line of stdout says it is ready; read on a thread of its own (a blocking read).
        let ready: Bool = await withCheckedContinuation { continuation in
            Thread {
                var seen = ""
                while true {
                    let data = output.fileHandleForReading.availableData
                    if data.isEmpty { break }
                    seen += String(decoding: data, as: UTF8.self)
                    if seen.contains("floor ready") { break }
                }
                continuation.resume(returning: seen.contains("floor ready"))
            }.start()
        }
        guard ready else { throw BenchError("the floor program exited before it was ready (its errors are above)") }
    }

    func stop() async {
        guard process.isRunning else { return }
        process.terminate()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = lock.withLock { () -> Bool in
                if hasExited { return true }
                exited = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// Prints a phase's report and, when asked, writes it as JSON.
func emit(_ report: some Encodable, text: String, json: String?) throws {
    print(text)
    guard let json else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try encoder.encode(report).write(to: URL(fileURLWithPath: json))
    FileHandle.standardError.write(Data("report written to \(json)\n".utf8))
}
