// Arrays whose elements may be NULL, and arrays of times: what a batch's one write sends
// (issue 17).
import Foundation
import PostgresClient
import TestSupport
import Testing

@Suite struct NullableArrayTests {
    @Test func aMissingElementIsAnUnquotedNull() {
        #expect(PostgresNullableArray<String>(["a", nil, "NULL", "q\"b\\"]).postgresText == #"{"a",NULL,"NULL","q\"b\\"}"#)
        #expect(PostgresNullableArray<Int>([]).postgresText == "{}")
        #expect(PostgresNullableArray<Int>.postgresType == .int8Array)
        #expect([Date]().postgresText == "{}")
        #expect([Date].postgresType == .timestamptzArray)
    }

    @Test func nullsAndTimesReachTheServerAsSent() async throws {
        let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
        let when = Date(timeIntervalSince1970: 1_764_009_962.123456)
        let rows = try await pool.query(
            """
            SELECT t, n, s FROM unnest(\(PostgresNullableArray([when, nil]))::timestamptz[],
                                       \(PostgresNullableArray<Int>([nil, 7]))::int8[],
                                       \(PostgresNullableArray<String>(["NULL", nil]))::text[]) WITH ORDINALITY AS u(t, n, s, i)
            ORDER BY i
            """)
        #expect(rows.count == 2)
        #expect(try rows[0].decode(Date?.self, at: 0) == when)
        #expect(try rows[0].decode(Int?.self, at: 1) == nil)
        #expect(try rows[0].decode(String?.self, at: 2) == "NULL")
        #expect(try rows[1].decode(Date?.self, at: 0) == nil)
        #expect(try rows[1].decode(Int?.self, at: 1) == 7)
        #expect(try rows[1].decode(String?.self, at: 2) == nil)
        let times = try await pool.query("SELECT \([when, when.addingTimeInterval(1)])::timestamptz[]")[0]
        #expect(try times.decode([Date].self, at: 0) == [when, when.addingTimeInterval(1)])
        await pool.close()
    }

    @Test func quotesBackslashesAndOtherCharactersReachTheServerAsSent() async throws {
        let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
        let texts = [
            #"{"body":"say \"hi\"","path":"C:\\x"}"#, "\"", "\\", "", "ünï \"cödé\" 📞\\", "NULL",
            String(repeating: "a\"b", count: 500),
        ]
        let back = try await pool.query("SELECT \(texts)::text[]")[0].decode([String].self, at: 0)
        #expect(back == texts)
        let lengths = try await pool.query(
            "SELECT array_agg(octet_length(t) ORDER BY n) FROM unnest(\(texts)::text[]) WITH ORDINALITY AS u(t, n)")
        #expect(try lengths[0].decode([Int].self, at: 0) == texts.map(\.utf8.count))
        await pool.close()
    }
}
