// The hot JSON of call-control written directly (issue 17): a call, once per decision, and the
// event around it. Foundation's JSONEncoder spent a quarter of call-control's CPU on them, most
// of it in its generic containers and the date strategy's closure. The members and values are
// those `WireTime.encoder` writes (its escapes and times byte for byte); the members come in
// their declared order, where the encoder's order follows its hashing. `JSONWritingTests`
// checks both against the encoder.
public import CallRules
public import Foundation

/// Appends JSON to a byte buffer.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int = 512) { bytes.reserveCapacity(capacity) }

    var data: Data { Data(bytes) }

    mutating func raw(_ text: StaticString) {
        text.withUTF8Buffer { bytes.append(contentsOf: $0) }
    }

    /// JSON already encoded.
    mutating func raw(_ json: Data) { bytes.append(contentsOf: json) }

    /// `"name":` (names are plain ASCII, written as they are).
    mutating func key(_ name: StaticString) {
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// `,"name":`, for every member but the first.
    mutating func nextKey(_ name: StaticString) {
        bytes.append(UInt8(ascii: ","))
        key(name)
    }

    mutating func null() { raw("null") }

    mutating func int(_ value: Int) {
        if value >= 0 && value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
        } else {
            bytes.append(contentsOf: String(value).utf8)
        }
    }

    /// A string, escaped as `JSONEncoder` does with `.withoutEscapingSlashes`: the quote, the
    /// backslash and the control characters; everything else as its UTF-8 bytes.
    mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                escape(byte)
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func escape(_ byte: UInt8) {
        bytes.append(UInt8(ascii: "\\"))
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): bytes.append(byte)
        case 0x08: bytes.append(UInt8(ascii: "b"))
        case 0x0C: bytes.append(UInt8(ascii: "f"))
        case 0x0A: bytes.append(UInt8(ascii: "n"))
        case 0x0D: bytes.append(UInt8(ascii: "r"))
        case 0x09: bytes.append(UInt8(ascii: "t"))
        default:
            let hex = WireTime.hexDigits
            bytes.append(contentsOf: [
                UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)],
            ])
        }
    }

    mutating func string(_ value: String?) {
        if let value { string(value) } else { null() }
    }

    mutating func uuid(_ value: UUID) {
        bytes.append(UInt8(ascii: "\""))
        WireTime.appendLowercased(value, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func date(_ value: Date) {
        bytes.append(UInt8(ascii: "\""))
        WireTime.append(value, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func date(_ value: Date?) {
        if let value { date(value) } else { null() }
    }

    /// Anything else through the encoder (call metadata, whose numbers the encoder formats).
    mutating func encoded(_ value: some Encodable) throws {
        bytes.append(contentsOf: try WireTime.encoder.encode(value))
    }
}

extension WireTime {
    static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    /// `format(date)`'s characters, `2026-11-26T10:35:07.123Z`, appended without Foundation's
    /// format style: the time truncated to the millisecond, as the format style does. Years
    /// outside 1600...9999 (never a call's: the format style counts earlier ones in the Julian
    /// calendar, and four digits end at 9999) are left to the format style.
    static func append(_ date: Date, to bytes: inout [UInt8]) {
        guard (-11_676_096_000.0..<253_402_300_800.0).contains(date.timeIntervalSince1970) else {
            bytes.append(contentsOf: date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)).utf8)
            return
        }
        // Whole seconds and the fraction apart, from the reference date Date keeps, as the
        // format style reads them: scaling the whole time would round some .xxx9999 up.
        let sinceReference = date.timeIntervalSinceReferenceDate
        let seconds = sinceReference.rounded(.down)
        let fraction = Int64(((sinceReference - seconds) * 1000).rounded(.down))
        let milliseconds = (Int64(seconds) + 978_307_200) * 1000 + fraction
        var days = milliseconds / 86_400_000
        var rest = milliseconds % 86_400_000
        if rest < 0 {
            rest += 86_400_000
            days -= 1
        }
        // Days to a proleptic Gregorian date (Howard Hinnant's days_from_civil, inverted).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shifted = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shifted + 2) / 5 + 1
        let month = shifted < 10 ? shifted + 3 : shifted - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)

        func digits(_ value: Int64, _ count: Int) {
            var divisor: Int64 = 1
            for _ in 1..<count { divisor *= 10 }
            var value = value
            while divisor > 0 {
                bytes.append(UInt8(ascii: "0") + UInt8(value / divisor))
                value %= divisor
                divisor /= 10
            }
        }
        digits(year, 4)
        bytes.append(UInt8(ascii: "-"))
        digits(month, 2)
        bytes.append(UInt8(ascii: "-"))
        digits(day, 2)
        bytes.append(UInt8(ascii: "T"))
        digits(rest / 3_600_000, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(rest / 60_000 % 60, 2)
        bytes.append(UInt8(ascii: ":"))
        digits(rest / 1000 % 60, 2)
        bytes.append(UInt8(ascii: "."))
        digits(rest % 1000, 3)
        bytes.append(UInt8(ascii: "Z"))
    }

    /// `uuid.uuidString.lowercased()`'s characters, appended.
    static func appendLowercased(_ uuid: UUID, to bytes: inout [UInt8]) {
        let hex = hexDigits
        withUnsafeBytes(of: uuid.uuid) { raw in
            for (index, byte) in raw.enumerated() {
                if index == 4 || index == 6 || index == 8 || index == 10 { bytes.append(UInt8(ascii: "-")) }
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0xF)])
            }
        }
    }
}

extension JSONWriter {
    /// The Call object, members in `WireCall.encode(to:)`'s order.
    mutating func call(_ call: CallSession) throws {
        raw("{")
        key("session_id")
        uuid(call.sessionID)
        nextKey("initiator")
        string(call.initiator)
        nextKey("receiver_id")
        string(call.receiverID)
        nextKey("receiver_type")
        string(call.receiverType.rawValue)
        nextKey("call_type")
        string(call.callType.rawValue)
        nextKey("status")
        string(call.status.rawValue)
        nextKey("initiated_at")
        date(call.initiatedAt)
        nextKey("expires_at")
        date(call.expiresAt)
        nextKey("answered_at")
        date(call.answeredAt)
        nextKey("ended_at")
        date(call.endedAt)
        nextKey("duration_s")
        if let seconds = call.durationSeconds { int(seconds) } else { null() }
        nextKey("ended_by")
        string(call.endedBy)
        nextKey("end_reason")
        string(call.endReason?.rawValue)
        nextKey("metadata")
        if call.metadata.isEmpty { raw("{}") } else { try encoded(call.metadata) }
        nextKey("participants")
        raw("[")
        for (index, participant) in call.participants.enumerated() {
            if index > 0 { raw(",") }
            self.participant(participant)
        }
        raw("]")
        nextKey("sequence")
        int(call.sequence)
        raw("}")
    }

    /// A participant, members in `WireParticipant.encode(to:)`'s order.
    mutating func participant(_ participant: Participant) {
        raw("{")
        key("uid")
        string(participant.uid)
        nextKey("role")
        string(participant.role.rawValue)
        nextKey("status")
        string(participant.status.rawValue)
        nextKey("joined_at")
        date(participant.joinedAt)
        nextKey("left_at")
        date(participant.leftAt)
        nextKey("rang_at")
        date(participant.rangAt)
        nextKey("left_reason")
        string(participant.leftReason?.rawValue)
        raw("}")
    }
}
