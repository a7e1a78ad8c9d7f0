// The seed's ringing flows end to end, over the real broker and database.
import CallRules
import Foundation
import RingingContract
import TestSupport
import Testing

@Suite struct FlowTests {
    @Test func initiateAcceptEndWithHistory() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, type: .video, timeout: 30)
            #expect(call.status == .initiated)
            #expect(call.initiator == alice.uid && call.receiverID == bob.uid)
            #expect(call.expiresAt.timeIntervalSince(call.initiatedAt) == 30)

            let incoming = try await bob.expect(.incomingCallReceived, call.sessionID)
            #expect(incoming.recipient == bob.uid)
            #expect(incoming.call.callType == .video)

            let accepted = try Scenario.call(try await s.act(.accept, bob, call.sessionID, ["device_id": "bob-phone"]))
            #expect(accepted.status == .ongoing)
            try await alice.expect(.outgoingCallAccepted, call.sessionID)
            let elsewhere = try await bob.expect(.answeredElsewhere, call.sessionID)
            #expect(elsewhere.deviceID == "bob-phone")

            let ended = try Scenario.call(try await s.act(.end, alice, call.sessionID))
            #expect(ended.status == .ended)
            #expect(ended.endedBy == alice.uid)
            try await bob.expect(.callEnded, call.sessionID)
            #expect(alice.received(.callEnded, call.sessionID).isEmpty, "the ender is not told")

            let history = try await s.request(.history, as: bob)
            let row = try #require(history.calls?.first { $0.sessionID == call.sessionID })
            #expect(row.status == .ended)
            #expect(row.answeredAt != nil && row.endedAt != nil)
            #expect(row.durationSeconds == Int(row.endedAt!.timeIntervalSince(row.answeredAt!)))
            #expect(row.participant(bob.uid)?.status == .left)

            try await s.expectEvent(.ended, call.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.accepted", "call.ended"])
            // At least once: a consumer deduplicates on event_id, then sees each sequence once.
            let unique = Dictionary(
                s.events.events.filter { $0.call.sessionID == call.sessionID }.map { ($0.eventID, $0.sequence) }
            ) { a, _ in a }
            #expect(unique.values.sorted() == [1, 2, 3])
        }
    }

    @Test func rejectCancelAndBusy() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")

            let rejected = try await s.call(alice, bob)
            try await bob.expect(.incomingCallReceived, rejected.sessionID)
            let reply = try Scenario.call(try await s.act(.reject, bob, rejected.sessionID, ["status": "rejected"]))
            #expect(reply.status == .rejected)
            let told = try await alice.expect(.outgoingCallRejected, rejected.sessionID)
            #expect(told.call.status == .rejected)

            let cancelled = try await s.call(alice, bob)
            try await bob.expect(.incomingCallReceived, cancelled.sessionID)
            #expect(
                try Scenario.call(try await s.act(.reject, alice, cancelled.sessionID, ["status": "cancelled"])).status
                    == .cancelled)
            try await bob.expect(.incomingCallCanceled, cancelled.sessionID)

            let busy = try await s.call(alice, bob)
            #expect(try Scenario.call(try await s.act(.reject, bob, busy.sessionID, ["status": "busy"])).status == .busy)
            #expect(try await alice.expect(.outgoingCallRejected, busy.sessionID).call.status == .busy)
        }
    }

    @Test func theServerDetectsBusyAndCallerBusy() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let carol = try await s.party("carol")
            let call = try await s.call(alice, bob)
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID))

            // bob is in an ongoing call: carol's call ends at once as busy, bob is not rung.
            let toBusy = try await s.call(carol, bob)
            #expect(toBusy.status == .busy)
            #expect(try await carol.expect(.outgoingCallRejected, toBusy.sessionID).call.status == .busy)
            #expect(bob.received(.incomingCallReceived, toBusy.sessionID).isEmpty)

            // alice, in that call, cannot place another one.
            let second = try await s.request(
                .initiate, as: alice, ["receiver_id": .string(carol.uid), "receiver_type": "user", "call_type": "audio"])
            #expect(second.error?.code == .callerBusy)

            let active = try await s.request(.active, as: bob)
            #expect(active.call?.sessionID == call.sessionID)
            _ = try await s.act(.end, bob, call.sessionID)
            #expect(try await s.request(.active, as: bob).call == nil)
        }
    }

    @Test func glareAcceptsTheRingingCallInstead() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let aliceToBob = try await s.call(alice, bob)
            let bobToAlice = try await s.call(bob, alice)
            #expect(bobToAlice.sessionID == aliceToBob.sessionID, "bob's request returns alice's call")
            #expect(bobToAlice.status == .ongoing)
            try await alice.expect(.outgoingCallAccepted, aliceToBob.sessionID)
        }
    }

    @Test func aShortTimeoutEndsUnansweredExactlyOnce() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, timeout: 5)
            let rejected = try await alice.expect(.outgoingCallRejected, call.sessionID, timeout: .seconds(60))
            #expect(rejected.call.status == .unanswered)
            try await bob.expect(.incomingCallCanceled, call.sessionID)
            // A later change of alice's (a new call) is a barrier: everything about the first
            // call was published before it.
            let barrier = try await s.call(alice, bob)
            try await s.expectEvent(.initiated, barrier.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.unanswered"])
            #expect(alice.received(.outgoingCallRejected, call.sessionID).count == 1)
            // And an accept now is too late.
            let late = try await s.act(.accept, bob, call.sessionID)
            #expect(late.error?.code == .invalidState)
            #expect(late.error?.status == .unanswered)
        }
    }

    @Test func theDefaultTimeoutIs45Seconds() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob)
            #expect(call.expiresAt.timeIntervalSince(call.initiatedAt) == 45)
            let rejected = try await alice.expect(.outgoingCallRejected, call.sessionID, timeout: .seconds(90))
            #expect(rejected.call.status == .unanswered)
            #expect(rejected.occurredAt >= call.expiresAt)
            let barrier = try await s.call(alice, bob)
            try await s.expectEvent(.initiated, barrier.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.unanswered"])
        }
    }

    @Test func multiDeviceAnswerStopsTheOtherDevices() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob)
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID, ["device_id": "phone"]))
            let elsewhere = try await bob.expect(.answeredElsewhere, call.sessionID)
            #expect(elsewhere.deviceID == "phone")
            let late = try await s.act(.accept, bob, call.sessionID, ["device_id": "tablet"])
            #expect(late.error?.code == .invalidState)
            #expect(late.error?.status == .ongoing)

            _ = try Scenario.call(try await s.act(.end, alice, call.sessionID))
            let another = try await s.call(alice, bob)
            _ = try await s.act(.reject, bob, another.sessionID, ["status": "rejected", "device_id": "watch"])
            #expect(try await bob.expect(.rejectedElsewhere, another.sessionID).deviceID == "watch")
        }
    }

    @Test func aGroupRingsEveryMemberWithJoinLeaveRejectAndMissed() async throws {
        try await Scenario.run { s in
            let service = try await s.party("svc")
            let serviceToken = try await s.auth.mint(uid: service.uid, service: true)
            var members: [Party] = []
            for name in ["alice", "bob", "carol", "dave", "erin"] { members.append(try await s.party(name)) }
            let (alice, bob, carol, dave, erin) = (members[0], members[1], members[2], members[3], members[4])
            let group = TestEnvironment.uniqueName("team")
            let set = try await s.client.request(
                RequestType.setGroupMembers.rawValue, token: serviceToken,
                ["group_id": .string(group), "members": .array(members.map { .string($0.uid) })])
            #expect(set.ok)
            let denied = try await s.request(.setGroupMembers, as: alice, ["group_id": .string(group), "members": .array([])])
            #expect(denied.error?.code == .forbidden, "only the service role manages groups")

            let call = try Scenario.call(
                try await s.request(
                    .initiate, as: alice,
                    [
                        "receiver_id": .string(group), "receiver_type": "group", "call_type": "video", "timeout_s": 6,
                    ]))
            for member in [bob, carol, dave, erin] { try await member.expect(.incomingCallReceived, call.sessionID) }
            #expect(alice.received(.incomingCallReceived, call.sessionID).isEmpty)

            // The first accept makes the call ongoing; another member joins while it rings.
            #expect(try Scenario.call(try await s.act(.accept, bob, call.sessionID)).status == .ongoing)
            try await alice.expect(.outgoingCallAccepted, call.sessionID)
            #expect(try Scenario.call(try await s.act(.accept, carol, call.sessionID)).status == .ongoing)
            try await s.expectEvent(.joined, call.sessionID)
            try await alice.expect(.participantJoined, call.sessionID)
            try await bob.expect(.participantJoined, call.sessionID)

            // A member's reject affects only that member.
            let rejected = try Scenario.call(try await s.act(.reject, dave, call.sessionID, ["status": "rejected"]))
            #expect(rejected.status == .ongoing)
            #expect(rejected.participant(dave.uid)?.status == .rejected)

            // erin does not answer: missed at the deadline, told to stop ringing.
            try await erin.expect(.incomingCallCanceled, call.sessionID, timeout: .seconds(60))
            let afterDeadline = try Scenario.call(try await s.act(.get, alice, call.sessionID))
            #expect(afterDeadline.participant(erin.uid)?.status == .missed)
            #expect(afterDeadline.status == .ongoing)

            // carol leaves: alice and bob go on; bob leaves: fewer than two remain, so it ends.
            #expect(try Scenario.call(try await s.act(.end, carol, call.sessionID)).status == .ongoing)
            try await bob.expect(.participantLeft, call.sessionID)
            #expect(try Scenario.call(try await s.act(.end, bob, call.sessionID)).status == .ended)
            try await alice.expect(.callEnded, call.sessionID)
            try await s.expectEvent(.ended, call.sessionID)
            #expect(
                s.eventTypes(call.sessionID) == [
                    "call.initiated", "call.accepted", "call.joined", "call.rejected", "call.unanswered", "call.left",
                    "call.ended",
                ])
        }
    }
}
