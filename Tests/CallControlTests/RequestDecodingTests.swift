// The fast paths of reading a request and a stored call (issue 17): a JSON value of every type
// still decodes as its own, a duplicate key is found whether or not it is spelled with
// escapes, and a call's empty metadata needs no decoder.
import CallRules
import Foundation
import RingingContract
import Testing

@Suite struct RequestDecodingTests {
    @Test func everyJSONTypeDecodesAsItself() throws {
        let json =
            #"{"s":"x","e":"","digits":"123","t":"true","b":true,"i":3,"neg":-7,"d":1.5,"n":null,"a":[1,"y",false],"o":{"k":"v"}}"#
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
        #expect(
            value
                == .object([
                    "s": "x", "e": "", "digits": "123", "t": "true", "b": true, "i": 3, "neg": -7, "d": .double(1.5), "n": nil,
                    "a": .array([1, "y", false]), "o": .object(["k": "v"]),
                ]))
    }

    @Test func duplicateKeysAreFoundPlainAndEscaped() {
        #expect(DuplicateKeys.first(in: Data(#"{"ab":1,"ab":2}"#.utf8)) == "ab")
        #expect(DuplicateKeys.first(in: Data(#"{"a":1,"\u0061":2}"#.utf8)) == "a")
        #expect(DuplicateKeys.first(in: Data(#"{"a\"b":1,"a\"b":2}"#.utf8)) == #"a"b"#)
        #expect(DuplicateKeys.first(in: Data(#"{"a":{"b":1},"b":2,"c":"a"}"#.utf8)) == nil)
        #expect(DuplicateKeys.first(in: Data(#"{"é":1,"\u00e9":2}"#.utf8)) == "é")
    }

    @Test func aRequestWithADuplicateKeyIsRefusedNamingIt() {
        let body = Data(#"{"auth_token":"t","session_id":"x","session_id":"y"}"#.utf8)
        do {
            _ = try RequestParser.parse(routingKey: "call.accept", body: body)
            Issue.record("a duplicate key was accepted")
        } catch {
            #expect(error.field == "session_id")
        }
    }
}
