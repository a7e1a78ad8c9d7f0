// Finds a key that appears twice in one JSON object. Parsers disagree on duplicates (first
// wins, last wins, error), which is a classic way past a check, so requests refuse them.
public import CallRules
public import Foundation

public enum DuplicateKeys {
    /// The refusal of a body (or frame) that gives `key` twice, naming it.
    public static func refusal(_ key: String, in what: String = "body") -> CallError {
        .invalid(key, "the \(what) has the key '\(key.prefix(80))' more than once; say each field once")
    }

    /// The first key that appears twice in the same object of `json` (at any depth), or nil.
    /// Expects valid JSON: call it after the body parsed.
    public static func first(in json: Data) -> String? {
        var stack: [(isObject: Bool, keys: Set<String>, expectingKey: Bool)] = []
        var index = json.startIndex
        while index < json.endIndex {
            let byte = json[index]
            switch byte {
            case UInt8(ascii: "{"): stack.append((true, [], true))
            case UInt8(ascii: "["): stack.append((false, [], false))
            case UInt8(ascii: "}"), UInt8(ascii: "]"): _ = stack.popLast()
            case UInt8(ascii: ","): if stack.last?.isObject == true { stack[stack.count - 1].expectingKey = true }
            case UInt8(ascii: ":"): if stack.last?.isObject == true { stack[stack.count - 1].expectingKey = false }
            case UInt8(ascii: "\""):
                let start = index
                index = json.index(after: index)
                while index < json.endIndex, json[index] != UInt8(ascii: "\"") {
                    if json[index] == UInt8(ascii: "\\") { index = json.index(after: index) }
                    index = json.index(after: index)
                }
                guard index < json.endIndex else { return nil }
                if let top = stack.last, top.isObject, top.expectingKey {
                    let literal = json[start...index]
                    // Escapes (`\u0061` is `a`) compare as the key they spell; a key without
                    // one is its bytes (no decoder for the usual case).
                    let key =
                        literal.contains(UInt8(ascii: "\\"))
                        ? (try? JSONDecoder().decode(String.self, from: Data(literal)))
                            ?? String(decoding: literal, as: UTF8.self)
                        : String(decoding: literal.dropFirst().dropLast(), as: UTF8.self)
                    if stack[stack.count - 1].keys.insert(key).inserted == false { return key }
                }
            default: break
            }
            index = json.index(after: index)
        }
        return nil
    }
}
