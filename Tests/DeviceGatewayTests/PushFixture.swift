// What the push tests share: local APNs (production and sandbox) and FCM stand-ins speaking
// HTTP/2 over TLS with a CA made at start, a push-notifier process trusting that CA through
// RINGING_PUSH_CA_FILE, and call-control plus a gateway in this process. The notifier's queue
// is one for the whole broker, so these suites run alone (scripts/test).
import AMQPClient
import CallRules
import Foundation
import PostgresClient
import PushProviderStubs
import RingingContract
import Synchronization
import TestSupport
import Testing

final class PushFixture: Sendable {
    let gateway: Gateway
    /// APNs production, FCM and its OAuth token endpoint.
    let production: PushProviderStub
    /// APNs sandbox.
    let sandbox: PushProviderStub
    let environment: [String: String]
    private let current = Mutex<ServiceProcess?>(nil)

    init(gateway: Gateway, production: PushProviderStub, sandbox: PushProviderStub, environment: [String: String]) {
        self.gateway = gateway
        self.production = production
        self.sandbox = sandbox
        self.environment = environment
    }

    var notifier: ServiceProcess { current.withLock { $0! } }

    /// Starts a push-notifier process (again) and waits until it serves.
    func startNotifier() async throws {
        let process = try ServiceProcess(
            executable: "push-notifier", name: TestEnvironment.uniqueName("push-test"), environment: environment,
            readyLine: "push-notifier ready")
        current.withLock { $0 = process }
        try await process.waitUntilReady()
    }

    static func run(
        _ extra: [String: String] = [:], limit: Duration = .seconds(240),
        _ body: @escaping @Sendable (PushFixture) async throws -> Void
    ) async throws {
        let certificates = try TestCertificates()
        let credentials = try TestPushCredentials()
        let production = try await PushProviderStub(name: "production", certificates: certificates, credentials: credentials)
        let sandbox = try await PushProviderStub(name: "sandbox", certificates: certificates, credentials: credentials)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestEnvironment.uniqueName("push"))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let environment = [
            "RINGING_APNS_KEY": credentials.apnsKeyPEM, "RINGING_APNS_KEY_ID": credentials.apnsKeyID,
            "RINGING_APNS_TEAM_ID": credentials.apnsTeamID, "RINGING_APNS_URL": production.url,
            "RINGING_APNS_SANDBOX_URL": sandbox.url,
            "RINGING_FCM_CREDENTIALS": credentials.serviceAccountJSON(tokenURI: production.tokenURI),
            "RINGING_FCM_URL": production.url, "RINGING_PUSH_CA_FILE": try certificates.writeCA(to: directory),
            "RINGING_PUSH_DATABASE_URL": TestEnvironment.databaseURL,
        ].merging(extra) { $1 }
        try await Gateway.run(limit: limit) { g in
            let fixture = PushFixture(gateway: g, production: production, sandbox: sandbox, environment: environment)
            try await fixture.startNotifier()
            do {
                try await body(fixture)
            } catch {
                print(fixture.notifier.log.suffix(4000))
                fixture.notifier.terminate()
                throw error
            }
            #expect(violations(production, sandbox) == [], "requests that broke the providers' protocols")
            fixture.notifier.terminate()
        }
        await production.stop()
        await sandbox.stop()
    }

    // MARK: - Requests through the gateway's HTTP API

    @discardableResult
    func register(
        _ user: (uid: String, token: String), _ deviceID: String, kind: String, token: String, environment: String = "production",
        appID: String = "com.example.ringing"
    ) async throws -> HTTPReply {
        try await gateway.http(
            "PUT", "/v1/devices/\(deviceID)", token: user.token, idempotencyKey: UUID().uuidString,
            body: [
                "platform": .string(kind == "fcm" ? "android" : "ios"), "kind": .string(kind), "push_token": .string(token),
                "app_id": .string(appID), "environment": .string(environment),
            ])
    }

    func devices(_ user: (uid: String, token: String)) async throws -> [JSONObject] {
        let reply = try await gateway.http("GET", "/v1/devices", token: user.token)
        guard reply.status == 200, case .array(let devices)? = reply.body["devices"] else {
            throw PushTestError("GET /v1/devices answered \(reply.status): \(reply.text)")
        }
        return devices.compactMap { if case .object(let o) = $0 { o } else { nil } }
    }

    /// `caller` calls `callee`; returns the session id and the ring deadline.
    func call(_ caller: (uid: String, token: String), _ callee: String, timeout: Int = 60) async throws -> (String, Date) {
        let reply = try await gateway.http(
            "POST", "/v1/calls", token: caller.token, idempotencyKey: UUID().uuidString,
            body: [
                "receiver_id": .string(callee), "receiver_type": "user", "call_type": "audio", "timeout_s": .int(Int64(timeout)),
            ])
        guard reply.status == 200, case .string(let session)? = reply.body.at("call", "session_id"),
            case .string(let expires)? = reply.body.at("call", "expires_at"), let deadline = WireTime.parse(expires)
        else { throw PushTestError("POST /v1/calls answered \(reply.status): \(reply.text)") }
        return (session, deadline)
    }

    static func apnsToken() -> String { (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined() }
    static func fcmToken() -> String {
        "fcm-\(UUID().uuidString):APA91b\(UUID().uuidString.replacingOccurrences(of: "-", with: "_"))"
    }
}

/// The requests that broke the providers' protocols.
func violations(_ stubs: PushProviderStub...) -> [String] { stubs.flatMap(\.violations) }

struct PushTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A TCP port nobody listens on right now (the kernel's choice), for a process's operations port.
func freePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw PushTestError("socket() failed") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    guard bound else { throw PushTestError("bind() failed") }
    return Int(UInt16(bigEndian: address.sin_port))
}
