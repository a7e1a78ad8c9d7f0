// Integration tests against the real RabbitMQ of the local stack (scripts/stack start).
import AMQPClient
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

/// A connection to the test broker for the duration of `body`.
func withTestConnection(_ name: String, _ body: @escaping @Sendable (AMQPConnection) async throws -> Void) async throws {
    var configuration = AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: name)
    configuration.operationTimeout = .seconds(60)
    try await withDeadline(.seconds(180), "the test body") { [configuration] in
        try await AMQPConnection.withConnection(configuration: configuration) { try await body($0) }
    }
}

@Suite struct AMQPIntegrationTests {
    private func connection(_ body: @escaping @Sendable (AMQPConnection) async throws -> Void) async throws {
        try await withTestConnection("amqp-tests", body)
    }

    @Test func tenThousandPersistentMessagesThroughAQuorumQueueArriveExactlyOnce() async throws {
        let queue = TestEnvironment.uniqueName("q_bulk")
        let count = 10_000
        try await connection { amqp in
            try await amqp.declare(AMQPTopology(queues: [.quorum(queue)]), remember: false)
            // Publish with up to 500 confirms in flight.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    if index >= 500 { try await group.next() }
                    group.addTask {
                        try await amqp.publish(
                            AMQPMessage(
                                exchange: "", routingKey: queue, body: Data("\(index)".utf8),
                                properties: AMQPProperties(deliveryMode: .persistent, messageID: "m\(index)")))
                    }
                }
                try await group.waitForAll()
            }
            var seen = [Int](repeating: 0, count: count)
            var received = 0
            let consumer = try await amqp.consume(queue: queue, prefetch: 200)
            for try await delivery in consumer {
                let index = Int(String(decoding: delivery.body, as: UTF8.self))!
                #expect(delivery.properties.messageID == "m\(index)")
                #expect(delivery.properties.deliveryMode == .persistent)
                seen[index] += 1
                delivery.ack()
                received += 1
                if received == count { break }
            }
            consumer.cancel()
            #expect(seen.allSatisfy { $0 == 1 }, "every message exactly once")
            // Nothing left behind: the queue is empty once the acks are in.
            let left = try await amqp.deleteQueue(queue)
            #expect(left == 0)
        }
    }

    @Test func anUnroutableMandatoryMessageSurfacesAsAnError() async throws {
        try await connection { amqp in
            let exchange = TestEnvironment.uniqueName("x_nowhere")
            try await amqp.declare(
                AMQPTopology(exchanges: [AMQPExchange(exchange, kind: .topic, durable: false, autoDelete: true)]), remember: false
            )
            await #expect {
                try await amqp.publish(AMQPMessage(exchange: exchange, routingKey: "no.queue", body: Data("x".utf8)))
            } throws: { error in
                (error as? AMQPError)?.code == .unroutable && "\(error)".contains("no.queue")
            }
            // The same message without `mandatory` is confirmed (and dropped by the broker).
            try await amqp.publish(
                AMQPMessage(exchange: exchange, routingKey: "no.queue", body: Data("x".utf8), mandatory: false))
        }
    }

    @Test func publishingToAMissingExchangeFailsAndTheChannelRecovers() async throws {
        let queue = TestEnvironment.uniqueName("q_after")
        try await connection { amqp in
            await #expect {
                try await amqp.publish(AMQPMessage(exchange: "no-such-exchange", routingKey: "k", body: Data()))
            } throws: { error in
                let error = error as? AMQPError
                return error?.code == .channelClosed && error?.replyCode == 404
            }
            try await amqp.declare(AMQPTopology(queues: [AMQPQueue(queue, durable: false, autoDelete: true)]), remember: false)
            try await amqp.publish(AMQPMessage(exchange: "", routingKey: queue, body: Data("ok".utf8)))
            let consumer = try await amqp.consume(queue: queue)
            for try await delivery in consumer {
                #expect(String(decoding: delivery.body, as: UTF8.self) == "ok")
                delivery.ack()
                break
            }
        }
    }

    @Test func aConflictingDeclarationNamesTheQueueAndLeavesTheConnectionUsable() async throws {
        let queue = TestEnvironment.uniqueName("q_conflict")
        try await connection { amqp in
            try await amqp.declare(AMQPTopology(queues: [.quorum(queue)]), remember: false)
            await #expect {
                try await amqp.declare(
                    AMQPTopology(queues: [AMQPQueue(queue, arguments: ["x-queue-type": "classic"])]), remember: false)
            } throws: { error in
                let error = error as? AMQPError
                return error?.replyCode == 406 && error?.message.contains(queue) == true
            }
            #expect(try await amqp.deleteQueue(queue) == 0)
        }
    }

    @Test(arguments: ["nack", "reject"])
    func aRefusedMessageLandsInTheDeadLetterQueue(how: String) async throws {
        let exchange = TestEnvironment.uniqueName("dlx")
        let deadLetters = TestEnvironment.uniqueName("q_dead")
        let work = TestEnvironment.uniqueName("q_work")
        try await connection { amqp in
            try await amqp.declare(
                AMQPTopology(
                    exchanges: [AMQPExchange(exchange, kind: .fanout, durable: false, autoDelete: true)],
                    queues: [
                        .quorum(deadLetters),
                        .quorum(
                            work,
                            arguments: [
                                "x-dead-letter-exchange": .string(exchange), "x-dead-letter-strategy": "at-least-once",
                                "x-overflow": "reject-publish", "x-delivery-limit": 5,
                            ]),
                    ],
                    bindings: [AMQPBinding(queue: deadLetters, exchange: exchange, routingKey: "")]), remember: false)
            try await amqp.publish(
                AMQPMessage(
                    exchange: "", routingKey: work, body: Data("poison".utf8),
                    properties: AMQPProperties(messageID: "poison-1")))
            let consumer = try await amqp.consume(queue: work)
            for try await delivery in consumer {
                if how == "nack" { delivery.nack(requeue: false) } else { delivery.reject(requeue: false) }
                break
            }
            consumer.cancel()
            let dead = try await amqp.consume(queue: deadLetters)
            for try await delivery in dead {
                #expect(delivery.properties.messageID == "poison-1")
                #expect(String(decoding: delivery.body, as: UTF8.self) == "poison")
                #expect(
                    delivery.properties.headers["x-death"] != nil || delivery.properties.headers["x-first-death-queue"] != nil)
                delivery.ack()
                break
            }
            dead.cancel()
            _ = try await amqp.deleteQueue(work)
            _ = try await amqp.deleteQueue(deadLetters)
        }
    }
}

/// Stops and starts the broker: run on its own (`swift test --filter RestartTests`), since it
/// pulls the broker from under every other test.
@Suite(.serialized) struct AMQPRestartTests {
    private func connection(_ body: @escaping @Sendable (AMQPConnection) async throws -> Void) async throws {
        try await withTestConnection("amqp-restart-tests", body)
    }

    @Test func aConsumerSurvivesABrokerRestartWithoutLosingOrRepeatingAckedWork() async throws {
        let queue = TestEnvironment.uniqueName("q_restart")
        let total = 200
        try await connection { amqp in
            try await amqp.declare(AMQPTopology(queues: [.quorum(queue)]))
            for index in 0..<total / 2 {
                try await amqp.publish(
                    AMQPMessage(
                        exchange: "", routingKey: queue, body: Data("\(index)".utf8),
                        properties: AMQPProperties(deliveryMode: .persistent)))
            }
            let consumer = try await amqp.consume(queue: queue, prefetch: 10)
            var acked = Set<Int>()
            var iterator = consumer.makeAsyncIterator()
            // Settle the first half, then restart the broker with deliveries still unsettled.
            while acked.count < 50, let delivery = try await iterator.next() {
                acked.insert(Int(String(decoding: delivery.body, as: UTF8.self))!)
                delivery.ack()
            }
            let reconnectsBefore = amqp.reconnectCount
            try StackServer.broker.stop()
            try StackServer.broker.start()
            // Publishing waits for the new connection; the rest of the messages follow.
            for index in total / 2..<total {
                try await amqp.publish(
                    AMQPMessage(
                        exchange: "", routingKey: queue, body: Data("\(index)".utf8),
                        properties: AMQPProperties(deliveryMode: .persistent)))
            }
            #expect(amqp.reconnectCount > reconnectsBefore)
            var afterRestart = Set<Int>()
            while acked.count + afterRestart.count < total, let delivery = try await iterator.next() {
                let index = Int(String(decoding: delivery.body, as: UTF8.self))!
                if delivery.isStale { continue }  // prefetched before the restart: comes again
                #expect(!acked.contains(index), "message \(index) was acknowledged before the restart")
                #expect(!afterRestart.contains(index), "message \(index) delivered twice after the restart")
                afterRestart.insert(index)
                delivery.ack()
            }
            #expect(acked.union(afterRestart) == Set(0..<total))
            consumer.cancel()
            #expect(try await amqp.deleteQueue(queue) == 0)
        }
    }
}
