// Statements the database ran, read from pg_stat_statements at the start and the end of a
// phase's window: the same count for any build (this tree's, an earlier revision's, the
// floor program), since it is taken on the server.
import Logging
import PostgresClient

/// Sums `calls` of pg_stat_statements for the bench's database. Without the extension (a
/// server not started by scripts/stack) it answers nil, once logged.
final class StatementCounter: Sendable {
    private let database: PostgresConfiguration
    private let logger: Logger

    init(database: PostgresConfiguration, logger: Logger) {
        self.database = database
        self.logger = logger
    }

    /// Statements run in this database so far, by every client.
    func count() async -> Int? {
        do {
            let connection = try await PostgresConnection.connect(configuration: database, logger: logger)
            let rows: Result<PostgresRows, any Error>
            do {
                rows = .success(
                    try await connection.query(
                        """
                        SELECT coalesce(sum(s.calls), 0)::int8 FROM pg_stat_statements s
                        JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()
                        """))
            } catch {
                rows = .failure(error)
            }
            await connection.close()
            return try rows.get()[0].decode(Int.self, at: 0)
        } catch {
            logger.notice(
                "statements per request not measured: pg_stat_statements cannot be read (scripts/stack loads it)",
                metadata: ["error": "\(error)"])
            return nil
        }
    }

    /// Statements per request, two decimals.
    static func perRequest(_ statements: Int, _ requests: Int) -> Double {
        (Double(statements) / Double(requests) * 100).rounded() / 100
    }
}
