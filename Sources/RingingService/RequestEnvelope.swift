// What a request carries in its AMQP properties (DESIGN §2: message_id, reply_to,
// correlation_id, traceparent).
public import AMQPClient
public import CallRules
public import Foundation
import RingingContract

public struct RequestEnvelope: Sendable {
    public var messageID: String
    public var replyTo: String?
    public var correlationID: String?
    public var traceparent: String?
    public var routingKey: String

    /// Reads the envelope of a delivery; a missing or overlong `message_id` is an
    /// `invalid_request` naming it.
    public init(_ delivery: AMQPDelivery) throws(CallError) {
        routingKey = delivery.routingKey
        replyTo = delivery.properties.replyTo.flatMap { $0.isEmpty ? nil : $0 }
        correlationID = delivery.properties.correlationID
        traceparent = delivery.properties.headers["traceparent"]?.stringValue
        guard let id = delivery.properties.messageID, !id.isEmpty else {
            messageID = ""
            throw CallError.invalid("message_id", "the message_id property is required: it is the request's idempotency key")
        }
        guard id.count <= ContractLimits.maximumMessageIDLength else {
            messageID = ""
            throw CallError.invalid(
                "message_id", "message_id has \(id.count) characters; at most \(ContractLimits.maximumMessageIDLength)")
        }
        messageID = id
    }

    /// The reply to this request, if it asked for one.
    public func reply(_ body: Data) -> AMQPMessage? {
        guard let replyTo else { return nil }
        var properties = AMQPProperties(
            contentType: "application/json", correlationID: correlationID, messageID: "reply-\(messageID)")
        if let traceparent { properties.headers["traceparent"] = .string(traceparent) }
        // Not mandatory: a client that went away is no reason to fail the request.
        return AMQPMessage(exchange: "", routingKey: replyTo, body: body, properties: properties, mandatory: false)
    }

    /// A reply for a request whose envelope could not be read (no message_id): still answered
    /// when it says where.
    public static func bareReply(to delivery: AMQPDelivery, _ body: Data) -> AMQPMessage? {
        guard let replyTo = delivery.properties.replyTo, !replyTo.isEmpty else { return nil }
        return AMQPMessage(
            exchange: "", routingKey: replyTo, body: body,
            properties: AMQPProperties(contentType: "application/json", correlationID: delivery.properties.correlationID),
            mandatory: false)
    }
}
