// The token service over the real broker and database: call tokens for accepted participants
// of ongoing calls, verifiable with the JWKS by any media server; everything else refused.
import AMQPClient
import CallRules
import CallTokens
import Foundation
import RingingAuth
import RingingContract
import TestSupport
import Testing

@Suite struct TokenServiceTests {
    /// The JWKS as the `token.jwks` reply gives it.
    static func jwks(_ s: Scenario) async throws -> String {
        let reply = try await s.client.request(RequestType.jwks.rawValue, token: nil)
        let keys = try #require(reply.keys)
        return String(decoding: try JSONEncoder().encode(["keys": keys]), as: UTF8.self)
    }

    @Test func bothSidesOfAnAcceptedCallGetTokensThatVerify() async throws {
        try await Scenario.run(tokens: true) { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, type: .video)
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID))
            let verifier = try await CallTokenVerifier(jwks: try await Self.jwks(s))
            for party in [alice, bob] {
                let reply = try await s.act(.generateToken, party, call.sessionID)
                let token = try #require(reply.token, "\(reply.error?.message ?? "")")
                let expiresAt = try #require(reply.expiresAt)
                #expect(expiresAt.timeIntervalSinceNow > 500 && expiresAt.timeIntervalSinceNow <= 601, "ten minutes by default")
                let verified = try await verifier.verify(token, sessionID: call.sessionID)
                #expect(verified.uid == party.uid)
                #expect(verified.callType == "video")
                // The header names the key; the claims carry everything DESIGN §5 lists.
                let parts = token.split(separator: ".")
                let header = try JSONDecoder().decode(
                    [String: String].self, from: try #require(Data(base64URL: String(parts[0]))))
                #expect(header["alg"] == "EdDSA" && header["kid"] == "dev-1")
                let claims = try JSONDecoder().decode(JSONObject.self, from: try #require(Data(base64URL: String(parts[1]))))
                #expect(Set(claims.keys) == ["iss", "sub", "aud", "sid", "call_type", "iat", "nbf", "exp", "jti"])
                #expect(claims["sid"] == .string(call.sessionID.uuidString.lowercased()))
            }
            // A token fails with another audience, another session, or when altered.
            let token = try #require(try await s.act(.generateToken, bob, call.sessionID).token)
            let otherAudience = try await CallTokenVerifier(jwks: try await Self.jwks(s), audience: "someone-else")
            await #expect(throws: CallTokenVerifier.Rejected.self) { try await otherAudience.verify(token) }
            await #expect(throws: CallTokenVerifier.Rejected.self) { try await verifier.verify(token, sessionID: UUID()) }
            var altered = Array(token)
            let index = token.firstIndex(of: ".")!.utf16Offset(in: token) + 5
            altered[index] = altered[index] == "A" ? "B" : "A"
            await #expect(throws: CallTokenVerifier.Rejected.self) { try await verifier.verify(String(altered)) }
        }
    }

    @Test func refusedForEveryoneAndEverythingElse() async throws {
        try await Scenario.run(tokens: true) { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let mallory = try await s.party("mallory")
            let ringing = try await s.call(alice, bob, timeout: 120)
            #expect(try await s.act(.generateToken, alice, ringing.sessionID).error?.status == .initiated)
            #expect(try await s.act(.generateToken, bob, ringing.sessionID).error?.code == .invalidState)
            _ = try Scenario.call(try await s.act(.reject, alice, ringing.sessionID, ["status": "cancelled"]))
            #expect(try await s.act(.generateToken, alice, ringing.sessionID).error?.status == .cancelled)

            let rejected = try await s.call(alice, bob)
            _ = try Scenario.call(try await s.act(.reject, bob, rejected.sessionID, ["status": "rejected"]))
            #expect(try await s.act(.generateToken, bob, rejected.sessionID).error?.status == .rejected)

            let ongoing = try await s.call(alice, bob)
            _ = try Scenario.call(try await s.act(.accept, bob, ongoing.sessionID))
            #expect(try await s.act(.generateToken, mallory, ongoing.sessionID).error?.code == .forbidden)
            for (kind, token) in try await RefusalTests.badTokens(for: alice.uid) {
                let reply = try await s.client.request(
                    RequestType.generateToken.rawValue, token: token, ["session_id": .string(ongoing.sessionID.uuidString)])
                #expect(reply.error?.code == .unauthenticated, "\(kind)")
            }
            _ = try Scenario.call(try await s.act(.end, alice, ongoing.sessionID))
            #expect(try await s.act(.generateToken, alice, ongoing.sessionID).error?.status == .ended)
            let missing = try await s.act(.generateToken, alice, UUID())
            #expect(missing.error?.code == .notFound && missing.error?.field == "session_id")

            // Malformed: answered, and the original goes to calls.dead-letter.
            let deadLetters = try await Capture.start(s.client.amqp, exchange: Topology.deadLetterExchange, keys: [""])
            let id = UUID().uuidString
            let malformed = try await s.client.send(
                RequestType.generateToken.rawValue, body: Data(#"{"auth_token":"\#(alice.token)","session_id":7}"#.utf8),
                messageID: id)
            #expect(malformed.error?.code == .invalidRequest && malformed.error?.field == "session_id")
            _ = try await deadLetters.nextDelivery("the dead-lettered token request") { $0.properties.messageID == id }
        }
    }

    @Test func aTokenOfThePreviousKeyVerifiesWhileThatKeyIsInTheJWKS() async throws {
        let old = try CallTokenKey(try CallTokenKey.generate(kid: "old"), private: true)
        let new = try CallTokenKey(try CallTokenKey.generate(kid: "new"), private: true)
        let before = try await CallTokenIssuer(signing: old)
        let oldToken = try await before.issue(for: "alice", sessionID: UUID(), callType: "audio").token
        // Rotated: the new key signs, the old public key stays published.
        let after = try await CallTokenIssuer(signing: new, previous: [try CallTokenKey(old.publicConfiguration, private: false)])
        let newToken = try await after.issue(for: "alice", sessionID: UUID(), callType: "audio").token
        #expect(Set(after.jwks.keys.map { $0["kid"] }) == ["new", "old"])
        let verifier = try await CallTokenVerifier(jwks: after.jwks.json)
        #expect(try await verifier.verify(oldToken).uid == "alice")
        #expect(try await verifier.verify(newToken).uid == "alice")
        // Once the old key leaves the JWKS, its tokens stop verifying.
        let later = try await CallTokenVerifier(jwks: try await CallTokenIssuer(signing: new).jwks.json)
        await #expect(throws: CallTokenVerifier.Rejected.self) { try await later.verify(oldToken) }
        // Another deployment's key never verifies.
        let stranger = try await CallTokenVerifier(jwks: before.jwks.json)
        await #expect(throws: CallTokenVerifier.Rejected.self) { try await stranger.verify(newToken) }
    }

    @Test func anExpiredTokenFails() async throws {
        let issuer = try await CallTokenIssuer(signing: try CallTokenKey(try CallTokenKey.generate(kid: "k"), private: true))
        let token = try await issuer.issue(
            for: "bob", sessionID: UUID(), callType: "video", now: Date(timeIntervalSinceNow: -3600)
        ).token
        let verifier = try await CallTokenVerifier(jwks: issuer.jwks.json)
        await #expect(throws: CallTokenVerifier.Rejected.self) { try await verifier.verify(token) }
    }

    @Test func badKeysAreRefusedNamingTheVariable() throws {
        #expect(throws: (any Error).self) { try CallTokenKey("no-colon", private: true) }
        #expect(throws: (any Error).self) { try CallTokenKey("k:c2hvcnQ", private: true) }
        #expect {
            try Scenario.tokenConfiguration(["RINGING_TOKEN_KEY": "k:c2hvcnQ"])
        } throws: { "\($0)".hasPrefix("RINGING_TOKEN_KEY") }
        #expect {
            try Scenario.tokenConfiguration(["RINGING_TOKEN_TTL_S": "forever"])
        } throws: { "\($0)".hasPrefix("RINGING_TOKEN_TTL_S") }
    }
}

extension Data {
    init?(base64URL text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }
}

@Suite struct TokenServiceCommandTests {
    static func run(_ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
        try runExecutable("token-service", arguments, environment: environment)
    }

    @Test func jwksPrintsTheKeysAMediaServerNeeds() async throws {
        let generated = try Self.run(["generate-key", "--kid", "prod-2026"])
        #expect(generated.status == 0)
        let line = try #require(generated.output.split(separator: "\n").first { $0.hasPrefix("RINGING_TOKEN_KEY=") })
        let key = String(line.dropFirst("RINGING_TOKEN_KEY=".count))
        let previous = try CallTokenKey(try CallTokenKey.generate(kid: "prod-2025"), private: true).publicConfiguration
        let printed = try Self.run(["jwks"], environment: ["RINGING_TOKEN_KEY": key, "RINGING_TOKEN_PREVIOUS_KEYS": previous])
        #expect(printed.status == 0, "\(printed.output)")
        let document = try JSONDecoder().decode(JWKSDocument.self, from: Data(printed.output.utf8))
        #expect(document.keys.map { $0["kid"] } == ["prod-2026", "prod-2025"])
        #expect(document.keys.allSatisfy { $0["kty"] == "OKP" && $0["crv"] == "Ed25519" && $0["alg"] == "EdDSA" })
        // What it prints verifies what the key signs.
        let issuer = try await CallTokenIssuer(signing: try CallTokenKey(key, private: true))
        let token = try await issuer.issue(for: "carol", sessionID: UUID(), callType: "audio").token
        #expect(try await CallTokenVerifier(jwks: printed.output).verify(token).uid == "carol")
    }

    @Test func aBadKeyIsReportedNamingTheVariable() throws {
        let result = try Self.run(["jwks"], environment: ["RINGING_TOKEN_KEY": "oops"])
        #expect(result.status != 0)
        #expect(result.output.contains("RINGING_TOKEN_KEY"))
    }
}
