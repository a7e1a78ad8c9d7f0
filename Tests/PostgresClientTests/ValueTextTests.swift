// Times and UUIDs in PostgreSQL's text input format, written byte by byte (issue 17): the
// same text as before, and the same values on the server.
import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite struct ValueTextTests {
    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00.000000Z"),
        (1_700_000_000.123456, "2023-11-14T22:13:20.123456Z"),
        (-1.5, "1969-12-31T23:59:58.500000Z"),
        (951_782_400.000001, "2000-02-29T00:00:00.000001Z"),
        (253_402_300_799.5, "9999-12-31T23:59:59.500000Z"),
        (-62_135_596_800.0, "0001-01-01T00:00:00.000000Z"),
    ])
    func aTimeIsWrittenInUTCWithMicroseconds(seconds: Double, text: String) {
        #expect(Date(timeIntervalSince1970: seconds).postgresText == text)
    }

    @Test func aYearBeyondFourDigitsIsStillWritten() {
        // 10000-01-01: outside the fast path, written as before.
        #expect(Date(timeIntervalSince1970: 253_402_300_800).postgresText == "10000-01-01T00:00:00.000000Z")
    }

    @Test func aUUIDIsWrittenLowercaseWithHyphens() {
        for _ in 0..<1000 {
            let uuid = UUID()
            #expect(uuid.postgresText == uuid.uuidString.lowercased())
        }
        #expect(UUID(uuidString: "00000000-0000-0000-0000-00000000000F")!.postgresText == "00000000-0000-0000-0000-00000000000f")
    }

    @Test func timesAndUUIDsInArraysReachTheServerAsSent() async throws {
        let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
        // 1906 to 2096, with microseconds.
        let times = (0..<200).map { Date(timeIntervalSince1970: -2_000_000_000 + Double($0) * 20_000_000.123_457) }
        let uuids = (0..<200).map { _ in UUID() }
        let rows = try await pool.query(
            """
            SELECT t, u::text, to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            FROM unnest(\(times)::timestamptz[], \(uuids)::uuid[]) WITH ORDINALITY AS x(t, u, i) ORDER BY i
            """)
        #expect(rows.count == 200)
        for (index, row) in rows.enumerated() {
            #expect(abs(try row.decode(Date.self, at: 0).timeIntervalSince(times[index])) < 0.000_001)
            #expect(try row.decode(String.self, at: 1) == uuids[index].postgresText)
            #expect(try row.decode(String.self, at: 2) == times[index].postgresText)
        }
        await pool.close()
    }
}
