// What a rule decides: the changed call, the events and notifications to publish, and the
// error to reply with, if any.
public import Foundation

/// The events of `calls.events`, named by their routing key.
public enum CallEventType: String, Sendable, Hashable, Codable, CaseIterable {
    case initiated = "call.initiated"
    /// The first receiver device reported showing the ring (`call.ringing`).
    case ringing = "call.ringing"
    case accepted = "call.accepted"
    /// A further group member accepted.
    case joined = "call.joined"
    /// The call, or for a group call one member, declined.
    case rejected = "call.rejected"
    /// The call, or for a group call one member, was busy.
    case busy = "call.busy"
    case cancelled = "call.cancelled"
    /// Nobody answered by the deadline; for an ongoing group call, members still ringing missed it.
    case unanswered = "call.unanswered"
    /// A group member left an ongoing call that goes on.
    case left = "call.left"
    case ended = "call.ended"
}

/// The notifications of `calls.notifications`, named after the client callbacks.
public enum NotificationName: String, Sendable, Hashable, Codable, CaseIterable {
    case incomingCallReceived = "incoming_call.received"
    /// The call's first ring receipt: the callee's phone is ringing.
    case outgoingCallRinging = "outgoing_call.ringing"
    case outgoingCallAccepted = "outgoing_call.accepted"
    case outgoingCallRejected = "outgoing_call.rejected"
    case incomingCallCanceled = "incoming_call.canceled"
    case answeredElsewhere = "incoming_call.answered_elsewhere"
    case rejectedElsewhere = "incoming_call.rejected_elsewhere"
    case callEnded = "call.ended"
    case participantJoined = "call.participant_joined"
    case participantLeft = "call.participant_left"
}

/// One state change of a call.
public struct CallEvent: Sendable, Hashable {
    public var type: CallEventType
    public var sequence: Int
    public var occurredAt: Date
    /// The user whose request caused the change; nil for the server's own decisions (ring
    /// deadline, lost connections, maximum duration).
    public var actor: String?
    /// The device the actor used, when the request named one.
    public var deviceID: String?
    /// The call as it is after the change.
    public var call: CallSession

    /// Stable across republishing: derived from the session and the sequence number, so a
    /// consumer can deduplicate on it.
    public var eventID: UUID {
        var bytes = sessionBytes
        withUnsafeBytes(of: UInt64(sequence).bigEndian) { sequenceBytes in
            for index in 0..<8 { bytes[8 + index] ^= sequenceBytes[index] }
        }
        // Marked as a version 8 (custom) UUID with the RFC 4122 variant.
        bytes[6] = (bytes[6] & 0x0F) | 0x80
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        return UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
            ))
    }

    private var sessionBytes: [UInt8] {
        withUnsafeBytes(of: call.sessionID.uuid) { Array($0) }
    }
}

/// A message for one user's devices, caused by an event.
public struct CallNotification: Sendable, Hashable {
    public var name: NotificationName
    public var recipient: String
    public var event: CallEvent
}

/// The decision of a rule: persist `call` (when `changed`), publish `events` and
/// `notifications`, and reply with `call` or with `error`.
///
/// A request can fail *and* change the call: an accept that arrives after the ring deadline
/// but before the timer fired makes the call `unanswered` and then fails with `invalid_state`.
public struct CallDecision: Sendable, Hashable {
    public var call: CallSession
    public var events: [CallEvent] = []
    public var notifications: [CallNotification] = []
    public var error: CallError?
    /// A change to store that is not an event of the call (a later receiver's `rang_at`).
    public var quietChange = false

    public init(call: CallSession) {
        self.call = call
    }

    /// Whether there is anything to store.
    public var changed: Bool { !events.isEmpty || quietChange }

    /// Records one change: bumps the sequence and snapshots the call.
    mutating func emit(_ type: CallEventType, actor: String?, deviceID: String? = nil, at time: Date) {
        call.sequence += 1
        events.append(
            CallEvent(type: type, sequence: call.sequence, occurredAt: time, actor: actor, deviceID: deviceID, call: call))
    }

    /// Addresses the latest event to `recipients`.
    mutating func notify(_ name: NotificationName, _ recipients: [String]) {
        guard let event = events.last else { return }
        for recipient in recipients {
            notifications.append(CallNotification(name: name, recipient: recipient, event: event))
        }
    }

    func failing(_ error: CallError) -> CallDecision {
        var copy = self
        copy.error = error
        return copy
    }
}

/// Why a request was refused. `code` is the wire code of DESIGN §2.
public struct CallError: Error, Sendable, Hashable, CustomStringConvertible {
    public enum Code: String, Sendable, Hashable, Codable {
        case invalidRequest = "invalid_request"
        case unauthenticated
        case forbidden
        case notFound = "not_found"
        case invalidState = "invalid_state"
        case callerBusy = "caller_busy"
        case unavailable
        /// The gateway's per-socket or per-user limit: retry later.
        case rateLimited = "rate_limited"
    }

    public var code: Code
    public var message: String
    /// The request field at fault (`invalid_request`).
    public var field: String?
    /// The call's current status (`invalid_state`).
    public var status: CallStatus?

    public init(_ code: Code, _ message: String, field: String? = nil, status: CallStatus? = nil) {
        self.code = code
        self.message = message
        self.field = field
        self.status = status
    }

    public static func invalid(_ field: String, _ message: String) -> CallError {
        CallError(.invalidRequest, message, field: field)
    }

    public var description: String { "\(code.rawValue): \(message)" }
}
