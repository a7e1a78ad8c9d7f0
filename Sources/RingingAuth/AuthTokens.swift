// Auth tokens (DESIGN §1): HS256 JWTs signed with the deployment's secret. The services verify
// them; development tools mint them.
public import CallRules
public import Foundation
import JWTKit
import RingingContract
import Synchronization

/// The user a request acts for: the token's `sub`, never a field of the body.
public struct AuthenticatedUser: Sendable, Hashable {
    public var uid: String
    /// The token carries `"role": "service"` and may manage groups.
    public var isService: Bool
    /// When the token stops being valid (its `exp`).
    public var expiresAt: Date?

    public init(uid: String, isService: Bool, expiresAt: Date? = nil) {
        self.uid = uid
        self.isService = isService
        self.expiresAt = expiresAt
    }
}

struct AuthClaims: JWTPayload {
    var sub: SubjectClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim?
    var iat: IssuedAtClaim?
    var role: String?

    /// `exp` and `nbf` with the same (no) leeway: a token is valid only between the two.
    func verify(using algorithm: some JWTAlgorithm) async throws {
        try exp.verifyNotExpired()
        try nbf?.verifyNotBefore()
    }
}

/// Verifies and mints auth tokens with one shared secret.
public final class AuthTokens: Sendable {
    /// What `RINGING_AUTH_SECRET` defaults to, so that the local stack works out of the box.
    /// Never use it in production: anybody can mint tokens with it.
    public static let developmentSecret = "ringing-development-secret-change-me"

    private let keys: JWTKeyCollection
    /// Tokens that verified, by their exact text: a phone sends the same token with every
    /// request, and checking its signature and decoding its claims again each time was 5-6%
    /// of call-control's and the token service's CPU. An entry holds until the token's `exp`
    /// (checked on every use); `nbf` had passed when it verified. Bounded: emptied when full.
    private let verified = Mutex<[String: AuthenticatedUser]>([:])
    static let verifiedCapacity = 10_000

    /// The shortest secret accepted: HS256 wants a key at least as long as its hash.
    public static let minimumSecretBytes = 32

    public struct WeakSecret: Error, CustomStringConvertible {
        public let bytes: Int
        public var description: String {
            "the auth secret has \(bytes) bytes; HS256 needs at least \(AuthTokens.minimumSecretBytes) (try `openssl rand -base64 48`)"
        }
    }

    public init(secret: String) async throws(WeakSecret) {
        guard secret.utf8.count >= Self.minimumSecretBytes else { throw WeakSecret(bytes: secret.utf8.count) }
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
    }

    /// The user of a valid token; `unauthenticated` for an expired, unsigned (`alg: none`),
    /// wrongly signed or malformed one.
    /// A token verified before is not checked again until its `exp`, judged by `now`.
    public func verify(_ token: String, now: Date = Date()) async throws(CallError) -> AuthenticatedUser {
        // A JWT is ASCII, and ASCII strings are equal only when their bytes are (Swift compares
        // other text by canonical equivalence: U+212A KELVIN SIGN equals "K").
        guard token.utf8.allSatisfy({ $0 < 0x80 }) else { return try await verifySignature(token) }
        if let user = verified.withLock({ $0[token] }) {
            if user.expiresAt.map({ now < $0 }) ?? true { return user }
            verified.withLock { _ = $0.removeValue(forKey: token) }
            throw CallError(.unauthenticated, "auth_token rejected: the token has expired")
        }
        let user = try await verifySignature(token)
        verified.withLock { cache in
            if cache.count >= Self.verifiedCapacity { cache.removeAll(keepingCapacity: true) }
            cache[token] = user
        }
        return user
    }

    /// How many verified tokens are remembered (tests).
    var verifiedCount: Int { verified.withLock { $0.count } }

    private func verifySignature(_ token: String) async throws(CallError) -> AuthenticatedUser {
        let claims: AuthClaims
        do {
            claims = try await keys.verify(token, as: AuthClaims.self)
        } catch {
            throw CallError(.unauthenticated, "auth_token rejected: \(Self.reason(error))")
        }
        guard Identifier.isValid(claims.sub.value) else {
            throw CallError(.unauthenticated, "auth_token subject '\(claims.sub.value.prefix(80))' is not a valid user id")
        }
        return AuthenticatedUser(uid: claims.sub.value, isService: claims.role == "service", expiresAt: claims.exp.value)
    }

    /// A token for `uid`, valid for `lifetime` (development and tests; production tokens come
    /// from the deployment's own identity service, signed with the same secret).
    public func mint(
        uid: String, lifetime: Duration = .seconds(24 * 3600), service: Bool = false, now: Date = Date(),
        notBefore: Date? = nil
    ) async throws -> String {
        let seconds = Double(lifetime.components.seconds)
        let claims = AuthClaims(
            sub: SubjectClaim(value: uid), exp: ExpirationClaim(value: now.addingTimeInterval(seconds)),
            nbf: notBefore.map(NotBeforeClaim.init(value:)), iat: IssuedAtClaim(value: now), role: service ? "service" : nil)
        return try await keys.sign(claims)
    }

    private static func reason(_ error: any Error) -> String {
        let text = "\(error)"
        if text.localizedCaseInsensitiveContains("not before") || text.localizedCaseInsensitiveContains("nbf")
            || text.localizedCaseInsensitiveContains("too soon")
        {
            return "the token is not valid yet (nbf)"
        }
        if text.localizedCaseInsensitiveContains("expired") || text.contains("exp") { return "the token has expired" }
        if text.localizedCaseInsensitiveContains("signature") { return "the signature does not verify" }
        if text.localizedCaseInsensitiveContains("none") || text.localizedCaseInsensitiveContains("algorithm") {
            return "the token is not signed with HS256"
        }
        return "the token is malformed"
    }
}
