// How a service that answers requests (token service, push notifier) works through a batch:
// each request parsed and answered, the replies published (retried until they are, or the
// deliveries went stale), then the deliveries settled: an invalid request goes to the
// dead-letter queue, everything else is acknowledged.
public import AMQPClient
public import CallRules
import DedicatedThreads
public import Logging
import Metrics
public import RingingContract

public struct RequestAnswering: Sendable {
    let publisher: AMQPConnection
    let logger: Logger
    /// What a request that failed for a reason other than a `CallError` is told.
    let unavailableMessage: String
    let respond: @Sendable (Request) async throws -> WireReply

    public init(
        publisher: AMQPConnection, logger: Logger, unavailableMessage: String,
        respond: @escaping @Sendable (Request) async throws -> WireReply
    ) {
        self.publisher = publisher
        self.logger = logger
        self.unavailableMessage = unavailableMessage
        self.respond = respond
    }

    /// One batch: answer each request, publish the replies, then settle the deliveries.
    public func work(_ batch: [AMQPDelivery]) async {
        var replies: [AMQPMessage] = []
        var settle: [(AMQPDelivery, Bool)] = []  // (delivery, dead-letter)
        for delivery in batch {
            let (reply, deadLetter) = await answer(delivery)
            if let reply { replies.append(reply) }
            settle.append((delivery, deadLetter))
        }
        var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
        while true {
            do {
                try await publisher.publishAll(replies)
                break
            } catch {
                if batch.contains(where: \.isStale) || Task.isCancelled { break }
                let delay = backoff.next()
                logger.warning("publishing replies failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
            }
        }
        for (delivery, deadLetter) in settle {
            if deadLetter { delivery.reject(requeue: false) } else { delivery.ack() }
        }
    }

    /// The reply to one request, and whether the request goes to the dead-letter queue.
    public func answer(_ delivery: AMQPDelivery) async -> (AMQPMessage?, Bool) {
        let envelope: RequestEnvelope
        do { envelope = try RequestEnvelope(delivery) } catch {
            return (RequestEnvelope.bareReply(to: delivery, WireReply.error(error).encoded()), true)
        }
        let reply: WireReply
        var deadLetter = false
        do {
            reply = try await respond(try RequestParser.parse(routingKey: delivery.routingKey, body: delivery.body))
        } catch let error as CallError {
            deadLetter = error.code == .invalidRequest
            reply = .error(error)
        } catch {
            logger.error("a request failed", metadata: ["type": "\(delivery.routingKey)", "error": "\(error)"])
            reply = .error(CallError(.unavailable, unavailableMessage))
        }
        Counter(
            label: "ringing_requests_total",
            dimensions: [
                ("type", RequestType(rawValue: delivery.routingKey)?.rawValue ?? "unknown"),
                ("outcome", reply.error?.code.rawValue ?? "ok"),
            ]
        ).increment()
        logger.debug(
            "request answered",
            metadata: [
                "message_id": "\(envelope.messageID)", "type": "\(delivery.routingKey)",
                "outcome": "\(reply.error?.code.rawValue ?? "ok")",
            ])
        return (envelope.reply(reply.encoded()), deadLetter)
    }
}
