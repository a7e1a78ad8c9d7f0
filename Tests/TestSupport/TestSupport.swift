// Shared by the integration tests: where the servers are, how to restart them, and how to
// wait for an event without hanging forever.
public import Foundation

public enum TestEnvironment {
    /// The broker the tests use, with the operators' `admin` account (DESIGN §9) for
    /// inspection; `scripts/stack` starts it at this address.
    public static var amqpURL: String {
        ProcessInfo.processInfo.environment["RINGING_AMQP_ADMIN_URL"] ?? amqpURL(account: "admin")
    }

    /// The same broker with one role's account (`call-control`, `token-service`,
    /// `device-gateway`, `app`, …): development password = the name, unless
    /// `RINGING_AMQP_PASSWORD_<ROLE>` overrides it, as in `scripts/stack`.
    public static func amqpURL(account: String) -> String {
        let environment = ProcessInfo.processInfo.environment
        let port = environment["RINGING_STACK_AMQP_PORT"] ?? "5672"
        let variable = "RINGING_AMQP_PASSWORD_" + account.uppercased().replacingOccurrences(of: "-", with: "_")
        let password = environment[variable] ?? account
        return "amqp://\(account):\(password)@127.0.0.1:\(port)/"
    }

    public static var databaseURL: String {
        ProcessInfo.processInfo.environment["RINGING_DATABASE_URL"] ?? "postgres://ringing:ringing@127.0.0.1:5432/ringing"
    }

    /// The token service's read-only role on the same database.
    public static var readerDatabaseURL: String {
        ProcessInfo.processInfo.environment["RINGING_TOKEN_DATABASE_URL"]
            ?? "postgres://ringing_reader:ringing_reader@127.0.0.1:5432/ringing"
    }

    /// The repository root, found from this file's path.
    public static let repositoryRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// A name no other test run uses.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
    }
}

/// The servers of the local stack, stopped and started by `scripts/stack` as a user would.
public enum StackServer: String, Sendable {
    case broker, postgres

    public func stop() throws { try Self.stack("stop", rawValue) }
    public func start() throws { try Self.stack("start", rawValue) }

    /// The local broker's rabbitmqctl (to raise and clear resource alarms).
    public static func rabbitmqctl(_ arguments: String...) throws { try stack(["rabbitmqctl"] + arguments) }

    private static func stack(_ arguments: String...) throws { try stack(arguments) }

    private static func stack(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = TestEnvironment.repositoryRoot.appendingPathComponent("scripts/stack")
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw StackError(
                message: "scripts/stack \(arguments.joined(separator: " ")) exited with \(process.terminationStatus)")
        }
    }
}

public struct StackError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

public struct TimedOut: Error, CustomStringConvertible {
    public let what: String
    public init(what: String) { self.what = what }
    public var description: String { "timed out waiting for \(what)" }
}

/// Runs `body`, failing with `TimedOut` if it has not finished after `limit`. The limit only
/// guards against a hang; it is never what a test measures.
public func withDeadline<T: Sendable>(
    _ limit: Duration = .seconds(120), _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        let first = try await group.next()!
        guard let value = first else { throw TimedOut(what: what) }
        return value
    }
}
