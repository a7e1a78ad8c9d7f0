// Unit tests of the ringing rules: every rule of DESIGN §2–3 and every refused transition.
import CallRules
import Foundation
import Testing

let t0 = Date(timeIntervalSince1970: 1_764_000_000)

func at(_ seconds: Double) -> Date { t0.addingTimeInterval(seconds) }

/// alice calls bob (1:1), ringing from t0 with the default 45 s.
func ringing(timeout: Int = 45, from caller: String = "alice", to callee: String = "bob") -> CallSession {
    let decision = CallRules.initiate(
        CallRules.Initiate(
            receiverID: callee, receiverType: .user, callType: .video, timeoutSeconds: timeout, metadata: ["k": .string("v")]),
        by: caller, at: t0, context: CallRules.InitiateContext(sessionID: UUID()))
    precondition(decision.error == nil)
    return decision.call
}

/// alice calls the group of alice, bob, carol and dave.
func groupRinging() -> CallSession {
    CallRules.initiate(
        CallRules.Initiate(receiverID: "team", receiverType: .group, callType: .audio),
        by: "alice", at: t0,
        context: CallRules.InitiateContext(sessionID: UUID(), groupMembers: ["alice", "bob", "carol", "dave"])
    ).call
}

func names(_ decision: CallDecision) -> [String] {
    decision.notifications.map { "\($0.recipient):\($0.name.rawValue)" }
}

@Suite struct InitiateTests {
    @Test func aCallRingsTheReceiverAndStartsTheDeadline() {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "bob", receiverType: .user, callType: .video, timeoutSeconds: 30, deviceID: "phone"),
            by: "alice", at: t0, context: CallRules.InitiateContext(sessionID: UUID()))
        #expect(decision.error == nil)
        #expect(decision.call.status == .initiated)
        #expect(decision.call.expiresAt == at(30))
        #expect(decision.call.sequence == 1)
        #expect(decision.events.map(\.type) == [.initiated])
        #expect(decision.events[0].deviceID == "phone")
        #expect(names(decision) == ["bob:incoming_call.received"])
        #expect(decision.call.participant("alice")?.status == .accepted)
        #expect(decision.call.participant("bob")?.status == .ringing)
        #expect(decision.call.ringPending)
        #expect(
            decision.call.participant("alice")!.isActive(in: decision.call.status), "the initiator of a ringing call is active")
        #expect(!decision.call.participant("bob")!.isActive(in: decision.call.status), "being rung is not active")
    }

    @Test func callingYourselfIsInvalid() {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "alice", receiverType: .user, callType: .audio),
            by: "alice", at: t0, context: CallRules.InitiateContext(sessionID: UUID()))
        #expect(decision.error?.code == .invalidRequest)
        #expect(decision.error?.field == "receiver_id")
        #expect(!decision.changed)
    }

    @Test func aBusyReceiverEndsTheCallAtOnceAsBusy() {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "bob", receiverType: .user, callType: .audio),
            by: "alice", at: t0, context: CallRules.InitiateContext(sessionID: UUID(), activeUsers: ["bob"]))
        #expect(decision.error == nil)
        #expect(decision.call.status == .busy)
        #expect(decision.call.endedAt == t0)
        #expect(decision.events.map(\.type) == [.initiated, .busy])
        #expect(decision.events.map(\.sequence) == [1, 2])
        #expect(names(decision) == ["alice:outgoing_call.rejected"], "the busy receiver is not rung")
        #expect(decision.call.participant("bob")?.status == .busy)
        #expect(!decision.call.ringPending)
    }

    @Test func anActiveInitiatorIsCallerBusy() {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "bob", receiverType: .user, callType: .audio),
            by: "alice", at: t0, context: CallRules.InitiateContext(sessionID: UUID(), activeUsers: ["alice"]))
        #expect(decision.error?.code == .callerBusy)
        #expect(!decision.changed)
    }

    @Test func glareAcceptsTheOtherCallInsteadOfFailingBoth() {
        let aliceToBob = ringing()
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "alice", receiverType: .user, callType: .audio, deviceID: "bob-phone"),
            by: "bob", at: at(3),
            context: CallRules.InitiateContext(sessionID: UUID(), activeUsers: ["alice"], glareCall: aliceToBob))
        #expect(decision.error == nil, "glare comes before the busy rule: alice is active, yet this succeeds")
        #expect(decision.call.sessionID == aliceToBob.sessionID)
        #expect(decision.call.status == .ongoing)
        #expect(decision.events.map(\.type) == [.accepted])
        #expect(names(decision).contains("alice:outgoing_call.accepted"))
    }

    @Test func glareOnlyCountsARingingCallBetweenTheSameTwo() {
        let aliceToBob = ringing()
        // Expired: not glare, and alice is still active by the context, so carol's call is busy.
        let late = CallRules.initiate(
            CallRules.Initiate(receiverID: "alice", receiverType: .user, callType: .audio),
            by: "bob", at: at(50), context: CallRules.InitiateContext(sessionID: UUID(), glareCall: aliceToBob))
        #expect(late.call.sessionID != aliceToBob.sessionID)
        #expect(late.call.status == .initiated)
        // Alice's call to bob makes alice busy for carol: no glare between carol and alice.
        let carol = CallRules.initiate(
            CallRules.Initiate(receiverID: "alice", receiverType: .user, callType: .audio),
            by: "carol", at: at(1), context: CallRules.InitiateContext(sessionID: UUID(), activeUsers: ["alice"], glareCall: nil))
        #expect(carol.call.status == .busy)
    }

    @Test func aGroupCallRingsEveryMemberButTheInitiator() {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "team", receiverType: .group, callType: .audio),
            by: "alice", at: t0,
            context: CallRules.InitiateContext(
                sessionID: UUID(), activeUsers: ["dave"], groupMembers: ["alice", "bob", "carol", "dave"]))
        #expect(decision.error == nil)
        #expect(Set(names(decision)) == ["bob:incoming_call.received", "carol:incoming_call.received"])
        #expect(decision.call.participant("dave")?.status == .busy, "a member in another call is busy, not rung")
        #expect(decision.call.participants.count == 4)
    }

    @Test func groupRefusals() {
        func start(_ members: [String]?, by actor: String = "alice") -> CallDecision {
            CallRules.initiate(
                CallRules.Initiate(receiverID: "team", receiverType: .group, callType: .audio),
                by: actor, at: t0, context: CallRules.InitiateContext(sessionID: UUID(), groupMembers: members))
        }
        #expect(start(nil).error?.code == .notFound)
        #expect(start(["bob", "carol"]).error?.code == .forbidden, "not a member")
        #expect(start(["alice"]).error?.code == .invalidRequest, "nobody to ring")
        let allBusy = CallRules.initiate(
            CallRules.Initiate(receiverID: "team", receiverType: .group, callType: .audio),
            by: "alice", at: t0,
            context: CallRules.InitiateContext(sessionID: UUID(), activeUsers: ["bob"], groupMembers: ["alice", "bob"]))
        #expect(allBusy.call.status == .busy)
        #expect(names(allBusy) == ["alice:outgoing_call.rejected"])
    }
}

@Suite struct AcceptTests {
    @Test func theFirstAcceptMakesTheCallOngoing() {
        let decision = CallRules.accept(ringing(), by: "bob", deviceID: "tablet", at: at(4))
        #expect(decision.error == nil)
        #expect(decision.call.status == .ongoing)
        #expect(decision.call.answeredAt == at(4))
        #expect(decision.call.participant("bob")?.joinedAt == at(4))
        #expect(decision.call.participant("alice")?.joinedAt == at(4))
        #expect(decision.events.map(\.type) == [.accepted])
        #expect(decision.events[0].sequence == 2)
        #expect(names(decision) == ["alice:outgoing_call.accepted", "bob:incoming_call.answered_elsewhere"])
        #expect(decision.notifications[1].event.deviceID == "tablet", "other devices learn which one answered")
        #expect(decision.call.participants.allSatisfy { $0.isActive(in: .ongoing) })
        #expect(!decision.call.ringPending)
    }

    @Test func aLateAcceptFromAnotherDeviceIsInvalidState() {
        let answered = CallRules.accept(ringing(), by: "bob", deviceID: "phone", at: at(4)).call
        let late = CallRules.accept(answered, by: "bob", deviceID: "tablet", at: at(5))
        #expect(late.error?.code == .invalidState)
        #expect(late.error?.status == .ongoing)
        #expect(!late.changed)
    }

    @Test func anAcceptAfterTheDeadlineLosesEvenBeforeTheTimerFired() {
        let decision = CallRules.accept(ringing(timeout: 10), by: "bob", deviceID: nil, at: at(10))
        #expect(decision.error?.code == .invalidState)
        #expect(decision.error?.status == .unanswered)
        #expect(decision.call.status == .unanswered, "the accept records the timeout it found")
        #expect(decision.events.map(\.type) == [.unanswered])
        #expect(Set(names(decision)) == ["alice:outgoing_call.rejected", "bob:incoming_call.canceled"])
        // And the timer, coming later, finds nothing to do: exactly one unanswered.
        #expect(!CallRules.expireIfDue(decision.call, at: at(11)).changed)
    }

    @Test(arguments: [("alice", CallError.Code.forbidden), ("mallory", .forbidden)])
    func onlyAReceiverMayAccept(actor: String, code: CallError.Code) {
        #expect(CallRules.accept(ringing(), by: actor, deviceID: nil, at: at(1)).error?.code == code)
    }

    @Test(arguments: [CallRules.RejectStatus.cancelled, .rejected, .busy])
    func acceptingAFinishedCallIsInvalidState(how: CallRules.RejectStatus) {
        let call = ringing()
        let actor = how == .cancelled ? "alice" : "bob"
        let finished = CallRules.reject(call, status: how, by: actor, deviceID: nil, at: at(2)).call
        let decision = CallRules.accept(finished, by: "bob", deviceID: nil, at: at(3))
        #expect(decision.error?.code == .invalidState)
        #expect(decision.error?.status == finished.status)
    }

    @Test func acceptingAnEndedCallIsInvalidState() {
        let ongoing = CallRules.accept(ringing(), by: "bob", deviceID: nil, at: at(1)).call
        let ended = CallRules.end(ongoing, by: "alice", deviceID: nil, at: at(9)).call
        #expect(CallRules.accept(ended, by: "bob", deviceID: nil, at: at(10)).error?.status == .ended)
    }
}

@Suite struct RejectTests {
    @Test func aReceiverRejects() {
        let decision = CallRules.reject(ringing(), status: .rejected, by: "bob", deviceID: "watch", at: at(2))
        #expect(decision.error == nil)
        #expect(decision.call.status == .rejected)
        #expect(decision.call.endedBy == "bob")
        #expect(decision.events.map(\.type) == [.rejected])
        #expect(names(decision) == ["alice:outgoing_call.rejected", "bob:incoming_call.rejected_elsewhere"])
        #expect(decision.notifications[1].event.deviceID == "watch")
    }

    @Test func aReceiverIsBusy() {
        let decision = CallRules.reject(ringing(), status: .busy, by: "bob", deviceID: nil, at: at(2))
        #expect(decision.call.status == .busy)
        #expect(decision.events.map(\.type) == [.busy])
        #expect(names(decision) == ["alice:outgoing_call.rejected", "bob:incoming_call.rejected_elsewhere"])
    }

    @Test func theInitiatorCancels() {
        let decision = CallRules.reject(ringing(), status: .cancelled, by: "alice", deviceID: nil, at: at(2))
        #expect(decision.call.status == .cancelled)
        #expect(decision.events.map(\.type) == [.cancelled])
        #expect(names(decision) == ["bob:incoming_call.canceled"])
        #expect(decision.call.participant("bob")?.status == .missed)
        #expect(!decision.call.ringPending)
    }

    @Test func refusedRejections() {
        let call = ringing()
        #expect(
            CallRules.reject(call, status: .cancelled, by: "bob", deviceID: nil, at: at(1)).error?.code == .forbidden,
            "cancel by the receiver")
        #expect(CallRules.reject(call, status: .rejected, by: "alice", deviceID: nil, at: at(1)).error?.code == .forbidden)
        #expect(CallRules.reject(call, status: .busy, by: "alice", deviceID: nil, at: at(1)).error?.code == .forbidden)
        #expect(CallRules.reject(call, status: .rejected, by: "mallory", deviceID: nil, at: at(1)).error?.code == .forbidden)
        let ongoing = CallRules.accept(call, by: "bob", deviceID: nil, at: at(1)).call
        #expect(CallRules.reject(ongoing, status: .cancelled, by: "alice", deviceID: nil, at: at(2)).error?.status == .ongoing)
        #expect(CallRules.reject(ongoing, status: .rejected, by: "bob", deviceID: nil, at: at(2)).error?.status == .ongoing)
        let rejected = CallRules.reject(call, status: .rejected, by: "bob", deviceID: nil, at: at(1)).call
        #expect(CallRules.reject(rejected, status: .rejected, by: "bob", deviceID: nil, at: at(2)).error?.status == .rejected)
        #expect(CallRules.reject(rejected, status: .cancelled, by: "alice", deviceID: nil, at: at(2)).error?.status == .rejected)
    }

    @Test func cancellingAfterTheDeadlineFindsTheCallUnanswered() {
        let decision = CallRules.reject(ringing(timeout: 5), status: .cancelled, by: "alice", deviceID: nil, at: at(6))
        #expect(decision.error?.status == .unanswered)
        #expect(decision.events.map(\.type) == [.unanswered])
    }
}

@Suite struct EndTests {
    @Test func eitherSideEndsAndTheDurationIsRecorded() {
        let ongoing = CallRules.accept(ringing(), by: "bob", deviceID: nil, at: at(5)).call
        for (ender, other) in [("alice", "bob"), ("bob", "alice")] {
            let decision = CallRules.end(ongoing, by: ender, deviceID: nil, at: at(65.7))
            #expect(decision.error == nil)
            #expect(decision.call.status == .ended)
            #expect(decision.call.durationSeconds == 60)
            #expect(decision.call.endedBy == ender)
            #expect(decision.call.endedAt == at(65.7))
            #expect(decision.events.map(\.type) == [.ended])
            #expect(names(decision) == ["\(other):call.ended"])
            #expect(decision.call.participants.allSatisfy { $0.status == .left && $0.leftAt == at(65.7) })
            #expect(decision.call.participants.allSatisfy { !$0.isActive(in: decision.call.status) })
        }
    }

    @Test func refusedEnds() {
        let call = ringing()
        #expect(CallRules.end(call, by: "alice", deviceID: nil, at: at(1)).error?.status == .initiated)
        let ongoing = CallRules.accept(call, by: "bob", deviceID: nil, at: at(1)).call
        #expect(
            CallRules.end(ongoing, by: "mallory", deviceID: nil, at: at(2)).error?.code == .forbidden,
            "a stranger ending someone else's call")
        let ended = CallRules.end(ongoing, by: "bob", deviceID: nil, at: at(2)).call
        let again = CallRules.end(ended, by: "alice", deviceID: nil, at: at(3))
        #expect(again.error?.status == .ended)
        #expect(!again.changed, "terminal states never change again")
    }
}

@Suite struct TimeoutTests {
    @Test func nobodyAnsweringEndsTheCallUnansweredExactlyOnce() {
        let call = ringing(timeout: 45)
        #expect(!CallRules.expireIfDue(call, at: at(44.999)).changed)
        let fired = CallRules.expireIfDue(call, at: at(45))
        #expect(fired.call.status == .unanswered)
        #expect(fired.events.map(\.type) == [.unanswered])
        #expect(fired.events[0].actor == nil)
        #expect(Set(names(fired)) == ["alice:outgoing_call.rejected", "bob:incoming_call.canceled"])
        #expect(fired.call.participant("bob")?.status == .missed)
        #expect(!fired.call.ringPending)
        #expect(!CallRules.expireIfDue(fired.call, at: at(46)).changed)
    }

    @Test func anOngoingCallHasNoTimer() {
        let ongoing = CallRules.accept(ringing(), by: "bob", deviceID: nil, at: at(1)).call
        #expect(!CallRules.expireIfDue(ongoing, at: at(100)).changed)
    }
}

@Suite struct GroupCallTests {
    @Test func membersJoinUntilTheDeadlineAndStillRingingOnesAreMissed() {
        var call = groupRinging()
        let first = CallRules.accept(call, by: "bob", deviceID: nil, at: at(2))
        #expect(first.call.status == .ongoing)
        #expect(first.events.map(\.type) == [.accepted])
        #expect(names(first) == ["alice:outgoing_call.accepted", "bob:incoming_call.answered_elsewhere"])
        #expect(first.call.ringPending, "carol and dave still ring")
        call = first.call

        let join = CallRules.accept(call, by: "carol", deviceID: nil, at: at(3))
        #expect(join.events.map(\.type) == [.joined])
        #expect(
            Set(names(join)) == [
                "carol:incoming_call.answered_elsewhere", "alice:call.participant_joined", "bob:call.participant_joined",
            ])
        call = join.call

        let missed = CallRules.expireIfDue(call, at: at(45))
        #expect(missed.call.status == .ongoing)
        #expect(missed.events.map(\.type) == [.unanswered])
        #expect(names(missed) == ["dave:incoming_call.canceled"])
        #expect(missed.call.participant("dave")?.status == .missed)
        #expect(!missed.call.ringPending)
        #expect(CallRules.accept(missed.call, by: "dave", deviceID: nil, at: at(46)).error?.code == .invalidState)
    }

    @Test func aMembersRejectAffectsOnlyThatMember() {
        let call = CallRules.accept(groupRinging(), by: "bob", deviceID: nil, at: at(1)).call
        let decision = CallRules.reject(call, status: .rejected, by: "carol", deviceID: nil, at: at(2))
        #expect(decision.call.status == .ongoing)
        #expect(decision.call.participant("carol")?.status == .rejected)
        #expect(decision.events.map(\.type) == [.rejected])
        #expect(names(decision) == ["carol:incoming_call.rejected_elsewhere"])
    }

    @Test func whenEveryReceiverRejectsTheCallIsRejected() {
        var call = groupRinging()
        for member in ["bob", "carol"] {
            call = CallRules.reject(call, status: .rejected, by: member, deviceID: nil, at: at(1)).call
            #expect(call.status == .initiated)
        }
        let last = CallRules.reject(call, status: .busy, by: "dave", deviceID: nil, at: at(2))
        #expect(last.call.status == .rejected)
        #expect(names(last).contains("alice:outgoing_call.rejected"))
    }

    @Test func theCallEndsWhenFewerThanTwoRemain() {
        var call = CallRules.accept(groupRinging(), by: "bob", deviceID: nil, at: at(1)).call
        call = CallRules.accept(call, by: "carol", deviceID: nil, at: at(2)).call
        let leave = CallRules.end(call, by: "bob", deviceID: nil, at: at(10))
        #expect(leave.call.status == .ongoing)
        #expect(leave.events.map(\.type) == [.left])
        #expect(Set(names(leave)) == ["alice:call.participant_left", "carol:call.participant_left"])
        let last = CallRules.end(leave.call, by: "alice", deviceID: nil, at: at(20))
        #expect(last.call.status == .ended)
        #expect(last.call.durationSeconds == 19)
        #expect(Set(names(last)) == ["carol:call.ended", "dave:incoming_call.canceled"])
        #expect(last.call.participant("dave")?.status == .missed)
        #expect(last.call.participants.allSatisfy { !$0.isActive(in: last.call.status) })
    }

    @Test func aRingingMemberCannotEnd() {
        let call = CallRules.accept(groupRinging(), by: "bob", deviceID: nil, at: at(1)).call
        #expect(CallRules.end(call, by: "carol", deviceID: nil, at: at(2)).error?.code == .invalidState)
    }
}

@Suite struct EventTests {
    @Test func sequencesIncreaseByOneAndEventIDsAreStable() {
        let call = ringing()
        let accepted = CallRules.accept(call, by: "bob", deviceID: nil, at: at(1))
        let ended = CallRules.end(accepted.call, by: "bob", deviceID: nil, at: at(2))
        #expect(ended.call.sequence == 3)
        let ids = [accepted.events[0].eventID, ended.events[0].eventID]
        #expect(Set(ids).count == 2)
        #expect(ended.events[0].eventID == ended.events[0].eventID)
        #expect(accepted.events[0].eventID.uuidString.dropFirst(14).hasPrefix("8"), "a version 8 UUID")
    }

    @Test func readsArePermittedToParticipantsOnly() {
        let call = ringing()
        #expect(CallRules.authorizeRead(call, by: "bob") == nil)
        #expect(CallRules.authorizeRead(call, by: "mallory")?.code == .forbidden)
    }
}

@Suite struct MediaTokenTests {
    @Test func onlyAcceptedParticipantsOfAnOngoingCallGetAToken() {
        let call = ringing()
        #expect(CallRules.authorizeMediaToken(call, for: "alice")?.code == .invalidState, "ringing")
        let ongoing = CallRules.accept(call, by: "bob", deviceID: nil, at: at(1)).call
        #expect(CallRules.authorizeMediaToken(ongoing, for: "alice") == nil)
        #expect(CallRules.authorizeMediaToken(ongoing, for: "bob") == nil)
        #expect(CallRules.authorizeMediaToken(ongoing, for: "mallory")?.code == .forbidden)
        let ended = CallRules.end(ongoing, by: "bob", deviceID: nil, at: at(2)).call
        #expect(CallRules.authorizeMediaToken(ended, for: "bob")?.status == .ended)
        for how in [CallRules.RejectStatus.rejected, .cancelled] {
            let finished = CallRules.reject(call, status: how, by: how == .cancelled ? "alice" : "bob", deviceID: nil, at: at(1))
                .call
            #expect(CallRules.authorizeMediaToken(finished, for: "alice")?.code == .invalidState)
        }
    }

    @Test func aGroupMemberWhoLeftOrStillRingsGetsNone() {
        var call = CallRules.accept(groupRinging(), by: "bob", deviceID: nil, at: at(1)).call
        call = CallRules.accept(call, by: "carol", deviceID: nil, at: at(2)).call
        call = CallRules.end(call, by: "carol", deviceID: nil, at: at(3)).call
        #expect(call.status == .ongoing)
        #expect(CallRules.authorizeMediaToken(call, for: "carol")?.code == .forbidden, "left")
        #expect(CallRules.authorizeMediaToken(call, for: "dave")?.code == .invalidState, "still ringing")
        #expect(CallRules.authorizeMediaToken(call, for: "bob") == nil)
    }
}

@Suite struct RingReceiptTests {
    @Test func theFirstReceiptTellsTheCallerOnce() {
        let call = ringing()
        let first = CallRules.ringReceipt(call, by: "bob", deviceID: "bobs-phone", at: at(1))
        #expect(first.error == nil)
        #expect(first.events.map(\.type) == [.ringing])
        #expect(first.events[0].deviceID == "bobs-phone" && first.events[0].actor == "bob")
        #expect(first.call.sequence == call.sequence + 1)
        #expect(names(first) == ["alice:outgoing_call.ringing"])
        #expect(first.call.participant("bob")?.rangAt == at(1))
        #expect(first.call.status == .initiated, "a receipt does not answer")

        // A second receipt (another of bob's devices, or a repeat) changes nothing.
        let second = CallRules.ringReceipt(first.call, by: "bob", deviceID: "bobs-tablet", at: at(2))
        #expect(second.error == nil && !second.changed)
        #expect(second.call == first.call)
    }

    @Test func aReceiptAfterTheAnswerChangesNothing() {
        let ongoing = CallRules.accept(ringing(), by: "bob", deviceID: nil, at: at(1)).call
        let late = CallRules.ringReceipt(ongoing, by: "bob", deviceID: "bobs-phone", at: at(2))
        #expect(late.error == nil && !late.changed)
        #expect(late.call.participant("bob")?.rangAt == nil)
    }

    @Test func aReceiptForAFinishedCallChangesNothing() {
        let cancelled = CallRules.reject(ringing(), status: .cancelled, by: "alice", deviceID: nil, at: at(1)).call
        let late = CallRules.ringReceipt(cancelled, by: "bob", deviceID: nil, at: at(2))
        #expect(late.error == nil && !late.changed)
    }

    @Test func aReceiptPastTheDeadlineFiresTheTimeoutInstead() {
        let late = CallRules.ringReceipt(ringing(timeout: 10), by: "bob", deviceID: nil, at: at(11))
        #expect(late.error == nil)
        #expect(late.events.map(\.type) == [.unanswered])
        #expect(late.call.endReason == .unanswered)
        #expect(late.call.participant("bob")?.rangAt == nil)
    }

    @Test func laterGroupMembersRecordTheirRingQuietly() {
        let call = groupRinging()
        let first = CallRules.ringReceipt(call, by: "carol", deviceID: nil, at: at(1))
        #expect(first.events.map(\.type) == [.ringing])
        let second = CallRules.ringReceipt(first.call, by: "dave", deviceID: nil, at: at(2))
        #expect(second.events.isEmpty && second.changed, "dave's rang_at is stored, but it is not an event")
        #expect(second.call.sequence == first.call.sequence)
        #expect(second.call.participant("dave")?.rangAt == at(2))
        #expect(second.call.participant("carol")?.rangAt == at(1))
    }

    @Test func onlyReceiversSendReceipts() {
        let call = ringing()
        #expect(CallRules.ringReceipt(call, by: "alice", deviceID: nil, at: at(1)).error?.code == .forbidden)
        #expect(CallRules.ringReceipt(call, by: "mallory", deviceID: nil, at: at(1)).error?.code == .forbidden)
    }
}

@Suite struct LivenessTests {
    let limits = CallRules.Liveness(heartbeatTimeout: 90, maximumDuration: 4 * 3600)

    /// alice calls bob, who answers at 5 s.
    func ongoing() -> CallSession { CallRules.accept(ringing(), by: "bob", deviceID: nil, at: at(5)).call }

    func heard(_ call: CallSession, _ uid: String, at time: Date) -> CallSession {
        var copy = call
        let index = copy.participants.firstIndex { $0.uid == uid }!
        copy.participants[index].lastSeenAt = time
        return copy
    }

    @Test func answeringStartsEveryonesLiveness() {
        let call = ongoing()
        #expect(call.participant("alice")?.lastSeenAt == at(5))
        #expect(call.participant("bob")?.lastSeenAt == at(5))
        #expect(CallRules.livenessDeadline(call, limits)?.at == at(95))
        #expect(CallRules.livenessDeadline(call, limits)?.reason == .connectionLost)
        #expect(CallRules.livenessDeadline(ringing(), limits) == nil, "a ringing call has the ring deadline instead")
    }

    @Test func aSilentPairEndsTheCallAsConnectionLostExactlyOnce() {
        let call = ongoing()
        #expect(!CallRules.sweepIfDue(call, at: at(94.9), limits: limits).changed, "not before 90 s of silence")
        let swept = CallRules.sweepIfDue(call, at: at(95), limits: limits)
        #expect(swept.call.status == .ended)
        #expect(swept.call.endReason == .connectionLost)
        #expect(swept.call.endedBy == nil)
        #expect(swept.call.durationSeconds == 90)
        #expect(swept.events.map(\.type) == [.ended] && swept.events[0].actor == nil)
        #expect(swept.call.participants.allSatisfy { $0.status == .left && $0.leftReason == .connectionLost })
        #expect(Set(names(swept)) == ["alice:call.ended", "bob:call.ended"])
        #expect(swept.call.participants.allSatisfy { !$0.isActive(in: swept.call.status) }, "nobody stays busy")
        #expect(!CallRules.sweepIfDue(swept.call, at: at(200), limits: limits).changed, "exactly once")
    }

    @Test func oneSideVanishingEndsTheCallAndOnlyThatSideLostTheConnection() {
        let call = heard(ongoing(), "alice", at: at(60))
        #expect(CallRules.livenessDeadline(call, limits)?.at == at(95))
        let swept = CallRules.sweepIfDue(call, at: at(95), limits: limits)
        #expect(swept.call.status == .ended && swept.call.endReason == .connectionLost)
        #expect(swept.call.participant("bob")?.leftReason == .connectionLost)
        #expect(swept.call.participant("alice")?.status == .left)
        #expect(swept.call.participant("alice")?.leftReason == nil, "alice was still there")
    }

    @Test func heartbeatsKeepACallGoing() {
        let call = heard(heard(ongoing(), "alice", at: at(80)), "bob", at: at(80))
        #expect(!CallRules.sweepIfDue(call, at: at(169), limits: limits).changed)
        #expect(CallRules.sweepIfDue(call, at: at(170), limits: limits).call.status == .ended)
    }

    @Test func aGroupCallGoesOnWithoutAMemberWhoVanished() {
        var call = groupRinging()
        call = CallRules.accept(call, by: "bob", deviceID: nil, at: at(1)).call
        call = CallRules.accept(call, by: "carol", deviceID: nil, at: at(2)).call
        call = heard(heard(call, "alice", at: at(60)), "bob", at: at(60))
        let swept = CallRules.sweepIfDue(call, at: at(92), limits: limits)
        #expect(swept.call.status == .ongoing)
        #expect(swept.events.map(\.type) == [.left] && swept.events[0].actor == nil)
        #expect(swept.call.participant("carol")?.status == .left)
        #expect(swept.call.participant("carol")?.leftReason == .connectionLost)
        #expect(Set(names(swept)) == ["alice:call.participant_left", "bob:call.participant_left"])
        #expect(swept.call.participant("dave")?.status == .ringing, "dave still rings until the deadline")
        // When a second one goes, fewer than two remain: the call ends, dave misses it.
        let last = CallRules.sweepIfDue(heard(swept.call, "alice", at: at(100)), at: at(150), limits: limits)
        #expect(last.call.status == .ended && last.call.endReason == .connectionLost)
        #expect(last.call.participant("bob")?.leftReason == .connectionLost)
        #expect(last.call.participant("alice")?.leftReason == nil)
        #expect(last.call.participant("dave")?.status == .missed)
        #expect(names(last).contains("dave:incoming_call.canceled"))
    }

    @Test func aCallPastTheMaximumDurationEnds() {
        let short = CallRules.Liveness(heartbeatTimeout: 90, maximumDuration: 60)
        let call = heard(heard(ongoing(), "alice", at: at(64)), "bob", at: at(64))
        #expect(CallRules.livenessDeadline(call, short)?.reason == .maxDuration)
        #expect(CallRules.livenessDeadline(call, short)?.at == at(65))
        #expect(!CallRules.sweepIfDue(call, at: at(64.9), limits: short).changed)
        let swept = CallRules.sweepIfDue(call, at: at(65), limits: short)
        #expect(swept.call.status == .ended && swept.call.endReason == .maxDuration && swept.call.endedBy == nil)
        #expect(swept.call.durationSeconds == 60)
        #expect(swept.call.participants.allSatisfy { $0.status == .left && $0.leftReason == nil })
        #expect(Set(names(swept)) == ["alice:call.ended", "bob:call.ended"])
    }

    @Test func aHeartbeatNeedsAnAcceptedParticipationInALiveCall() {
        let call = ongoing()
        #expect(CallRules.heartbeat(call, by: "bob", at: at(10)).error == nil)
        #expect(!CallRules.heartbeat(call, by: "bob", at: at(10)).changed, "a heartbeat is no change of the call")
        #expect(CallRules.heartbeat(call, by: "mallory", at: at(10)).error?.code == .forbidden)
        #expect(CallRules.heartbeat(ringing(), by: "bob", at: at(1)).error?.code == .invalidState, "bob has not answered")
        #expect(CallRules.heartbeat(ringing(), by: "alice", at: at(1)).error == nil, "the caller of a ringing call")
        let ended = CallRules.end(call, by: "alice", deviceID: nil, at: at(20)).call
        let refused = CallRules.heartbeat(ended, by: "bob", at: at(21)).error
        #expect(refused?.code == .invalidState && refused?.status == .ended)
        #expect(ended.endReason == nil, "a participant's end has no end_reason")
    }
}
