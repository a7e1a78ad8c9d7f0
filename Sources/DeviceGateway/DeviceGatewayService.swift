// The device-gateway service: one queue of its own for its users' notifications, a publishing
// connection for their requests, and the public listener for WebSockets and HTTP.
import AMQPClient
import Foundation
import Hummingbird
import HummingbirdWebSocket
public import Logging
import Metrics
import NIOCore
import RingingAuth
import RingingContract
public import RingingOperations
import RingingService
public import ServiceLifecycle
import Synchronization

public final class DeviceGatewayService: ComposedService, Sendable {
    public let configuration: GatewayConfiguration
    let logger: Logger
    let publisher: AMQPConnection
    let feed: AMQPConnection
    public let hub: GatewayHub
    let forwarder: CommandForwarder
    private let reconnects: AsyncStream<Void>
    private let boundPort = Handoff<Int>()
    private let ready = Atomic<Bool>(false)

    public init(configuration: GatewayConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        publisher = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) publish"),
            logger: logger)
        let (stream, continuation) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        reconnects = stream
        var feedConfiguration = AMQPConfiguration(
            url: configuration.amqp, connectionName: "\(configuration.instanceName) notifications")
        feedConfiguration.onConnected = { reconnected in
            if reconnected { continuation.yield() }
        }
        feed = AMQPConnection(configuration: feedConfiguration, logger: logger)
        forwarder = CommandForwarder(connection: publisher, replyTimeout: configuration.replyTimeout, logger: logger)
        hub = GatewayHub(
            configuration: configuration, forwarder: forwarder, feed: feed,
            auth: try await AuthTokens(secret: configuration.authSecret), logger: logger)
    }

    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// The public port once the listener is up (the one bound, when configured as 0).
    public func waitUntilListening() async -> Int? { await boundPort.wait() }

    /// The broker connections and the operations server, run beside the service.
    public var dependencies: [any Service] {
        [
            Background("amqp publish") { await self.publisher.run() },
            Background("amqp notifications") { await self.feed.run() },
        ]
            + OperationsServer.dependency(
                host: configuration.httpHost, port: configuration.httpPort, logger: logger
            ) { await self.readiness() }
    }

    public func run() async throws {
        if configuration.usesDevelopmentSecret {
            logger.warning("RINGING_AUTH_SECRET is not set: using the development secret, which anybody can mint tokens with")
        }
        try await publisher.awaitRingingTopology(logger: logger)
        // Exclusive and auto-delete: the queue lives and dies with this instance's
        // connection, and comes back (with the held bindings) after a reconnect.
        try await feed.declare(
            AMQPTopology(queues: [AMQPQueue(configuration.queueName, durable: false, exclusive: true, autoDelete: true)]))
        let notifications = try await feed.consume(queue: configuration.queueName, prefetch: 1000, exclusive: true)
        await withTaskGroup(of: Void.self) { work in
            work.addTask { await self.logFailure("replies") { try await self.forwarder.run() } }
            work.addTask { await self.logFailure("notifications") { try await self.deliver(notifications) } }
            work.addTask {
                for await _ in self.reconnects { await self.hub.resnapshotAll() }
            }
            work.addTask { await self.hub.sendHeartbeats() }
            work.addTask { await self.logFailure("listener") { try await self.application().run() } }
            guard let port = await boundPort.wait() else { return }
            ready.store(true, ordering: .relaxed)
            logger.info(
                "device-gateway ready",
                metadata: ["address": "\(configuration.host):\(port)", "instance": "\(configuration.instanceName)"])
            try? await gracefulShutdown()
            logger.info("device-gateway stopping: closing every socket with 1001 so that devices reconnect elsewhere")
            await hub.closeAll(code: CloseCode.goingAway, reason: "the gateway is shutting down; reconnect", within: .seconds(5))
            notifications.cancel()
            work.cancelAll()
        }
    }

    private func logFailure(_ what: String, _ body: () async throws -> Void) async {
        do { try await body() } catch {
            if !Task.isCancelled { logger.error("the gateway's \(what) stopped", metadata: ["error": "\(error)"]) }
        }
    }

    /// For /readyz: listening, both broker connections up.
    func readiness() async -> Readiness {
        Readiness(checks: [
            ("listener", isReady), ("broker (requests)", publisher.isConnected),
            ("broker not blocking publishes (no resource alarm)", !publisher.isBlocked),
            ("broker (notifications)", feed.isConnected),
        ])
    }

    private func application() -> Application<RouterResponder<GatewayRequestContext>> {
        let router = Router(context: GatewayRequestContext.self)
        router.ws("/v1/ws") { inbound, outbound, context in
            await self.hub.serve(inbound: inbound, outbound: outbound, channel: context.requestContext.channel)
        }
        HTTPAPI.install(on: router, forwarder: forwarder, jwksCache: configuration.jwksCache)
        Softphone.install(on: router, configuration: configuration, auth: hub.auth)
        return Application(
            router: router,
            server: .http1WebSocketUpgrade(
                webSocketRouter: router,
                configuration: .init(
                    ws: .init(
                        maxFrameSize: max(configuration.maximumServerFrameBytes, configuration.maximumClientFrameBytes),
                        autoPing: .enabled(timePeriod: configuration.pingInterval), closeTimeout: .seconds(5)))),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
            onServerRunning: { [boundPort] channel in boundPort.resolve(channel.localAddress?.port ?? 0) },
            logger: logger)
    }

    /// Hands each notification to its user's sockets. Only call-control may make a device
    /// ring: anything else on the exchange (another account's `user_id`) is dropped.
    private func deliver(_ notifications: AMQPConsumer) async throws {
        for try await delivery in notifications {
            defer { delivery.ack() }
            guard delivery.properties.userID == Topology.publisherAccount else {
                Counter(label: "ringing_gateway_notifications_dropped_total", dimensions: [("reason", "not_call_control")])
                    .increment()
                logger.warning(
                    "dropped a notification not published by call-control",
                    metadata: ["user_id": "\(delivery.properties.userID ?? "none")", "routing_key": "\(delivery.routingKey)"])
                continue
            }
            guard let (uid, name) = NotificationBody.route(delivery.routingKey),
                let body = String(data: delivery.body, encoding: .utf8)
            else {
                Counter(label: "ringing_gateway_notifications_dropped_total", dimensions: [("reason", "malformed")]).increment()
                continue
            }
            let header = NotificationBody.header(delivery.body)
            hub.deliver(
                uid: uid,
                notification: PendingNotification(
                    frame: ServerFrame.notification(name: name, bodyJSON: body), sessionID: header?.sessionID,
                    sequence: header?.sequence, receivedAt: .now),
                live: header?.isLive(for: uid))
        }
    }
}
