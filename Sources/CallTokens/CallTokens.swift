// Call tokens (DESIGN §5): short-lived EdDSA JWTs that let an accepted participant start the
// media session, and the verification a media server does.
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
    private let keys: JWTKeyCollection

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
        keys = JWTKeyCollection()
        await keys.add(eddsa: privateKey, kid: JWKIdentifier(string: signing.kid))
    }

    /// A token for `uid` on the call `sessionID`.
    public func issue(for uid: String, sessionID: UUID, callType: String, now: Date = Date()) async throws -> (
        token: String, expiresAt: Date
    ) {
        // Whole seconds: NumericDate allows fractions, but not every JWT library reads them.
        let now = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let expiresAt = now.addingTimeInterval(Double(lifetime.components.seconds))
        let claims = CallTokenClaims(
            iss: IssuerClaim(value: issuer), sub: SubjectClaim(value: uid), aud: AudienceClaim(value: [audience]),
            sid: sessionID.uuidString.lowercased(), callType: callType, iat: IssuedAtClaim(value: now),
            nbf: NotBeforeClaim(value: now),
            exp: ExpirationClaim(value: expiresAt), jti: IDClaim(value: UUID().uuidString.lowercased()))
        let token = try await keys.sign(claims, kid: JWKIdentifier(string: signingKey.kid))
        return (token, expiresAt)
    }
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
