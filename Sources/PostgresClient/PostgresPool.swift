// A small pool of PostgreSQL connections that replaces broken ones.
import DedicatedThreads
public import Logging
import Synchronization

/// Up to `size` connections, opened on demand. A connection that broke (server restart,
/// network) is dropped when it comes back and a new one is opened for the next caller, with
/// backoff while the server is away. Acquiring waits at most `acquireTimeout`.
public final class PostgresPool: Sendable {
    private typealias State = PoolState<PostgresConnection, CheckedContinuation<PostgresConnection?, any Error>>

    public let configuration: PostgresConfiguration
    public let size: Int
    public let acquireTimeout: Duration
    private let logger: Logger
    private let state: Mutex<State>

    public init(
        configuration: PostgresConfiguration, size: Int = 4, acquireTimeout: Duration = .seconds(30),
        logger: Logger = Logger(label: "ringing.postgres")
    ) {
        self.state = Mutex(State(size: size))
        self.configuration = configuration
        self.size = size
        self.acquireTimeout = acquireTimeout
        self.logger = logger
    }

    /// Lends a connection to `body` and takes it back afterwards.
    @discardableResult
    public func withConnection<T>(
        isolation: isolated (any Actor)? = #isolation, _ body: (PostgresConnection) async throws -> T
    ) async throws -> T {
        let connection = try await acquire()
        do {
            let result = try await body(connection)
            release(connection)
            return result
        } catch {
            release(connection)
            throw error
        }
    }

    /// Runs `body` in a transaction on a pooled connection (see `PostgresConnection.withTransaction`).
    @discardableResult
    public func withTransaction<T: Sendable>(
        _ level: PostgresConnection.IsolationLevel = .readCommitted,
        _ body: @Sendable (isolated PostgresConnection) throws -> T
    ) async throws -> T {
        try await withConnection { connection in try await connection.withTransaction(level, body) }
    }

    /// Runs one statement on a pooled connection.
    @discardableResult
    public func query(_ query: PostgresQuery) async throws -> PostgresRows {
        try await withConnection { connection in try await connection.query(query) }
    }

    /// Closes idle connections and refuses new work; connections in use close when returned.
    public func close() async {
        let (idle, waiters) = state.withLock { $0.close() }
        for waiter in waiters { waiter.resume(throwing: PostgresError(.closed, "the pool is closed")) }
        for connection in idle { await connection.close() }
    }

    // MARK: - Lending

    func acquire() async throws -> PostgresConnection {
        let mustWait: Bool
        switch state.withLock({ $0.acquire() }) {
        case .use(let connection): return connection
        case .closed: throw PostgresError(.closed, "the pool is closed")
        case .open: mustWait = false
        case .wait: mustWait = true
        }
        // Waiting and connecting are bounded together by `acquireTimeout`.
        let deadline = ContinuousClock.now + acquireTimeout
        return try await withThrowingTaskGroup(of: PostgresConnection?.self) { group in
            group.addTask {
                if mustWait, let lent = try await self.waitForTurn() { return lent }
                return try await self.openConnection(until: deadline)
            }
            group.addTask {
                try await Task.sleep(until: deadline)
                return nil
            }
            let first = try await group.next()!
            group.cancelAll()
            while let late = try? await group.next() {
                if let late { release(late) }  // lent after the deadline: give it back
            }
            guard let first else {
                throw PostgresError(.timeout, "no PostgreSQL connection to \(configuration.redactedURL) within \(acquireTimeout)")
            }
            return first
        }
    }

    /// Waits for a connection another caller returns; nil grants a slot to open a new one.
    private func waitForTurn() async throws -> PostgresConnection? {
        let id = state.withLock { $0.nextWaiterID() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                if !state.withLock({ $0.enqueue(id, continuation) }) { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            state.withLock { $0.cancel(id) }?.resume(throwing: CancellationError())
        }
    }

    private func openConnection(until deadline: ContinuousClock.Instant) async throws -> PostgresConnection {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        while true {
            do {
                return try await PostgresConnection.connect(configuration: configuration, logger: logger)
            } catch {
                let delay = backoff.next()
                guard ContinuousClock.now + delay < deadline, !Task.isCancelled else {
                    giveUpSlot()
                    throw error
                }
                logger.warning("PostgreSQL connect failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                do { try await Task.sleep(for: delay) } catch {
                    giveUpSlot()
                    throw error
                }
            }
        }
    }

    /// A slot that will not be filled: hand it to the next waiter, which opens a connection.
    private func giveUpSlot() {
        state.withLock { $0.giveUpSlot() }?.resume(returning: nil)
    }

    func release(_ connection: PostgresConnection) {
        let healthy = connection.isHealthy
        if !healthy { logger.debug("dropping a broken PostgreSQL connection") }
        switch state.withLock({ $0.release(connection, healthy: healthy) }) {
        case .handOver(let waiter, let connection): waiter.resume(returning: connection)
        case .grantSlot(let waiter): waiter.resume(returning: nil)
        case .kept: break
        }
    }
}
