// A client of the Ringing contract for tests: publishes requests as a client would, waits for
// replies on a private queue, and captures notifications, events and dead letters.
public import AMQPClient
public import CallRules
public import Foundation
public import RingingContract
import Synchronization

/// Publishes requests and waits for their replies (AMQP RPC over a private reply queue).
public final class RingingTestClient: Sendable {
    public let amqp: AMQPConnection
    let replyQueue = "test-replies-\(UUID().uuidString.prefix(8).lowercased())"
    private enum Slot {
        case expected
        case waiting(CheckedContinuation<WireReply, any Error>)
        case arrived(Result<WireReply, any Error>)
    }

    private let pending = Mutex<[String: Slot]>([:])

    public init(amqp: AMQPConnection) {
        self.amqp = amqp
    }

    /// Runs `body` with a connected client; the client's connection ends afterwards.
    public static func with<T: Sendable>(_ body: @Sendable (RingingTestClient) async throws -> T) async throws -> T {
        var configuration = AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: "ringing-test-client")
        configuration.operationTimeout = .seconds(60)
        return try await AMQPConnection.withConnection(configuration: configuration) { amqp in
            let client = RingingTestClient(amqp: amqp)
            try await amqp.declare(AMQPTopology(queues: [AMQPQueue(client.replyQueue, durable: false, autoDelete: true)]))
            let replies = try await amqp.consume(queue: client.replyQueue, prefetch: 500)
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask {
                    for try await delivery in replies {
                        delivery.ack()
                        client.deliver(delivery)
                    }
                    return nil
                }
                defer { group.cancelAll() }
                return try await body(client)
            }
        }
    }

    private func deliver(_ delivery: AMQPDelivery) {
        guard let id = delivery.properties.correlationID else { return }
        ContractLog.record(
            "reply", routingKey: delivery.routingKey, messageID: delivery.properties.messageID, correlationID: id,
            body: delivery.body)
        let result = Result { try WireTime.decoder.decode(WireReply.self, from: delivery.body) }
        let waiter = pending.withLock { slots -> CheckedContinuation<WireReply, any Error>? in
            switch slots[id] {
            case .waiting(let continuation):
                slots[id] = nil
                return continuation
            case .expected:
                slots[id] = .arrived(result)
                return nil
            case .arrived, .none:
                return nil  // a second reply, or one for a request we gave up on
            }
        }
        waiter?.resume(with: result)
    }

    private func awaitReply(_ correlation: String) async throws -> WireReply {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let arrived = pending.withLock { slots -> Result<WireReply, any Error>? in
                    if case .arrived(let result) = slots[correlation] {
                        slots[correlation] = nil
                        return result
                    }
                    if Task.isCancelled {
                        slots[correlation] = nil
                        return .failure(CancellationError())
                    }
                    slots[correlation] = .waiting(continuation)
                    return nil
                }
                if let arrived { continuation.resume(with: arrived) }
            }
        } onCancel: {
            let waiter = pending.withLock { slots -> CheckedContinuation<WireReply, any Error>? in
                guard case .waiting(let continuation) = slots[correlation] else { return nil }
                slots[correlation] = nil
                return continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    /// Publishes a request with the given raw body and waits for its reply.
    public func send(
        _ type: String, body: Data, messageID: String? = UUID().uuidString, traceparent: String? = nil,
        timeout: Duration = .seconds(30)
    ) async throws -> WireReply {
        let correlation = UUID().uuidString
        var properties = AMQPProperties(
            contentType: "application/json", deliveryMode: .persistent, correlationID: correlation,
            replyTo: replyQueue, messageID: messageID)
        if let traceparent { properties.headers["traceparent"] = .string(traceparent) }
        let message = AMQPMessage(exchange: Topology.commandsExchange, routingKey: type, body: body, properties: properties)
        ContractLog.record("request", routingKey: type, messageID: messageID, correlationID: correlation, body: body)
        pending.withLock { $0[correlation] = .expected }
        // A nack means a queue the message was routed to went away meanwhile (another test's
        // capture queue): publish again, as a client does; the message_id keeps it idempotent.
        for attempt in 1...3 {
            do {
                try await amqp.publish(message)
                break
            } catch let error as AMQPError where error.code == .nacked && attempt < 3 {
                continue
            } catch {
                pending.withLock { _ = $0.removeValue(forKey: correlation) }
                throw error
            }
        }
        return try await withDeadline(timeout, "the reply to \(type)") { try await self.awaitReply(correlation) }
    }

    /// Publishes a request built from fields (JSON values) and waits for its reply.
    public func request(_ type: String, token: String?, _ fields: JSONObject = [:], messageID: String? = UUID().uuidString)
        async throws -> WireReply
    {
        var body = fields
        if let token { body["auth_token"] = .string(token) }
        return try await send(type, body: try JSONEncoder().encode(body), messageID: messageID)
    }
}

/// A private queue bound to an exchange, for watching what the services publish.
public final class Capture: Sendable {
    public let queue: String
    let consumer: AMQPConsumer
    private let seen = Mutex<[WireEvent]>([])
    private let raw = Mutex<[AMQPDelivery]>([])

    /// Binds a fresh queue to `exchange` with each of `keys`. The queue outlives a lost
    /// connection of the test client (a fault test can make the broker close it), so nothing
    /// published meanwhile is missed; the broker deletes it after five minutes unused.
    public static func start(_ amqp: AMQPConnection, exchange: String, keys: [String]) async throws -> Capture {
        let queue = "test-capture-\(UUID().uuidString.prefix(8).lowercased())"
        try await amqp.declare(
            AMQPTopology(
                queues: [AMQPQueue(queue, durable: false, arguments: ["x-expires": .int32(300_000)])],
                bindings: keys.map { AMQPBinding(queue: queue, exchange: exchange, routingKey: $0) }))
        return Capture(queue: queue, consumer: try await amqp.consume(queue: queue, prefetch: 1000))
    }

    init(queue: String, consumer: AMQPConsumer) {
        self.queue = queue
        self.consumer = consumer
    }

    /// Waits for the first message (event or notification) that matches, keeping every one
    /// seen so far for later assertions.
    public func next(_ what: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (WireEvent) -> Bool)
        async throws -> WireEvent
    {
        if let found = seen.withLock({ $0.first(where: predicate) }) { return found }
        return try await withDeadline(timeout, what) {
            while try await self.receiveBatch() {
                if let found = self.seen.withLock({ $0.first(where: predicate) }) { return found }
            }
            throw TimedOut(what: what)
        }
    }

    /// Takes one batch from the queue into `seen` and `raw`; false when the consumer ended.
    private func receiveBatch() async throws -> Bool {
        guard let batch = try await consumer.nextBatch(max: 500) else { return false }
        for delivery in batch {
            delivery.ack()
            raw.withLock { $0.append(delivery) }
            switch delivery.exchange {
            case Topology.eventsExchange:
                ContractLog.record(
                    "event", routingKey: delivery.routingKey, messageID: delivery.properties.messageID, body: delivery.body)
            case Topology.notificationsExchange:
                ContractLog.record(
                    "notification", routingKey: delivery.routingKey, messageID: delivery.properties.messageID, body: delivery.body
                )
            case Topology.commandsExchange:
                ContractLog.record(
                    "request", routingKey: delivery.routingKey, messageID: delivery.properties.messageID, body: delivery.body)
            case Topology.deadLetterExchange:
                ContractLog.record(
                    "dead-letter", routingKey: delivery.routingKey, messageID: delivery.properties.messageID, body: delivery.body)
            default: break
            }
            if let event = try? WireTime.decoder.decode(WireEvent.self, from: delivery.body) {
                seen.withLock { $0.append(event) }
            }
        }
        return true
    }

    /// Every decoded message seen so far.
    public var events: [WireEvent] { seen.withLock { $0 } }

    /// Waits for a raw delivery (dead letters are requests, not events).
    public func nextDelivery(
        _ what: String, timeout: Duration = .seconds(30), where predicate: @escaping @Sendable (AMQPDelivery) -> Bool
    ) async throws -> AMQPDelivery {
        if let found = raw.withLock({ $0.first(where: predicate) }) { return found }
        return try await withDeadline(timeout, what) {
            while try await self.receiveBatch() {
                if let found = self.raw.withLock({ $0.first(where: predicate) }) { return found }
            }
            throw TimedOut(what: what)
        }
    }

    public func stop() { consumer.cancel() }

    /// Receives (and logs) everything until the capture is stopped or the task cancelled.
    public func drain() async throws {
        while try await receiveBatch() {}
    }
}
