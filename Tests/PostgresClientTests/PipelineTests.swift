// Statements sent together (libpq's pipeline mode): a batch's BEGIN and locks go with its
// read, its write with COMMIT (issue 17).
import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite struct PipelineTests {
    let configuration: PostgresConfiguration

    init() throws {
        configuration = try PostgresConfiguration(url: TestEnvironment.databaseURL)
    }

    /// A connection with a table of its own, dropped afterwards.
    private func withTable(_ body: (PostgresConnection, String) async throws -> Void) async throws {
        let connection = try await PostgresConnection.connect(configuration: configuration)
        let table = TestEnvironment.uniqueName("pipe")
        try await connection.query("CREATE TABLE \(identifier: table) (id int8 PRIMARY KEY)")
        do {
            try await body(connection, table)
        } catch {
            _ = try? await connection.query("DROP TABLE \(identifier: table)")
            await connection.close()
            throw error
        }
        try await connection.query("DROP TABLE \(identifier: table)")
        await connection.close()
    }

    @Test func aPipelineAnswersEachStatementInOrder() async throws {
        try await withTable { connection, table in
            let rows = try await connection.pipeline([
                "INSERT INTO \(identifier: table) VALUES (1), (2)", "SELECT \(7) + 1",
                "SELECT id FROM \(identifier: table) ORDER BY id",
            ])
            #expect(rows.count == 3)
            #expect(rows[0].affectedRows == 2)
            #expect(try rows[1][0].decode(Int.self, at: 0) == 8)
            #expect(try rows[2].map { try $0.decode(Int.self, at: 0) } == [1, 2])
            // Prepared the first time, run by name the second.
            #expect(
                try await connection.pipeline(["SELECT \(7) + 1", "SELECT \(1) + 1"]).map { try $0[0].decode(Int.self, at: 0) }
                    == [8, 2])
        }
    }

    @Test func aFailureSkipsTheRestAndRollsBackThePipeline() async throws {
        try await withTable { connection, table in
            do {
                try await connection.pipeline([
                    "INSERT INTO \(identifier: table) VALUES (1)", "INSERT INTO \(identifier: table) VALUES (1)",
                    "INSERT INTO \(identifier: table) VALUES (3)",
                ])
                Issue.record("a duplicate key went through")
            } catch let error as PostgresError {
                #expect(error.sqlState == .uniqueViolation)
            }
            // One implicit transaction: the first insert is rolled back, the third never ran,
            // and the connection works on.
            #expect(try await connection.query("SELECT count(*) FROM \(identifier: table)")[0].decode(Int.self, at: 0) == 0)
            #expect(await connection.isUsable)
        }
    }

    @Test func aDeferredStatementRunsWithTheNextAndItsErrorIsThrownThere() async throws {
        try await withTable { connection, table in
            await connection.queryLater("INSERT INTO \(identifier: table) VALUES (5)")
            #expect(try await connection.query("SELECT id FROM \(identifier: table)")[0].decode(Int.self, at: 0) == 5)
            await connection.queryLater("SELECT 1 / \(0)")
            do {
                try await connection.query("INSERT INTO \(identifier: table) VALUES (6)")
                Issue.record("the deferred division by zero went unreported")
            } catch let error as PostgresError {
                #expect(error.sqlState?.rawValue == "22012", "division by zero, from the deferred statement")
            }
            #expect(
                try await connection.query("SELECT array_agg(id)::int8[] FROM \(identifier: table)")[0].decode([Int].self, at: 0)
                    == [5])
        }
    }

    @Test func aTransactionEndingWithQueryThenCommitIsCommitted() async throws {
        try await withTable { connection, table in
            let other = try await PostgresConnection.connect(configuration: configuration)
            let inserted = try await connection.withTransaction { db in
                db.queryLater("SELECT set_config('ringing.test', 'deferred', true)")
                let setting = try db.query("SELECT current_setting('ringing.test')")[0].decode(String.self, at: 0)
                #expect(setting == "deferred", "the deferred statement ran in the transaction")
                return try db.queryThenCommit("INSERT INTO \(identifier: table) VALUES (1), (2) RETURNING id").count
            }
            #expect(inserted == 2)
            #expect(try await other.query("SELECT count(*) FROM \(identifier: table)")[0].decode(Int.self, at: 0) == 2)
            // Not in a transaction any more: the setting was local to it.
            #expect(
                try await connection.query("SELECT current_setting('ringing.test', true)")[0].decode(String?.self, at: 0) ?? ""
                    == "")
            await other.close()
        }
    }

    @Test func aFailingLastStatementRollsTheTransactionBack() async throws {
        try await withTable { connection, table in
            do {
                try await connection.withTransaction { db in
                    try db.query("INSERT INTO \(identifier: table) VALUES (1)")
                    try db.queryThenCommit("INSERT INTO \(identifier: table) VALUES (1)")
                }
                Issue.record("a duplicate key was committed")
            } catch let error as PostgresError {
                #expect(error.sqlState == .uniqueViolation)
            }
            #expect(try await connection.query("SELECT count(*) FROM \(identifier: table)")[0].decode(Int.self, at: 0) == 0)
            // A body that throws before its first statement leaves nothing open either.
            await #expect(throws: CancellationError.self) {
                try await connection.withTransaction { db in
                    db.queryLater("SELECT pg_advisory_xact_lock(\(42))")
                    throw CancellationError()
                }
            }
            #expect(
                try await connection.query(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")[0].decode(
                        Int.self, at: 0) == 0)
            let first = try await connection.query("SELECT pg_current_xact_id()::text")[0].decode(String.self, at: 0)
            let second = try await connection.query("SELECT pg_current_xact_id()::text")[0].decode(String.self, at: 0)
            #expect(first != second, "no transaction left open: each statement has a transaction of its own")
        }
    }
}
