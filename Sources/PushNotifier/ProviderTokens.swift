// Provider credentials (DESIGN §8): the APNs provider token (an ES256 JWT from the team's .p8
// key) and the FCM OAuth 2.0 access token (the JWT bearer grant, RS256, with a service-account
// key). Each is made once and shared until the policy says to make a new one.
public import AsyncHTTPClient
public import Foundation
public import JWTKit
import Logging
import Metrics
import NIOCore
import NIOFoundationCompat
import PushRules

struct APNsClaims: JWTPayload {
    var iss: IssuerClaim
    var iat: IssuedAtClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// The APNs provider token: signed again after `ProviderTokenPolicy.apnsLifetime`, or when APNs
/// calls the current one expired.
public actor APNsProviderToken {
    let keys: JWTKeyCollection
    let keyID: String
    let teamID: String
    private var current: (token: String, issuedAt: Date)?

    public init(credentials: APNsCredentials) async throws {
        keys = JWTKeyCollection()
        keyID = credentials.keyID
        teamID = credentials.teamID
        await keys.add(ecdsa: try ES256PrivateKey(pem: credentials.keyPEM), kid: JWKIdentifier(string: credentials.keyID))
    }

    public func token(now: Date = Date()) async throws -> String {
        if let current, !ProviderTokenPolicy.apnsNeedsNew(issuedAt: current.issuedAt, now: now) { return current.token }
        // Whole seconds: Apple reads iat as an integer.
        let issuedAt = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let token = try await keys.sign(
            APNsClaims(iss: IssuerClaim(value: teamID), iat: IssuedAtClaim(value: issuedAt)),
            kid: JWKIdentifier(string: keyID))
        current = (token, issuedAt)
        Counter(label: "ringing_push_provider_token_refreshes_total", dimensions: [("provider", "apns")]).increment()
        return token
    }

    /// APNs refused `token` as expired or invalid: the next push signs a new one.
    public func invalidate(_ token: String) {
        if current?.token == token { current = nil }
    }
}

struct OAuthAssertionClaims: JWTPayload {
    var iss: IssuerClaim
    var scope: String
    var aud: AudienceClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

public struct ProviderTokenError: Error, CustomStringConvertible {
    public let description: String
}

/// The FCM access token: fetched from the key's `token_uri` by the JWT bearer grant, shared by
/// every push until shortly before it expires. Concurrent pushes wait for one fetch.
public actor FCMAccessToken {
    public static let scope = "https://www.googleapis.com/auth/firebase.messaging"
    let keys: JWTKeyCollection
    let credentials: FCMCredentials
    let http: HTTPClient
    private var current: (token: String, expiresAt: Date)?
    private var fetching: Task<(String, Date), any Error>?

    public init(credentials: FCMCredentials, http: HTTPClient) async throws {
        self.credentials = credentials
        self.http = http
        keys = JWTKeyCollection()
        await keys.add(
            rsa: try Insecure.RSA.PrivateKey(pem: credentials.privateKeyPEM), digestAlgorithm: .sha256,
            kid: credentials.privateKeyID.map { JWKIdentifier(string: $0) })
    }

    public func token(now: Date = Date()) async throws -> String {
        if let current, !ProviderTokenPolicy.oauthNeedsNew(expiresAt: current.expiresAt, now: now) { return current.token }
        if let fetching { return try await fetching.value.0 }
        let task = Task { try await self.fetch(now: now) }
        fetching = task
        defer { fetching = nil }
        let (token, expiresAt) = try await task.value
        current = (token, expiresAt)
        Counter(label: "ringing_push_provider_token_refreshes_total", dimensions: [("provider", "fcm")]).increment()
        return token
    }

    public func invalidate(_ token: String) {
        if current?.token == token { current = nil }
    }

    private func fetch(now: Date) async throws -> (String, Date) {
        let issuedAt = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        let assertion = try await keys.sign(
            OAuthAssertionClaims(
                iss: IssuerClaim(value: credentials.clientEmail), scope: Self.scope,
                aud: AudienceClaim(value: credentials.tokenURI), iat: IssuedAtClaim(value: issuedAt),
                exp: ExpirationClaim(value: issuedAt.addingTimeInterval(3600))),
            kid: credentials.privateKeyID.map { JWKIdentifier(string: $0) })
        var request = HTTPClientRequest(url: credentials.tokenURI)
        request.method = .POST
        request.headers.add(name: "content-type", value: "application/x-www-form-urlencoded")
        let form = "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion=\(assertion)"
        request.body = .bytes(ByteBuffer(string: form))
        let response = try await http.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 64 * 1024)
        guard response.status.code == 200,
            let json = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any],
            let token = json["access_token"] as? String
        else {
            throw ProviderTokenError(
                description:
                    "the FCM token endpoint \(credentials.tokenURI) answered \(response.status.code): \(String(buffer: body).prefix(300))"
            )
        }
        let lifetime = (json["expires_in"] as? Double) ?? (json["expires_in"] as? Int).map(Double.init) ?? 3600
        return (token, now.addingTimeInterval(lifetime))
    }
}
