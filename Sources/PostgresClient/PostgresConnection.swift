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

    /// `isUsable` as of the last statement, readable from any task without a hop.
    public nonisolated var isHealthy: Bool { healthy.load(ordering: .relaxed) }

    /// Runs one statement and returns its rows.
    @discardableResult
    public func query(_ query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        guard let connection else { throw PostgresError(.closed, "the connection is closed") }
        defer { healthy.store(!connection.isBroken, ordering: .relaxed) }
        return try connection.execute(query)
    }

    /// Runs SQL text that may hold several statements and takes no parameters (migrations).
    public func executeScript(_ sql: String) throws(PostgresError) {
        guard let connection else { throw PostgresError(.closed, "the connection is closed") }
        defer { healthy.store(!connection.isBroken, ordering: .relaxed) }
        try connection.executeScript(sql)
    }

    /// Runs `body` in a transaction on this connection's thread: COMMIT when it returns,
    /// ROLLBACK when it throws. The body is synchronous on purpose: no other work can
    /// interleave with the transaction, and no thread hop happens per statement.
    @discardableResult
    public func withTransaction<T: Sendable>(
        _ isolation: IsolationLevel = .readCommitted,
        _ body: @Sendable (isolated PostgresConnection) throws -> T
    ) throws -> T {
        precondition(!inTransaction, "withTransaction does not nest")
        inTransaction = true
        defer { inTransaction = false }
        try query(isolation == .readCommitted ? "BEGIN" : beginStatement(isolation))
        do {
            let value = try body(self)
            try query("COMMIT")
            return value
        } catch {
            if isUsable { _ = try? query("ROLLBACK") }
            throw error
        }
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
