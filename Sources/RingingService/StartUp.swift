// Start-up steps on the broker and the database. A service that starts while either is slow
// to answer (a node starting, dozens of instances connecting at once, another instance
// holding the migration lock) waits for it instead of stopping: readiness says "not ready"
// meanwhile. Before this, a subscribe that timed out at start-up ended the service before it
// was ready, and whoever waited for it to be ready waited for ever.
import AMQPClient
import DedicatedThreads
public import Logging
import PostgresClient

public enum StartUp {
    /// Runs `step` until it succeeds, waiting out a broker that does not answer in time or
    /// drops the connection (`AMQPError.isUnavailable`), for as long as it takes. A refusal
    /// (no such queue, no permission, a conflicting declaration) is thrown, as is cancellation.
    public static func waitingForTheBroker<T: Sendable>(
        to what: String, logger: Logger, _ step: () async throws -> T
    ) async throws -> T {
        try await retrying(what, "broker", logger: logger, step) { ($0 as? AMQPError)?.isUnavailable ?? false }
    }

    /// Runs `step` until it succeeds, waiting out a database that cannot be reached or does not
    /// answer in time (`PostgresError.isTransient`), and a statement its timeout cancelled
    /// (waiting for a lock another instance holds, a long migration say). Anything else is
    /// thrown, as is cancellation.
    public static func waitingForTheDatabase<T: Sendable>(
        to what: String, logger: Logger, _ step: () async throws -> T
    ) async throws -> T {
        try await retrying(what, "database", logger: logger, step) { error in
            guard let error = error as? PostgresError else { return false }
            return error.isTransient || error.sqlState == .queryCanceled || error.sqlState == .lockNotAvailable
        }
    }

    private static func retrying<T: Sendable>(
        _ what: String, _ server: String, logger: Logger, _ step: () async throws -> T,
        while waitable: (any Error) -> Bool
    ) async throws -> T {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        while true {
            do {
                return try await step()
            } catch let error where waitable(error) {
                try Task.checkCancellation()
                let delay = backoff.next()
                logger.warning(
                    "\(server) not answering to \(what); retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try await Task.sleep(for: delay)
            }
        }
    }
}
