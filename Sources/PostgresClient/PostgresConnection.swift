// A PostgreSQL connection as an actor that runs on a thread of its own.
import DedicatedThreads
public import Logging
import Synchronization

/// One PostgreSQL connection. Its methods run on the connection's own thread (its executor),
/// so libpq may block there without holding up Swift's cooperative pool. Use it from one task
/// at a time, usually through `PostgresPool`.
public actor PostgresConnection {
    public enum IsolationLevel: String, Sendable {
        case readCommitted = "READ COMMITTED"
        case repeatableRead = "REPEATABLE READ"
        case serializable = "SERIALIZABLE"
    }

    private let executor: ThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }
    private var connection: LibPQConnection?
    private let logger: Logger
    public nonisolated let configuration: PostgresConfiguration
    private var inTransaction = false
    /// The body of the current transaction committed it (`queryThenCommit`).
    private var committed = false
    /// Statements to send with the next one (`queryLater`).
    private var deferred: [PostgresQuery] = []
    private nonisolated let healthy = Atomic<Bool>(true)

    private init(configuration: PostgresConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.executor = ThreadExecutor(name: "postgres")
    }

    /// Opens a connection (at most `connectTimeout`).
    public static func connect(configuration: PostgresConfiguration, logger: Logger = Logger(label: "ringing.postgres"))
        async throws(PostgresError) -> PostgresConnection
    {
        let connection = PostgresConnection(configuration: configuration, logger: logger)
        try await connection.open()
        return connection
    }

    private func open() throws(PostgresError) {
        connection = try LibPQConnection(configuration: configuration)
    }

    /// False once the connection broke or was closed: the pool then replaces it.
    public var isUsable: Bool { connection.map { !$0.isBroken } ?? false }

    /// Round trips made on this connection so far: one per statement answered alone, per
    /// pipeline (deferred statements included), per script and per statement prepared.
    public var roundTrips: Int { connection?.roundTrips ?? 0 }

    /// `isUsable` as of the last statement, readable from any task without a hop.
    public nonisolated var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    /// Runs one statement and returns its rows; the statements deferred with `queryLater`
    /// go first, in the same round trip.
    @discardableResult
    public func query(_ query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        try pipeline([query])[0]
    }

    /// Defers a statement whose rows nobody reads (BEGIN, taking locks): it is sent with the
    /// next statement, in one round trip, and its error is thrown there. The statements run
    /// in the order they were given.
    ///
    /// Every statement of the round trip is prepared before any of them runs: a statement
    /// cannot depend on something a deferred one creates (a temporary table, a `SET`).
    /// Nothing may be deferred once `queryThenCommit` ended the transaction.
    public func queryLater(_ query: PostgresQuery) {
        precondition(!(inTransaction && committed), "queryLater after queryThenCommit would run outside the transaction")
        deferred.append(query)
    }

    /// Runs the deferred statements and then `queries` in one round trip (libpq's pipeline
    /// mode); returns the rows of `queries`. When one fails, the rest are skipped and its
    /// error is thrown.
    @discardableResult
    public func pipeline(_ queries: [PostgresQuery]) throws(PostgresError) -> [PostgresRows] {
        guard let connection else { throw PostgresError(.closed, "the connection is closed") }
        defer { healthy.store(!connection.isBroken, ordering: .relaxed) }
        let earlier = deferred
        deferred = []
        return Array(try connection.executePipeline(earlier + queries).dropFirst(earlier.count))
    }

    /// Runs SQL text that may hold several statements and takes no parameters (migrations).
    public func executeScript(_ sql: String) throws(PostgresError) {
        guard let connection else { throw PostgresError(.closed, "the connection is closed") }
        defer { healthy.store(!connection.isBroken, ordering: .relaxed) }
        if !deferred.isEmpty { try pipeline([]) }
        try connection.executeScript(sql)
    }

    /// Runs `body` in a transaction on this connection's thread: COMMIT when it returns,
    /// ROLLBACK when it throws. The body is synchronous on purpose: no other work can
    /// interleave with the transaction, and no thread hop happens per statement.
    ///
    /// BEGIN goes with the body's first statement (`queryLater`), and a body that ends with
    /// `queryThenCommit` sends COMMIT with its last statement: a transaction of one statement
    /// costs one round trip.
    @discardableResult
    public func withTransaction<T: Sendable>(
        _ isolation: IsolationLevel = .readCommitted,
        _ body: @Sendable (isolated PostgresConnection) throws -> T
    ) throws -> T {
        precondition(!inTransaction, "withTransaction does not nest")
        inTransaction = true
        committed = false
        defer { inTransaction = false }
        queryLater(beginStatement(isolation))
        do {
            let value = try body(self)
            if !committed {
                if deferred.count == 1 && deferred[0].sql.hasPrefix("BEGIN") {
                    deferred = []  // nothing ran: nothing to commit
                } else {
                    try query("COMMIT")
                }
            }
            return value
        } catch {
            if deferred.first?.sql.hasPrefix("BEGIN") ?? false {
                deferred = []  // the transaction never started
            } else if isUsable && !committed {
                deferred = []
                _ = try? query("ROLLBACK")
            }
            throw error
        }
    }

    /// Runs `query` and then COMMIT in one round trip: the last statement of a
    /// `withTransaction` body, which then commits nothing more. When `query` fails, COMMIT is
    /// skipped and the transaction rolls back as usual.
    @discardableResult
    public func queryThenCommit(_ query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        precondition(inTransaction && !committed, "queryThenCommit ends a withTransaction body")
        let rows = try pipeline([query, "COMMIT"])[0]
        committed = true
        return rows
    }

    private func beginStatement(_ level: IsolationLevel) -> PostgresQuery {
        switch level {
        case .readCommitted: "BEGIN"
        case .repeatableRead: "BEGIN ISOLATION LEVEL REPEATABLE READ"
        case .serializable: "BEGIN ISOLATION LEVEL SERIALIZABLE"
        }
    }

    public func close() {
        healthy.store(false, ordering: .relaxed)
        connection?.close()
        connection = nil
    }
}
