// The client over the broker, for server-side users that hold a broker account (DESIGN §9:
// reading notifications needs the `admin` account's rights). Phones and browsers use the
// device gateway instead (GatewayTransport, in RingingClient).
public import AMQPClient
public import CallRules
public import Foundation
public import Logging
public import RingingClient
public import RingingContract
import Synchronization

public final class AMQPTransport: RingingTransport {
    public let url: AMQPURL
    let authToken: String
    let uid: String
    let amqp: AMQPConnection
    let logger: Logger
    private let state = Mutex(State())

    struct State {
        var waiting: [String: CheckedContinuation<WireReply, any Error>] = [:]
        var arrived: [String: WireReply] = [:]
    }

    public var keepsCallsLive: Bool { false }
    public var endpoint: String { "\(url)" }

    public init(url: AMQPURL, authToken: String, uid: String, replyTimeout: Duration = .seconds(10), logger: Logger) {
        self.url = url
        self.authToken = authToken
        self.uid = uid
        self.logger = logger
        var configuration = AMQPConfiguration(url: url, connectionName: "ringing-client \(uid)")
        configuration.operationTimeout = replyTimeout
        amqp = AMQPConnection(configuration: configuration, logger: logger)
    }

    /// Keeps the connection (reconnecting by itself), listens on `user.<uid>.#` through a
    /// private queue and takes replies by direct reply-to.
    public func run(_ events: @escaping @Sendable (TransportEvent) -> Void) async {
        events(.state(.connecting))
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.amqp.run() }
            defer { group.cancelAll() }
            do {
                let replies = try await amqp.consumeDirectReplies()
                let queue = "ringing.client.\(uid).\(UUID().uuidString.prefix(8).lowercased())"
                try await amqp.declare(
                    AMQPTopology(
                        exchanges: [AMQPExchange(Topology.notificationsExchange, kind: .topic)],
                        queues: [AMQPQueue(queue, durable: false, exclusive: true, autoDelete: true)],
                        bindings: [
                            AMQPBinding(
                                queue: queue, exchange: Topology.notificationsExchange,
                                routingKey: RoutingKey.allNotifications(for: uid))
                        ]))
                let incoming = try await amqp.consume(queue: queue, prefetch: 200)
                group.addTask {
                    do { for try await delivery in replies { self.receiveReply(delivery) } } catch {}
                }
                group.addTask {
                    do {
                        for try await delivery in incoming {
                            delivery.ack()
                            if let event = self.notification(delivery) { events(.notification(event)) }
                        }
                    } catch {}
                }
                events(.listening(snapshot: nil, deviceID: nil))
                events(.state(.connected))
                await group.next()
            } catch {
                events(.unreachable("cannot reach the broker at \(url): \(error)"))
                events(.state(.stopped))
            }
        }
    }

    public func request(_ type: RequestType, _ fields: JSONObject, id: String, timeout: Duration) async throws -> WireReply {
        var body = fields
        if type.needsAuthentication { body["auth_token"] = .string(authToken) }
        let correlation = UUID().uuidString
        let message = AMQPMessage(
            exchange: Topology.commandsExchange, routingKey: type.rawValue, body: (try? JSONEncoder().encode(body)) ?? Data(),
            properties: AMQPProperties(
                contentType: "application/json", deliveryMode: .persistent, correlationID: correlation,
                replyTo: AMQPConnection.directReplyTo, messageID: id))
        try await amqp.publishRetryingRefusals(message)
        return try await withReplyTimeout(timeout) { try await self.awaitReply(correlation) }
    }

    private func awaitReply(_ correlation: String) async throws -> WireReply {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLock { state -> Result<WireReply, any Error>? in
                    if let reply = state.arrived.removeValue(forKey: correlation) { return .success(reply) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiting[correlation] = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: correlation) }?.resume(throwing: CancellationError())
        }
    }

    private func receiveReply(_ delivery: AMQPDelivery) {
        guard let correlation = delivery.properties.correlationID,
            let reply = try? WireTime.decoder.decode(WireReply.self, from: delivery.body)
        else { return }
        let waiter = state.withLock { state -> CheckedContinuation<WireReply, any Error>? in
            if let waiter = state.waiting.removeValue(forKey: correlation) { return waiter }
            // A reply that beat its waiter, or one for an attempt given up on: kept briefly.
            if state.arrived.count > 1000 { state.arrived.removeAll() }
            state.arrived[correlation] = reply
            return nil
        }
        waiter?.resume(returning: reply)
    }

    private func notification(_ delivery: AMQPDelivery) -> WireEvent? {
        // Only call-control makes a device ring (DESIGN §9): the broker vouches for user_id.
        guard delivery.properties.userID == Topology.publisherAccount else {
            logger.warning(
                "ignoring a notification not published by call-control",
                metadata: ["user_id": "\(delivery.properties.userID ?? "none")", "routing_key": "\(delivery.routingKey)"])
            return nil
        }
        guard let event = try? WireTime.decoder.decode(WireEvent.self, from: delivery.body) else {
            logger.warning("ignoring a notification that does not parse", metadata: ["routing_key": "\(delivery.routingKey)"])
            return nil
        }
        return event
    }
}

extension RingingClient {
    /// A client over the broker at `amqp` (a server-side user with a broker account).
    public convenience init(
        amqp: AMQPURL, configuration: RingingClientConfiguration, logger: Logger = Logger(label: "ringing.client")
    ) throws(RingingError) {
        guard let uid = RingingClient.subject(of: configuration.authToken) else {
            throw RingingError(CallError(.unauthenticated, "the auth token is not a JWT with a 'sub' claim"))
        }
        try self.init(
            configuration: configuration,
            transport: AMQPTransport(
                url: amqp, authToken: configuration.authToken, uid: uid, replyTimeout: configuration.replyTimeout, logger: logger),
            logger: logger)
    }
}
