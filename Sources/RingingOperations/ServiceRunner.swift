// How every Ringing executable runs: its connections and servers, then its own work, as
// Services of one ServiceGroup that turns SIGTERM/SIGINT into a graceful shutdown.
import Foundation
public import Logging
public import ServiceLifecycle

/// A long-running dependency (a broker connection, a LISTEN connection) as a Service: it runs
/// until the group shuts it down, which it does after the services started later.
public struct Background: Service {
    public let name: String
    let body: @Sendable () async -> Void

    public init(_ name: String, _ body: @escaping @Sendable () async -> Void) {
        self.name = name
        self.body = body
    }

    public func run() async {
        await cancelWhenGracefulShutdown { await body() }
    }
}

/// A service whose connections and servers run beside it, started before it and stopped
/// after it: a graceful shutdown first stops its work (finishing what is in hand), then its
/// operations server, then its connections.
public protocol ComposedService: Service {
    var dependencies: [any Service] { get }
}

extension ComposedService {
    /// The dependencies, then the service itself, for a `ServiceGroupConfiguration`.
    public var serviceGroupEntries: [ServiceGroupConfiguration.ServiceConfiguration] {
        dependencies.map { ServiceGroupConfiguration.ServiceConfiguration(service: $0) }
            + [ServiceGroupConfiguration.ServiceConfiguration(service: self)]
    }
}

public enum ServiceRunner {
    /// What each executable's `main` does: makes the service, runs it with its dependencies
    /// until SIGTERM or SIGINT, and exits 0 after a graceful shutdown or 1, with one log line,
    /// when it could not start or failed.
    ///
    /// A graceful shutdown is bounded: after `RINGING_SHUTDOWN_TIMEOUT_S` (default 30 s) the
    /// work still in hand is cancelled, and if cancelling takes more than 5 s more the process
    /// stops anyway (swift-service-lifecycle's cancellation bound). What it had not
    /// acknowledged, the broker delivers again to another instance.
    public static func run(_ name: String, logger: Logger, _ make: () async throws -> any ComposedService) async -> Never {
        do {
            let limit = try shutdownTimeout()
            let service = try await make()
            var configuration = ServiceGroupConfiguration(
                services: service.serviceGroupEntries, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
            configuration.maximumGracefulShutdownDuration = limit
            configuration.maximumCancellationDuration = .seconds(5)
            try await ServiceGroup(configuration: configuration).run()
            exit(0)
        } catch {
            logger.critical("\(name) stopped: \(error)")
            exit(1)
        }
    }
}

extension ServiceRunner {
    /// `RINGING_SHUTDOWN_TIMEOUT_S`: how long a graceful shutdown may take (1…3600, default 30).
    static func shutdownTimeout() throws -> Duration {
        guard let text = ProcessInfo.processInfo.environment["RINGING_SHUTDOWN_TIMEOUT_S"], !text.isEmpty else {
            return .seconds(30)
        }
        guard let seconds = Int(text), (1...3600).contains(seconds) else {
            throw ShutdownTimeoutError(value: text)
        }
        return .seconds(seconds)
    }
}

struct ShutdownTimeoutError: Error, CustomStringConvertible {
    let value: String
    var description: String { "RINGING_SHUTDOWN_TIMEOUT_S is '\(value)'; it must be a whole number of seconds from 1 to 3600" }
}

extension OperationsServer {
    /// The operations endpoints as a dependency, or nothing when the port is 0.
    public static func dependency(
        host: String, port: Int, logger: Logger, readiness: @escaping @Sendable () async -> Readiness
    ) -> [any Service] {
        guard port > 0 else { return [] }
        let server = OperationsServer(host: host, port: port, logger: logger, readiness: readiness)
        return [Background("operations") { await server.runLoggingFailure() }]
    }
}
