// How a service that answers requests (token service, push notifier) works through a batch:
// every request parsed, what the batch needs read at once (`preload`, say one statement for
// every call the batch names), each request answered, the replies published (retried until
// they are, or the deliveries went stale), then the deliveries settled: an invalid request
// goes to the dead-letter queue, everything else is acknowledged.
public import AMQPClient
public import CallRules
import DedicatedThreads
public import Logging
import Metrics
public import RingingContract

public struct RequestAnswering<Preloaded: Sendable>: Sendable {
    let publisher: AMQPConnection
    let logger: Logger
    /// What a request that failed for a reason other than a `CallError` is told.
    let unavailableMessage: String
    let preload: @Sendable ([Request]) async -> Preloaded
    let respond: @Sendable (Request, Preloaded) async throws -> WireReply

    public init(
        publisher: AMQPConnection, logger: Logger, unavailableMessage: String,
        preload: @escaping @Sendable ([Request]) async -> Preloaded,
        respond: @escaping @Sendable (Request, Preloaded) async throws -> WireReply
    ) {
        self.publisher = publisher
        self.logger = logger
        self.unavailableMessage = unavailableMessage
        self.preload = preload
        self.respond = respond
    }

    /// One batch: parse every request, preload, answer each, publish the replies, then
    /// settle the deliveries.
    public func work(_ batch: [AMQPDelivery]) async {
        let parsed = batch.map { delivery in
            (delivery, Result { try RequestParser.parse(routingKey: delivery.routingKey, body: delivery.body) })
        }
        let preloaded = await preload(parsed.compactMap { try? $0.1.get() })
        var replies: [AMQPMessage] = []
        var settle: [(AMQPDelivery, Bool)] = []  // (delivery, dead-letter)
        for (delivery, request) in parsed {
            let (reply, deadLetter) = await answer(delivery, request, preloaded)
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
    func answer(_ delivery: AMQPDelivery, _ request: Result<Request, any Error>, _ preloaded: Preloaded) async -> (
        AMQPMessage?, Bool
    ) {
        let envelope: RequestEnvelope
        do { envelope = try RequestEnvelope(delivery) } catch {
            return (RequestEnvelope.bareReply(to: delivery, WireReply.error(error).encoded()), true)
        }
        let reply: WireReply
        var deadLetter = false
        do {
            reply = try await respond(try request.get(), preloaded)
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

extension RequestAnswering where Preloaded == Void {
    /// A service that answers each request on its own.
    public init(
        publisher: AMQPConnection, logger: Logger, unavailableMessage: String,
        respond: @escaping @Sendable (Request) async throws -> WireReply
    ) {
        self.init(
            publisher: publisher, logger: logger, unavailableMessage: unavailableMessage, preload: { _ in },
            respond: { request, _ in try await respond(request) })
    }
}
