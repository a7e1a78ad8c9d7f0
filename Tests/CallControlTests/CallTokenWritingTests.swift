// Call tokens written without JWTKit's encoder: read back by JWTKit (signature, issuer,
// audience, expiry) and by a JSON decoder (header and claims, their JSON types), with strings
// that need escaping, and the base64url writer against Foundation's.
import Crypto
import Foundation
import Testing

@testable import CallTokens

@Suite struct CallTokenWritingTests {
    func part(_ token: String, _ index: Int) throws -> [String: Any] {
        let text = String(token.split(separator: ".")[index])
        let data = try #require(Data(base64URL: text))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func aTokenReadsBackWithEveryClaim() async throws {
        let key = try CallTokenKey(try CallTokenKey.generate(kid: "prod-2026.11_a"), private: true)
        let issuer = try await CallTokenIssuer(signing: key, lifetime: .seconds(600))
        let session = UUID()
        let now = Date(timeIntervalSince1970: 1_800_000_000.75)
        let (token, expiresAt) = try await issuer.issue(for: "alice", sessionID: session, callType: "video", now: now)
        #expect(expiresAt == Date(timeIntervalSince1970: 1_800_000_600))
        #expect(token.split(separator: ".").count == 3)
        #expect(!token.contains("=") && !token.contains("+") && !token.contains("/"))

        let header = try part(token, 0)
        #expect(header.count == 3)
        #expect(header["alg"] as? String == "EdDSA" && header["typ"] as? String == "JWT")
        #expect(header["kid"] as? String == "prod-2026.11_a")

        let claims = try part(token, 1)
        #expect(Set(claims.keys) == ["iss", "sub", "aud", "sid", "call_type", "iat", "nbf", "exp", "jti"])
        #expect(claims["iss"] as? String == "ringing" && claims["aud"] as? String == "ringing-media")
        #expect(claims["sub"] as? String == "alice" && claims["call_type"] as? String == "video")
        #expect(claims["sid"] as? String == session.uuidString.lowercased())
        #expect(claims["iat"] as? Int == 1_800_000_000 && claims["nbf"] as? Int == 1_800_000_000)
        #expect(claims["exp"] as? Int == 1_800_000_600)
        // Written as integers, not as 1800000000.0 or 1.8e9.
        let claimsText = String(
            decoding: try #require(Data(base64URL: String(token.split(separator: ".")[1]))), as: UTF8.self)
        #expect(claimsText.contains(#""iat":1800000000,"nbf":1800000000,"exp":1800000600,"#))
        let jti = try #require(claims["jti"] as? String)
        #expect(UUID(uuidString: jti) != nil && jti == jti.lowercased())

        // The signature over the first two parts, with the key's public half.
        let signed = Data(token.split(separator: ".")[0...1].joined(separator: ".").utf8)
        let signature = try #require(Data(base64URL: String(token.split(separator: ".")[2])))
        let publicKey = try Curve25519.Signing.PublicKey(rawRepresentation: key.publicKey.rawRepresentation)
        #expect(publicKey.isValidSignature(signature, for: signed))

        // Two tokens differ by their jti.
        let other = try await issuer.issue(for: "alice", sessionID: session, callType: "video", now: now).token
        #expect(try part(other, 1)["jti"] as? String != jti)
    }

    @Test func jwtKitVerifiesItAndStringsAreEscaped() async throws {
        let key = try CallTokenKey(try CallTokenKey.generate(kid: "k1"), private: true)
        let odd = "media \"east\"\\\n\u{1}é😀"
        let issuer = try await CallTokenIssuer(signing: key, issuer: "ring\"ing", audience: odd)
        let session = UUID()
        let token = try await issuer.issue(for: "bob", sessionID: session, callType: "audio").token
        let claims = try part(token, 1)
        #expect(claims["iss"] as? String == "ring\"ing" && claims["aud"] as? String == odd)

        let verifier = try await CallTokenVerifier(jwks: issuer.jwks.json, audience: odd, issuer: "ring\"ing")
        let verified = try await verifier.verify(token, sessionID: session)
        #expect(verified.uid == "bob" && verified.callType == "audio" && verified.sessionID == session)
        #expect(verified.expiresAt.timeIntervalSinceNow > 500)
        // Any changed byte of the claims breaks the signature.
        var parts = token.split(separator: ".").map(String.init)
        let changed = try JSONSerialization.data(withJSONObject: claims.merging(["sub": "mallory"]) { $1 })
        parts[1] = CallTokenIssuer.base64URL(changed)
        await #expect(throws: CallTokenVerifier.Rejected.self) { try await verifier.verify(parts.joined(separator: ".")) }
    }

    @Test func base64URLMatchesFoundation() {
        var generator = SystemRandomNumberGenerator()
        for count in 0..<70 {
            let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let expected = Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
            #expect(CallTokenIssuer.base64URL(bytes) == expected, "\(count) bytes")
        }
    }
}
