// What the gateway tests share: call-control and a gateway in this process against the real
// broker and database, and test devices that speak the WebSocket protocol of DESIGN §7.
import AMQPClient
import CallControl
import CallRules
import DeviceGateway
import Foundation
import HummingbirdWSClient
import Logging
import NIOWebSocket
import RingingAuth
import RingingContract
import RingingOperations
import RingingService
import ServiceLifecycle
import Synchronization
import TestSupport
import TokenService

func quietLogger(_ label: String) -> Logger {
    var logger = Logger(label: label)
    logger.logLevel = .warning
    return logger
}

struct Gateway: Sendable {
    let port: Int
    let auth: AuthTokens
    let service: DeviceGatewayService

    var wsURL: String { "ws://127.0.0.1:\(port)/v1/ws" }

    /// Tokens signed with the development secret, as the test stack's services take them.
    static func developmentAuth() async throws -> AuthTokens { try await AuthTokens(secret: AuthTokens.developmentSecret) }

    /// A fresh user and a token for it.
    func user(_ name: String, lifetime: Duration = .seconds(3600)) async throws -> (uid: String, token: String) {
        let uid = TestEnvironment.uniqueName(name)
        return (uid, try await auth.mint(uid: uid, lifetime: lifetime))
    }

    /// A device of a new user, connected and welcomed.
    func device(_ name: String, deviceID: String? = nil) async throws -> TestDevice {
        let user = try await user(name)
        let device = try await TestDevice.connect(wsURL, uid: user.uid)
        try await device.hello(token: user.token, deviceID: deviceID)
        return device
    }

    /// Another device of the same user.
    func device(of other: TestDevice, deviceID: String? = nil) async throws -> TestDevice {
        let device = try await TestDevice.connect(wsURL, uid: other.uid)
        try await device.hello(token: try await auth.mint(uid: other.uid), deviceID: deviceID)
        return device
    }

    static func configuration(_ extra: [String: String] = [:]) throws -> GatewayConfiguration {
        try GatewayConfiguration(
            environment: Environment(
                [
                    "RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "device-gateway"),
                    "RINGING_GATEWAY_PORT": "0", "RINGING_HTTP_PORT": "0",
                    // The parallel test pass starts dozens of services at once on two cores:
                    // a reply may take longer than production's 10 s there.
                    "RINGING_GATEWAY_REPLY_TIMEOUT_S": "60",
                    "RINGING_INSTANCE": TestEnvironment.uniqueName("gw-test"),
                ].merging(extra) { $1 }))
    }

    static func callControlConfiguration() throws -> CallControlConfiguration {
        try CallControlConfiguration(
            environment: Environment([
                "RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "call-control"),
                "RINGING_DATABASE_URL": TestEnvironment.databaseURL, "RINGING_CALL_CONTROL_WORKERS": "2",
                "RINGING_INSTANCE": TestEnvironment.uniqueName("cc-gw-test"), "RINGING_HTTP_PORT": "0",
            ]))
    }

    /// Runs `body` against a gateway in this process and, unless the test runs its own
    /// (`callControl: false`), a call-control instance in this process.
    static func run(
        _ extra: [String: String] = [:], callControl withCallControl: Bool = true, tokens: Bool = false,
        limit: Duration = .seconds(240), _ body: @escaping @Sendable (Gateway) async throws -> Void
    ) async throws {
        _ = RingingMetrics.registry
        let callControl =
            withCallControl
            ? try await CallControlService(configuration: try callControlConfiguration(), logger: quietLogger("cc-gw-test"))
            : nil
        let tokenService =
            tokens
            ? try await TokenService(
                configuration: try TokenServiceConfiguration(
                    environment: Environment([
                        "RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "token-service"),
                        "RINGING_TOKEN_DATABASE_URL": TestEnvironment.readerDatabaseURL,
                        "RINGING_INSTANCE": TestEnvironment.uniqueName("token-gw-test"), "RINGING_HTTP_PORT": "0",
                    ])), logger: quietLogger("token-gw-test"))
            : nil
        let gateway = try await DeviceGatewayService(configuration: try configuration(extra), logger: quietLogger("gw-test"))
        try await withDeadline(limit, "the gateway scenario") {
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: (callControl?.serviceGroupEntries ?? []) + (tokenService?.serviceGroupEntries ?? [])
                        + gateway.serviceGroupEntries,
                    logger: quietLogger("gw-scenario")))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }
                defer { tasks.cancelAll() }
                await callControl?.waitUntilReady()
                guard let port = await gateway.waitUntilListening() else { throw TimedOut(what: "the gateway's listener") }
                try await body(
                    Gateway(port: port, auth: try await AuthTokens(secret: AuthTokens.developmentSecret), service: gateway))
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
            }
        }
    }
}

/// A device on the gateway's WebSocket: frames it receives are kept in order and can be
/// awaited; frames it sends go out in order.
final class TestDevice: Sendable {
    let uid: String
    private let outgoing: AsyncStream<String>.Continuation
    private let received = Mutex<(frames: [JSONObject], waiters: [(Int, CheckedContinuation<Void, Never>)])>(([], []))
    private let closeFrame = Mutex<(code: Int?, reason: String?, done: Bool, waiters: [CheckedContinuation<Void, Never>])>(
        (nil, nil, false, []))
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let cursor = Mutex(0)

    private init(uid: String, outgoing: AsyncStream<String>.Continuation) {
        self.uid = uid
        self.outgoing = outgoing
    }

    static func connect(_ url: String, uid: String = "") async throws -> TestDevice {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        let device = TestDevice(uid: uid, outgoing: continuation)
        let connected = AsyncStream<Void>.makeStream()
        let task = Task {
            do {
                let frame = try await WebSocketClient.connect(
                    url: url, configuration: .init(maxFrameSize: 4 << 20), logger: quietLogger("test-device")
                ) { inbound, outbound, _ in
                    connected.continuation.yield()
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask {
                            for await text in stream { try await outbound.write(.text(text)) }
                        }
                        for try await message in inbound.messages(maxSize: 4 << 20) {
                            guard case .text(let text) = message else { continue }
                            device.receive(text)
                        }
                        group.cancelAll()
                    }
                }
                device.finish(code: frame.map { Int(UInt16(webSocketErrorCode: $0.closeCode)) }, reason: frame?.reason)
            } catch {
                device.finish(code: nil, reason: "\(error)")
            }
            connected.continuation.finish()
        }
        device.task.withLock { $0 = task }
        for await _ in connected.stream { break }
        return device
    }

    func send(_ object: JSONObject) {
        let text = String(decoding: try! JSONEncoder().encode(object), as: UTF8.self)
        ContractLog.record("ws_in", routingKey: "", messageID: nil, body: Data(text.utf8))
        outgoing.yield(text)
    }

    func sendRaw(_ text: String) { outgoing.yield(text) }

    func hello(token: String, deviceID: String? = nil) async throws {
        var frame: JSONObject = ["type": "hello", "auth_token": .string(token)]
        if let deviceID { frame["device_id"] = .string(deviceID) }
        send(frame)
        _ = try await next { $0["type"] == "welcome" }
    }

    /// Sends a request frame and returns its reply.
    func request(_ type: String, _ body: JSONObject = [:], id: String = UUID().uuidString) async throws -> JSONObject {
        send(["type": "request", "id": .string(id), "request": .string(type), "body": .object(body)])
        let frame = try await frame { $0["type"] == "reply" && $0["id"] == .string(id) }
        guard case .object(let reply)? = frame["reply"] else { throw TimedOut(what: "a reply object") }
        return reply
    }

    /// The first frame received (at any time) that matches.
    func frame(_ matching: @escaping @Sendable (JSONObject) -> Bool) async throws -> JSONObject {
        try await withDeadline(.seconds(90), "a frame on \(uid)'s socket") {
            var index = 0
            while true {
                if let found = self.search(from: &index, matching) { return found }
                await self.waitForFrame(after: index)
                if self.isClosed, self.search(from: &index, matching) == nil {
                    throw TimedOut(what: "a frame: the socket closed (\(self.closeCode ?? -1) \(self.closeReason ?? ""))")
                }
            }
        }
    }

    /// The next frame after the last one `next` returned that matches.
    func next(_ matching: @escaping @Sendable (JSONObject) -> Bool) async throws -> JSONObject {
        try await withDeadline(.seconds(90), "the next frame on \(uid)'s socket") {
            while true {
                var index = self.cursor.withLock { $0 }
                if let found = self.search(from: &index, matching) {
                    self.cursor.withLock { $0 = index }
                    return found
                }
                self.cursor.withLock { $0 = index }
                if self.isClosed {
                    throw TimedOut(what: "a frame: the socket closed (\(self.closeCode ?? -1) \(self.closeReason ?? ""))")
                }
                await self.waitForFrame(after: index)
            }
        }
    }

    var frames: [JSONObject] { received.withLock { $0.frames } }

    /// Notifications received so far.
    func notifications(_ name: String? = nil) -> [JSONObject] {
        frames.filter { $0["type"] == "notification" && (name == nil || $0["name"] == .string(name!)) }
    }

    /// Waits until the server closed the socket; returns its code and reason.
    func closed() async throws -> (code: Int?, reason: String?) {
        try await withDeadline(.seconds(90), "the socket to close") {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = self.closeFrame.withLock { state -> Bool in
                    if state.done { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
            return self.closeFrame.withLock { ($0.code, $0.reason) }
        }
    }

    var isClosed: Bool { closeFrame.withLock { $0.done } }
    var closeCode: Int? { closeFrame.withLock { $0.code } }
    var closeReason: String? { closeFrame.withLock { $0.reason } }

    /// Closes from the device's side (as an app going away).
    func disconnect() async {
        outgoing.finish()
        task.withLock { $0 }?.cancel()
        _ = try? await closed()
    }

    private func search(from index: inout Int, _ matching: (JSONObject) -> Bool) -> JSONObject? {
        let frames = received.withLock { $0.frames }
        while index < frames.count {
            defer { index += 1 }
            if matching(frames[index]) { return frames[index] }
        }
        return nil
    }

    private func waitForFrame(after count: Int) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = received.withLock { state -> Bool in
                if state.frames.count > count || isClosed { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if ready { continuation.resume() }
        }
    }

    private func receive(_ text: String) {
        ContractLog.record("ws_out", routingKey: "", messageID: nil, body: Data(text.utf8))
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) else { return }
        let waiters = received.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.frames.append(object)
            let ready = state.waiters.filter { $0.0 < state.frames.count }.map(\.1)
            state.waiters.removeAll { $0.0 < state.frames.count }
            return ready
        }
        for waiter in waiters { waiter.resume() }
    }

    private func finish(code: Int?, reason: String?) {
        let waiters = closeFrame.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.code = code
            state.reason = reason
            state.done = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
        let frameWaiters = received.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.waiters = [] }
            return state.waiters.map(\.1)
        }
        for waiter in frameWaiters { waiter.resume() }
    }
}

extension JSONObject {
    /// `self[a][b]…` through nested objects.
    func at(_ path: String...) -> JSONValue? {
        var value: JSONValue? = .object(self)
        for key in path {
            guard case .object(let object)? = value else { return nil }
            value = object[key]
        }
        return value
    }

    var sessionID: String? {
        if case .string(let id)? = at("notification", "call", "session_id") { return id }
        if case .string(let id)? = at("call", "session_id") { return id }
        return nil
    }
}

extension UInt16 {
    init(webSocketErrorCode code: WebSocketErrorCode) {
        switch code {
        case .normalClosure: self = 1000
        case .goingAway: self = 1001
        case .protocolError: self = 1002
        case .unacceptableData: self = 1003
        case .dataInconsistentWithMessage: self = 1007
        case .policyViolation: self = 1008
        case .messageTooLarge: self = 1009
        case .missingExtension: self = 1010
        case .unexpectedServerError: self = 1011
        case .unknown(let value): self = value
        }
    }
}
