// Requests on behalf of devices: published to calls.commands with RabbitMQ's direct reply-to,
// answered by the service that consumes them, or by the gateway itself when none answers in
// time.
public import AMQPClient
public import CallRules
public import Foundation
public import Logging
import RingingContract
import Synchronization

public final class CommandForwarder: Sendable {
    let connection: AMQPConnection
    let replyTimeout: Duration
    let logger: Logger
    private let pending = Mutex<[String: Handoff<Data>]>([:])

    public init(connection: AMQPConnection, replyTimeout: Duration, logger: Logger) {
        self.connection = connection
        self.replyTimeout = replyTimeout
        self.logger = logger
    }

    /// Receives replies until the task is cancelled or the connection shuts down.
    public func run() async throws {
        let replies = try await connection.consumeDirectReplies()
        for try await delivery in replies {
            guard let id = delivery.properties.correlationID else { continue }
            let slot = pending.withLock { $0[id] }
            slot?.resolve(delivery.body)
        }
    }

    /// Sends one request and returns its reply body; `unavailable` when the request could not
    /// be published or no reply came within the reply timeout (it may still apply: a retry
    /// with the same `messageID` returns its result).
    public func request(type: String, body: Data, messageID: String, traceparent: String? = nil) async -> Data {
        let correlation = UUID().uuidString
        let slot = Handoff<Data>()
        pending.withLock { $0[correlation] = slot }
        defer { _ = pending.withLock { $0.removeValue(forKey: correlation) } }
        var properties = AMQPProperties(
            contentType: "application/json", correlationID: correlation, replyTo: AMQPConnection.directReplyTo,
            messageID: messageID)
        if let traceparent { properties.headers["traceparent"] = .string(traceparent) }
        let message = AMQPMessage(
            exchange: Topology.commandsExchange, routingKey: type, body: body, properties: properties, mandatory: true)
        do {
            try await connection.publishRetryingRefusals(message)
        } catch let error as AMQPError where error.code == .unroutable {
            return Self.unavailable("no service takes \(type) requests right now; retry later")
        } catch {
            logger.warning("could not forward a request", metadata: ["type": "\(type)", "error": "\(error)"])
            return Self.unavailable("the broker is not reachable; retry with the same id")
        }
        return await slot.wait(within: replyTimeout)
            ?? Self.unavailable(
                "no reply from the \(type.hasPrefix("token.") ? "token service" : type.hasPrefix("device.") ? "push notifier" : "call service") within \(replyTimeout); the request may still apply: retry with the same id"
            )
    }

    static func unavailable(_ message: String) -> Data {
        WireReply.error(CallError(.unavailable, message)).encoded()
    }
}
