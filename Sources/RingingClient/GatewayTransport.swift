// The client's way to Ringing from a phone or a desktop app: one WebSocket to the device
// gateway (DESIGN §7). hello first, then requests as frames whose id is the message_id; the
// gateway's welcome carries the snapshot. When the socket drops it reconnects with backoff
// and sends the requests still waiting for a reply again, with the same ids (idempotent).
public import CallRules
public import Foundation
import HummingbirdWSClient
public import Logging
public import RingingContract
import Synchronization

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

public final class GatewayTransport: RingingTransport {
    /// The WebSocket URL (`ws://host:8080/v1/ws`).
    public let url: String
    public let deviceID: String?
    let logger: Logger
    let initialBackoff: Duration
    let maximumBackoff: Duration
    private let token: Mutex<String>
    private let state = Mutex(State())

    struct Pending {
        var frame: String
        var waiter: CheckedContinuation<WireReply, any Error>?
    }

    struct State {
        /// Frames to the current socket, once it has been welcomed.
        var outbound: AsyncStream<String>.Continuation?
        var pending: [String: Pending] = [:]
    }

    public var keepsCallsLive: Bool { true }
    public var endpoint: String { url }

    /// `gateway` may be the gateway's base URL (`http://127.0.0.1:8080`) or its WebSocket URL
    /// (`ws://127.0.0.1:8080/v1/ws`).
    public init(
        gateway: URL, authToken: String, deviceID: String?,
        reconnect: (initial: Duration, maximum: Duration) = (.milliseconds(500), .seconds(10)),
        logger: Logger
    ) {
        url = Self.webSocketURL(gateway)
        token = Mutex(authToken)
        self.deviceID = deviceID
        initialBackoff = reconnect.initial
        maximumBackoff = reconnect.maximum
        self.logger = logger
    }

    /// `http(s)://host[:port][/]` → `ws(s)://host[:port]/v1/ws`; a `ws(s)://` URL with a path stays as it is.
    static func webSocketURL(_ url: URL) -> String {
        var components = URLComponents(url: url, resolvingAgainstBaseURL: false) ?? URLComponents()
        switch components.scheme?.lowercased() {
        case "https", "wss": components.scheme = "wss"
        default: components.scheme = "ws"
        }
        if components.path.isEmpty || components.path == "/" { components.path = "/v1/ws" }
        return components.string ?? "ws://127.0.0.1:8080/v1/ws"
    }

    /// Replaces the auth token (the socket's too, with an `auth` frame) before it expires.
    public func updateToken(_ newToken: String) {
        token.withLock { $0 = newToken }
        let frame = Self.encode(["type": "auth", "auth_token": .string(newToken)])
        _ = state.withLock { $0.outbound?.yield(frame) }
    }

    public func request(_ type: RequestType, _ fields: JSONObject, id: String, timeout: Duration) async throws -> WireReply {
        if type == .setGroupMembers { return try await setGroupMembers(fields, id: id, timeout: timeout) }
        let frame = Self.encode([
            "type": "request", "id": .string(id), "request": .string(type.rawValue), "body": .object(fields),
        ])
        return try await withReplyTimeout(timeout) {
            try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { continuation in
                    let outbound = self.state.withLock { state -> AsyncStream<String>.Continuation? in
                        state.pending[id] = Pending(frame: frame, waiter: continuation)
                        return state.outbound
                    }
                    // Not connected: it goes out with the others when the socket is back.
                    outbound?.yield(frame)
                }
            } onCancel: {
                // Given up on (timed out): the next attempt registers it again, same id.
                self.state.withLock { $0.pending.removeValue(forKey: id) }?.waiter?.resume(throwing: CancellationError())
            }
        }
    }

    public func run(_ events: @escaping @Sendable (TransportEvent) -> Void) async {
        var backoff = ReconnectBackoff(initial: initialBackoff, maximum: maximumBackoff)
        var everConnected = false
        while !Task.isCancelled {
            events(.state(.connecting))
            let outcome = await connectOnce(events)
            state.withLock { $0.outbound = nil }
            if Task.isCancelled { break }
            if outcome.welcomed {
                everConnected = true
                backoff.reset()
            }
            let delay = backoff.next()
            if !everConnected && !outcome.welcomed {
                events(.unreachable("cannot reach the gateway at \(url): \(outcome.reason)"))
            }
            logger.info(
                "gateway connection lost; reconnecting", metadata: ["reason": "\(outcome.reason)", "retry_in": "\(delay)"])
            events(.state(.reconnecting(retryIn: delay, reason: outcome.reason)))
            try? await Task.sleep(for: delay)
        }
        events(.state(.stopped))
    }

    /// One socket from connect to close. Returns whether it was welcomed and why it ended.
    private func connectOnce(_ events: @escaping @Sendable (TransportEvent) -> Void) async -> (welcomed: Bool, reason: String) {
        let wasWelcomed = Atomic<Bool>(false)
        do {
            let close = try await WebSocketClient.connect(
                url: url,
                configuration: .init(maxFrameSize: 4 << 20, autoPing: .enabled(timePeriod: .seconds(20))), logger: logger
            ) { inbound, outbound, _ in
                let (frames, continuation) = AsyncStream<String>.makeStream()
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await frame in frames { try await outbound.write(.text(frame)) }
                    }
                    defer {
                        continuation.finish()
                        group.cancelAll()
                    }
                    var hello: JSONObject = ["type": "hello", "auth_token": .string(self.token.withLock { $0 })]
                    if let deviceID = self.deviceID { hello["device_id"] = .string(deviceID) }
                    continuation.yield(Self.encode(hello))
                    for try await message in inbound.messages(maxSize: 4 << 20) {
                        guard case .text(let text) = message else { continue }
                        if self.receive(text, events: events, outbound: continuation) {
                            wasWelcomed.store(true, ordering: .relaxed)
                        }
                    }
                }
            }
            let code = close.map { "\($0.closeCode)" } ?? "no close frame"
            let reason = close?.reason.flatMap { $0.isEmpty ? nil : $0 } ?? "closed"
            return (wasWelcomed.load(ordering: .relaxed), "\(reason) (\(code))")
        } catch {
            return (wasWelcomed.load(ordering: .relaxed), "\(error)")
        }
    }

    /// Handles one frame from the gateway; returns true for a welcome.
    private func receive(
        _ text: String, events: @Sendable (TransportEvent) -> Void, outbound: AsyncStream<String>.Continuation
    ) -> Bool {
        guard case .object(let frame)? = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)),
            case .string(let type)? = frame["type"]
        else {
            logger.warning("ignoring a frame that is not JSON", metadata: ["frame": "\(text.prefix(200))"])
            return false
        }
        switch type {
        case "welcome":
            var snapshot: [WireCall] = []
            if let calls = frame["calls"], let data = try? JSONEncoder().encode(calls) {
                snapshot = (try? WireTime.decoder.decode([WireCall].self, from: data)) ?? []
            }
            var deviceID: String?
            if case .string(let id)? = frame["device_id"] { deviceID = id }
            // Listening again: what waits for a reply goes out again, same ids.
            let resend = state.withLock { state -> [String] in
                state.outbound = outbound
                return state.pending.values.map(\.frame)
            }
            events(.listening(snapshot: snapshot, deviceID: deviceID))
            events(.state(.connected))
            for frame in resend { outbound.yield(frame) }
            return true
        case "notification":
            guard let body = frame["notification"], let data = try? JSONEncoder().encode(body),
                let event = try? WireTime.decoder.decode(WireEvent.self, from: data)
            else {
                logger.warning("ignoring a notification that does not parse")
                return false
            }
            events(.notification(event))
        case "reply":
            guard case .string(let id)? = frame["id"], let body = frame["reply"], let data = try? JSONEncoder().encode(body),
                let reply = try? WireTime.decoder.decode(WireReply.self, from: data)
            else { return false }
            state.withLock { $0.pending.removeValue(forKey: id) }?.waiter?.resume(returning: reply)
        default:
            break
        }
        return false
    }

    /// `group.set_members` is not a socket request (service role, HTTP only, DESIGN §7): it
    /// goes to `PUT /v1/groups/{group_id}/members`.
    private func setGroupMembers(_ fields: JSONObject, id: String, timeout: Duration) async throws -> WireReply {
        guard case .string(let group)? = fields["group_id"], var components = URLComponents(string: url) else {
            return WireReply.error(.invalid("group_id", "group_id is required"))
        }
        components.scheme = components.scheme == "wss" ? "https" : "http"
        components.path = "/v1/groups/\(group)/members"
        guard let address = components.url else { return WireReply.error(.invalid("group_id", "not a usable group id")) }
        var request = URLRequest(url: address, timeoutInterval: Double(timeout.components.seconds) + 1)
        request.httpMethod = "PUT"
        request.setValue("Bearer \(token.withLock { $0 })", forHTTPHeaderField: "Authorization")
        request.setValue(id, forHTTPHeaderField: "Idempotency-Key")
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = try JSONEncoder().encode(["members": fields["members"] ?? .array([])])
        let (data, _) = try await URLSession.shared.data(for: request)
        return try WireTime.decoder.decode(WireReply.self, from: data)
    }

    static func encode(_ object: JSONObject) -> String {
        String(decoding: (try? JSONEncoder().encode(object)) ?? Data("{}".utf8), as: UTF8.self)
    }
}
