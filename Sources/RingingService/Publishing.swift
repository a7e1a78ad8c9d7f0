// Publishing what a transaction committed: outbox messages and replies, all in flight at once,
// each confirmed by the broker.
public import AMQPClient
public import CallStore
import Foundation
public import Logging
public import PostgresClient

extension OutboxMessage {
    /// The AMQP message: persistent JSON, `message_id` = the event id, `traceparent` carried on,
    /// and `user_id` = the publishing broker account (DESIGN §9: the broker refuses a
    /// `user_id` that is not the connection's user, so consumers can trust it).
    public func amqpMessage(userID: String) -> AMQPMessage {
        var properties = AMQPProperties(
            contentType: "application/json", deliveryMode: .persistent, messageID: messageID, type: routingKey)
        properties.userID = userID
        if let traceparent { properties.headers["traceparent"] = .string(traceparent) }
        // Not mandatory: an event or a notification nobody listens to is not an error.
        return AMQPMessage(
            exchange: exchange, routingKey: routingKey, body: Data(body.utf8), properties: properties, mandatory: false)
    }
}

extension AMQPConnection {
    /// Declares the Ringing topology, waiting out a broker that is not there yet. With
    /// `remember` (the first time) it is declared again after every reconnect.
    public func declareRingingTopology(logger: Logger, remember: Bool = true) async throws {
        try await StartUp.waitingForTheBroker(to: "declare the topology", logger: logger) {
            try await declare(RingingTopology.declaration, remember: remember)
        }
    }
}

extension AMQPConnection {
    /// Waits until call-control has declared the Ringing topology, checking it passively:
    /// services other than call-control may use it but not configure it (DESIGN §9).
    public func awaitRingingTopology(logger: Logger) async throws {
        var announced = false
        while true {
            do {
                try await declare(RingingTopology.declaration.asPassive, remember: false)
                return
            } catch let error as AMQPError
                where error.code == .timeout || error.code == .connectionLost
                || error.code == .channelClosed
            {
                if !announced {
                    logger.notice("waiting for call-control to declare the topology", metadata: ["error": "\(error)"])
                    announced = true
                }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }
}

extension PostgresPool {
    /// Whether the database answers a trivial query within `limit` (for readiness checks).
    public func answers(within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { (try? await self.query("SELECT 1")) != nil }
            group.addTask {
                try? await Task.sleep(for: limit)
                return false
            }
            defer { group.cancelAll() }
            return await group.next() ?? false
        }
    }
}
