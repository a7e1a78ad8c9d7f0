// A batch writes each call it changed once, in its final state, in one statement with its
// other writes; the one-active-call index still decides as it would with a write per
// decision (issue 17).
import CallRules
import CallStore
import Foundation
import PostgresClient
import Testing

@testable import CallControl

@Suite struct BatchWriteTests {
    typealias B = BatchProcessingTests

    @Test func aUserWhoLeavesOneCallAndStartsAnotherInOneBatchAnswersAsOneByOne() async throws {
        try await B.expectSameAnswers(setup: 3) { cast, id in
            let (alice, bob, carol, dave) = (cast.uid("alice"), cast.uid("bob"), cast.uid("carol"), cast.uid("dave"))
            return [
                try B.initiate(alice, bob),
                try B.job(.accept, bob, ["session_id": id(0), "device_id": "phone"]),
                try B.initiate(carol, dave),
                // Alice and Bob leave their call and each starts another; Dave cancels nothing
                // but is freed by Carol's cancel and calls Alice, now busy ringing Carol.
                try B.job(.end, alice, ["session_id": id(0)]),
                try B.job(.reject, carol, ["session_id": id(2), "status": "cancelled"]),
                try B.initiate(alice, carol),
                try B.initiate(bob, dave),
                try B.initiate(dave, alice),
                try B.job(.heartbeat, bob, ["session_id": id(0)]),
            ]
        }
    }

    @Test func freeingAUserBeforeTheyAcceptAnotherCallAnswersAsOneByOne() async throws {
        try await B.expectSameAnswers(setup: 2) { cast, id in
            let (carol, dave, erin) = (cast.uid("carol"), cast.uid("dave"), cast.uid("erin"))
            return [
                try B.initiate(erin, carol),
                try B.initiate(carol, dave),
                try B.job(.reject, carol, ["session_id": id(1), "status": "cancelled"]),
                try B.job(.accept, carol, ["session_id": id(0), "device_id": "phone"]),
            ]
        }
    }

    /// Carol rings Dave (so she is active) and is rung by Erin. Accepting Erin's call first
    /// meets the index, as it would written on its own: the batch fails whole (and is then
    /// applied one request at a time), though its next request would have freed her.
    @Test func acceptingWhileActiveElsewhereFailsTheBatchEvenIfALaterRequestFreesTheUser() async throws {
        let db = try await B.connect()
        let cast = B.Cast()
        let (carol, dave, erin) = (cast.uid("carol"), cast.uid("dave"), cast.uid("erin"))
        let setup = try await B.apply(db, [[try B.initiate(erin, carol)], [try B.initiate(carol, dave)]])
        let (rung, ringing) = (setup[0].sessionID!, setup[1].sessionID!)
        let accept = try B.job(.accept, carol, ["session_id": rung.uuidString, "device_id": "phone"])
        let cancel = try B.job(.reject, carol, ["session_id": ringing.uuidString, "status": "cancelled"])
        for batch in [[accept, cancel], [accept]] {
            let error = await #expect(throws: PostgresError.self) {
                try await db.withTransaction { db in _ = try RequestProcessor.process(db, batch) }
            }
            #expect(error?.sqlState == .uniqueViolation, "\(batch.count) request(s)")
        }
        let calls = try await db.withTransaction { db in try CallStore.readCalls(db, [rung, ringing]) }
        #expect(calls[rung]?.status == .initiated)
        #expect(calls[ringing]?.status == .initiated)
        await db.close()
    }

    /// The batch reads the clock and its idempotency records with its calls, after the locks:
    /// a request applied by an earlier batch still gets its first reply and changes nothing.
    @Test func aRequestRepeatedInALaterBatchGetsItsFirstReply() async throws {
        let db = try await B.connect()
        let cast = B.Cast()
        let (alice, bob) = (cast.uid("alice"), cast.uid("bob"))
        let initiate = try B.initiate(alice, bob)
        let first = try await B.apply(db, [[initiate]])[0]
        let id = first.sessionID!.uuidString
        let accept = try B.job(.accept, bob, ["session_id": id, "device_id": "phone"])
        let again = try await B.apply(db, [[initiate, accept, accept]])
        #expect(again.map(\.code) == ["duplicate", "ok", "duplicate"])
        #expect(again[0].reply == first.reply)
        #expect(again[0].outbox.isEmpty && again[2].outbox.isEmpty)
        let calls = try await db.withTransaction { db in try CallStore.readCalls(db, [first.sessionID!]) }
        #expect(calls.count == 1)
        #expect(calls.values.first?.status == .ongoing)
        await db.close()
    }

    /// A call answered, kept alive and ended in one batch is one row update and one update per
    /// participant, not one per request.
    @Test func aCallChangedSeveralTimesInOneBatchIsWrittenOnce() async throws {
        let db = try await B.connect()
        let cast = B.Cast()
        let (alice, bob) = (cast.uid("alice"), cast.uid("bob"))
        let setup = try await B.apply(db, [[try B.initiate(alice, bob)]])
        let id = setup[0].sessionID!.uuidString
        let batch = [
            try B.job(.ringing, bob, ["session_id": id, "device_id": "phone"]),
            try B.job(.accept, bob, ["session_id": id, "device_id": "phone"]),
            try B.job(.heartbeat, alice, ["session_id": id]),
            try B.job(.end, alice, ["session_id": id]),
        ]
        let (outcomes, before, after) = try await db.withTransaction { db in
            let before = try Self.written(db)
            return (try RequestProcessor.process(db, batch), before, try Self.written(db))
        }
        var counts: [String: [Int]] = [:]
        for (table, values) in after { counts[table] = zip(values, before[table] ?? [0, 0]).map { $0 - $1 } }
        #expect(outcomes.map(\.code) == ["ok", "ok", "ok", "ok"])
        #expect(counts["calls"] == [0, 1], "calls: rows inserted, updated")
        #expect(counts["call_participants"] == [0, 2], "participants: rows inserted, updated")
        let call = try await db.withTransaction { db in try CallStore.readCalls(db, [setup[0].sessionID!]) }.values.first
        #expect(call?.status == .ended)
        #expect(call?.participants.map(\.status) == [.left, .left])
        #expect(call?.participants.first { $0.uid == bob }?.rangAt != nil)
        await db.close()
    }

    // The statistics a backend has not reported yet, earlier transactions' included: the
    // batch's writes are the difference.
    static func written(_ db: isolated PostgresConnection) throws -> [String: [Int]] {
        var counts: [String: [Int]] = [:]
        for row in try db.query(
            """
            SELECT relname::text, n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables
            WHERE relname IN ('calls', 'call_participants')
            """)
        {
            counts[try row.decode(String.self, at: 0)] = [try row.decode(Int.self, at: 1), try row.decode(Int.self, at: 2)]
        }
        return counts
    }
}
