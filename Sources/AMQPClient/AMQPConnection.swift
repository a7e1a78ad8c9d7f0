// The public face of one AMQP connection: a Sendable handle that talks to the connection's
// own thread, which alone touches the rabbitmq-c state.
public import DedicatedThreads
import Foundation
public import Logging
import Synchronization

/// Settings of one connection. Durations are bounds: nothing waits longer.
public struct AMQPConfiguration: Sendable {
    public var url: AMQPURL
    /// Shown in the broker's management UI (`connection_name`).
    public var connectionName: String
    /// Heartbeat interval negotiated with the broker: a dead peer is noticed after about two.
    public var heartbeat: Duration
    /// TCP connect, and separately the AMQP handshake, each take at most this long.
    public var connectTimeout: Duration
    /// Each synchronous broker call (declare, qos, consume, channel open) takes at most this.
    public var rpcTimeout: Duration
    /// How long a publish, declaration or consume waits for a connection before it fails
    /// with `timeout`.
    public var operationTimeout: Duration
    /// How long a publish may take, from the call to the broker's confirm, unless its caller
    /// gives it another deadline: waiting for a connection, for room in the confirm window,
    /// out a blocked connection (a resource alarm) and for the confirm all count.
    public var publishTimeout: Duration
    /// How many publishes may be unconfirmed at once; further ones wait their turn.
    public var confirmWindow: Int
    public var reconnectBackoff: Backoff
    /// Called on the connection's thread each time the connection is up, after the
    /// remembered topology, the held bindings and the consumers are back; the argument says
    /// whether it is a reconnect. Keep it short: hand the news to a task.
    public var onConnected: (@Sendable (_ reconnected: Bool) -> Void)?

    public init(url: AMQPURL = AMQPURL(), connectionName: String = "ringing") {
        self.url = url
        self.connectionName = connectionName
        self.heartbeat = url.heartbeat ?? .seconds(10)
        self.connectTimeout = url.connectTimeout ?? .seconds(5)
        self.rpcTimeout = .seconds(10)
        self.operationTimeout = .seconds(30)
        self.publishTimeout = .seconds(30)
        self.confirmWindow = 1000
        self.reconnectBackoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
    }
}

/// Figures of a connection that other threads may read.
final class ConnectionStatus: Sendable {
    /// Bumped on every successful (re)connect; deliveries remember the one they came with.
    let generation = Atomic<UInt64>(0)
    let connected = Atomic<Bool>(false)
    let blocked = Atomic<Bool>(false)
    let reconnects = Atomic<Int>(0)
}

/// One AMQP connection to RabbitMQ, kept alive across broker restarts.
///
/// The connection lives on a thread of its own, started by `run()`; every method here only
/// queues a command for that thread and awaits its answer, so callers never block. After a
/// lost connection it reconnects with backoff, declares every remembered topology again and
/// resumes every consumer.
///
/// Publishing uses channel 1 in confirm mode; declarations use channel 2; each consumer has
/// a channel of its own. Use separate connections for publishing and consuming in services,
/// so that a slow consumer's flow control never stalls publishes.
public final class AMQPConnection: Sendable {
    public let configuration: AMQPConfiguration
    let logger: Logger
    let inbox = Inbox<ConnectionCommand>()
    let status = ConnectionStatus()
    private let started = Atomic<Bool>(false)
    private let nextConsumerID = Atomic<Int>(1)

    public init(configuration: AMQPConfiguration, logger: Logger = Logger(label: "ringing.amqp")) {
        self.configuration = configuration
        var logger = logger
        logger[metadataKey: "amqp.connection"] = .string(configuration.connectionName)
        self.logger = logger
    }

    /// Whether the connection is up right now.
    public var isConnected: Bool { status.connected.load(ordering: .relaxed) }
    /// Whether the broker blocks this connection now (a memory or disk alarm).
    public var isBlocked: Bool { status.blocked.load(ordering: .relaxed) }
    /// How many times the connection was re-established after a loss.
    public var reconnectCount: Int { status.reconnects.load(ordering: .relaxed) }

    /// Runs the connection until the task is cancelled, then shuts down gracefully: waits a
    /// little for outstanding confirms, closes the connection (unsettled deliveries go back to
    /// their queues), fails whatever is still queued with `shutdown` and ends every consumer.
    public func run() async {
        precondition(!started.exchange(true, ordering: .relaxed), "AMQPConnection.run() called twice")
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [configuration, logger, inbox, status] in
                    ConnectionLoop(configuration: configuration, logger: logger, inbox: inbox, status: status).run()
                    done.resume()
                }
                thread.name = "amqp:\(configuration.connectionName)"
                thread.start()
            }
        } onCancel: {
            _ = inbox.send(.shutdown)
        }
    }

    /// Runs `body` with a running connection and shuts it down afterwards.
    public static func withConnection<T: Sendable>(
        configuration: AMQPConfiguration, logger: Logger = Logger(label: "ringing.amqp"),
        _ body: (AMQPConnection) async throws -> T
    ) async throws -> T {
        let connection = AMQPConnection(configuration: configuration, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await connection.run() }
            defer { group.cancelAll() }
            return try await body(connection)
        }
    }

    /// Waits until the connection is up (at most `operationTimeout`).
    public func waitUntilConnected() async throws {
        try await perform { .whenConnected($0) }
    }

    /// Declares exchanges, queues and bindings. With `remember` (the default) they are
    /// declared again after every reconnect, so that auto-delete and non-durable ones come back.
    public func declare(_ topology: AMQPTopology, remember: Bool = true) async throws {
        try await perform { .declare(topology, remember: remember, $0) }
    }

    /// Takes a hold on a binding and returns once the broker has bound it. The binding stays
    /// while any hold remains and is bound again after every reconnect (after the remembered
    /// topology, so its queue exists). Holds are counted on the connection's own thread, in
    /// the order the calls were made, so concurrent `bind` and `unbind` calls of the same
    /// binding always leave it bound exactly when holds remain.
    public func bind(_ binding: AMQPBinding) async throws {
        try await perform { .bind(binding, $0) }
    }

    /// Releases a hold taken by `bind`; the last one removes the binding from the broker.
    /// Does not wait for a connection: when there is none, the hold is simply dropped.
    public func unbind(_ binding: AMQPBinding) async throws {
        try await perform { .unbind(binding, $0) }
    }

    /// Declares every remembered topology and binds every held binding again, as after a
    /// reconnect: for a queue deleted under a live connection (an operator's
    /// `rabbitmqctl delete_queue`), before consuming from it again.
    public func restoreTopology() async throws {
        try await perform { .restoreTopology($0) }
    }

    /// Deletes a queue (for tests and tools); returns how many messages it held.
    @discardableResult
    public func deleteQueue(_ name: String) async throws -> UInt32 {
        try await perform { .deleteQueue(name, $0) }
    }

    /// Removes every ready message from a queue; returns how many.
    @discardableResult
    public func purgeQueue(_ name: String) async throws -> UInt32 {
        try await perform { .purgeQueue(name, $0) }
    }

    /// Publishes and returns once the broker has confirmed the message (for a persistent
    /// message to a quorum queue: once a majority has written it).
    ///
    /// Throws `unroutable` if a mandatory message matched no queue, `nacked` if the broker
    /// refused it, `channelClosed` if the broker closed the channel (say, the exchange does
    /// not exist), `connectionLost` if the connection died before the confirm (the message
    /// may or may not have arrived: publish again if duplicates are harmless), `timeout` if
    /// no confirm came within `timeout` (default `publishTimeout`: waiting for a connection,
    /// for the confirm window and out a blocked connection count too; a message sent but not
    /// confirmed may have arrived). Many publishes may be in flight at once, up to
    /// `confirmWindow`; cancelling the calling task does not unpublish.
    public func publish(_ message: AMQPMessage, timeout: Duration? = nil) async throws {
        try await perform { .publish(message, timeout: timeout, $0) }
    }

    /// Publishes every message (in order, concurrently as far as the confirm window allows)
    /// and returns once the broker has confirmed them all; throws the first failure, after
    /// every message has its outcome. One hop to the connection's thread and one wake-up of
    /// the caller for the lot, where a `publish` per message would cost one of each per
    /// message.
    public func publishAll(_ messages: [AMQPMessage], timeout: Duration? = nil) async throws {
        switch messages.count {
        case 0: return
        case 1: try await publish(messages[0], timeout: timeout)
        default: try await perform { .publishAll(messages, timeout: timeout, $0) }
        }
    }

    /// `publish`, sent again (the same message) when the broker nacks it: a queue it was routed
    /// to went away meanwhile (an exclusive queue of a closing connection bound with `#`), or a
    /// quorum queue had no leader for a moment (under load, during a failover).
    /// Only for messages whose receiver deduplicates them (requests carry their message_id).
    public func publishRetryingRefusals(_ message: AMQPMessage, attempts: Int = 3) async throws {
        var attempt = 1
        while true {
            do {
                try await publish(message)
                return
            } catch let error as AMQPError where error.code == .nacked && attempt < attempts {
                attempt += 1
                try await Task.sleep(for: .milliseconds(100 * attempt))
            }
        }
    }

    /// Starts a consumer with manual acknowledgements (unless `noAck`) and `prefetch`
    /// unsettled deliveries at most. Deliveries arrive in the returned sequence; after a
    /// reconnect the consumer resumes on its own, and deliveries from before are stale
    /// (the broker delivers them again).
    public func consume(
        queue: String, prefetch: UInt16 = 100, noAck: Bool = false, exclusive: Bool = false,
        arguments: AMQPTable = [:]
    ) async throws -> AMQPConsumer {
        let id = nextConsumerID.wrappingAdd(1, ordering: .relaxed).oldValue
        let spec = ConsumerSpec(
            id: id, queue: queue, prefetch: prefetch, noAck: noAck, exclusive: exclusive, arguments: arguments)
        let buffer = DeliveryBuffer()
        try await perform { .consume(spec, buffer, $0) }
        return AMQPConsumer(buffer: buffer, id: id, inbox: inbox)
    }

    /// Starts receiving replies sent to `amq.rabbitmq.reply-to` (RabbitMQ's direct reply-to):
    /// publish requests with `replyTo: "amq.rabbitmq.reply-to"` on this connection and their
    /// replies arrive here, without a reply queue. The consumer lives on the publishing
    /// channel, as the broker requires, and is resumed after a reconnect. Replies to requests
    /// published before a reconnect are lost: retry those.
    public func consumeDirectReplies() async throws -> AMQPConsumer {
        let id = nextConsumerID.wrappingAdd(1, ordering: .relaxed).oldValue
        var spec = ConsumerSpec(id: id, queue: Self.directReplyTo, prefetch: 0, noAck: true, exclusive: false, arguments: [:])
        spec.onPublishChannel = true
        let buffer = DeliveryBuffer()
        try await perform { .consume(spec, buffer, $0) }
        return AMQPConsumer(buffer: buffer, id: id, inbox: inbox)
    }

    /// The pseudo-queue of direct reply-to.
    public static let directReplyTo = "amq.rabbitmq.reply-to"

    private func perform<T: Sendable>(_ command: (CheckedContinuation<T, any Error>) -> ConnectionCommand) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            if !inbox.send(command(continuation)) {
                continuation.resume(throwing: AMQPError(.shutdown, "the connection has been shut down"))
            }
        }
    }
}

struct ConsumerSpec: Sendable {
    let id: Int
    let queue: String
    let prefetch: UInt16
    let noAck: Bool
    let exclusive: Bool
    let arguments: AMQPTable
    /// Consume on the publishing channel (direct reply-to needs both on one channel).
    var onPublishChannel = false
}

/// How a delivery is settled, routed back to the thread that owns its channel.
struct Settlement: Sendable {
    enum Kind: Sendable {
        case ack(multiple: Bool)
        case nack(requeue: Bool)
        case reject(requeue: Bool)
    }

    let inbox: Inbox<ConnectionCommand>
    let status: ConnectionStatus
    let generation: UInt64
    let channel: UInt16
    let deliveryTag: UInt64

    func settle(_ kind: Kind) {
        _ = inbox.send(.settle(generation: generation, channel: channel, deliveryTag: deliveryTag, kind))
    }

    var isStale: Bool { status.generation.load(ordering: .relaxed) != generation }
}

enum ConnectionCommand: Sendable {
    case publish(AMQPMessage, timeout: Duration?, CheckedContinuation<Void, any Error>)
    case publishAll([AMQPMessage], timeout: Duration?, CheckedContinuation<Void, any Error>)
    case declare(AMQPTopology, remember: Bool, CheckedContinuation<Void, any Error>)
    case bind(AMQPBinding, CheckedContinuation<Void, any Error>)
    case unbind(AMQPBinding, CheckedContinuation<Void, any Error>)
    case deleteQueue(String, CheckedContinuation<UInt32, any Error>)
    case purgeQueue(String, CheckedContinuation<UInt32, any Error>)
    case consume(ConsumerSpec, DeliveryBuffer, CheckedContinuation<Void, any Error>)
    case cancelConsumer(id: Int)
    case settle(generation: UInt64, channel: UInt16, deliveryTag: UInt64, Settlement.Kind)
    case whenConnected(CheckedContinuation<Void, any Error>)
    case restoreTopology(CheckedContinuation<Void, any Error>)
    case shutdown
}
