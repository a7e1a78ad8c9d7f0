// Request bodies read in one pass (issue 17): Foundation's JSONDecoder into `JSONValue` (a
// generic decode per value, each type tried in turn) and the separate scan for duplicate keys
// were a tenth of call-control's CPU. The reader accepts RFC 8259 JSON in UTF-8 and, as the
// decoder did, a comma before a closing bracket (the decoder also takes UTF-16 and UTF-32
// text, which RFC 8259 does not allow between systems and no client sends), reads
// numbers as the decoder does for `JSONValue` (an integer when the value is one exactly, as
// `1.0` or `1e2`), and notes the first key given twice in one object. `JSONReadingTests`
// checks it against the decoder and `DuplicateKeys`.
public import CallRules
public import Foundation

public enum JSONReader {
    /// Why a text is not JSON, with the byte offset where reading stopped.
    public struct SyntaxError: Error, CustomStringConvertible {
        public let message: String
        public let offset: Int
        public var description: String { "\(message) at byte \(offset)" }
    }

    /// The value of `data` and the first key that appears twice in one of its objects (at any
    /// depth, compared as the strings they spell), or a syntax error.
    public static func read(_ data: Data) throws(SyntaxError) -> (value: JSONValue, duplicateKey: String?) {
        let result: Result<(JSONValue, String?), SyntaxError> = data.withUnsafeBytes { buffer in
            var reader = Reader(bytes: buffer)
            do throws(SyntaxError) {
                // A byte order mark may open UTF-8 text (RFC 8259 §8.1); the decoder skipped it.
                if buffer.starts(with: [0xEF, 0xBB, 0xBF]) { reader.index = 3 }
                reader.skipSpace()
                let value = try reader.value(depth: 0)
                reader.skipSpace()
                guard reader.index == buffer.count else { throw reader.failure("unexpected text after the value") }
                return .success((value, reader.duplicateKey))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    /// The decoder's nesting limit.
    static let maximumDepth = 512

    private struct Reader {
        let bytes: UnsafeRawBufferPointer
        var index = 0
        var duplicateKey: String?

        init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

        func failure(_ message: String) -> SyntaxError { SyntaxError(message: message, offset: index) }

        var current: UInt8? { index < bytes.count ? bytes[index] : nil }

        mutating func skipSpace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) throws(SyntaxError) -> JSONValue {
            guard let byte = current else { throw failure("unexpected end of the text") }
            switch byte {
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "{"): return try object(depth: depth + 1)
            case UInt8(ascii: "["): return try array(depth: depth + 1)
            case UInt8(ascii: "t"):
                try literal("true")
                return .bool(true)
            case UInt8(ascii: "f"):
                try literal("false")
                return .bool(false)
            case UInt8(ascii: "n"):
                try literal("null")
                return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw failure("unexpected character \(Self.show(byte))")
            }
        }

        mutating func literal(_ word: StaticString) throws(SyntaxError) {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count,
                word.withUTF8Buffer({ memcmp($0.baseAddress!, bytes.baseAddress! + index, count) == 0 })
            else { throw failure("unexpected character \(Self.show(bytes[index]))") }
            index += count
        }

        /// Steps over `byte` when it comes next.
        mutating func take(_ byte: UInt8) -> Bool {
            guard current == byte else { return false }
            index += 1
            return true
        }

        func endOfContainer(_ expected: String) -> SyntaxError {
            failure(current == nil ? "unexpected end of the text" : "expected \(expected)")
        }

        /// The closing bracket may follow the opening one, a value, or (as the decoder allows)
        /// a comma after the last value.
        mutating func object(depth: Int) throws(SyntaxError) -> JSONValue {
            guard depth <= JSONReader.maximumDepth else { throw failure("nested more than \(JSONReader.maximumDepth) deep") }
            index += 1
            var members: JSONObject = [:]
            while true {
                skipSpace()
                if take(UInt8(ascii: "}")) { return .object(members) }
                guard current == UInt8(ascii: "\"") else { throw failure("expected a member name in quotes") }
                let key = try string()
                // Noted where the key is, before its value (and any duplicates inside it).
                if duplicateKey == nil, members[key] != nil { duplicateKey = key }
                skipSpace()
                guard take(UInt8(ascii: ":")) else { throw failure("expected ':' after a member name") }
                skipSpace()
                members[key] = try value(depth: depth)
                skipSpace()
                if take(UInt8(ascii: "}")) { return .object(members) }
                guard take(UInt8(ascii: ",")) else { throw endOfContainer("',' or '}' in an object") }
            }
        }

        mutating func array(depth: Int) throws(SyntaxError) -> JSONValue {
            guard depth <= JSONReader.maximumDepth else { throw failure("nested more than \(JSONReader.maximumDepth) deep") }
            index += 1
            var elements: [JSONValue] = []
            while true {
                skipSpace()
                if take(UInt8(ascii: "]")) { return .array(elements) }
                elements.append(try value(depth: depth))
                skipSpace()
                if take(UInt8(ascii: "]")) { return .array(elements) }
                guard take(UInt8(ascii: ",")) else { throw endOfContainer("',' or ']' in an array") }
            }
        }

        /// A string starting at the opening quote; the index ends after the closing one.
        mutating func string() throws(SyntaxError) -> String {
            index += 1
            let start = index
            // The usual case: no escapes, the bytes are the string.
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let text = String(validating: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
                    guard let text else {
                        index = start
                        throw failure("a string is not valid UTF-8")
                    }
                    index += 1
                    return text
                }
                if byte == UInt8(ascii: "\\") { break }
                guard byte >= 0x20 else { throw failure("a control character must be escaped in a string") }
                index += 1
            }
            guard index < bytes.count else { throw failure("a string is not closed") }
            var scalars: [UInt8] = Array(UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
            while index < bytes.count {
                let byte = bytes[index]
                switch byte {
                case UInt8(ascii: "\""):
                    index += 1
                    guard let text = String(validating: scalars, as: UTF8.self) else {
                        throw failure("a string is not valid UTF-8")
                    }
                    return text
                case UInt8(ascii: "\\"):
                    index += 1
                    guard let escaped = current else { throw failure("a string is not closed") }
                    index += 1
                    switch escaped {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): scalars.append(escaped)
                    case UInt8(ascii: "b"): scalars.append(0x08)
                    case UInt8(ascii: "f"): scalars.append(0x0C)
                    case UInt8(ascii: "n"): scalars.append(0x0A)
                    case UInt8(ascii: "r"): scalars.append(0x0D)
                    case UInt8(ascii: "t"): scalars.append(0x09)
                    case UInt8(ascii: "u"):
                        let scalar = try unicodeEscape()
                        scalars.append(contentsOf: Array(String(Character(scalar)).utf8))
                    default: throw failure("unknown escape \\\(Self.show(escaped))")
                    }
                default:
                    guard byte >= 0x20 else { throw failure("a control character must be escaped in a string") }
                    scalars.append(byte)
                    index += 1
                }
            }
            throw failure("a string is not closed")
        }

        /// `\uXXXX` (the index after the `u`), with the low half of a surrogate pair.
        mutating func unicodeEscape() throws(SyntaxError) -> Unicode.Scalar {
            let high = try hex4()
            if (0xD800...0xDBFF).contains(high) {
                guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else { throw failure("a \\u escape is half of a surrogate pair without the other half") }
                index += 2
                let low = try hex4()
                guard (0xDC00...0xDFFF).contains(low) else {
                    throw failure("a \\u escape is half of a surrogate pair without the other half")
                }
                return Unicode.Scalar(0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00))!
            }
            guard let scalar = Unicode.Scalar(high) else {
                throw failure("a \\u escape is half of a surrogate pair without the other half")
            }
            return scalar
        }

        mutating func hex4() throws(SyntaxError) -> UInt32 {
            guard index + 4 <= bytes.count else { throw failure("a \\u escape needs four hex digits") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: throw failure("a \\u escape needs four hex digits")
                }
                value = value << 4 | UInt32(digit)
                index += 1
            }
            return value
        }

        /// RFC 8259's number; an integer when it is one exactly and fits 64 bits.
        mutating func number() throws(SyntaxError) -> JSONValue {
            let start = index
            var isInteger = true
            if current == UInt8(ascii: "-") { index += 1 }
            guard let first = current, Self.isDigit(first) else { throw failure("a number needs a digit") }
            index += 1
            if first == UInt8(ascii: "0"), let next = current, Self.isDigit(next) {
                throw failure("a number may not start with 0")
            }
            while let byte = current, Self.isDigit(byte) { index += 1 }
            if current == UInt8(ascii: ".") {
                isInteger = false
                index += 1
                guard let byte = current, Self.isDigit(byte) else { throw failure("a number needs a digit after '.'") }
                while let byte = current, Self.isDigit(byte) { index += 1 }
            }
            if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
                isInteger = false
                index += 1
                if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
                guard let byte = current, Self.isDigit(byte) else { throw failure("a number needs a digit in its exponent") }
                while let byte = current, Self.isDigit(byte) { index += 1 }
            }
            let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            if isInteger, let integer = Int64(text) { return .int(integer) }
            guard let double = Double(text), double.isFinite else {
                index = start
                throw failure("the number \(text.prefix(40)) is out of range")
            }
            // Beyond 2^53 a double is not every integer, and the decoder reads such numbers
            // its own way (an integer through Decimal when it is one): it reads them here too.
            if double.magnitude >= 9_007_199_254_740_992 {
                return (try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))) ?? .double(double)
            }
            if let integer = Int64(exactly: double) { return .int(integer) }
            return .double(double)
        }

        static func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }

        static func show(_ byte: UInt8) -> String {
            (0x21...0x7E).contains(byte) ? "'\(Character(Unicode.Scalar(byte)))'" : "0x\(String(byte, radix: 16))"
        }
    }
}
