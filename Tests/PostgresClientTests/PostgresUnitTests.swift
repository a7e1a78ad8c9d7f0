// Unit tests: URL parsing, value conversions and query building, without a server.
import Foundation
import Testing

@testable import PostgresClient

@Suite struct PostgresConfigurationTests {
    @Test func parsesEveryPart() throws {
        let c = try PostgresConfiguration(
            url: "postgres://ringing:p%40ss@db.example:6543/calls?sslmode=disable&application_name=cc&connect_timeout=3")
        #expect(c.host == "db.example")
        #expect(c.port == 6543)
        #expect(c.user == "ringing")
        #expect(c.password == "p@ss")
        #expect(c.database == "calls")
        #expect(c.applicationName == "cc")
        #expect(c.connectTimeout == .seconds(3))
        #expect(c.parameters == ["sslmode": "disable"])
        #expect(c.redactedURL == "postgres://ringing@db.example:6543/calls")
        #expect(c.libpqParameters.contains { $0 == ("sslmode", "disable") })
        #expect(!c.libpqParameters.contains { $0.0 == "sslmode" && $0.1 == "prefer" })
    }

    @Test func preparedStatementsAreOnUnlessTurnedOff() throws {
        #expect(try PostgresConfiguration(url: "postgres://h/db").preparesStatements)
        let off = try PostgresConfiguration(url: "postgres://h/db?prepared_statements=false")
        #expect(!off.preparesStatements)
        // Ours, not a libpq parameter.
        #expect(!off.libpqParameters.contains { $0.0 == "prepared_statements" })
    }

    @Test func aPlanCacheModeOutsideTheThreeIsRefusedNamingThem() {
        #expect {
            try PostgresConfiguration(url: "postgres://h/db?plan_cache_mode=sometimes")
        } throws: { error in
            "\(error)".contains("'plan_cache_mode' must be one of auto, force_generic_plan, force_custom_plan, not 'sometimes'")
        }
    }

    @Test func planCacheModeIsAutoUnlessTheURLSaysOtherwise() throws {
        func options(_ url: String) throws -> String? {
            try PostgresConfiguration(url: url).libpqParameters.first { $0.0 == "options" }?.1
        }
        #expect(try options("postgres://h/db")?.hasSuffix("-c plan_cache_mode=auto") == true)
        #expect(
            try options("postgres://h/db?plan_cache_mode=force_generic_plan")?.hasSuffix(
                "-c plan_cache_mode=force_generic_plan") == true)
        #expect(
            try !PostgresConfiguration(url: "postgres://h/db?plan_cache_mode=auto").libpqParameters.contains {
                $0.0 == "plan_cache_mode"
            })
    }

    @Test(arguments: [
        ("mysql://x", "scheme 'mysql'"),
        ("postgres://h:0/db", "port 0"),
        ("postgres://h/db?connect_timeout=x", "'connect_timeout'"),
        ("postgres://h/db?prepared_statements=maybe", "'prepared_statements'"),
        ("not a url at all", "not a URL"),
    ])
    func rejectsBadURLsNamingThePart(input: String, expected: String) {
        #expect {
            try PostgresConfiguration(url: input)
        } throws: { error in
            guard let error = error as? PostgresError else { return false }
            return error.code == .invalidURL && error.message.contains(expected)
        }
    }
}

@Suite struct PostgresValueTests {
    @Test func interpolatedValuesBecomeBindParameters() {
        let id = UUID()
        let name = "Robert'); DROP TABLE calls;--"
        let limit: Int? = nil
        let query: PostgresQuery = "SELECT * FROM calls WHERE id = \(id) AND name = \(name) LIMIT \(limit)"
        #expect(query.sql == "SELECT * FROM calls WHERE id = $1 AND name = $2 LIMIT $3")
        #expect(query.binds.map(\.type) == [.uuid, .text, .int8])
        #expect(query.binds.map(\.text) == [id.uuidString.lowercased(), name, nil])
        let create: PostgresQuery = "CREATE DATABASE \(identifier: "we\"ird")"
        #expect(create.sql == "CREATE DATABASE \"we\"\"ird\"")
        #expect(create.binds.isEmpty)
    }

    @Test func datesRoundTripThroughTheTextFormat() throws {
        let date = Date(timeIntervalSince1970: 1_764_009_962.123456)
        #expect(date.postgresText == "2025-11-24T18:46:02.123456Z")
        let parsed = try #require(Date(postgresText: "2025-11-24 18:46:02.123456+00"))
        #expect(abs(parsed.timeIntervalSince1970 - date.timeIntervalSince1970) < 0.000001)
        #expect(Date(postgresText: "2025-11-24 20:46:02+02")?.timeIntervalSince1970 == 1_764_009_962)
        #expect(Date(postgresText: "1969-12-31 23:59:59.5+00")?.timeIntervalSince1970 == -0.5)
        #expect(Date(timeIntervalSince1970: -0.5).postgresText == "1969-12-31T23:59:59.500000Z")
        #expect(Date(postgresText: "2025-11-24 18:46:02.1234567+00") != nil)
        #expect(Date(postgresText: "yesterday") == nil)
    }

    @Test func scalarsParseTheServersOutput() {
        #expect(Bool(postgresText: "t") == true)
        #expect(Bool(postgresText: "f") == false)
        #expect(Bool(postgresText: "yes") == nil)
        #expect(Int(postgresText: "-42") == -42)
        #expect(Int(postgresText: "4.2") == nil)
        #expect(Data(postgresText: "\\x00ff10") == Data([0, 255, 16]))
        #expect(Data([0, 255, 16]).postgresText == "\\x00ff10")
        #expect(Data(postgresText: "00ff") == nil)
        let id = UUID()
        #expect(UUID(postgresText: id.uuidString.lowercased()) == id)
    }

    @Test func arraysQuoteEveryElement() {
        let values = ["a", "b,c", "d\"e", "f\\g", "{h}", "NULL", ""]
        #expect(values.postgresText == #"{"a","b,c","d\"e","f\\g","{h}","NULL",""}"#)
        #expect([String](postgresText: values.postgresText) == values)
        #expect([String](postgresText: "{}") == [])
        #expect([String](postgresText: "{plain,words}") == ["plain", "words"])
        #expect([String](postgresText: "{a,NULL}") == nil)
        #expect([Int](postgresText: "{1,2,3}") == [1, 2, 3])
        // Escaped byte by byte: characters beyond ASCII and JSON bodies come through whole.
        let wide = ["é☎️ call", #"{"call":{"id":"a\"b","tags":["x"]}}"#]
        #expect([String](postgresText: wide.postgresText) == wide)
    }

    @Test func rowsDecodeByPositionNameAndTuple() throws {
        let row = PostgresRow(columns: ["id", "name", "ended_at"], cells: ["7", "alice", nil])
        #expect(try row.decode(Int.self, at: 0) == 7)
        #expect(try row.decode(String.self, named: "name") == "alice")
        #expect(try row.decode(Date?.self, named: "ended_at") == nil)
        let (id, name, endedAt) = try row.decodeColumns((Int, String, Date?).self)
        #expect(id == 7 && name == "alice" && endedAt == nil)
        #expect(throws: PostgresError.self) { try row.decode(Date.self, named: "ended_at") }
        #expect { try row.decode(Int.self, named: "name") } throws: { "\($0)".contains("'name'") }
        #expect { try row.decode(Int.self, named: "nope") } throws: { "\($0)".contains("no column 'nope'") }
    }

    @Test func sqlStatesClassifyTransientFailures() {
        #expect(SQLState.serializationFailure.isTransient)
        #expect(SQLState("08006").isConnectionFailure)
        #expect(SQLState.adminShutdown.isConnectionFailure)
        #expect(!SQLState.uniqueViolation.isTransient)
    }
}

@Suite struct SequentialScanSettingTests {
    private func options(_ url: String) throws -> String? {
        try PostgresConfiguration(url: url).libpqParameters.first { $0.0 == "options" }?.1
    }

    @Test func enableSeqscanIsTheServersUnlessTheURLSaysOtherwise() throws {
        #expect(try PostgresConfiguration(url: "postgres://h/db").sequentialScans == nil)
        #expect(try options("postgres://h/db")?.contains("enable_seqscan") == false)
        #expect(try PostgresConfiguration(url: "postgres://h/db?enable_seqscan=off").sequentialScans == false)
        // The penalty that steers plans away from a sequential scan would make one that
        // remains JIT-compiled on every execution.
        #expect(try options("postgres://h/db?enable_seqscan=off")?.hasSuffix("-c enable_seqscan=off -c jit=off") == true)
        #expect(try options("postgres://h/db?enable_seqscan=ON")?.hasSuffix("-c enable_seqscan=on") == true)
        #expect(throws: PostgresError.self) { try PostgresConfiguration(url: "postgres://h/db?enable_seqscan=sometimes") }
        do {
            _ = try PostgresConfiguration(url: "postgres://h/db?enable_seqscan=sometimes")
        } catch {
            #expect("\(error)".contains("'enable_seqscan' must be on or off, not 'sometimes'"))
        }
    }
}
