// The ringing rules of DESIGN §2–3 as pure functions: a call, a command, the actor and the
// time in; a decision out. No I/O, no clock: the caller loads what a rule needs and passes
// the server's time.
public import Foundation

public enum CallRules {
    /// What `call.initiate` asks for, already validated for shape.
    public struct Initiate: Sendable, Hashable {
        public var receiverID: String
        public var receiverType: ReceiverType
        public var callType: CallType
        public var timeoutSeconds: Int
        public var metadata: JSONObject
        public var deviceID: String?

        public init(
            receiverID: String, receiverType: ReceiverType, callType: CallType, timeoutSeconds: Int = 45,
            metadata: JSONObject = [:], deviceID: String? = nil
        ) {
            self.receiverID = receiverID
            self.receiverType = receiverType
            self.callType = callType
            self.timeoutSeconds = timeoutSeconds
            self.metadata = metadata
            self.deviceID = deviceID
        }
    }

    /// What the store found for an initiate.
    public struct InitiateContext: Sendable, Hashable {
        /// The id the new session gets.
        public var sessionID: UUID
        /// Users (of the initiator and the receivers) who are active right now.
        public var activeUsers: Set<String>
        /// For a 1:1 call: the receiver's call to the initiator, if one rings (glare).
        public var glareCall: CallSession?
        /// For a group call: its members, or nil when the group does not exist.
        public var groupMembers: [String]?

        public init(sessionID: UUID, activeUsers: Set<String> = [], glareCall: CallSession? = nil, groupMembers: [String]? = nil)
        {
            self.sessionID = sessionID
            self.activeUsers = activeUsers
            self.glareCall = glareCall
            self.groupMembers = groupMembers
        }
    }

    public enum RejectStatus: String, Sendable, Hashable, CaseIterable {
        case rejected, cancelled, busy
    }

    // MARK: - Initiate

    /// `call.initiate`. Returns a decision on the new call, or — glare — on the receiver's
    /// ringing call to the initiator, which this request accepts.
    public static func initiate(_ request: Initiate, by actor: String, at now: Date, context: InitiateContext) -> CallDecision {
        let placeholder = CallSession(
            sessionID: context.sessionID, initiator: actor, receiverID: request.receiverID, receiverType: request.receiverType,
            callType: request.callType, status: .initiated, initiatedAt: now,
            expiresAt: now.addingTimeInterval(TimeInterval(request.timeoutSeconds)), metadata: request.metadata,
            participants: [Participant(uid: actor, role: .initiator, status: .accepted)], sequence: 0)
        let refused = CallDecision(call: placeholder)

        var receivers: [String]
        switch request.receiverType {
        case .user:
            guard request.receiverID != actor else {
                return refused.failing(.invalid("receiver_id", "cannot call yourself"))
            }
            // Glare (before the busy rule): the receiver is ringing us; answer that call.
            if let glare = context.glareCall, glare.status == .initiated, glare.initiator == request.receiverID,
                glare.receiverType == .user, glare.receiverID == actor, now < glare.expiresAt
            {
                return accept(glare, by: actor, deviceID: request.deviceID, at: now)
            }
            receivers = [request.receiverID]
        case .group:
            guard let members = context.groupMembers else {
                return refused.failing(CallError(.notFound, "group '\(request.receiverID)' does not exist", field: "receiver_id"))
            }
            guard members.contains(actor) else {
                return refused.failing(CallError(.forbidden, "user '\(actor)' is not a member of group '\(request.receiverID)'"))
            }
            receivers = members.filter { $0 != actor }
            guard !receivers.isEmpty else {
                return refused.failing(.invalid("receiver_id", "group '\(request.receiverID)' has no other members"))
            }
        }
        guard !context.activeUsers.contains(actor) else {
            return refused.failing(CallError(.callerBusy, "user '\(actor)' is already in a call"))
        }

        var decision = CallDecision(call: placeholder)
        for receiver in receivers {
            let busy = context.activeUsers.contains(receiver)
            decision.call.participants.append(Participant(uid: receiver, role: .receiver, status: busy ? .busy : .ringing))
        }
        decision.emit(.initiated, actor: actor, deviceID: request.deviceID, at: now)
        let ringing = decision.call.receivers.filter { $0.status == .ringing }.map(\.uid)
        if ringing.isEmpty {
            // Everyone is in another call: the call ends at once as busy.
            decision.call.status = .busy
            decision.call.endedAt = now
            decision.emit(.busy, actor: nil, at: now)
            decision.notify(.outgoingCallRejected, [actor])
        } else {
            decision.notify(.incomingCallReceived, ringing)
        }
        return decision
    }

    // MARK: - Accept

    /// `call.accept` by a receiver: the first accept makes the call ongoing; in a group call
    /// further members may join until the deadline.
    public static func accept(_ call: CallSession, by actor: String, deviceID: String?, at now: Date) -> CallDecision {
        var decision = expireIfDue(call, at: now)
        if let error = participantError(decision.call, actor) { return decision.failing(error) }
        let participant = decision.call.participant(actor)!
        guard participant.role == .receiver else {
            return decision.failing(CallError(.forbidden, "the initiator cannot accept their own call"))
        }
        guard participant.status == .ringing, decision.call.status == .initiated || decision.call.status == .ongoing else {
            let why =
                participant.status == .accepted
                ? "the call was already answered on another device" : "the call cannot be accepted now"
            return decision.failing(invalidState(decision.call, why))
        }
        decision.call.update(actor) {
            $0.status = .accepted
            $0.joinedAt = now
            $0.lastSeenAt = now
        }
        if decision.call.status == .initiated {
            decision.call.status = .ongoing
            decision.call.answeredAt = now
            decision.call.update(decision.call.initiator) {
                $0.joinedAt = now
                $0.lastSeenAt = now
            }
            decision.emit(.accepted, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.outgoingCallAccepted, [decision.call.initiator])
            decision.notify(.answeredElsewhere, [actor])
            let others = decision.call.participants.filter {
                $0.status == .accepted && $0.uid != actor && $0.uid != decision.call.initiator
            }
            decision.notify(.participantJoined, others.map(\.uid))
        } else {
            decision.emit(.joined, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.answeredElsewhere, [actor])
            let others = decision.call.participants.filter { $0.status == .accepted && $0.uid != actor }
            decision.notify(.participantJoined, others.map(\.uid))
        }
        return decision
    }

    // MARK: - Reject and cancel

    /// `call.reject`: a receiver declines (`rejected`) or is busy (`busy`); the initiator
    /// cancels (`cancelled`).
    public static func reject(_ call: CallSession, status: RejectStatus, by actor: String, deviceID: String?, at now: Date)
        -> CallDecision
    {
        var decision = expireIfDue(call, at: now)
        if let error = participantError(decision.call, actor) { return decision.failing(error) }
        let participant = decision.call.participant(actor)!

        if status == .cancelled {
            guard participant.role == .initiator else {
                return decision.failing(CallError(.forbidden, "only the initiator can cancel a call; a receiver rejects it"))
            }
            guard decision.call.status == .initiated else {
                return decision.failing(invalidState(decision.call, "only a ringing call can be cancelled"))
            }
            let ringing = decision.call.receivers.filter { $0.status == .ringing }.map(\.uid)
            decision.call.updateAll(where: { $0.status == .ringing }, { $0.status = .missed })
            decision.call.status = .cancelled
            decision.call.endedAt = now
            decision.call.endedBy = actor
            decision.emit(.cancelled, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.incomingCallCanceled, ringing)
            return decision
        }

        guard participant.role == .receiver else {
            return decision.failing(
                CallError(.forbidden, "the initiator cannot reject their own call; cancel it with status 'cancelled'"))
        }
        guard participant.status == .ringing, decision.call.status == .initiated || decision.call.status == .ongoing else {
            return decision.failing(invalidState(decision.call, "the call is no longer ringing for '\(actor)'"))
        }
        let outcome: ParticipantStatus = status == .busy ? .busy : .rejected
        let eventType: CallEventType = status == .busy ? .busy : .rejected
        decision.call.update(actor) {
            $0.status = outcome
            $0.leftAt = now
        }
        let stillInPlay = decision.call.receivers.contains { $0.status == .ringing || $0.status == .accepted }
        if decision.call.status == .initiated && !stillInPlay {
            // 1:1, or the last group member to decline: the call itself is declined.
            decision.call.status = decision.call.receiverType == .user ? (status == .busy ? .busy : .rejected) : .rejected
            decision.call.endedAt = now
            decision.call.endedBy = actor
            decision.emit(eventType, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.outgoingCallRejected, [decision.call.initiator])
        } else {
            decision.emit(eventType, actor: actor, deviceID: deviceID, at: now)
        }
        decision.notify(.rejectedElsewhere, [actor])
        return decision
    }

    // MARK: - End

    /// `call.end` by an accepted participant: a 1:1 call ends; a group member leaves, and the
    /// call ends once fewer than two participants remain.
    public static func end(_ call: CallSession, by actor: String, deviceID: String?, at now: Date) -> CallDecision {
        var decision = expireIfDue(call, at: now)
        if let error = participantError(decision.call, actor) { return decision.failing(error) }
        guard decision.call.status == .ongoing else {
            let hint = decision.call.status == .initiated ? "; a ringing call is cancelled or rejected instead" : ""
            return decision.failing(invalidState(decision.call, "only an ongoing call can be ended\(hint)"))
        }
        guard decision.call.participant(actor)!.status == .accepted else {
            return decision.failing(invalidState(decision.call, "'\(actor)' is not in this call"))
        }
        decision.call.update(actor) {
            $0.status = .left
            $0.leftAt = now
        }
        let remaining = decision.call.participants.filter { $0.status == .accepted }
        if decision.call.receiverType == .user || remaining.count < 2 {
            endOngoing(&decision, by: actor, deviceID: deviceID, reason: nil, notifying: remaining.map(\.uid), at: now)
        } else {
            decision.emit(.left, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.participantLeft, remaining.map(\.uid))
        }
        return decision
    }

    // MARK: - Read

    /// `call.get`: participants only.
    public static func authorizeRead(_ call: CallSession, by actor: String) -> CallError? {
        participantError(call, actor)
    }

    // MARK: - Ring deadline

    /// The ring timer: at or after the deadline, a ringing call becomes `unanswered` and
    /// members of an ongoing group call still ringing become `missed`. Returns a decision
    /// without events when nothing is due, so that it fires exactly once.
    public static func expireIfDue(_ call: CallSession, at now: Date) -> CallDecision {
        var decision = CallDecision(call: call)
        guard call.ringPending, now >= call.expiresAt else { return decision }
        let ringing = call.receivers.filter { $0.status == .ringing }.map(\.uid)
        decision.call.updateAll(where: { $0.status == .ringing }, { $0.status = .missed })
        if call.status == .initiated {
            decision.call.status = .unanswered
            decision.call.endedAt = now
            decision.call.endReason = .unanswered
            decision.emit(.unanswered, actor: nil, at: now)
            decision.notify(.outgoingCallRejected, [call.initiator])
        } else {
            decision.emit(.unanswered, actor: nil, at: now)
        }
        decision.notify(.incomingCallCanceled, ringing)
        return decision
    }

    // MARK: - Ring receipt

    /// `call.ringing`: a receiver's device shows the ring. The receiver's first receipt sets
    /// its `rangAt`; the call's first receipt while it rings is an event, and the initiator
    /// hears of it (`outgoing_call.ringing`, with the device). Receipts that change nothing
    /// (repeats, a receiver no longer ringing, a call no longer ringing) decide nothing.
    public static func ringReceipt(_ call: CallSession, by actor: String, deviceID: String?, at now: Date) -> CallDecision {
        var decision = expireIfDue(call, at: now)
        if let error = participantError(decision.call, actor) { return decision.failing(error) }
        let participant = decision.call.participant(actor)!
        guard participant.role == .receiver else {
            return decision.failing(
                CallError(.forbidden, "only a receiver's device sends call.ringing; the initiator's devices do not ring"))
        }
        guard participant.status == .ringing, participant.rangAt == nil,
            decision.call.status == .initiated || decision.call.status == .ongoing
        else { return decision }
        let first = decision.call.status == .initiated && !decision.call.receivers.contains { $0.rangAt != nil }
        decision.call.update(actor) { $0.rangAt = now }
        if first {
            decision.emit(.ringing, actor: actor, deviceID: deviceID, at: now)
            decision.notify(.outgoingCallRinging, [decision.call.initiator])
        } else {
            decision.quietChange = true
        }
        return decision
    }

    // MARK: - Liveness

    /// The limits of DESIGN §10.
    public struct Liveness: Sendable, Hashable {
        /// A participant silent for this long (no heartbeat, no request naming the call) is gone.
        public var heartbeatTimeout: TimeInterval
        /// Counted from `answeredAt`.
        public var maximumDuration: TimeInterval

        public init(heartbeatTimeout: TimeInterval = 90, maximumDuration: TimeInterval = 4 * 3600) {
            self.heartbeatTimeout = heartbeatTimeout
            self.maximumDuration = maximumDuration
        }
    }

    /// `call.heartbeat`: allowed for an accepted participant of a ringing or ongoing call (the
    /// store then records the time). Nothing else about the call changes, apart from a ring
    /// deadline found passed on the way.
    public static func heartbeat(_ call: CallSession, by actor: String, at now: Date) -> CallDecision {
        let decision = expireIfDue(call, at: now)
        if let error = participantError(decision.call, actor) { return decision.failing(error) }
        guard decision.call.status == .initiated || decision.call.status == .ongoing else {
            return decision.failing(invalidState(decision.call, "the call is over"))
        }
        let participant = decision.call.participant(actor)!
        guard participant.status == .accepted else {
            let why =
                participant.status == .ringing
                ? "'\(actor)' has not accepted this call"
                : "'\(actor)' is no longer in this call (\(participant.status.rawValue))"
            return decision.failing(invalidState(decision.call, why))
        }
        return decision
    }

    /// When the liveness sweep next has something to do for `call`, and what: the earliest
    /// of the maximum duration and each accepted participant's silence limit. Nil when the
    /// call is not ongoing.
    public static func livenessDeadline(_ call: CallSession, _ limits: Liveness) -> (at: Date, reason: EndReason)? {
        guard call.status == .ongoing else { return nil }
        var earliest: (at: Date, reason: EndReason)? = call.answeredAt.map {
            ($0.addingTimeInterval(limits.maximumDuration), .maxDuration)
        }
        for participant in call.participants where participant.status == .accepted {
            guard let seen = participant.lastSeenAt ?? participant.joinedAt else { continue }
            let due = seen.addingTimeInterval(limits.heartbeatTimeout)
            if earliest.map({ due < $0.at }) ?? true { earliest = (due, .connectionLost) }
        }
        return earliest
    }

    /// The liveness sweep (DESIGN §10): a call past the maximum duration ends
    /// (`max_duration`); accepted participants silent for the heartbeat timeout leave
    /// (`left_reason` `connection_lost`), and the call ends by §3 when fewer than two remain
    /// (`end_reason` `connection_lost`, `ended_by` null). Returns a decision without events
    /// when nothing is due, so that it acts exactly once.
    public static func sweepIfDue(_ call: CallSession, at now: Date, limits: Liveness) -> CallDecision {
        var decision = CallDecision(call: call)
        guard call.status == .ongoing else { return decision }
        let accepted = call.participants.filter { $0.status == .accepted }.map(\.uid)
        if let answeredAt = call.answeredAt, now >= answeredAt.addingTimeInterval(limits.maximumDuration) {
            endOngoing(&decision, by: nil, deviceID: nil, reason: .maxDuration, notifying: accepted, at: now)
            return decision
        }
        let lost = call.participants.filter { participant in
            guard participant.status == .accepted, let seen = participant.lastSeenAt ?? participant.joinedAt else { return false }
            return now >= seen.addingTimeInterval(limits.heartbeatTimeout)
        }
        guard !lost.isEmpty else { return decision }
        for participant in lost {
            decision.call.update(participant.uid) {
                $0.status = .left
                $0.leftAt = now
                $0.leftReason = .connectionLost
            }
        }
        let remaining = decision.call.participants.filter { $0.status == .accepted }.map(\.uid)
        if call.receiverType == .user || remaining.count < 2 {
            // Everyone who was in the call hears that it ended, the lost ones too: a device
            // that comes back stops showing it.
            endOngoing(&decision, by: nil, deviceID: nil, reason: .connectionLost, notifying: accepted, at: now)
        } else {
            decision.emit(.left, actor: nil, at: now)
            decision.notify(.participantLeft, remaining)
        }
        return decision
    }

    // MARK: - Helpers

    /// Ends an ongoing call: accepted participants leave, members still ringing miss it, the
    /// talk time is recorded; `recipients` get `call.ended`, the ringing ones `incoming_call.canceled`.
    private static func endOngoing(
        _ decision: inout CallDecision, by actor: String?, deviceID: String?, reason: EndReason?, notifying recipients: [String],
        at now: Date
    ) {
        let ringing = decision.call.receivers.filter { $0.status == .ringing }.map(\.uid)
        decision.call.updateAll(
            where: { $0.status == .accepted },
            {
                $0.status = .left
                $0.leftAt = now
            })
        decision.call.updateAll(where: { $0.status == .ringing }, { $0.status = .missed })
        decision.call.status = .ended
        decision.call.endedAt = now
        decision.call.endedBy = actor
        decision.call.endReason = reason
        if let answeredAt = decision.call.answeredAt {
            decision.call.durationSeconds = max(0, Int(now.timeIntervalSince(answeredAt).rounded(.down)))
        }
        decision.emit(.ended, actor: actor, deviceID: deviceID, at: now)
        decision.notify(.callEnded, recipients)
        decision.notify(.incomingCallCanceled, ringing)
    }

    private static func participantError(_ call: CallSession, _ actor: String) -> CallError? {
        call.participant(actor) == nil ? CallError(.forbidden, "user '\(actor)' is not a participant of this call") : nil
    }

    private static func invalidState(_ call: CallSession, _ why: String) -> CallError {
        CallError(.invalidState, "\(why) (the call is \(call.status.rawValue))", status: call.status)
    }
}

extension CallRules {
    /// `token.generate`: a media token only for an accepted participant of an ongoing call —
    /// not for strangers, not for ringing or finished calls, not for a member who left or
    /// has not joined.
    public static func authorizeMediaToken(_ call: CallSession, for actor: String) -> CallError? {
        guard let participant = call.participant(actor) else {
            return CallError(.forbidden, "user '\(actor)' is not a participant of this call")
        }
        guard call.status == .ongoing else {
            return CallError(
                .invalidState, "call tokens are issued for ongoing calls only (the call is \(call.status.rawValue))",
                status: call.status)
        }
        switch participant.status {
        case .accepted:
            return nil
        case .left:
            return CallError(.forbidden, "user '\(actor)' has left this call")
        case .ringing:
            return CallError(
                .invalidState, "user '\(actor)' has not accepted this call yet (the call is ongoing)", status: call.status)
        case .rejected, .busy, .missed:
            return CallError(.forbidden, "user '\(actor)' did not join this call (\(participant.status.rawValue))")
        }
    }
}
