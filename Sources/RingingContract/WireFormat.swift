// JSON shapes of the Call object, replies, events and notifications (DESIGN §2), both ways:
// the services encode them, clients and tests decode them.
public import CallRules
public import Foundation

/// RFC 3339 UTC times with milliseconds, as every time on the wire is.
public enum WireTime {
    /// `2026-11-26T10:35:07.123Z`: the time truncated to the millisecond (`append`), as
    /// Foundation's ISO 8601 format style writes it on Swift 6.3, which `JSONWritingTests`
    /// checks; one definition for every time the services write.
    public static func format(_ date: Date) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        append(date, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    public static func parse(_ text: String) -> Date? {
        if let date = parseWritten(text) { return date }
        return (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// The form `format` writes (`2026-11-26T10:35:07.123Z`, or without the fraction) read
    /// directly, where a format style per call was 2% of the load generator's CPU; nil for
    /// anything else (other forms, offsets and years before the Gregorian calendar go to the
    /// format style). `WireTimeTests` checks it against the format style.
    static func parseWritten(_ text: String) -> Date? {
        var text = text
        return text.withUTF8 { bytes -> Date? in
            guard bytes.count == 24 || bytes.count == 20, bytes[4] == UInt8(ascii: "-"), bytes[7] == UInt8(ascii: "-"),
                bytes[10] == UInt8(ascii: "T"), bytes[13] == UInt8(ascii: ":"), bytes[16] == UInt8(ascii: ":"),
                bytes[bytes.count - 1] == UInt8(ascii: "Z")
            else { return nil }
            func number(_ range: Range<Int>) -> Int64? {
                var value: Int64 = 0
                for index in range {
                    let digit = bytes[index] &- UInt8(ascii: "0")
                    guard digit < 10 else { return nil }
                    value = value * 10 + Int64(digit)
                }
                return value
            }
            guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
                let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
            else { return nil }
            var milliseconds: Int64 = 0
            if bytes.count == 24 {
                guard bytes[19] == UInt8(ascii: "."), let fraction = number(20..<23) else { return nil }
                milliseconds = fraction
            }
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
            let monthDays: [Int64] = [31, leap ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
            // Before 1583 Foundation's calendar is Julian: the format style reads those.
            guard year >= 1583, (1...12).contains(month), day >= 1, day <= monthDays[Int(month - 1)], hour < 24, minute < 60,
                second < 60
            else { return nil }
            // Days since 1970 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
            let shiftedYear = month <= 2 ? year - 1 : year
            let era = shiftedYear / 400
            let yearOfEra = shiftedYear - era * 400
            let dayOfYear = (153 * ((month + 9) % 12) + 2) / 5 + day - 1
            let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
            let days = era * 146_097 + dayOfEra - 719_468
            let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second
            return Date(timeIntervalSinceReferenceDate: Double(seconds - 978_307_200) + Double(milliseconds) / 1000)
        }
    }

    public static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(format(date))
        }
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }()

    public static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "'\(text)' is not an RFC 3339 time")
            }
            return date
        }
        return decoder
    }()
}

public struct WireParticipant: Codable, Sendable, Hashable {
    public var uid: String
    public var role: ParticipantRole
    public var status: ParticipantStatus
    public var joinedAt: Date?
    public var leftAt: Date?
    /// When one of the receiver's devices first showed the ring (`call.ringing`).
    public var rangAt: Date?
    /// `connection_lost` when the server made the participant leave (DESIGN §10).
    public var leftReason: LeftReason?

    enum CodingKeys: String, CodingKey {
        case uid, role, status
        case joinedAt = "joined_at"
        case leftAt = "left_at"
        case rangAt = "rang_at"
        case leftReason = "left_reason"
    }

    public init(_ participant: Participant) {
        uid = participant.uid
        role = participant.role
        status = participant.status
        joinedAt = participant.joinedAt
        leftAt = participant.leftAt
        rangAt = participant.rangAt
        leftReason = participant.leftReason
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(uid, forKey: .uid)
        try c.encode(role, forKey: .role)
        try c.encode(status, forKey: .status)
        try c.encode(joinedAt, forKey: .joinedAt)
        try c.encode(leftAt, forKey: .leftAt)
        try c.encode(rangAt, forKey: .rangAt)
        try c.encode(leftReason, forKey: .leftReason)
    }
}

/// The Call object.
public struct WireCall: Codable, Sendable, Hashable {
    public var sessionID: UUID
    public var initiator: String
    public var receiverID: String
    public var receiverType: ReceiverType
    public var callType: CallType
    public var status: CallStatus
    public var initiatedAt: Date
    public var expiresAt: Date
    public var answeredAt: Date?
    public var endedAt: Date?
    public var durationSeconds: Int?
    public var endedBy: String?
    /// Why the server ended the call on its own: `unanswered`, `connection_lost` or
    /// `max_duration`; null when a participant's request ended it, or before the end.
    public var endReason: EndReason?
    public var metadata: JSONObject
    public var participants: [WireParticipant]
    public var sequence: Int

    enum CodingKeys: String, CodingKey {
        case initiator, status, metadata, participants, sequence
        case sessionID = "session_id"
        case receiverID = "receiver_id"
        case receiverType = "receiver_type"
        case callType = "call_type"
        case initiatedAt = "initiated_at"
        case expiresAt = "expires_at"
        case answeredAt = "answered_at"
        case endedAt = "ended_at"
        case durationSeconds = "duration_s"
        case endedBy = "ended_by"
        case endReason = "end_reason"
    }

    public init(_ call: CallSession) {
        sessionID = call.sessionID
        initiator = call.initiator
        receiverID = call.receiverID
        receiverType = call.receiverType
        callType = call.callType
        status = call.status
        initiatedAt = call.initiatedAt
        expiresAt = call.expiresAt
        answeredAt = call.answeredAt
        endedAt = call.endedAt
        durationSeconds = call.durationSeconds
        endedBy = call.endedBy
        endReason = call.endReason
        metadata = call.metadata
        participants = call.participants.map(WireParticipant.init)
        sequence = call.sequence
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(sessionID.uuidString.lowercased(), forKey: .sessionID)
        try c.encode(initiator, forKey: .initiator)
        try c.encode(receiverID, forKey: .receiverID)
        try c.encode(receiverType, forKey: .receiverType)
        try c.encode(callType, forKey: .callType)
        try c.encode(status, forKey: .status)
        try c.encode(initiatedAt, forKey: .initiatedAt)
        try c.encode(expiresAt, forKey: .expiresAt)
        try c.encode(answeredAt, forKey: .answeredAt)
        try c.encode(endedAt, forKey: .endedAt)
        try c.encode(durationSeconds, forKey: .durationSeconds)
        try c.encode(endedBy, forKey: .endedBy)
        try c.encode(endReason, forKey: .endReason)
        try c.encode(metadata, forKey: .metadata)
        try c.encode(participants, forKey: .participants)
        try c.encode(sequence, forKey: .sequence)
    }

    public func participant(_ uid: String) -> WireParticipant? { participants.first { $0.uid == uid } }
}

/// The body of an event on `calls.events` and, with `recipient`, of a notification on
/// `calls.notifications`.
public struct WireEvent: Codable, Sendable, Hashable {
    public var eventID: UUID
    public var type: String
    public var occurredAt: Date
    public var sequence: Int
    public var actor: String?
    /// The acting device, when the request named one (elsewhere notifications carry it).
    public var deviceID: String?
    public var call: WireCall
    /// Notifications only: the user they are for.
    public var recipient: String?
    /// W3C trace context of the request that caused the change, when it carried one.
    public var traceparent: String?

    enum CodingKeys: String, CodingKey {
        case type, sequence, actor, call, recipient, traceparent
        case eventID = "event_id"
        case occurredAt = "occurred_at"
        case deviceID = "device_id"
    }

    public init(_ event: CallEvent, type: String, recipient: String? = nil, traceparent: String? = nil) {
        eventID = event.eventID
        self.type = type
        occurredAt = event.occurredAt
        sequence = event.sequence
        actor = event.actor
        deviceID = event.deviceID
        call = WireCall(event.call)
        self.recipient = recipient
        self.traceparent = traceparent
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(eventID.uuidString.lowercased(), forKey: .eventID)
        try c.encode(type, forKey: .type)
        try c.encode(occurredAt, forKey: .occurredAt)
        try c.encode(sequence, forKey: .sequence)
        try c.encodeIfPresent(actor, forKey: .actor)
        try c.encodeIfPresent(deviceID, forKey: .deviceID)
        try c.encode(call, forKey: .call)
        try c.encodeIfPresent(recipient, forKey: .recipient)
        try c.encodeIfPresent(traceparent, forKey: .traceparent)
    }
}

extension WireEvent {
    /// The event as JSON with `callJSON` (an encoded `WireCall`) as its `call`: a decision's
    /// call is encoded once and spliced into its event, its notifications and the reply. The
    /// members are those of `encode(to:)`, `call` last, written directly (`JSONWriter`).
    public static func encoded(
        _ event: CallEvent, type: String, recipient: String? = nil, traceparent: String? = nil, callJSON: Data
    ) throws -> Data {
        var json = JSONWriter(capacity: callJSON.count + 256)
        json.raw("{")
        json.key("event_id")
        json.uuid(event.eventID)
        json.nextKey("type")
        json.string(type)
        json.nextKey("occurred_at")
        json.date(event.occurredAt)
        json.nextKey("sequence")
        json.int(event.sequence)
        if let actor = event.actor {
            json.nextKey("actor")
            json.string(actor)
        }
        if let deviceID = event.deviceID {
            json.nextKey("device_id")
            json.string(deviceID)
        }
        if let recipient {
            json.nextKey("recipient")
            json.string(recipient)
        }
        if let traceparent {
            json.nextKey("traceparent")
            json.string(traceparent)
        }
        json.nextKey("call")
        json.raw(callJSON)
        json.raw("}")
        return json.data
    }
}

/// Splicing JSON that is already encoded.
public enum WireJSON {
    /// A call as JSON, to splice with `WireEvent.encoded` and `WireReply.call(json:)`.
    public static func call(_ call: CallSession) throws -> Data {
        var json = JSONWriter()
        try json.call(call)
        return json.data
    }

    /// `object` (an encoded JSON object) with `"key": value` added as its last member.
    static func adding(_ key: String, _ value: Data, to object: Data) -> Data {
        var result = object
        guard result.last == UInt8(ascii: "}") else { return result }
        result.removeLast()
        if result.count > 1 { result.append(UInt8(ascii: ",")) }
        result.append(contentsOf: Array("\"\(key)\":".utf8))
        result.append(value)
        result.append(UInt8(ascii: "}"))
        return result
    }
}

public struct WireError: Codable, Sendable, Hashable {
    public var code: CallError.Code
    public var message: String
    public var field: String?
    public var status: CallStatus?

    public init(_ error: CallError) {
        code = error.code
        message = error.message
        field = error.field
        status = error.status
    }

    public var callError: CallError { CallError(code, message, field: field, status: status) }
}

/// Every reply: `{"ok":true,…}` or `{"ok":false,"error":{…}}`.
public struct WireReply: Codable, Sendable, Hashable {
    public var ok: Bool
    /// `call.initiate`, `accept`, `reject`, `end`, `get`; for `call.active`, nil means null.
    public var call: WireCall?
    public var calls: [WireCall]?
    public var next: String?
    public var token: String?
    public var expiresAt: Date?
    public var keys: [JSONObject]?
    /// `device.list`.
    public var devices: [WireDevice]?
    public var error: WireError?
    /// Which of the optional members are present even when nil (`"call": null`).
    var shape: Shape = .plain

    enum Shape: Sendable, Hashable { case plain, call, calls, live }

    enum CodingKeys: String, CodingKey {
        case ok, call, calls, next, token, keys, devices, error
        case expiresAt = "expires_at"
    }

    public static func call(_ call: CallSession?) -> WireReply {
        WireReply(ok: true, call: call.map(WireCall.init), shape: .call)
    }

    public static func calls(_ calls: [CallSession], next: String?) -> WireReply {
        WireReply(ok: true, calls: calls.map(WireCall.init), next: next, shape: .calls)
    }

    /// `call.live`: every call the user rings in or is in, with no paging.
    public static func live(_ calls: [CallSession]) -> WireReply {
        WireReply(ok: true, calls: calls.map(WireCall.init), shape: .live)
    }

    public static let ok = WireReply(ok: true)

    /// `{"ok":true,"call":…}` around a call already encoded (`WireJSON.call`).
    public static func call(json: Data) -> Data { WireJSON.adding("call", json, to: Data(#"{"ok":true}"#.utf8)) }

    public init(ok: Bool) { self.init(ok: ok, call: nil) }

    public static func token(_ token: String, expiresAt: Date) -> WireReply {
        WireReply(ok: true, token: token, expiresAt: expiresAt)
    }

    public static func keys(_ keys: [JSONObject]) -> WireReply {
        WireReply(ok: true, keys: keys)
    }

    public static func devices(_ devices: [WireDevice]) -> WireReply {
        var reply = WireReply(ok: true)
        reply.devices = devices
        return reply
    }

    public static func error(_ error: CallError) -> WireReply {
        WireReply(ok: false, error: WireError(error))
    }

    init(
        ok: Bool, call: WireCall? = nil, calls: [WireCall]? = nil, next: String? = nil, token: String? = nil,
        expiresAt: Date? = nil, keys: [JSONObject]? = nil, error: WireError? = nil, shape: Shape = .plain
    ) {
        self.ok = ok
        self.call = call
        self.calls = calls
        self.next = next
        self.token = token
        self.expiresAt = expiresAt
        self.keys = keys
        self.error = error
        self.shape = shape
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        ok = try c.decode(Bool.self, forKey: .ok)
        call = try c.decodeIfPresent(WireCall.self, forKey: .call)
        calls = try c.decodeIfPresent([WireCall].self, forKey: .calls)
        next = try c.decodeIfPresent(String.self, forKey: .next)
        token = try c.decodeIfPresent(String.self, forKey: .token)
        expiresAt = try c.decodeIfPresent(Date.self, forKey: .expiresAt)
        keys = try c.decodeIfPresent([JSONObject].self, forKey: .keys)
        devices = try c.decodeIfPresent([WireDevice].self, forKey: .devices)
        error = try c.decodeIfPresent(WireError.self, forKey: .error)
        shape =
            c.contains(.calls) ? (c.contains(.next) ? .calls : .live) : c.contains(.call) ? .call : .plain
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(ok, forKey: .ok)
        switch shape {
        case .call: try c.encode(call, forKey: .call)
        case .calls:
            try c.encode(calls ?? [], forKey: .calls)
            try c.encode(next, forKey: .next)
        case .live: try c.encode(calls ?? [], forKey: .calls)
        case .plain: break
        }
        try c.encodeIfPresent(token, forKey: .token)
        try c.encodeIfPresent(expiresAt, forKey: .expiresAt)
        try c.encodeIfPresent(keys, forKey: .keys)
        try c.encodeIfPresent(devices, forKey: .devices)
        try c.encodeIfPresent(error, forKey: .error)
    }

    public func encoded() -> Data {
        // Encoding these types cannot fail: every member is a plain value.
        (try? WireTime.encoder.encode(self))
            ?? Data(#"{"ok":false,"error":{"code":"unavailable","message":"reply encoding failed"}}"#.utf8)
    }
}

/// Routing keys on the topic exchanges.
public enum RoutingKey {
    public static func event(_ type: CallEventType) -> String { type.rawValue }
    public static func notification(_ name: NotificationName, for uid: String) -> String { "user.\(uid).\(name.rawValue)" }
    /// What a device or notifier binds to receive every notification of one user.
    public static func allNotifications(for uid: String) -> String { "user.\(uid).#" }
}

/// Names of the topology of DESIGN §2.
public enum Topology {
    public static let commandsExchange = "calls.commands"
    public static let eventsExchange = "calls.events"
    public static let notificationsExchange = "calls.notifications"
    public static let deadLetterExchange = "calls.dead-letter"
    public static let deadLetterQueue = "calls.dead-letter"
    public static let callControlQueue = "call-control.commands"
    public static let tokenServiceQueue = "token-service.requests"
    public static let pushNotifierQueue = "push-notifier.requests"
    /// The broker account whose `user_id` every event and notification carries (DESIGN §9);
    /// consumers drop messages from anybody else.
    public static let publisherAccount = "call-control"
}
