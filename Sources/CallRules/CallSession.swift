// The call session and its participants: the values the ringing rules work on.
public import Foundation

public enum CallStatus: String, Sendable, Hashable, Codable, CaseIterable {
    case initiated, ongoing, ended, rejected, busy, cancelled, unanswered

    /// Terminal states never change again.
    public var isTerminal: Bool { self != .initiated && self != .ongoing }
}

public enum ReceiverType: String, Sendable, Hashable, Codable, CaseIterable {
    case user, group
}

public enum CallType: String, Sendable, Hashable, Codable, CaseIterable {
    case audio, video
}

public enum ParticipantRole: String, Sendable, Hashable, Codable {
    case initiator, receiver
}

public enum ParticipantStatus: String, Sendable, Hashable, Codable {
    case ringing, accepted, rejected, busy, missed, left
}

/// Why the server ended a call on its own (DESIGN §3, §10); nil when a participant's request ended it.
public enum EndReason: String, Sendable, Hashable, Codable, CaseIterable {
    /// Nobody answered before the ring deadline.
    case unanswered
    /// Too few participants kept the call live (heartbeats or requests naming it).
    case connectionLost = "connection_lost"
    /// The call outlived the maximum call duration.
    case maxDuration = "max_duration"
}

/// Why the server made a participant leave (DESIGN §10); nil when they left by request.
public enum LeftReason: String, Sendable, Hashable, Codable, CaseIterable {
    case connectionLost = "connection_lost"
}

public struct Participant: Sendable, Hashable {
    public var uid: String
    public var role: ParticipantRole
    public var status: ParticipantStatus
    /// When the participant joined the media session (the call became ongoing for them).
    public var joinedAt: Date?
    public var leftAt: Date?
    /// When one of the receiver's devices first reported showing the ring (`call.ringing`).
    public var rangAt: Date?
    /// Why the server made the participant leave, when it did.
    public var leftReason: LeftReason?
    /// While the participant is in an ongoing call: the latest of `joinedAt`, its last
    /// heartbeat and its last request naming the call (not on the wire).
    public var lastSeenAt: Date?

    public init(
        uid: String, role: ParticipantRole, status: ParticipantStatus, joinedAt: Date? = nil, leftAt: Date? = nil,
        rangAt: Date? = nil, leftReason: LeftReason? = nil, lastSeenAt: Date? = nil
    ) {
        self.uid = uid
        self.role = role
        self.status = status
        self.joinedAt = joinedAt
        self.leftAt = leftAt
        self.rangAt = rangAt
        self.leftReason = leftReason
        self.lastSeenAt = lastSeenAt
    }

    /// Whether this participation makes the user *active* (DESIGN §3): the initiator of a
    /// ringing call, or an accepted participant of an ongoing call. Being rung is not active.
    public func isActive(in status: CallStatus) -> Bool {
        guard self.status == .accepted else { return false }
        switch role {
        case .initiator: return status == .initiated || status == .ongoing
        case .receiver: return status == .ongoing
        }
    }
}

/// One call session, as stored and as sent in replies, events and notifications.
public struct CallSession: Sendable, Hashable {
    public var sessionID: UUID
    public var initiator: String
    public var receiverID: String
    public var receiverType: ReceiverType
    public var callType: CallType
    public var status: CallStatus
    public var initiatedAt: Date
    /// The ring deadline, on the server's clock.
    public var expiresAt: Date
    public var answeredAt: Date?
    public var endedAt: Date?
    /// Talk time in whole seconds, from the first answer to the end.
    public var durationSeconds: Int?
    public var endedBy: String?
    /// Why the server ended the call, for the outcomes it decided.
    public var endReason: EndReason?
    public var metadata: JSONObject
    public var participants: [Participant]
    /// Increases by one with every change of this call.
    public var sequence: Int

    public init(
        sessionID: UUID, initiator: String, receiverID: String, receiverType: ReceiverType, callType: CallType,
        status: CallStatus, initiatedAt: Date, expiresAt: Date, answeredAt: Date? = nil, endedAt: Date? = nil,
        durationSeconds: Int? = nil, endedBy: String? = nil, endReason: EndReason? = nil, metadata: JSONObject = [:],
        participants: [Participant], sequence: Int
    ) {
        self.sessionID = sessionID
        self.initiator = initiator
        self.receiverID = receiverID
        self.receiverType = receiverType
        self.callType = callType
        self.status = status
        self.initiatedAt = initiatedAt
        self.expiresAt = expiresAt
        self.answeredAt = answeredAt
        self.endedAt = endedAt
        self.durationSeconds = durationSeconds
        self.endedBy = endedBy
        self.endReason = endReason
        self.metadata = metadata
        self.participants = participants
        self.sequence = sequence
    }

    public func participant(_ uid: String) -> Participant? {
        participants.first { $0.uid == uid }
    }

    /// Whether a ring deadline is still to be acted on: the call rings, or a group call is
    /// ongoing while members still ring.
    public var ringPending: Bool {
        status == .initiated || (status == .ongoing && participants.contains { $0.status == .ringing })
    }

    var receivers: [Participant] { participants.filter { $0.role == .receiver } }

    mutating func update(_ uid: String, _ change: (inout Participant) -> Void) {
        guard let index = participants.firstIndex(where: { $0.uid == uid }) else { return }
        change(&participants[index])
    }

    mutating func updateAll(where predicate: (Participant) -> Bool, _ change: (inout Participant) -> Void) {
        for index in participants.indices where predicate(participants[index]) {
            change(&participants[index])
        }
    }
}
