// Call tokens (DESIGN §5): short-lived EdDSA JWTs that let an accepted participant start the
// media session, and the verification a media server does.
import Crypto
public import Foundation
import JWTKit

/// The claims of a call token.
struct CallTokenClaims: JWTPayload, Sendable, Equatable {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    /// The call's session id.
    var sid: String
    var callType: String
    var iat: IssuedAtClaim
    var nbf: NotBeforeClaim
    var exp: ExpirationClaim
    var jti: IDClaim

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, sid, iat, nbf, exp, jti
        case callType = "call_type"
    }

    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf.verifyNotBefore()
    }
}

/// Signs call tokens with the current key and publishes every key in the JWKS.
public final class CallTokenIssuer: Sendable {
    public let issuer: String
    public let audience: String
    public let lifetime: Duration
    public let signingKey: CallTokenKey
    public let jwks: JWKSDocument
    /// Signs the tokens (issue 17): JWTKit's `sign` encoded the header and the claims with
    /// JSONEncoder, 9% of the token service's CPU; the header is the same for every token and
    /// the claims are few, so both are written here. `CallTokenWritingTests` reads them back
    /// with JWTKit and a JSON decoder.
    private let signer: Curve25519.Signing.PrivateKey
    /// `base64url(header).` and the claims that are the same in every token, as JSON members.
    private let signingPrefix: [UInt8]
    private let fixedClaims: [UInt8]

    /// `signing` signs new tokens; `previous` keys (public parts suffice) stay in the JWKS so
    /// that tokens they signed keep verifying until they expire.
    public init(
        signing: CallTokenKey, previous: [CallTokenKey] = [], issuer: String = "ringing", audience: String = "ringing-media",
        lifetime: Duration = .seconds(600)
    ) async throws {
        guard let privateKey = signing.privateKey else {
            throw CallTokenKey.ParseError(description: "the signing key '\(signing.kid)' has no private part")
        }
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.signingKey = signing
        jwks = JWKSDocument(keys: [signing.jwk] + previous.filter { $0.kid != signing.kid }.map(\.jwk))
        signer = try Curve25519.Signing.PrivateKey(rawRepresentation: privateKey.rawRepresentation)
        let header = Array(#"{"alg":"EdDSA","typ":"JWT","kid":"#.utf8) + Self.jsonString(signing.kid) + [UInt8(ascii: "}")]
        signingPrefix = Array(Self.base64URL(header).utf8) + [UInt8(ascii: ".")]
        fixedClaims =
            Array(#""iss":"#.utf8) + Self.jsonString(issuer) + Array(#","aud":"#.utf8) + Self.jsonString(audience)
    }

    /// A token for `uid` on the call `sessionID`.
    public func issue(for uid: String, sessionID: UUID, callType: String, now: Date = Date()) async throws -> (
        token: String, expiresAt: Date
    ) {
        // Whole seconds: NumericDate allows fractions, but not every JWT library reads them.
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let expiresAt = now.addingTimeInterval(Double(lifetime.components.seconds))
        let issuedAt = Int64(now.timeIntervalSince1970)
        let expiry = Int64(expiresAt.timeIntervalSince1970)
        var claims: [UInt8] = [UInt8(ascii: "{")]
        claims.reserveCapacity(320)
        claims += fixedClaims
        claims += Array(#","sub":"#.utf8) + Self.jsonString(uid)
        claims += Array(#","sid":""#.utf8) + Array(sessionID.uuidString.lowercased().utf8)
        claims += Array(#"","call_type":"#.utf8) + Self.jsonString(callType)
        claims += Array(#","iat":\#(issuedAt),"nbf":\#(issuedAt),"exp":\#(expiry),"jti":""#.utf8)
        claims += Array(UUID().uuidString.lowercased().utf8) + Array(#""}"#.utf8)
        let signingInput = signingPrefix + Array(Self.base64URL(claims).utf8)
        let signature = try signer.signature(for: signingInput)
        let token = String(decoding: signingInput, as: UTF8.self) + "." + Self.base64URL(signature)
        return (token, expiresAt)
    }

    /// A JSON string: quotes, backslashes and control characters escaped, the rest as it is.
    static func jsonString(_ text: String) -> [UInt8] {
        var bytes: [UInt8] = [UInt8(ascii: "\"")]
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
        return bytes
    }

    /// Base64url without padding (RFC 7515).
    static func base64URL(_ input: some Collection<UInt8>) -> String {
        let bytes = Array(input)
        var output: [UInt8] = []
        output.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let count = min(3, bytes.count - index)
            var group = UInt32(bytes[index]) << 16
            if count > 1 { group |= UInt32(bytes[index + 1]) << 8 }
            if count > 2 { group |= UInt32(bytes[index + 2]) }
            for position in 0...count { output.append(base64URLAlphabet[Int(group >> (18 - 6 * position) & 0x3F)]) }
            index += 3
        }
        return String(decoding: output, as: UTF8.self)
    }

    static let base64URLAlphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
}

/// What a verified call token says.
public struct VerifiedCallToken: Sendable, Hashable {
    public let uid: String
    public let sessionID: UUID
    public let callType: String
    public let expiresAt: Date
    public let tokenID: String
}

/// For media servers written in Swift: checks a call token against the token service's JWKS —
/// signature, issuer, audience, expiry and, when given, the call it is for.
public final class CallTokenVerifier: Sendable {
    public struct Rejected: Error, CustomStringConvertible {
        public let description: String
    }

    private let keys: JWTKeyCollection
    private let audience: String
    private let issuer: String?

    /// `jwks` is the JSON of `token.jwks` or of `token-service jwks`.
    public init(jwks: String, audience: String = "ringing-media", issuer: String? = "ringing") async throws {
        keys = JWTKeyCollection()
        try await keys.add(jwksJSON: jwks)
        self.audience = audience
        self.issuer = issuer
    }

    public func verify(_ token: String, sessionID: UUID? = nil) async throws(Rejected) -> VerifiedCallToken {
        let claims: CallTokenClaims
        do {
            claims = try await keys.verify(token, as: CallTokenClaims.self)
            try claims.aud.verifyIntendedAudience(includes: audience)
        } catch {
            throw Rejected(description: "call token rejected: \(error)")
        }
        if let issuer, claims.iss.value != issuer {
            throw Rejected(description: "call token rejected: issued by '\(claims.iss.value)', not '\(issuer)'")
        }
        guard let sid = UUID(uuidString: claims.sid) else {
            throw Rejected(description: "call token rejected: sid is not a session id")
        }
        if let sessionID, sid != sessionID {
            throw Rejected(
                description: "call token rejected: it is for session \(claims.sid), not \(sessionID.uuidString.lowercased())")
        }
        return VerifiedCallToken(
            uid: claims.sub.value, sessionID: sid, callType: claims.callType, expiresAt: claims.exp.value,
            tokenID: claims.jti.value)
    }
}
