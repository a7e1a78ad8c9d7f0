// Messages: what is published, and what a consumer receives.
public import Foundation

/// The basic properties of an AMQP message.
public struct AMQPProperties: Sendable, Hashable {
    public enum DeliveryMode: UInt8, Sendable, Hashable {
        case transient = 1
        /// Written to disk by the broker (quorum queues store every message anyway).
        case persistent = 2
    }

    public var contentType: String?
    public var contentEncoding: String?
    public var headers: AMQPTable = [:]
    public var deliveryMode: DeliveryMode?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    /// Seconds since 1970.
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?

    public init(
        contentType: String? = nil, headers: AMQPTable = [:], deliveryMode: DeliveryMode? = nil,
        correlationID: String? = nil, replyTo: String? = nil, messageID: String? = nil,
        type: String? = nil
    ) {
        self.contentType = contentType
        self.headers = headers
        self.deliveryMode = deliveryMode
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.messageID = messageID
        self.type = type
    }
}

/// A message to publish.
public struct AMQPMessage: Sendable {
    public var exchange: String
    public var routingKey: String
    public var body: Data
    public var properties: AMQPProperties
    /// When true (the default) a message that matches no queue comes back and its publish
    /// throws `unroutable` instead of vanishing.
    public var mandatory: Bool

    public init(
        exchange: String, routingKey: String, body: Data, properties: AMQPProperties = .init(),
        mandatory: Bool = true
    ) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// A message received from a queue, copied out of the C library.
///
/// Settle it once with `ack()`, `nack(requeue:)` or `reject(requeue:)` (unless the consumer
/// was started with `noAck`). Settlements are sent in order on the delivery's channel. If the
/// connection was lost since the message arrived, the broker has already returned it to the
/// queue and will deliver it again: the settlement is then dropped, and `isStale` is true.
public struct AMQPDelivery: Sendable {
    public let body: Data
    public let properties: AMQPProperties
    public let exchange: String
    public let routingKey: String
    public let deliveryTag: UInt64
    public let redelivered: Bool
    public let consumerTag: String
    let settlement: Settlement

    /// Acknowledges the message: the broker forgets it.
    public func ack() { settlement.settle(.ack(multiple: false)) }
    /// Acknowledges this message and every earlier unsettled one of the same consumer.
    public func ackUpTo() { settlement.settle(.ack(multiple: true)) }
    /// Negatively acknowledges: requeued, or dead-lettered when `requeue` is false.
    public func nack(requeue: Bool) { settlement.settle(.nack(requeue: requeue)) }
    /// Rejects the message: requeued, or dead-lettered when `requeue` is false.
    public func reject(requeue: Bool) { settlement.settle(.reject(requeue: requeue)) }
    /// True when the connection this message came on is gone: settling it does nothing, and
    /// the broker will deliver it again.
    public var isStale: Bool { settlement.isStale }
}
