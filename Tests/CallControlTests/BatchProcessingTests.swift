import CallRules
import CallStore
import Foundation
import PostgresClient
import RingingAuth
import RingingContract
import TestSupport
import Testing

// A batch applied in one transaction (its calls locked and read once at the start, then kept
// in memory) answers exactly as the same requests applied one per transaction: the same
// codes, the same calls left behind, the same messages in the same order (issue 17).
@testable import CallControl

@Suite struct BatchProcessingTests {
    /// Users of one run, fresh each time, so that runs do not meet in the database.
    struct Cast {
        let tag = String(UUID().uuidString.prefix(8)).lowercased()
        func uid(_ name: String) -> String { "\(name)-\(tag)" }
    }

    static func job(_ type: RequestType, _ user: String, _ fields: [String: String], messageID: String = UUID().uuidString)
        throws -> Job
    {
        var body = fields
        body["auth_token"] = "unused"
        let request = try RequestParser.parse(
            routingKey: type.rawValue, body: try JSONSerialization.data(withJSONObject: body))
        return Job(messageID: messageID, request: request, user: AuthenticatedUser(uid: user, isService: false))
    }

    static func initiate(_ from: String, _ to: String) throws -> Job {
        try job(.initiate, from, ["receiver_id": to, "receiver_type": "user", "call_type": "audio"])
    }

    static func connect() async throws -> PostgresConnection {
        let db = try await PostgresConnection.connect(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL))
        try await db.migrate()
        return db
    }

    /// Runs `batches`, each in a transaction of its own.
    static func apply(_ db: PostgresConnection, _ batches: [[Job]]) async throws -> [JobOutcome] {
        var outcomes: [JobOutcome] = []
        for batch in batches {
            outcomes += try await db.withTransaction { db in try RequestProcessor.process(db, batch) }
        }
        return outcomes
    }

    /// What a run leaves behind that does not depend on ids or clocks: each outcome's code,
    /// each message's routing key with users named by role, each call's status and its
    /// participants' statuses.
    static func summary(_ db: PostgresConnection, _ outcomes: [JobOutcome], _ cast: Cast) async throws -> [String] {
        func anonymous(_ text: String) -> String { text.replacingOccurrences(of: "-\(cast.tag)", with: "") }
        let lines = outcomes.map { outcome in
            "\(outcome.code): " + outcome.outbox.map { anonymous($0.routingKey) }.joined(separator: " ")
        }
        let sessions = Set(outcomes.compactMap(\.sessionID))
        let calls = try await db.withTransaction { db in try CallStore.readCalls(db, Array(sessions)) }
        let callLines = calls.values.map { call in
            "\(anonymous(call.initiator))→\(anonymous(call.receiverID)) \(call.status.rawValue) "
                + call.participants.map { "\(anonymous($0.uid)):\($0.status.rawValue)" }.joined(separator: " ")
        }
        return lines + callLines.sorted()
    }

    /// The jobs of a scenario for one cast, given a way to learn a call's id from an outcome.
    typealias Scenario = (Cast, (Int) -> String) throws -> [Job]

    /// Runs `first` (setting the calls up, one per transaction), then `jobs` once as one
    /// batch and once one per transaction, each with its own cast; both must read the same.
    static func expectSameAnswers(setup: Int, _ scenario: Scenario) async throws {
        let db = try await connect()
        var summaries: [[String]] = []
        for batched in [true, false] {
            let cast = Cast()
            var outcomes: [JobOutcome] = []
            let id: (Int) -> String = { outcomes[$0].sessionID!.uuidString.lowercased() }
            // The setup is the scenario's first `setup` jobs; the rest come as one batch or one by one.
            let setupJobs = try scenario(cast, { _ in UUID().uuidString }).prefix(setup)
            outcomes += try await apply(db, setupJobs.map { [$0] })
            let rest = Array(try scenario(cast, id).dropFirst(setup))
            outcomes += try await apply(db, batched ? [rest] : rest.map { [$0] })
            summaries.append(try await summary(db, outcomes, cast))
        }
        #expect(summaries[0] == summaries[1], "one batch (first) against one request per transaction (second)")
        await db.close()
    }

    @Test func aWholeCallInOneBatchAnswersAsOneByOne() async throws {
        try await Self.expectSameAnswers(setup: 1) { cast, id in
            let (alice, bob) = (cast.uid("alice"), cast.uid("bob"))
            let accept = UUID().uuidString
            return [
                try Self.initiate(alice, bob),
                try Self.job(.ringing, bob, ["session_id": id(0), "device_id": "phone"]),
                try Self.job(.accept, bob, ["session_id": id(0), "device_id": "phone"], messageID: accept),
                try Self.job(.get, alice, ["session_id": id(0)]),
                try Self.job(.heartbeat, alice, ["session_id": id(0)]),
                try Self.job(.accept, bob, ["session_id": id(0), "device_id": "phone"], messageID: accept),
                try Self.job(.end, alice, ["session_id": id(0)]),
                try Self.job(.get, bob, ["session_id": id(0)]),
                try Self.job(.end, bob, ["session_id": id(0)]),
            ]
        }
    }

    @Test func glareBusyAndUnknownCallsInOneBatchAnswerAsOneByOne() async throws {
        try await Self.expectSameAnswers(setup: 1) { cast, id in
            let (alice, bob, carol, dave) = (cast.uid("alice"), cast.uid("bob"), cast.uid("carol"), cast.uid("dave"))
            return [
                try Self.initiate(carol, dave),
                // Glare both ways inside the batch, a caller already busy, a call that does not exist.
                try Self.initiate(alice, bob),
                try Self.initiate(bob, alice),
                try Self.initiate(carol, alice),
                try Self.job(.accept, dave, ["session_id": id(0)]),
                try Self.job(.reject, dave, ["session_id": UUID().uuidString, "status": "rejected"]),
                try Self.job(.reject, carol, ["session_id": id(0), "status": "cancelled"]),
                try Self.initiate(dave, carol),
            ]
        }
    }

    @Test func callsFromBeforeTheBatchMakeGlareAndBusyAsOneByOne() async throws {
        try await Self.expectSameAnswers(setup: 2) { cast, id in
            let (alice, bob, carol, dave, erin) = (
                cast.uid("alice"), cast.uid("bob"), cast.uid("carol"), cast.uid("dave"), cast.uid("erin")
            )
            return [
                try Self.initiate(alice, bob),
                try Self.initiate(carol, dave),
                // Glare with a call already ringing, a caller busy in it, a caller freed inside the batch.
                try Self.initiate(bob, alice),
                try Self.initiate(dave, erin),
                try Self.initiate(carol, alice),
                try Self.job(.reject, carol, ["session_id": id(1), "status": "cancelled"]),
                try Self.initiate(erin, carol),
                try Self.initiate(carol, bob),
            ]
        }
    }
}

extension PostgresConnection {
    fileprivate func migrate() throws { try Migrations.apply(self) }
}
