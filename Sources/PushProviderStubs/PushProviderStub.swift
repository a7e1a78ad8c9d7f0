// Stand-ins for APNs and FCM (HTTP v1 with its OAuth token endpoint) that check what the real
// providers check: the provider JWT's ES256 signature against the team's public key, the
// OAuth assertion's RS256 signature against the service account's, the access token, the
// headers, the path and the payload. Every request is recorded; tests choose the answers per
// token (200, 410, 400 BadDeviceToken, 429, 503, FCM UNREGISTERED) and may hold answers back.
import Crypto
public import Foundation
import JWTKit
import Synchronization
import _CryptoExtras

/// Keys and identities of a test "Apple team" and "Google service account", made at start.
public struct TestPushCredentials: Sendable {
    public let apnsKeyPEM: String
    public let apnsKeyID: String
    public let apnsTeamID: String
    public let apnsPublicKeyPEM: String
    public let fcmPrivateKeyPEM: String
    public let fcmPublicKeyPEM: String
    public let fcmProjectID: String
    public let fcmClientEmail: String

    public init() throws {
        let apnsKey = P256.Signing.PrivateKey()
        apnsKeyPEM = apnsKey.pemRepresentation
        apnsPublicKeyPEM = apnsKey.publicKey.pemRepresentation
        apnsKeyID = "TESTKEY123"
        apnsTeamID = "TEAM123456"
        let rsa = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        fcmPrivateKeyPEM = rsa.pemRepresentation
        fcmPublicKeyPEM = rsa.publicKey.pemRepresentation
        fcmProjectID = "ringing-test"
        fcmClientEmail = "push-notifier@ringing-test.iam.gserviceaccount.com"
    }

    /// A service-account JSON key as Google issues it, with `token_uri` pointing at `tokenURI`.
    public func serviceAccountJSON(tokenURI: String) -> String {
        let object: [String: String] = [
            "type": "service_account", "project_id": fcmProjectID, "private_key_id": "test-key-1",
            "private_key": fcmPrivateKeyPEM, "client_email": fcmClientEmail, "token_uri": tokenURI,
        ]
        return String(
            decoding: (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data(), as: UTF8.self)
    }
}

/// How the stub answers pushes to one token.
public enum StubAnswer: Sendable, Hashable {
    case accept
    /// APNs 410 Unregistered / FCM 404 UNREGISTERED.
    case unregistered
    /// APNs 400 BadDeviceToken.
    case badDeviceToken
    /// 429 (APNs TooManyRequests, FCM QUOTA_EXCEEDED).
    case throttle
    /// 503 (APNs ServiceUnavailable, FCM UNAVAILABLE).
    case unavailable
}

/// A request the stub received and how it answered.
public struct ReceivedPush: Sendable {
    public enum Provider: String, Sendable { case apns, fcm }
    public var server: String
    public var provider: Provider
    public var token: String
    public var headers: [String: String]
    public var body: Data
    public var status: Int
    public var receivedAt: Date
    /// When the answer went out (after the hold); nil while held.
    public var answeredAt: Date?
    let id: UUID

    /// The JSON body (APNs payload, or FCM's `{"message":…}`).
    public var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
    /// FCM: `message.data`.
    public var data: [String: String] {
        ((json["message"] as? [String: Any])?["data"] as? [String: String]) ?? [:]
    }
    /// APNs: the `ringing` object of the payload.
    public var ringing: [String: Any] { json["ringing"] as? [String: Any] ?? [:] }
    /// The call the push is about.
    public var sessionID: String? {
        provider == .apns ? ringing["session_id"] as? String : data["session_id"]
    }
}

struct StubClaims: JWTPayload {
    var iss: IssuerClaim
    var iat: IssuedAtClaim
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

struct AssertionClaims: JWTPayload {
    var iss: IssuerClaim
    var scope: String
    var aud: AudienceClaim
    var iat: IssuedAtClaim
    var exp: ExpirationClaim
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

public final class PushProviderStub: Sendable {
    struct State {
        var answers: [String: [StubAnswer]] = [:]
        var pushes: [ReceivedPush] = []
        var violations: [String] = []
        var accessTokens: Set<String> = []
        var tokenGrants = 0
        var providerTokens: Set<String> = []
        var hold: Duration = .zero
        var waiters: [(id: UUID, ready: @Sendable (State) -> Bool, continuation: CheckedContinuation<Void, Never>)] = []
    }

    public let name: String
    public let credentials: TestPushCredentials
    let apnsKeys: JWTKeyCollection
    let fcmKeys: JWTKeyCollection
    private let state = Mutex(State())
    private let serverBox = Mutex<HTTP2StubServer?>(nil)

    /// Starts a stub named `name` (tests run one for APNs production, one for sandbox, or one
    /// for everything) on a free port.
    public init(name: String, certificates: TestCertificates, credentials: TestPushCredentials) async throws {
        self.name = name
        self.credentials = credentials
        apnsKeys = JWTKeyCollection()
        await apnsKeys.add(
            ecdsa: try ES256PublicKey(pem: credentials.apnsPublicKeyPEM), kid: JWKIdentifier(string: credentials.apnsKeyID))
        fcmKeys = JWTKeyCollection()
        await fcmKeys.add(
            rsa: try Insecure.RSA.PublicKey(pem: credentials.fcmPublicKeyPEM), digestAlgorithm: .sha256,
            kid: JWKIdentifier(string: "test-key-1"))
        let server = try await HTTP2StubServer(certificates: certificates) { [weak self] request in
            guard let self else { return StubResponse(status: 503) }
            return await self.handle(request)
        }
        serverBox.withLock { $0 = server }
    }

    public var url: String { serverBox.withLock { $0?.url ?? "" } }
    public var tokenURI: String { url + "/token" }

    public func stop() async { await serverBox.withLock { $0 }?.stop() }

    // MARK: - What tests set and read

    /// Answers for pushes to `token`, one per push; the last repeats.
    public func setAnswers(_ answers: [StubAnswer], for token: String) {
        update { $0.answers[token] = answers }
    }

    /// Every answer waits this long first (a slow provider, for crash tests and the bench).
    public func setHold(_ hold: Duration) { update { $0.hold = hold } }

    public var pushes: [ReceivedPush] { state.withLock { $0.pushes } }
    public var accepted: [ReceivedPush] { pushes.filter { $0.status == 200 } }
    /// Requests refused for breaking the protocol (bad signature, header, path or payload).
    public var violations: [String] { state.withLock { $0.violations } }
    /// OAuth access tokens granted.
    public var tokenGrants: Int { state.withLock { $0.tokenGrants } }
    /// Distinct APNs provider tokens seen.
    public var providerTokens: Int { state.withLock { $0.providerTokens.count } }

    public func reset() { update { $0 = State() } }

    /// Waits until `ready` holds for the recorded pushes, or `timeout` passes (then returns false).
    @discardableResult
    public func wait(timeout: Duration = .seconds(30), until ready: @escaping @Sendable ([ReceivedPush]) -> Bool) async -> Bool {
        let id = UUID()
        let check: @Sendable (State) -> Bool = { ready($0.pushes) }
        return await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let now = self.state.withLock { state -> Bool in
                        if check(state) { return true }
                        state.waiters.append((id, check, continuation))
                        return false
                    }
                    if now { continuation.resume() }
                }
                return true
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            if !first {
                let waiter = state.withLock { state in
                    let index = state.waiters.firstIndex { $0.id == id }
                    return index.map { state.waiters.remove(at: $0) }
                }
                waiter?.continuation.resume()
            }
            group.cancelAll()
            _ = await group.next()
            return first
        }
    }

    private func update(_ change: (inout State) -> Void) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            change(&state)
            let snapshot = state
            var done: [CheckedContinuation<Void, Never>] = []
            state.waiters.removeAll { waiter in
                guard waiter.ready(snapshot) else { return false }
                done.append(waiter.continuation)
                return true
            }
            return done
        }
        for continuation in ready { continuation.resume() }
    }

    // MARK: - The protocols

    func handle(_ request: StubRequest) async -> StubResponse {
        if request.path.hasPrefix("/3/device/") { return await apns(request) }
        if request.path == "/token" { return await oauth(request) }
        if request.path.hasPrefix("/v1/projects/") { return await fcm(request) }
        return violation("no such path \(request.method) \(request.path)", .json(404, ["reason": "BadPath"]))
    }

    private func violation(_ what: String, _ response: StubResponse) -> StubResponse {
        update { $0.violations.append("\(name): \(what)") }
        return response
    }

    private func nextAnswer(_ token: String) -> StubAnswer {
        state.withLock { state in
            guard var answers = state.answers[token], let first = answers.first else { return .accept }
            if answers.count > 1 {
                answers.removeFirst()
                state.answers[token] = answers
            }
            return first
        }
    }

    /// Records a push as it arrives, with the answer it will get, then holds the answer back
    /// if the test asked for a slow provider.
    private func record(_ provider: ReceivedPush.Provider, _ token: String, _ request: StubRequest, _ response: StubResponse)
        async -> StubResponse
    {
        let push = ReceivedPush(
            server: name, provider: provider, token: token, headers: request.headers, body: request.body,
            status: response.status, receivedAt: Date(), answeredAt: nil, id: UUID())
        update { $0.pushes.append(push) }
        let hold = state.withLock { $0.hold }
        if hold > .zero { try? await Task.sleep(for: hold) }
        update { state in
            if let index = state.pushes.lastIndex(where: { $0.id == push.id }) { state.pushes[index].answeredAt = Date() }
        }
        return response
    }

    /// APNs: `POST /3/device/<hex token>`, bearer provider JWT, the push headers, a JSON payload.
    private func apns(_ request: StubRequest) async -> StubResponse {
        func refuse(_ status: Int, _ reason: String, _ why: String) -> StubResponse {
            violation("APNs \(reason): \(why)", .json(status, ["reason": reason]))
        }
        let token = String(request.path.dropFirst("/3/device/".count))
        guard request.method == "POST" else { return refuse(405, "MethodNotAllowed", request.method) }
        guard token.count >= 64, token.allSatisfy(\.isHexDigit) else { return refuse(400, "BadDeviceToken", token) }
        guard let authorization = request.headers["authorization"], authorization.hasPrefix("bearer ") else {
            return refuse(403, "MissingProviderToken", "no bearer authorization")
        }
        let jwt = String(authorization.dropFirst("bearer ".count))
        do {
            let claims = try await apnsKeys.verify(jwt, as: StubClaims.self)
            guard claims.iss.value == credentials.apnsTeamID else { return refuse(403, "InvalidProviderToken", "iss") }
            let age = Date().timeIntervalSince(claims.iat.value)
            guard age < 3600 else { return refuse(403, "ExpiredProviderToken", "iat \(Int(age)) s ago") }
            guard age > -60 else { return refuse(403, "InvalidProviderToken", "iat in the future") }
        } catch {
            return refuse(403, "InvalidProviderToken", "signature or kid: \(error)")
        }
        update { $0.providerTokens.insert(jwt) }
        let pushType = request.headers["apns-push-type"] ?? ""
        let topic = request.headers["apns-topic"] ?? ""
        guard pushType == "voip" || pushType == "alert" else { return refuse(400, "InvalidPushType", pushType) }
        guard !topic.isEmpty else { return refuse(400, "MissingTopic", "no apns-topic") }
        guard pushType != "voip" || topic.hasSuffix(".voip") else { return refuse(400, "BadTopic", "VoIP topic \(topic)") }
        guard ["5", "10"].contains(request.headers["apns-priority"] ?? "10") else { return refuse(400, "BadPriority", "") }
        guard let expiration = request.headers["apns-expiration"], Int(expiration) != nil else {
            return refuse(400, "BadExpirationDate", request.headers["apns-expiration"] ?? "none")
        }
        guard let collapse = request.headers["apns-collapse-id"], collapse.utf8.count <= 64 else {
            return refuse(400, "BadCollapseId", request.headers["apns-collapse-id"] ?? "none")
        }
        guard request.body.count <= 5120 else { return refuse(413, "PayloadTooLarge", "\(request.body.count) bytes") }
        guard let payload = (try? JSONSerialization.jsonObject(with: request.body)) as? [String: Any] else {
            return refuse(400, "PayloadEmpty", "not a JSON object")
        }
        let ringing = payload["ringing"] as? [String: Any] ?? [:]
        for field in ["session_id", "initiator", "receiver_type", "call_type", "expires_at"] where ringing[field] == nil {
            return refuse(400, "BadPayload", "ringing.\(field) missing")
        }
        if pushType == "alert" {
            guard ((payload["aps"] as? [String: Any])?["alert"]) != nil else { return refuse(400, "BadPayload", "no aps.alert") }
        }
        let response: StubResponse
        switch nextAnswer(token) {
        case .accept: response = StubResponse(status: 200, headers: [("apns-id", UUID().uuidString)])
        case .unregistered:
            response = .json(410, ["reason": "Unregistered", "timestamp": Int(Date().timeIntervalSince1970 * 1000)])
        case .badDeviceToken: response = .json(400, ["reason": "BadDeviceToken"])
        case .throttle: response = .json(429, ["reason": "TooManyRequests"])
        case .unavailable: response = .json(503, ["reason": "ServiceUnavailable"])
        }
        return await record(.apns, token, request, response)
    }

    /// OAuth 2.0 token endpoint, JWT bearer grant (RFC 7523) as Google runs it.
    private func oauth(_ request: StubRequest) async -> StubResponse {
        func refuse(_ error: String, _ why: String) -> StubResponse {
            violation("OAuth \(error): \(why)", .json(400, ["error": error, "error_description": why]))
        }
        guard request.method == "POST", request.headers["content-type"]?.hasPrefix("application/x-www-form-urlencoded") == true
        else { return refuse("invalid_request", "not a form POST") }
        var form: [String: String] = [:]
        for pair in String(decoding: request.body, as: UTF8.self).split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map { String($0).removingPercentEncoding ?? String($0) }
            if parts.count == 2 { form[parts[0]] = parts[1] }
        }
        guard form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer" else {
            return refuse("unsupported_grant_type", form["grant_type"] ?? "none")
        }
        guard let assertion = form["assertion"] else { return refuse("invalid_request", "no assertion") }
        do {
            let claims = try await fcmKeys.verify(assertion, as: AssertionClaims.self)
            guard claims.iss.value == credentials.fcmClientEmail else { return refuse("invalid_grant", "iss") }
            guard claims.aud.value.contains(tokenURI) else { return refuse("invalid_grant", "aud \(claims.aud.value)") }
            guard claims.scope.split(separator: " ").contains("https://www.googleapis.com/auth/firebase.messaging") else {
                return refuse("invalid_scope", claims.scope)
            }
            let lifetime = claims.exp.value.timeIntervalSince(claims.iat.value)
            guard lifetime <= 3600, claims.exp.value > Date() else { return refuse("invalid_grant", "exp") }
        } catch {
            return refuse("invalid_grant", "assertion signature: \(error)")
        }
        let token = "ya29.stub-\(UUID().uuidString)"
        update {
            $0.accessTokens.insert(token)
            $0.tokenGrants += 1
        }
        return .json(200, ["access_token": token, "expires_in": 3599, "token_type": "Bearer"])
    }

    /// FCM HTTP v1 `messages:send`: a data-only, high-priority Android message with a TTL.
    private func fcm(_ request: StubRequest) async -> StubResponse {
        func refuse(_ status: Int, _ code: String, _ why: String) -> StubResponse {
            violation("FCM \(code): \(why)", .json(status, ["error": ["code": status, "message": why, "status": code]]))
        }
        guard request.method == "POST", request.path == "/v1/projects/\(credentials.fcmProjectID)/messages:send" else {
            return refuse(404, "NOT_FOUND", "\(request.method) \(request.path)")
        }
        guard let authorization = request.headers["authorization"], authorization.hasPrefix("Bearer "),
            state.withLock({ $0.accessTokens.contains(String(authorization.dropFirst("Bearer ".count))) })
        else { return refuse(401, "UNAUTHENTICATED", "no valid access token") }
        guard let body = (try? JSONSerialization.jsonObject(with: request.body)) as? [String: Any],
            let message = body["message"] as? [String: Any], let token = message["token"] as? String
        else { return refuse(400, "INVALID_ARGUMENT", "no message.token") }
        guard message["notification"] == nil else { return refuse(400, "INVALID_ARGUMENT", "not data-only") }
        guard let data = message["data"] as? [String: Any], !data.isEmpty, data.values.allSatisfy({ $0 is String }) else {
            return refuse(400, "INVALID_ARGUMENT", "message.data must map strings to strings")
        }
        let android = message["android"] as? [String: Any] ?? [:]
        guard android["priority"] as? String == "HIGH" else { return refuse(400, "INVALID_ARGUMENT", "android.priority") }
        guard let ttl = android["ttl"] as? String, ttl.hasSuffix("s"), Int(ttl.dropLast()) != nil else {
            return refuse(400, "INVALID_ARGUMENT", "android.ttl")
        }
        let response: StubResponse
        switch nextAnswer(token) {
        case .accept:
            response = .json(200, ["name": "projects/\(credentials.fcmProjectID)/messages/\(UUID().uuidString)"])
        case .unregistered, .badDeviceToken:
            response = .json(
                404,
                [
                    "error": [
                        "code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND",
                        "details": [
                            ["@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "UNREGISTERED"]
                        ],
                    ] as [String: Any]
                ])
        case .throttle:
            response = .json(429, ["error": ["code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota"]])
        case .unavailable:
            response = .json(503, ["error": ["code": 503, "status": "UNAVAILABLE", "message": "unavailable"]])
        }
        return await record(.fcm, token, request, response)
    }
}
