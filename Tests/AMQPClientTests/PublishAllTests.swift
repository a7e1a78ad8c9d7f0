// `AMQPConnection.publishAll`: a batch of publishes handed to the connection's thread at once,
// its caller resumed once every message has its outcome.
import Foundation
import TestSupport
import Testing

@testable import AMQPClient

@Suite struct PublishAllTests {
    @Test func aGroupResumesItsCallerOnceEveryMessageHasItsOutcomeWithTheFirstFailure() async throws {
        let first = AMQPError(.unroutable, "the second message")
        await #expect {
            try await withCheckedThrowingContinuation { continuation in
                let group = PublishWaiter.Group(count: 3, continuation)
                group.resolve(.confirmed)
                group.resolve(.failed(first))
                group.resolve(.failed(AMQPError(.nacked, "the third message")))
            }
        } throws: { error in
            (error as? AMQPError)?.message == "the second message"
        }
        // All confirmed: the caller returns.
        try await withCheckedThrowingContinuation { continuation in
            let group = PublishWaiter.Group(count: 2, continuation)
            group.resolve(.confirmed)
            group.resolve(.confirmed)
        }
    }

    @Test func aBatchArrivesInOrderAndAFailingMessageFailsItOnceTheRestAreConfirmed() async throws {
        let queue = TestEnvironment.uniqueName("q_publish_all")
        try await withTestConnection("amqp-publish-all") { amqp in
            try await amqp.declare(AMQPTopology(queues: [.quorum(queue)]), remember: false)
            let messages = (0..<50).map { index in
                AMQPMessage(
                    exchange: "", routingKey: queue, body: Data("\(index)".utf8),
                    properties: AMQPProperties(deliveryMode: .persistent, messageID: "m\(index)"))
            }
            try await amqp.publishAll(messages)
            // One unroutable mandatory message among routable ones: the batch throws its error,
            // and the routable ones were still published.
            var mixed = [messages[0], AMQPMessage(exchange: "", routingKey: "\(queue)-nowhere", body: Data("x".utf8))]
            mixed[0].body = Data("50".utf8)
            await #expect {
                try await amqp.publishAll(mixed)
            } throws: { error in
                (error as? AMQPError)?.code == .unroutable
            }
            var received: [String] = []
            let consumer = try await amqp.consume(queue: queue, prefetch: 100)
            for try await delivery in consumer {
                received.append(String(decoding: delivery.body, as: UTF8.self))
                delivery.ack()
                if received.count == 51 { break }
            }
            consumer.cancel()
            #expect(received == (0...50).map { "\($0)" })
            #expect(try await amqp.deleteQueue(queue) == 0)
        }
    }
}
