// Exchanges, queues and bindings as values, so a connection can declare them again after
// every reconnect.

public struct AMQPExchange: Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        case direct, fanout, topic, headers
    }

    public var name: String
    public var kind: Kind
    public var durable: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    public init(_ name: String, kind: Kind, durable: Bool = true, autoDelete: Bool = false, arguments: AMQPTable = [:]) {
        self.name = name
        self.kind = kind
        self.durable = durable
        self.autoDelete = autoDelete
        self.arguments = arguments
    }
}

public struct AMQPQueue: Sendable, Hashable {
    public var name: String
    public var durable: Bool
    public var exclusive: Bool
    public var autoDelete: Bool
    public var arguments: AMQPTable

    public init(
        _ name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
        arguments: AMQPTable = [:]
    ) {
        self.name = name
        self.durable = durable
        self.exclusive = exclusive
        self.autoDelete = autoDelete
        self.arguments = arguments
    }

    /// A replicated, durable quorum queue. `arguments` adds to `x-queue-type: quorum`
    /// (for example `x-delivery-limit`, `x-dead-letter-exchange`, `x-overflow`).
    public static func quorum(_ name: String, arguments: AMQPTable = [:]) -> AMQPQueue {
        AMQPQueue(name, arguments: arguments.merging(["x-queue-type": "quorum"]) { mine, _ in mine })
    }
}

public struct AMQPBinding: Sendable, Hashable {
    public var queue: String
    public var exchange: String
    public var routingKey: String
    public var arguments: AMQPTable

    public init(queue: String, exchange: String, routingKey: String, arguments: AMQPTable = [:]) {
        self.queue = queue
        self.exchange = exchange
        self.routingKey = routingKey
        self.arguments = arguments
    }
}

/// A set of declarations, applied in order: exchanges, then queues, then bindings.
/// Declaring is idempotent as long as the arguments match what exists.
public struct AMQPTopology: Sendable, Hashable {
    public var exchanges: [AMQPExchange]
    public var queues: [AMQPQueue]
    public var bindings: [AMQPBinding]
    /// Only check that the exchanges and queues exist (`passive`), creating nothing and
    /// binding nothing: for accounts that may use the topology but not configure it. A
    /// missing one fails with `channelClosed` (404 NOT_FOUND).
    public var passive: Bool

    public init(
        exchanges: [AMQPExchange] = [], queues: [AMQPQueue] = [], bindings: [AMQPBinding] = [], passive: Bool = false
    ) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
        self.passive = passive
    }

    /// The same exchanges and queues, checked passively.
    public var asPassive: AMQPTopology {
        AMQPTopology(exchanges: exchanges, queues: queues, bindings: [], passive: true)
    }
}
