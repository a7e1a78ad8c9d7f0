// How a client reaches Ringing. A transport carries requests and their replies and brings the
// user's notifications; through the device gateway it also brings the snapshot of each
// `welcome`. The client (RingingClient) does the rest: callbacks, deduplication, the snapshot,
// ring receipts, the active call.
public import CallRules
public import Foundation
public import RingingContract

/// Where the client's connection stands.
public enum ConnectionState: Sendable, Hashable, CustomStringConvertible {
    case connecting
    /// Listening: notifications arrive and requests go out.
    case connected
    /// The connection was lost (or could not be made); the next attempt is in `retryIn`.
    case reconnecting(retryIn: Duration, reason: String)
    /// `run()` returned.
    case stopped

    public var description: String {
        switch self {
        case .connecting: "connecting"
        case .connected: "connected"
        case .reconnecting(let retryIn, let reason): "reconnecting in \(retryIn) (\(reason))"
        case .stopped: "stopped"
        }
    }
}

/// What a transport reports to the client.
public enum TransportEvent: Sendable {
    case state(ConnectionState)
    /// The first connection could not be made: `waitUntilReady()` throws this. The transport
    /// keeps trying.
    case unreachable(String)
    /// Notifications arrive from now on. Through the gateway: the welcome's snapshot (the
    /// user's calls that ring or are live now) and the device id the gateway knows this
    /// device by; over AMQP both are nil.
    case listening(snapshot: [WireCall]?, deviceID: String?)
    case notification(WireEvent)
}

/// A way to Ringing: the device gateway's WebSocket (`GatewayTransport`, for apps) or the
/// broker (`AMQPTransport` in RingingClientAMQP, for server-side users).
public protocol RingingTransport: Sendable {
    /// Connects, stays connected (reconnecting with backoff) and reports to `events` until
    /// the task is cancelled.
    func run(_ events: @escaping @Sendable (TransportEvent) -> Void) async
    /// Sends one request, `id` being its message_id (the same id again is the same request),
    /// and returns the reply; throws `NoReply` when none came within `timeout`. `fields` has
    /// no auth token: the transport adds the user's.
    func request(_ type: RequestType, _ fields: JSONObject, id: String, timeout: Duration) async throws -> WireReply
    /// Whether the server keeps this user's ongoing calls live by itself (the gateway sends
    /// heartbeats for its sockets' users); otherwise the client sends `call.heartbeat`.
    var keepsCallsLive: Bool { get }
    /// Where it connects, for messages.
    var endpoint: String { get }
}

/// No reply came in time for one attempt (the client then sends the request again, same id).
public struct NoReply: Error, CustomStringConvertible, Sendable {
    public let timeout: Duration
    public init(timeout: Duration) { self.timeout = timeout }
    public var description: String { "no reply within \(timeout)" }
}

/// Waits for `body`, or throws `NoReply` after `timeout` (for transports).
public func withReplyTimeout<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T
{
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)
            return nil
        }
        defer { group.cancelAll() }
        guard let value = try await group.next()! else { throw NoReply(timeout: timeout) }
        return value
    }
}

/// Doubling delays with jitter, from `initial` up to `maximum`.
struct ReconnectBackoff: Sendable {
    let initial: Duration
    let maximum: Duration
    private var current: Duration

    init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = maximum
        current = initial
    }

    mutating func next() -> Duration {
        let base = current
        current = min(current * 2, maximum)
        // ±20 %, so that many devices cut off at once do not come back at once.
        return base * Double.random(in: 0.8...1.2)
    }

    mutating func reset() { current = initial }
}
