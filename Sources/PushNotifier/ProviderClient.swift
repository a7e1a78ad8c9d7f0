// One attempt at one push: the HTTP/2 request to APNs or FCM (async-http-client negotiates h2
// by ALPN) and the provider's answer, read by PushRules.
public import AsyncHTTPClient
public import Foundation
import Logging
import NIOCore
import NIOFoundationCompat
public import NIOSSL
public import PushRules
public import RingingContract

public final class ProviderClient: Sendable {
    let http: HTTPClient
    let apnsToken: APNsProviderToken?
    let fcmToken: FCMAccessToken?
    let fcmProjectID: String?
    let apnsURL: String
    let apnsSandboxURL: String
    let fcmURL: String
    let timeout: Duration

    /// The HTTP client every provider request goes through: HTTP/2 where the server offers it,
    /// the system's trusted CAs plus `caFile`.
    public static func makeHTTPClient(caFile: String?) throws -> HTTPClient {
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile { tls.additionalTrustRoots = [.file(caFile)] }
        var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
        configuration.httpVersion = .automatic
        configuration.timeout = HTTPClient.Configuration.Timeout(connect: .seconds(5), read: .seconds(30))
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    public init(configuration: PushNotifierConfiguration, http: HTTPClient) async throws {
        self.http = http
        if let apns = configuration.apns {
            apnsToken = try await APNsProviderToken(credentials: apns)
        } else {
            apnsToken = nil
        }
        if let fcm = configuration.fcm {
            fcmToken = try await FCMAccessToken(credentials: fcm, http: http)
            fcmProjectID = fcm.projectID
        } else {
            fcmToken = nil
            fcmProjectID = nil
        }
        apnsURL = configuration.apnsURL
        apnsSandboxURL = configuration.apnsSandboxURL
        fcmURL = configuration.fcmURL
        timeout = configuration.requestTimeout
    }

    /// Whether pushes of this provider can be sent (credentials were given).
    public func enabled(_ provider: PushProvider) -> Bool {
        switch provider {
        case .apns: apnsToken != nil
        case .fcm: fcmToken != nil
        }
    }

    /// Sends one push once and reads the answer. A network failure is a `retry`.
    public func attempt(_ push: PlannedPush) async -> ProviderAnswer {
        do {
            switch push.request {
            case .apns(let apns): return try await send(apns)
            case .fcm(let fcm): return try await send(fcm)
            }
        } catch let error as ProviderTokenError {
            return .retry(reason: error.description, after: nil)
        } catch {
            return .retry(reason: "\(error)", after: nil)
        }
    }

    private func send(_ push: APNsPush) async throws -> ProviderAnswer {
        guard let apnsToken else { return .rejected(reason: "APNs is not configured") }
        let token = try await apnsToken.token()
        let base = push.environment == .sandbox ? apnsSandboxURL : apnsURL
        var request = HTTPClientRequest(url: base + push.path)
        request.method = .POST
        request.headers.add(name: "authorization", value: "bearer \(token)")
        for (name, value) in push.headers { request.headers.add(name: name, value: value) }
        request.headers.add(name: "content-type", value: "application/json")
        request.body = .bytes(ByteBuffer(data: push.payload))
        let response = try await http.execute(request, timeout: TimeAmount(timeout))
        let body = try await response.body.collect(upTo: 64 * 1024)
        let answer = ProviderAnswers.apns(
            status: Int(response.status.code), body: Data(buffer: body), retryAfter: response.headers.first(name: "retry-after"))
        if case .refreshCredentials = answer { await apnsToken.invalidate(token) }
        return answer
    }

    private func send(_ push: FCMPush) async throws -> ProviderAnswer {
        guard let fcmToken, let fcmProjectID else { return .rejected(reason: "FCM is not configured") }
        let token = try await fcmToken.token()
        var request = HTTPClientRequest(url: "\(fcmURL)/v1/projects/\(fcmProjectID)/messages:send")
        request.method = .POST
        request.headers.add(name: "authorization", value: "Bearer \(token)")
        request.headers.add(name: "content-type", value: "application/json; charset=UTF-8")
        request.body = .bytes(ByteBuffer(data: push.body))
        let response = try await http.execute(request, timeout: TimeAmount(timeout))
        let body = try await response.body.collect(upTo: 64 * 1024)
        let answer = ProviderAnswers.fcm(
            status: Int(response.status.code), body: Data(buffer: body), retryAfter: response.headers.first(name: "retry-after"))
        if case .refreshCredentials = answer { await fcmToken.invalidate(token) }
        return answer
    }
}

extension TimeAmount {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
