// A small pool of PostgreSQL connections that replaces broken ones.
import DedicatedThreads
public import Logging
import Synchronization

/// Up to `size` connections, opened on demand. A connection that broke (server restart,
/// network) is dropped when it comes back and a new one is opened for the next caller, with
/// backoff while the server is away. Acquiring waits at most `acquireTimeout`.
public final class PostgresPool: Sendable {
    private struct State {
        var idle: [PostgresConnection] = []
        var open = 0
        var waiters: [(id: Int, continuation: CheckedContinuation<PostgresConnection?, any Error>)] = []
        var cancelledWaiters: Set<Int> = []
        var nextWaiter = 0
        var closed = false
    }

    public let configuration: PostgresConfiguration
    public let size: Int
    public let acquireTimeout: Duration
    private let logger: Logger
    private let state = Mutex(State())

    public init(
        configuration: PostgresConfiguration, size: Int = 4, acquireTimeout: Duration = .seconds(30),
        logger: Logger = Logger(label: "ringing.postgres")
    ) {
        precondition(size > 0, "a pool needs at least one connection")
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
        let (idle, waiters) = state.withLock { state in
            state.closed = true
            defer {
                state.idle.removeAll()
                state.waiters.removeAll()
            }
            return (state.idle, state.waiters)
        }
        for waiter in waiters { waiter.continuation.resume(throwing: PostgresError(.closed, "the pool is closed")) }
        for connection in idle { await connection.close() }
    }

    // MARK: - Lending

    private enum Decision {
        case use(PostgresConnection)
        case open
        case wait
        case closed
    }

    func acquire() async throws -> PostgresConnection {
        let decision = state.withLock { state -> Decision in
            if state.closed { return .closed }
            if let connection = state.idle.popLast() { return .use(connection) }
            if state.open < size {
                state.open += 1
                return .open
            }
            return .wait
        }
        switch decision {
        case .use(let connection): return connection
        case .closed: throw PostgresError(.closed, "the pool is closed")
        case .open, .wait: break
        }
        // Waiting and connecting are bounded together by `acquireTimeout`.
        let deadline = ContinuousClock.now + acquireTimeout
        return try await withThrowingTaskGroup(of: PostgresConnection?.self) { group in
            group.addTask {
                if case .wait = decision, let lent = try await self.waitForTurn() { return lent }
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
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let cancelled = state.withLock { state -> Bool in
                    if state.cancelledWaiters.remove(id) != nil { return true }
                    state.waiters.append((id, continuation))
                    return false
                }
                if cancelled { continuation.resume(throwing: CancellationError()) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection?, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                    state.cancelledWaiters.insert(id)
                    return nil
                }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
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
        let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection?, any Error>? in
            guard !state.waiters.isEmpty else {
                state.open -= 1
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        waiter?.resume(returning: nil)
    }

    func release(_ connection: PostgresConnection) {
        guard connection.isHealthy else {
            logger.debug("dropping a broken PostgreSQL connection")
            return giveUpSlot()
        }
        let waiter = state.withLock { state -> CheckedContinuation<PostgresConnection?, any Error>? in
            if state.closed {
                state.open -= 1
                return nil
            }
            guard !state.waiters.isEmpty else {
                state.idle.append(connection)
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        waiter?.resume(returning: connection)
    }
}
