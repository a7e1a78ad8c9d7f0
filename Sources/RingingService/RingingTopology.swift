// The AMQP topology of DESIGN §2, declared idempotently by every service at start.
public import AMQPClient
import RingingContract

public enum RingingTopology {
    /// How often the broker delivers a request before dead-lettering it.
    public static let deliveryLimit: Int64 = 5

    /// A durable quorum queue of a service, dead-lettering to `calls.dead-letter` after
    /// `deliveryLimit` deliveries.
    public static func serviceQueue(_ name: String, deliveryLimit: Int64 = deliveryLimit) -> AMQPQueue {
        .quorum(
            name,
            arguments: [
                "x-delivery-limit": .int64(deliveryLimit),
                "x-dead-letter-exchange": .string(Topology.deadLetterExchange),
                "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish",
            ])
    }

    public static let declaration = AMQPTopology(
        exchanges: [
            AMQPExchange(Topology.commandsExchange, kind: .topic),
            AMQPExchange(Topology.eventsExchange, kind: .topic),
            AMQPExchange(Topology.notificationsExchange, kind: .topic),
            AMQPExchange(Topology.deadLetterExchange, kind: .fanout),
        ],
        queues: [
            .quorum(Topology.deadLetterQueue),
            serviceQueue(Topology.callControlQueue),
            serviceQueue(Topology.tokenServiceQueue),
            serviceQueue(Topology.pushNotifierQueue),
        ],
        bindings: [
            AMQPBinding(queue: Topology.deadLetterQueue, exchange: Topology.deadLetterExchange, routingKey: ""),
            AMQPBinding(queue: Topology.callControlQueue, exchange: Topology.commandsExchange, routingKey: "call.#"),
            AMQPBinding(queue: Topology.callControlQueue, exchange: Topology.commandsExchange, routingKey: "group.#"),
            AMQPBinding(queue: Topology.tokenServiceQueue, exchange: Topology.commandsExchange, routingKey: "token.#"),
            AMQPBinding(queue: Topology.pushNotifierQueue, exchange: Topology.commandsExchange, routingKey: "device.#"),
        ])
}
