// Integration tests against the real PostgreSQL of the local stack (scripts/stack start).
import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite struct PostgresIntegrationTests {
    let configuration: PostgresConfiguration

    init() throws {
        configuration = try PostgresConfiguration(url: TestEnvironment.databaseURL)
    }

    /// A table of its own for one test, dropped afterwards.
    private func withTable(_ pool: PostgresPool, _ body: (String) async throws -> Void) async throws {
        let table = TestEnvironment.uniqueName("t")
        try await pool.query("CREATE TABLE \(identifier: table) (id int8 PRIMARY KEY, name text NOT NULL UNIQUE)")
        do {
            try await body(table)
        } catch {
            _ = try? await pool.query("DROP TABLE \(identifier: table)")
            throw error
        }
        try await pool.query("DROP TABLE \(identifier: table)")
    }

    @Test func valuesRoundTripThroughTheServer() async throws {
        let pool = PostgresPool(configuration: configuration, size: 1)
        let id = UUID()
        let when = Date(timeIntervalSince1970: 1_764_009_962.25)
        let bytes = Data([0, 1, 2, 255])
        let row = try await pool.query(
            """
            SELECT \(id) AS id, \(when) AS at, \(bytes) AS raw, \("it's") AS text, \(42) AS n, \(true) AS yes,
                   \(["a", "b c"]) AS list, \(PostgresJSONB(#"{"k":1}"#)) AS doc, \(Optional<String>.none) AS nothing
            """)[0]
        #expect(try row.decode(UUID.self, named: "id") == id)
        #expect(try row.decode(Date.self, named: "at") == when)
        #expect(try row.decode(Data.self, named: "raw") == bytes)
        #expect(try row.decode(String.self, named: "text") == "it's")
        #expect(try row.decode(Int.self, named: "n") == 42)
        #expect(try row.decode(Bool.self, named: "yes"))
        #expect(try row.decode([String].self, named: "list") == ["a", "b c"])
        #expect(try row.decode(PostgresJSONB.self, named: "doc").text == #"{"k": 1}"#)
        #expect(try row.decode(String?.self, named: "nothing") == nil)
        await pool.close()
    }

    @Test func statementsArePreparedOnceAndRunByName() async throws {
        let connection = try await PostgresConnection.connect(configuration: configuration)
        for n in 1...5 {
            #expect(try await connection.query("SELECT \(n) + 1 AS sum")[0].decode(Int.self, at: 0) == n + 1)
        }
        let names = try await connection.query("SELECT name FROM pg_prepared_statements WHERE statement = 'SELECT $1 + 1 AS sum'")
        #expect(names.count == 1)
        #expect(try names.first?.decode(String.self, at: 0).hasPrefix("ringing_") == true)

        var unprepared = configuration
        unprepared.preparesStatements = false
        let plain = try await PostgresConnection.connect(configuration: unprepared)
        #expect(try await plain.query("SELECT \(2) + 1 AS sum")[0].decode(Int.self, at: 0) == 3)
        #expect(try await plain.query("SELECT count(*)::int8 FROM pg_prepared_statements")[0].decode(Int.self, at: 0) == 0)
        await plain.close()
        await connection.close()
    }

    @Test func thePlanCacheModeReachesTheSession() async throws {
        var generic = configuration
        generic.planCacheMode = .forceGenericPlan
        let connection = try await PostgresConnection.connect(configuration: generic)
        let keys = ["a", "b"]
        for _ in 1...3 {
            _ = try await connection.query("SELECT k FROM unnest(\(keys)::text[]) AS k WHERE k = ANY(\(keys))")
        }
        let plans = try await connection.query(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE 'SELECT k FROM unnest%'")
        #expect(plans.count == 1)
        #expect(try plans.first?.decode(Int.self, at: 0) == 3)
        #expect(try plans.first?.decode(Int.self, at: 1) == 0)

        let planned = try await PostgresConnection.connect(configuration: configuration)
        #expect(try await planned.query("SHOW plan_cache_mode")[0].decode(String.self, at: 0) == "auto")
        await planned.close()
        await connection.close()
    }

    @Test func aStatementInvalidatedByASchemaChangeIsPreparedAfresh() async throws {
        let pool = PostgresPool(configuration: configuration, size: 1)
        try await withTable(pool) { table in
            try await pool.query("INSERT INTO \(identifier: table) VALUES (1, 'a')")
            #expect(try await pool.query("SELECT * FROM \(identifier: table) WHERE id = \(1)").columns.count == 2)
            try await pool.query("ALTER TABLE \(identifier: table) ADD COLUMN extra text")
            // PostgreSQL refuses the old plan once ("cached plan must not change result type") ...
            do {
                _ = try await pool.query("SELECT * FROM \(identifier: table) WHERE id = \(1)")
            } catch let error as PostgresError {
                #expect(error.sqlState == .featureNotSupported, "\(error)")
            }
            // ... and the next run prepares it again and sees the new column.
            #expect(try await pool.query("SELECT * FROM \(identifier: table) WHERE id = \(1)").columns.count == 3)
        }
        await pool.close()
    }

    @Test func transactionsCommitAndRollBack() async throws {
        let pool = PostgresPool(configuration: configuration, size: 2)
        try await withTable(pool) { table in
            try await pool.withTransaction { connection in
                try connection.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(1), \("kept"))")
            }
            struct Abort: Error {}
            await #expect(throws: Abort.self) {
                try await pool.withTransaction { connection in
                    try connection.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(2), \("discarded"))")
                    throw Abort()
                }
            }
            let names = try await pool.query("SELECT name FROM \(identifier: table) ORDER BY id").map {
                try $0.decode(String.self, at: 0)
            }
            #expect(names == ["kept"])
        }
        await pool.close()
    }

    @Test func aUniqueViolationIsReportedAsSuch() async throws {
        let pool = PostgresPool(configuration: configuration, size: 1)
        try await withTable(pool) { table in
            try await pool.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(1), \("alice"))")
            await #expect {
                try await pool.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(2), \("alice"))")
            } throws: { error in
                let error = error as? PostgresError
                return error?.code == .server && error?.sqlState == .uniqueViolation && error?.constraint == "\(table)_name_key"
            }
            // The connection is still good after a server error.
            #expect(try await pool.query("SELECT count(*) FROM \(identifier: table)")[0].decode(Int.self, at: 0) == 1)
        }
        await pool.close()
    }

    @Test func aFailedStatementInsideATransactionRollsItBack() async throws {
        let pool = PostgresPool(configuration: configuration, size: 1)
        try await withTable(pool) { table in
            await #expect(throws: PostgresError.self) {
                try await pool.withTransaction { connection in
                    try connection.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(1), \("a"))")
                    try connection.query("INSERT INTO \(identifier: table) (id, name) VALUES (\(1), \("b"))")
                }
            }
            let count = try await pool.query("SELECT count(*) FROM \(identifier: table)")[0].decode(Int.self, at: 0)
            #expect(count == 0)
        }
        await pool.close()
    }

    @Test func aNotifyIsReceived() async throws {
        let channel = TestEnvironment.uniqueName("ring")
        let listener = PostgresListener(configuration: configuration, channels: [channel])
        let pool = PostgresPool(configuration: configuration, size: 1)
        try await withDeadline(.seconds(60), "a notification") {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await listener.run() }
                var events = listener.events.makeAsyncIterator()
                #expect(await events.next() == .listening)
                try await pool.query("SELECT pg_notify(\(channel), \("deadline:42"))")
                guard case .notification(let notification)? = await events.next() else {
                    Issue.record("no notification")
                    return
                }
                #expect(notification.channel == channel)
                #expect(notification.payload == "deadline:42")
                group.cancelAll()
            }
        }
        await pool.close()
    }
}

/// Stops and starts PostgreSQL: run on its own (`swift test --filter RestartTests`).
@Suite(.serialized) struct PostgresRestartTests {
    let configuration: PostgresConfiguration

    init() throws {
        configuration = try PostgresConfiguration(url: TestEnvironment.databaseURL)
    }

    @Test func thePoolAndTheListenerSurviveAServerRestart() async throws {
        let channel = TestEnvironment.uniqueName("restart")
        let pool = PostgresPool(configuration: configuration, size: 2, acquireTimeout: .seconds(60))
        let listener = PostgresListener(configuration: configuration, channels: [channel])
        try await withDeadline(.seconds(120), "the restart") {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await listener.run() }
                var events = listener.events.makeAsyncIterator()
                #expect(await events.next() == .listening)
                #expect(try await pool.query("SELECT 1")[0].decode(Int.self, at: 0) == 1)

                try StackServer.postgres.stop()
                try StackServer.postgres.start()

                // The pooled connection died with the server: the first query may report the
                // loss, after which the pool opens a new connection.
                var answer: Int?
                for _ in 0..<3 where answer == nil {
                    do {
                        answer = try await pool.query("SELECT 2")[0].decode(Int.self, at: 0)
                    } catch let error as PostgresError where error.isTransient {
                        continue
                    }
                }
                #expect(answer == 2)
                // The listener reconnects on its own and says so, then hears notifications again.
                #expect(await events.next() == .listening)
                try await pool.query("SELECT pg_notify(\(channel), \("after"))")
                guard case .notification(let notification)? = await events.next() else {
                    Issue.record("no notification after the restart")
                    return
                }
                #expect(notification.channel == channel && notification.payload == "after")
                group.cancelAll()
            }
        }
        await pool.close()
    }
}
