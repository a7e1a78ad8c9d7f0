// Round trips counted by the client (issue 17's report): statements sent together are one.
import PostgresClient
import TestSupport
import Testing

@Suite struct RoundTripTests {
    @Test func statementsSentTogetherCountAsOneRoundTrip() async throws {
        let connection = try await PostgresConnection.connect(
            configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL))
        defer { Task { await connection.close() } }
        let processBefore = DatabaseRoundTrips.total
        // Prepared the first time (a round trip per statement), so each is run once beforehand.
        try await connection.pipeline(["SELECT \(1) + 1", "SELECT \(2) + 1", "SELECT \(3) + 1"])
        try await connection.withTransaction { db in
            try db.query("SELECT \(4) + 1")
            try db.queryThenCommit("SELECT \(5) + 1")
        }
        try await connection.query("SELECT \(6) + 1")

        var before = await connection.roundTrips
        try await connection.pipeline(["SELECT \(1) + 1", "SELECT \(2) + 1", "SELECT \(3) + 1"])
        #expect(await connection.roundTrips == before + 1, "three statements in one pipeline")

        before = await connection.roundTrips
        try await connection.query("SELECT \(6) + 1")
        #expect(await connection.roundTrips == before + 1, "one statement alone")

        before = await connection.roundTrips
        try await connection.withTransaction { db in
            try db.query("SELECT \(4) + 1")  // BEGIN goes with it
            try db.queryThenCommit("SELECT \(5) + 1")  // COMMIT goes with it
        }
        #expect(await connection.roundTrips == before + 2, "BEGIN, two statements and COMMIT in two round trips")

        before = await connection.roundTrips
        try await connection.withTransaction { db in try db.query("SELECT \(6) + 1") }
        #expect(await connection.roundTrips == before + 2, "BEGIN with the statement, then COMMIT alone")

        // The process's count includes this connection's (other tests may add to it meanwhile).
        #expect(DatabaseRoundTrips.total - processBefore >= (await connection.roundTrips))
    }
}
