// Ring receipts and heartbeats (DESIGN §10) over the real broker and database: what changes,
// what is published, and what is refused. The sweeps that end calls run in
// LivenessCrashSafetyTests, alone, because they need short timeouts on every instance.
import CallRules
import Foundation
import PostgresClient
import RingingContract
import TestSupport
import Testing

@Suite struct RingReceiptFlowTests {
    @Test func theFirstReceiptTellsTheCallerAndLaterOnesChangeNothing() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, timeout: 60)
            try await bob.expect(.incomingCallReceived, call.sessionID)

            let first = try await s.act(.ringing, bob, call.sessionID, ["device_id": "bobs-phone"])
            #expect(first.ok && first.call == nil, "a receipt is answered {\"ok\":true}")
            let told = try await alice.expect(.outgoingCallRinging, call.sessionID)
            #expect(told.deviceID == "bobs-phone")
            #expect(told.call.sequence == 2)
            let rangAt = try #require(told.call.participant(bob.uid)?.rangAt)
            try await s.expectEvent(.ringing, call.sessionID)

            // A second receipt, from another of bob's devices: ok, and nothing changes.
            let second = try await s.act(.ringing, bob, call.sessionID, ["device_id": "bobs-tablet"])
            #expect(second.ok)
            let after = try Scenario.call(try await s.act(.get, alice, call.sessionID))
            #expect(after.sequence == 2)
            #expect(after.participant(bob.uid)?.rangAt == rangAt)

            // Answered: a late receipt is ok and changes nothing either.
            #expect(try Scenario.call(try await s.act(.accept, bob, call.sessionID)).status == .ongoing)
            let late = try await s.act(.ringing, bob, call.sessionID, ["device_id": "bobs-watch"])
            #expect(late.ok)
            #expect(try Scenario.call(try await s.act(.get, bob, call.sessionID)).sequence == 3)

            // The caller's devices never ring; strangers are refused.
            #expect(try await s.act(.ringing, alice, call.sessionID).error?.code == .forbidden)
            let carol = try await s.party("carol")
            #expect(try await s.act(.ringing, carol, call.sessionID).error?.code == .forbidden)
            #expect(try await s.act(.ringing, bob, UUID()).error?.code == .notFound)

            // A barrier: the end's event comes after anything the receipts could have published.
            _ = try Scenario.call(try await s.act(.end, alice, call.sessionID))
            try await s.expectEvent(.ended, call.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.ringing", "call.accepted", "call.ended"])
            #expect(alice.received(.outgoingCallRinging, call.sessionID).count == 1)
        }
    }

    @Test func aReceiptAfterTheAnswerPublishesNothing() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob)
            try await bob.expect(.incomingCallReceived, call.sessionID)
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID))
            #expect(try await s.act(.ringing, bob, call.sessionID).ok)
            let ended = try Scenario.call(try await s.act(.end, bob, call.sessionID))
            #expect(ended.sequence == 3, "initiated, accepted, ended: the receipt was no change")
            #expect(ended.participant(bob.uid)?.rangAt == nil)
            try await s.expectEvent(.ended, call.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.accepted", "call.ended"])
            #expect(alice.received(.outgoingCallRinging, call.sessionID).isEmpty)
        }
    }

    @Test func heartbeatsRefreshAParticipationAndNothingElse() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob)
            #expect(try await s.act(.heartbeat, bob, call.sessionID).error?.code == .invalidState, "bob has not answered")
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID))

            let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
            defer { Task { await pool.close() } }
            func lastSeen() async throws -> Date {
                try await pool.query(
                    "SELECT last_seen_at FROM call_participants WHERE session_id = \(call.sessionID) AND uid = \(bob.uid)"
                )[0].decode(Date.self, at: 0)
            }
            let before = try await lastSeen()
            // The same message_id twice: heartbeats are not idempotency records, each one counts.
            let beat = try await s.request(
                .heartbeat, as: bob, ["session_id": .string(call.sessionID.uuidString)], messageID: "beat")
            #expect(beat.ok && beat.call == nil)
            let once = try await lastSeen()
            #expect(once > before)
            _ = try await s.request(.heartbeat, as: bob, ["session_id": .string(call.sessionID.uuidString)], messageID: "beat")
            #expect(try await lastSeen() > once)
            let recorded = try await pool.query(
                "SELECT count(*)::int8 FROM processed_requests WHERE actor = \(bob.uid) AND request_type = 'call.heartbeat'")
            #expect(try recorded[0].decode(Int.self, at: 0) == 0)

            // A request naming the call counts as a sign of life too.
            let beforeGet = try await lastSeen()
            _ = try Scenario.call(try await s.act(.get, bob, call.sessionID))
            #expect(try await lastSeen() > beforeGet)

            #expect(try Scenario.call(try await s.act(.get, alice, call.sessionID)).sequence == 2, "no sequence change")
            let carol = try await s.party("carol")
            #expect(try await s.act(.heartbeat, carol, call.sessionID).error?.code == .forbidden)
            _ = try Scenario.call(try await s.act(.end, alice, call.sessionID))
            let over = try await s.act(.heartbeat, bob, call.sessionID)
            #expect(over.error?.code == .invalidState && over.error?.status == .ended)
            #expect(try await s.request(.heartbeat, as: bob, ["session_id": "nope"]).error?.field == "session_id")
        }
    }
}
