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
    /// The one consumer of this instance's queue, subscribed again if the broker cancels it.
    let notifications: QueueWorkers
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
        notifications = QueueWorkers(
            connection: feed, queue: configuration.queueName, count: 1, prefetch: 1000, exclusive: true, logger: logger)
        forwarder = CommandForwarder(connection: publisher, replyTimeout: configuration.replyTimeout, logger: logger)
        hub = GatewayHub(
            configuration: configuration, forwarder: forwarder, feed: feed,
            auth: try await AuthTokens(secret: configuration.authSecret), logger: logger)
    }

    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// The public port once the listener is up (the one bound, when configured as 0); nil
    /// when `run` ended (threw) before the listener was up, or the task is cancelled.
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
        defer { boundPort.close() }
        if configuration.usesDevelopmentSecret {
            logger.warning("RINGING_AUTH_SECRET is not set: using the development secret, which anybody can mint tokens with")
        }
        try await publisher.awaitRingingTopology(logger: logger)
        // Exclusive and auto-delete: the queue lives and dies with this instance's
        // connection, and comes back (with the held bindings) after a reconnect.
        try await StartUp.waitingForTheBroker(to: "declare the notification queue", logger: logger) {
            try await feed.declare(
                AMQPTopology(queues: [AMQPQueue(configuration.queueName, durable: false, exclusive: true, autoDelete: true)]))
        }
        try await notifications.subscribeAll()
        // Each task says whether it was the graceful stop; a notification consumer that could
        // not subscribe again throws, and the gateway stops with it (exiting non-zero).
        try await withThrowingTaskGroup(of: Bool.self) { work in
            work.addTask {
                await self.logFailure("replies") { try await self.forwarder.run() }
                return false
            }
            // A cancelled consumer (the queue deleted by an operator, say) comes back with the
            // queue and every socket's binding; what was routed meanwhile is lost, so every
            // socket gets a fresh snapshot.
            work.addTask {
                try await self.notifications.run(
                    batchSize: 100,
                    recover: {
                        try await self.feed.restoreTopology()
                        await self.hub.resnapshotAll()
                    },
                    handle: { batch, _ in for delivery in batch { self.deliver(delivery) } })
                return false
            }
            work.addTask {
                for await _ in self.reconnects { await self.hub.resnapshotAll() }
                return false
            }
            work.addTask {
                await self.hub.sendHeartbeats()
                return false
            }
            work.addTask {
                await self.logFailure("listener") { try await self.application().run() }
                return false
            }
            guard let port = await boundPort.wait() else {
                work.cancelAll()
                return
            }
            ready.store(true, ordering: .relaxed)
            logger.info(
                "device-gateway ready",
                metadata: ["address": "\(configuration.host):\(port)", "instance": "\(configuration.instanceName)"])
            work.addTask {
                try? await gracefulShutdown()
                self.logger.info("device-gateway stopping: closing every socket with 1001 so that devices reconnect elsewhere")
                await self.hub.closeAll(
                    code: CloseCode.goingAway, reason: "the gateway is shutting down; reconnect", within: .seconds(5))
                self.notifications.stop()
                return true
            }
            while let stopped = try await work.next(), !stopped {}
            work.cancelAll()
        }
    }

    private func logFailure(_ what: String, _ body: () async throws -> Void) async {
        do { try await body() } catch {
            if !Task.isCancelled { logger.error("the gateway's \(what) stopped", metadata: ["error": "\(error)"]) }
        }
    }

    /// For /readyz: listening, both broker connections up.
    public func readiness() async -> Readiness {
        Readiness(checks: [
            ("listener", isReady), ("broker (requests)", publisher.isConnected),
            ("broker not blocking publishes (no resource alarm)", !publisher.isBlocked),
            ("broker (notifications)", feed.isConnected),
            ("notification consumer", notifications.liveCount == notifications.count),
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
    private func deliver(_ delivery: AMQPDelivery) {
        defer { delivery.ack() }
        guard delivery.properties.userID == Topology.publisherAccount else {
            Counter(label: "ringing_gateway_notifications_dropped_total", dimensions: [("reason", "not_call_control")])
                .increment()
            logger.warning(
                "dropped a notification not published by call-control",
                metadata: ["user_id": "\(delivery.properties.userID ?? "none")", "routing_key": "\(delivery.routingKey)"])
            return
        }
        guard let (uid, name) = NotificationBody.route(delivery.routingKey),
            let body = String(data: delivery.body, encoding: .utf8)
        else {
            Counter(label: "ringing_gateway_notifications_dropped_total", dimensions: [("reason", "malformed")]).increment()
            return
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
