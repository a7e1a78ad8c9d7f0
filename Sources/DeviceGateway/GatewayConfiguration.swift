// Settings of the device gateway, read from the environment (DESIGN §6, §7): every timer and
// limit has a variable, so tests can shorten them.
public import AMQPClient
import Foundation
import RingingAuth
public import RingingService

public struct GatewayConfiguration: Sendable {
    public var amqp: AMQPURL
    public var authSecret: String
    /// The public listener: WebSocket, HTTP API, /healthz.
    public var host: String
    public var port: Int
    /// /readyz and /metrics, never on the public port; 0 turns them off.
    public var httpHost: String
    public var httpPort: Int
    public var instanceName: String
    public var helloTimeout: Duration
    public var replyTimeout: Duration
    public var pingInterval: Duration
    public var maximumClientFrameBytes: Int
    public var maximumServerFrameBytes: Int
    public var socketsPerUser: Int
    public var awaitingHello: Int
    public var requestsPerSecond: Int
    public var requestBurst: Int
    public var maximumUnsentBytes: Int
    public var jwksCache: Duration
    /// How often the gateway sends `call.heartbeat` for its users' ongoing calls (DESIGN §10).
    public var heartbeatInterval: Duration
    /// Serve the softphone from this folder instead of the bundled copy (to work on the page).
    public var webRoot: String?

    public init(environment: Environment = Environment()) throws {
        amqp = try environment.amqpURL(account: "device-gateway")
        authSecret = environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret)
        host = environment.string("RINGING_GATEWAY_HOST", default: "127.0.0.1")
        port = try environment.integer("RINGING_GATEWAY_PORT", default: 8080, in: 0...65535)
        httpHost = environment.string("RINGING_HTTP_HOST", default: "127.0.0.1")
        httpPort = try environment.integer("RINGING_HTTP_PORT", default: 8083, in: 0...65535)
        instanceName = environment.string(
            "RINGING_INSTANCE", default: "device-gateway-\(ProcessInfo.processInfo.processIdentifier)")
        helloTimeout = .seconds(try environment.integer("RINGING_GATEWAY_HELLO_TIMEOUT_S", default: 10, in: 1...600))
        replyTimeout = .seconds(try environment.integer("RINGING_GATEWAY_REPLY_TIMEOUT_S", default: 10, in: 1...600))
        pingInterval = .seconds(try environment.integer("RINGING_GATEWAY_PING_S", default: 20, in: 1...3600))
        maximumClientFrameBytes = try environment.integer(
            "RINGING_GATEWAY_MAX_CLIENT_FRAME", default: 64 * 1024, in: 1024...(16 << 20))
        maximumServerFrameBytes = try environment.integer(
            "RINGING_GATEWAY_MAX_SERVER_FRAME", default: 1 << 20, in: 4096...(64 << 20))
        socketsPerUser = try environment.integer("RINGING_GATEWAY_SOCKETS_PER_USER", default: 10, in: 1...10_000)
        awaitingHello = try environment.integer("RINGING_GATEWAY_MAX_AWAITING_HELLO", default: 1000, in: 1...1_000_000)
        requestsPerSecond = try environment.integer("RINGING_GATEWAY_REQUESTS_PER_S", default: 20, in: 1...100_000)
        requestBurst = try environment.integer("RINGING_GATEWAY_REQUEST_BURST", default: 40, in: 1...100_000)
        maximumUnsentBytes = try environment.integer(
            "RINGING_GATEWAY_MAX_UNSENT_BYTES", default: 1 << 20, in: 4096...(1 << 30))
        jwksCache = .seconds(try environment.integer("RINGING_GATEWAY_JWKS_CACHE_S", default: 60, in: 0...86_400))
        heartbeatInterval = .seconds(try environment.integer("RINGING_GATEWAY_HEARTBEAT_S", default: 30, in: 1...3600))
        let webRoot = environment.string("RINGING_GATEWAY_WEB_ROOT", default: "")
        self.webRoot = webRoot.isEmpty ? nil : webRoot
    }

    public var usesDevelopmentSecret: Bool { authSecret == AuthTokens.developmentSecret }

    /// The queue this instance consumes notifications from.
    public var queueName: String { "gateway.\(instanceName)" }
}
