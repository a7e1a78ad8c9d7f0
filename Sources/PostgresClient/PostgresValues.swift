// Conversions between Swift values and PostgreSQL's text format, for bind parameters and
// result columns.
public import Foundation

/// A PostgreSQL type OID, sent with each bind parameter so that the server never guesses.
public struct PostgresType: Hashable, Sendable {
    public let oid: UInt32
    public init(oid: UInt32) { self.oid = oid }

    public static let bool = PostgresType(oid: 16)
    public static let bytea = PostgresType(oid: 17)
    public static let int8 = PostgresType(oid: 20)
    public static let int2 = PostgresType(oid: 21)
    public static let int4 = PostgresType(oid: 23)
    public static let text = PostgresType(oid: 25)
    public static let json = PostgresType(oid: 114)
    public static let float8 = PostgresType(oid: 701)
    public static let timestamptz = PostgresType(oid: 1184)
    public static let uuid = PostgresType(oid: 2950)
    public static let jsonb = PostgresType(oid: 3802)
    public static let boolArray = PostgresType(oid: 1000)
    public static let int8Array = PostgresType(oid: 1016)
    public static let textArray = PostgresType(oid: 1009)
    public static let uuidArray = PostgresType(oid: 2951)
    public static let timestamptzArray = PostgresType(oid: 1185)
    /// Let the server infer the type from context.
    public static let unknown = PostgresType(oid: 0)
}

/// A value that can be sent as a bind parameter.
public protocol PostgresEncodable: Sendable {
    static var postgresType: PostgresType { get }
    /// The value in PostgreSQL's text input format.
    var postgresText: String { get }
}

/// A value that can be read from a result column.
public protocol PostgresDecodable: Sendable {
    /// Reads the value from PostgreSQL's text output format; nil when it does not parse.
    init?(postgresText: String)
}

public typealias PostgresCodable = PostgresEncodable & PostgresDecodable

extension String: PostgresCodable {
    public static var postgresType: PostgresType { .text }
    public var postgresText: String { self }
    public init?(postgresText: String) { self = postgresText }
}

extension Int: PostgresCodable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresText: String { String(self) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int64: PostgresCodable {
    public static var postgresType: PostgresType { .int8 }
    public var postgresText: String { String(self) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Int32: PostgresCodable {
    public static var postgresType: PostgresType { .int4 }
    public var postgresText: String { String(self) }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension Bool: PostgresCodable {
    public static var postgresType: PostgresType { .bool }
    public var postgresText: String { self ? "t" : "f" }
    public init?(postgresText: String) {
        switch postgresText {
        case "t", "true": self = true
        case "f", "false": self = false
        default: return nil
        }
    }
}

extension Double: PostgresCodable {
    public static var postgresType: PostgresType { .float8 }
    public var postgresText: String { "\(self)" }
    public init?(postgresText: String) { self.init(postgresText) }
}

extension UUID: PostgresCodable {
    public static var postgresType: PostgresType { .uuid }
    /// Lowercase, hyphenated: written from the bytes (`uuidString` and `lowercased()` would
    /// cost two strings per element of a batch's arrays).
    public var postgresText: String {
        let hex: StaticString = "0123456789abcdef"
        return withUnsafeBytes(of: uuid) { bytes in
            String(unsafeUninitializedCapacity: 36) { out in
                hex.withUTF8Buffer { hex in
                    var at = 0
                    for (index, byte) in bytes.enumerated() {
                        if index == 4 || index == 6 || index == 8 || index == 10 {
                            out[at] = UInt8(ascii: "-")
                            at += 1
                        }
                        out[at] = hex[Int(byte >> 4)]
                        out[at + 1] = hex[Int(byte & 0x0F)]
                        at += 2
                    }
                    return at
                }
            }
        }
    }
    public init?(postgresText: String) { self.init(uuidString: postgresText) }
}

extension Data: PostgresCodable {
    public static var postgresType: PostgresType { .bytea }
    public var postgresText: String {
        let hex: [UInt8] = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: 0, count: 2 + count * 2)
        out[0] = UInt8(ascii: "\\")
        out[1] = UInt8(ascii: "x")
        for (index, byte) in enumerated() {
            out[2 + index * 2] = hex[Int(byte >> 4)]
            out[3 + index * 2] = hex[Int(byte & 0x0F)]
        }
        return String(decoding: out, as: UTF8.self)
    }

    public init?(postgresText: String) {
        let utf8 = Array(postgresText.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            return nil
        }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes = [UInt8]()
        bytes.reserveCapacity((utf8.count - 2) / 2)
        var index = 2
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        self.init(bytes)
    }
}

extension Date: PostgresCodable {
    public static var postgresType: PostgresType { .timestamptz }

    /// RFC 3339 in UTC with microseconds, which is PostgreSQL's own precision.
    public var postgresText: String {
        let micros = (timeIntervalSince1970 * 1_000_000).rounded()
        var seconds = Int64((micros / 1_000_000).rounded(.down))
        let fraction = Int64(micros) - seconds * 1_000_000
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        seconds -= days * 86_400
        let (year, month, day) = civilFromDays(days)
        if (0...9999).contains(year) {
            // Written digit by digit into one string: the batches' arrays hold many of these.
            let fields: [(value: Int64, width: Int, then: UInt8)] = [
                (year, 4, UInt8(ascii: "-")), (month, 2, UInt8(ascii: "-")), (day, 2, UInt8(ascii: "T")),
                (seconds / 3600, 2, UInt8(ascii: ":")), (seconds / 60 % 60, 2, UInt8(ascii: ":")),
                (seconds % 60, 2, UInt8(ascii: ".")), (fraction, 6, UInt8(ascii: "Z")),
            ]
            return String(unsafeUninitializedCapacity: 27) { out in
                var at = 0
                for field in fields {
                    var value = field.value
                    for digit in stride(from: field.width - 1, through: 0, by: -1) {
                        out[at + digit] = UInt8(ascii: "0") + UInt8(value % 10)
                        value /= 10
                    }
                    out[at + field.width] = field.then
                    at += field.width + 1
                }
                return at
            }
        }
        func pad(_ value: Int64, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return
            "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(seconds / 3600, 2)):\(pad(seconds / 60 % 60, 2)):\(pad(seconds % 60, 2)).\(pad(fraction, 6))Z"
    }

    /// Parses the ISO output of a `timestamptz` in a UTC session: `2026-11-24 18:46:02.123456+00`.
    public init?(postgresText: String) {
        let u = Array(postgresText.utf8)
        func number(_ range: Range<Int>) -> Int64? {
            guard range.upperBound <= u.count else { return nil }
            var value: Int64 = 0
            for c in u[range] {
                guard c >= 48 && c <= 57 else { return nil }
                value = value * 10 + Int64(c - 48)
            }
            return value
        }
        guard u.count >= 19, let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var index = 19
        var micros: Int64 = 0
        if index < u.count && u[index] == UInt8(ascii: ".") {
            index += 1
            var digits = 0
            while index < u.count, u[index] >= 48, u[index] <= 57 {
                if digits < 6 { micros = micros * 10 + Int64(u[index] - 48) }
                digits += 1
                index += 1
            }
            if digits < 6 { for _ in digits..<6 { micros *= 10 } }
        }
        var offsetSeconds: Int64 = 0
        if index < u.count {
            let sign: Int64 = u[index] == UInt8(ascii: "-") ? -1 : 1
            guard u[index] == UInt8(ascii: "+") || u[index] == UInt8(ascii: "-") || u[index] == UInt8(ascii: "Z") else {
                return nil
            }
            if u[index] != UInt8(ascii: "Z") {
                guard let hours = number(index + 1..<index + 3) else { return nil }
                var minutes: Int64 = 0
                if index + 6 <= u.count, u[index + 3] == UInt8(ascii: ":"), let m = number(index + 4..<index + 6) { minutes = m }
                offsetSeconds = sign * (hours * 3600 + minutes * 60)
            }
        }
        let days = daysFromCivil(year, month, day)
        let total = days * 86_400 + hour * 3600 + minute * 60 + second - offsetSeconds
        self.init(timeIntervalSince1970: Double(total) + Double(micros) / 1_000_000)
    }
}

// Howard Hinnant's civil calendar algorithms: exact for the proleptic Gregorian calendar.
private func daysFromCivil(_ year: Int64, _ month: Int64, _ day: Int64) -> Int64 {
    let y = month <= 2 ? year - 1 : year
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
}

private func civilFromDays(_ days: Int64) -> (Int64, Int64, Int64) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let day = doy - (153 * mp + 2) / 5 + 1
    let month = mp < 10 ? mp + 3 : mp - 9
    return (month <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, month, day)
}

/// JSON text sent as `jsonb` (a JSON object or array the caller has already encoded).
public struct PostgresJSONB: PostgresCodable, Hashable {
    public var text: String
    public init(_ text: String) { self.text = text }
    public static var postgresType: PostgresType { .jsonb }
    public var postgresText: String { text }
    public init?(postgresText: String) { text = postgresText }
}

/// Element types of one-dimensional arrays.
public protocol PostgresArrayElement: PostgresCodable {
    static var postgresArrayType: PostgresType { get }
}

extension String: PostgresArrayElement { public static var postgresArrayType: PostgresType { .textArray } }
extension Int: PostgresArrayElement { public static var postgresArrayType: PostgresType { .int8Array } }
extension UUID: PostgresArrayElement { public static var postgresArrayType: PostgresType { .uuidArray } }
extension Bool: PostgresArrayElement { public static var postgresArrayType: PostgresType { .boolArray } }

extension Date: PostgresArrayElement { public static var postgresArrayType: PostgresType { .timestamptzArray } }

extension Array: PostgresEncodable where Element: PostgresArrayElement {
    public static var postgresType: PostgresType { Element.postgresArrayType }

    /// `{"a","b"}`: every element quoted, so commas, braces and spaces need no thought.
    public var postgresText: String { arrayLiteral(map { $0.postgresText }) }
}

/// A one-dimensional array whose elements may be NULL, for columns that may be (`unnest` of
/// several arrays writes many rows in one statement).
public struct PostgresNullableArray<Element: PostgresArrayElement>: PostgresEncodable {
    public var elements: [Element?]
    public init(_ elements: [Element?]) { self.elements = elements }
    public static var postgresType: PostgresType { Element.postgresArrayType }
    public var postgresText: String { arrayLiteral(elements.map { $0?.postgresText }) }
}

/// An array literal of elements in text form, each quoted (nil is an unquoted NULL).
/// Escaped by runs of bytes: in UTF-8 a quote or backslash byte is never part of another
/// character, so the bytes between two of them are copied whole, and large elements (JSON
/// bodies) cost a scan and a copy.
private func arrayLiteral(_ elements: [String?]) -> String {
    let quote = UInt8(ascii: "\"")
    let backslash = UInt8(ascii: "\\")
    var capacity = 2
    for element in elements { capacity += (element?.utf8.count ?? 4) + 3 }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(capacity)
    bytes.append(UInt8(ascii: "{"))
    for (index, element) in elements.enumerated() {
        if index > 0 { bytes.append(UInt8(ascii: ",")) }
        guard var element else {
            bytes.append(contentsOf: "NULL".utf8)
            continue
        }
        bytes.append(quote)
        element.withUTF8 { text in
            var start = 0
            for position in text.indices where text[position] == quote || text[position] == backslash {
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[start..<position]))
                bytes.append(backslash)
                start = position
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: text[start...]))
        }
        bytes.append(quote)
    }
    bytes.append(UInt8(ascii: "}"))
    return String(decoding: bytes, as: UTF8.self)
}

extension Array: PostgresDecodable where Element: PostgresArrayElement {
    /// Parses a one-dimensional array literal; NULL elements do not decode.
    public init?(postgresText: String) {
        var chars = postgresText.makeIterator()
        guard chars.next() == "{" else { return nil }
        var result: [Element] = []
        var current = ""
        var quoted = false
        var inQuotes = false
        var finished = false
        func flush() -> Bool {
            if !quoted && current == "NULL" { return false }
            guard let element = Element(postgresText: current) else { return false }
            result.append(element)
            current = ""
            quoted = false
            return true
        }
        while let c = chars.next() {
            if inQuotes {
                if c == "\\" {
                    if let next = chars.next() { current.append(next) }
                } else if c == "\"" {
                    inQuotes = false
                } else {
                    current.append(c)
                }
            } else if c == "\"" {
                inQuotes = true
                quoted = true
            } else if c == "," {
                guard flush() else { return nil }
            } else if c == "}" {
                if !(current.isEmpty && !quoted && result.isEmpty) { guard flush() else { return nil } }
                finished = true
                break
            } else {
                current.append(c)
            }
        }
        guard finished else { return nil }
        self = result
    }
}
