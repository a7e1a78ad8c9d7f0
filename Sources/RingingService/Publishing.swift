// Publishing what a transaction committed: outbox messages and replies, all in flight at once,
// each confirmed by the broker.
public import AMQPClient
public import CallStore
import Foundation

extension OutboxMessage {
    /// The AMQP message: persistent JSON, `message_id` = the event id, `traceparent` carried on.
    public var amqpMessage: AMQPMessage {
        var properties = AMQPProperties(
            contentType: "application/json", deliveryMode: .persistent, messageID: messageID, type: routingKey)
        if let traceparent { properties.headers["traceparent"] = .string(traceparent) }
        // Not mandatory: an event or a notification nobody listens to is not an error.
        return AMQPMessage(
            exchange: exchange, routingKey: routingKey, body: Data(body.utf8), properties: properties, mandatory: false)
    }
}

extension AMQPConnection {
    /// Publishes every message concurrently and returns once all are confirmed; throws the
    /// first failure (the others still finish).
    public func publishAll(_ messages: [AMQPMessage]) async throws {
        switch messages.count {
        case 0: return
        case 1: try await publish(messages[0])
        default:
            try await withThrowingTaskGroup(of: Void.self) { group in
                for message in messages {
                    group.addTask { try await self.publish(message) }
                }
                try await group.waitForAll()
            }
        }
    }
}
