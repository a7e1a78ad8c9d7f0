// The one-pass JSON reader of request bodies against what it replaced: Foundation's
// JSONDecoder into JSONValue (same value, same acceptance) and DuplicateKeys (same key).
import CallRules
import Foundation
import Testing

@testable import RingingContract

@Suite struct JSONReadingTests {
    /// The old reading: the decoder's value (nil when it refused) and the duplicate scan's key.
    func decoded(_ text: String) -> (JSONValue?, String?) {
        let data = Data(text.utf8)
        guard let value = try? JSONDecoder().decode(JSONValue.self, from: data) else { return (nil, nil) }
        return (value, DuplicateKeys.first(in: data))
    }

    func read(_ text: String) -> (JSONValue?, String?) {
        guard let (value, key) = try? JSONReader.read(Data(text.utf8)) else { return (nil, nil) }
        return (value, key)
    }

    static let cases: [String] = [
        #"{}"#, #"[]"#, #" { "a" : 1 } "#, "\t\n\r{\"a\":[1,2,{\"b\":null}]}\n",
        #"{"auth_token":"x.y.z","receiver_id":"bob","timeout_s":30,"metadata":{"n":1.5,"t":true,"f":false}}"#,
        #"0"#, #"-0"#, #"1.0"#, #"1e2"#, #"1E+2"#, #"2.5e-3"#, #"-12.75"#, #"9223372036854775807"#,
        #"-9223372036854775808"#, #"9223372036854775808"#, #"123456789012345678901234567890"#, #"0.1"#,
        #"1.7976931348623157e308"#, #"5e-324"#, #"[1, 1.0, 1.5, -1e3]"#,
        #""plain""#, #""esc \" \\ \/ \b \f \n \r \t""#, #""\u0041\u00e9\u4e2d""#, #""\ud83d\ude00 smile""#,
        #""é 中 😀""#, #"{"a":1,"a":2}"#, #"{"a":1,"\u0061":2}"#, #"{"x":{"a":1},"y":{"a":2}}"#,
        #"{"x":{"a":1,"b":{"c":1,"c":2}},"x":3}"#, #"{"é":1,"\u00e9":2}"#, #"{"e\u0301":1,"é":2}"#,
        #"[{"k":1},{"k":2}]"#, #"{"a\"b":1,"a\"b":2}"#, #"true"#, #"false"#, #"null"#,
        "\u{FEFF}{\"a\":1}", "\u{FEFF} [1]",
        // Beyond 2^53, and beyond Int64, as the decoder reads them.
        #"9007199254740993.0"#, #"123456789012345678e-1"#, #"-9223372036854775809"#, #"9223372036854775808.5"#,
        #"-9007199254740993"#, #"9007199254740993e0"#, #"1.5e300"#, #"[18446744073709551616, 2e19]"#,
        // Refused by both (and a comma before a closing bracket, accepted by both).
        "", " ", #"{"#, #"}"#, #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, #"[1,]"#, #"[1 2]"#, #"{a:1}"#, #"{'a':1}"#,
        #"01"#, #"-"#, #"1."#, #".5"#, #"1e"#, #"1e+"#, #"+1"#, #"0x10"#, #"NaN"#, #"Infinity"#, #"1e400"#,
        #"-1e400"#, #"tru"#, #"nul"#, #"True"#, #""unterminated"#, #""bad \x escape""#, #""\u12""#, #""\u12G4""#,
        #""\ud83d alone""#, #""\ude00 alone""#, #""\ud83d\u0041""#, "\"tab\tinside\"", "\"nl\ninside\"",
        #"{,}"#, #"[,]"#, #"[1,,]"#, #"{"a":1,,}"#, #"[1 , ]"#, #"{"a":{"b":1 ,} , }"#,
        "\u{FEFF}", "{}\u{FEFF}", #"{} {}"#, #"[] x"#, #"{"a":1}}"#, #"[[]"#, #"{"a":[}"#, "\u{0}", #"{"a":1/*c*/}"#,
    ]

    @Test(arguments: cases) func readsAsTheDecoderDid(_ text: String) {
        let (old, oldKey) = decoded(text)
        let (new, newKey) = read(text)
        #expect((new == nil) == (old == nil), "acceptance of \(text)")
        #expect(newKey == oldKey, "duplicate key of \(text)")
        if oldKey == nil { #expect(new == old, "value of \(text)") }
    }

    @Test func invalidUTF8AndDeepNestingAreRefused() {
        for bytes in [[0x22, 0xC3, 0x28, 0x22], [0x22, 0xFF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22]] as [[UInt8]] {
            #expect(throws: JSONReader.SyntaxError.self) { try JSONReader.read(Data(bytes)) }
            #expect((try? JSONDecoder().decode(JSONValue.self, from: Data(bytes))) == nil)
        }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: JSONReader.SyntaxError.self) { try JSONReader.read(Data(deep.utf8)) }
        let fine = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: Never.self) { try JSONReader.read(Data(fine.utf8)) }
    }

    @Test(arguments: [500, 511, 512, 513, 520]) func nestingIsLimitedAsTheDecoderLimitsIt(_ depth: Int) {
        for (open, close) in [("[", "]"), (#"{"a":"#, "}")] {
            let text = String(repeating: open, count: depth) + "1" + String(repeating: close, count: depth)
            let (old, _) = decoded(text)
            let (new, _) = read(text)
            #expect((new == nil) == (old == nil), "\(depth) levels of \(open)")
        }
    }

    /// A key given twice whose second value is not valid is refused either way: the decoder
    /// took the first value and the duplicate was named; now the value is.
    @Test func aRepeatedKeyWithABadValueIsRefused() {
        for body in [#"{"auth_token":"x","auth_token":1e400}"#, #"{"auth_token":"x","auth_token":01}"#] {
            #expect(throws: CallError.self) { try RequestParser.parse(routingKey: "call.accept", body: Data(body.utf8)) }
        }
    }

    @Test func anErrorSaysWhereReadingStopped() {
        do {
            _ = try JSONReader.read(Data(#"{"a":1,"b":tru}"#.utf8))
            Issue.record("read")
        } catch {
            #expect(error.offset == 11)
            #expect("\(error)" == "unexpected character 't' at byte 11")
        }
        let refusal = #expect(throws: CallError.self) {
            try RequestParser.parse(routingKey: "call.accept", body: Data(#"{"auth_token":"x","session_id":}"#.utf8))
        }
        #expect(refusal?.message == "the body is not JSON: unexpected character '}' at byte 31")
        #expect(refusal?.field == "body")
    }

    /// Random documents (objects, arrays, strings with escapes and any scalars, numbers of
    /// every form, repeated keys) written as text and read by both.
    @Test func randomDocumentsReadAsTheDecoderDid() {
        var generator = SplitMix(seed: 17)
        var compared = 0
        for _ in 0..<3000 {
            let text = Self.document(&generator, depth: 0)
            let (old, oldKey) = decoded(text)
            let (new, newKey) = read(text)
            #expect((new == nil) == (old == nil), "acceptance of \(text)")
            #expect(newKey == oldKey, "duplicate key of \(text)")
            // With a key given twice, which value wins differs and does not matter: refused.
            if oldKey == nil { #expect(new == old, "value of \(text)") }
            if old != nil { compared += 1 }
        }
        #expect(compared > 2500, "most documents are valid JSON")
    }

    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        init(seed: UInt64) { state = seed }
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    static func document(_ g: inout SplitMix, depth: Int) -> String {
        let pick = Int.random(in: 0..<(depth < 3 ? 9 : 6), using: &g)
        switch pick {
        case 0: return "null"
        case 1: return Bool.random(using: &g) ? "true" : "false"
        case 2, 3: return number(&g)
        case 4, 5: return "\"" + stringBody(&g) + "\""
        case 6:
            let count = Int.random(in: 0..<4, using: &g)
            return "[" + (0..<count).map { _ in document(&g, depth: depth + 1) }.joined(separator: ",") + "]"
        default:
            let keys = ["a", "b", "é", "e\\u0301", "\\u0061", "k\\\"q", "😀"]
            let count = Int.random(in: 0..<5, using: &g)
            return "{"
                + (0..<count).map { _ in
                    "\"" + keys.randomElement(using: &g)! + "\": " + document(&g, depth: depth + 1)
                }.joined(separator: " , ") + "}"
        }
    }

    static func number(_ g: inout SplitMix) -> String {
        let forms = [
            "\(Int64.random(in: Int64.min...Int64.max, using: &g))", "\(Int.random(in: -1000...1000, using: &g))",
            "\(Int.random(in: -99...99, using: &g)).\(Int.random(in: 0...999, using: &g))",
            "\(Int.random(in: 1...9, using: &g))e\(Int.random(in: -20...20, using: &g))",
            "\(Int.random(in: 1...9, using: &g)).5E+\(Int.random(in: 0...25, using: &g))",
            "\(Double.random(in: -1e6...1e6, using: &g))",
            "18446744073709551615", "-0.0", "1.0", "100e-2",
        ]
        return forms.randomElement(using: &g)!
    }

    static func stringBody(_ g: inout SplitMix) -> String {
        let pieces = [
            "abc", " ", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u0041", "\\u00e9", "\\ud83d\\ude00", "é", "中", "😀",
            "\\u0000", "\\b\\f\\r",
        ]
        return (0..<Int.random(in: 0..<5, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined()
    }
}
