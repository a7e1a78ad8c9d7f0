// The workers of a service: each consumes one queue on a connection and hands batches to the
// service. A consumer the broker cancels (its queue deleted or re-declared, a node failover)
// is subscribed again after `recover`; a worker that cannot subscribe again within a minute
// throws, the service stops and the process exits non-zero for its supervisor to restart it.
// No worker failure is silent: each is logged and counted, and `liveCount` feeds /readyz.
public import AMQPClient
import DedicatedThreads
public import Logging
import Metrics
import Synchronization

public final class QueueWorkers: Sendable {
    public let queue: String
    public let count: Int
    let connection: AMQPConnection
    let prefetch: UInt16
    let exclusive: Bool
    let logger: Logger
    private let live = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let consumers = Mutex<[Int: AMQPConsumer]>([:])

    public init(
        connection: AMQPConnection, queue: String, count: Int, prefetch: UInt16, exclusive: Bool = false, logger: Logger
    ) {
        self.connection = connection
        self.queue = queue
        self.count = count
        self.prefetch = prefetch
        self.exclusive = exclusive
        self.logger = logger
    }

    /// Workers whose consumer is subscribed now.
    public var liveCount: Int { live.load(ordering: .relaxed) }

    /// Subscribes every worker's consumer, waiting out a broker that does not answer in time
    /// (`StartUp`); throws when the queue cannot be consumed (no such queue, no permission).
    public func subscribeAll() async throws {
        for worker in 0..<count {
            try await StartUp.waitingForTheBroker(to: "subscribe to \(queue)", logger: logger) { try await subscribe(worker) }
        }
    }

    /// Runs the workers (after `subscribeAll`) until `stop()`: each takes batches of up to
    /// `batchSize` and gives them to `handle` with its index.
    public func run(
        batchSize: Int, recover: @escaping @Sendable () async throws -> Void,
        handle: @escaping @Sendable ([AMQPDelivery], Int) async -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<count {
                group.addTask { try await self.work(worker, batchSize: batchSize, recover: recover, handle: handle) }
            }
            try await group.waitForAll()
        }
    }

    /// Graceful shutdown: no new deliveries; the workers finish the batches in hand and return.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        for consumer in consumers.withLock({ Array($0.values) }) { consumer.cancel() }
    }

    private func subscribe(_ worker: Int) async throws {
        let consumer = try await connection.consume(queue: queue, prefetch: prefetch, exclusive: exclusive)
        consumers.withLock { $0[worker] = consumer }
        live.add(1, ordering: .relaxed)
    }

    private func work(
        _ worker: Int, batchSize: Int, recover: @Sendable () async throws -> Void,
        handle: @Sendable ([AMQPDelivery], Int) async -> Void
    ) async throws {
        var logger = self.logger
        logger[metadataKey: "worker"] = "\(worker)"
        while true {
            guard let consumer = consumers.withLock({ $0[worker] }) else { return }
            do {
                while let batch = try await consumer.nextBatch(max: batchSize) { await handle(batch, worker) }
                live.subtract(1, ordering: .relaxed)
                return
            } catch {
                live.subtract(1, ordering: .relaxed)
                if Task.isCancelled || stopping.load(ordering: .relaxed) { return }
                Counter(label: "ringing_consumer_cancellations_total", dimensions: [("queue", queue)]).increment()
                logger.error(
                    "the broker cancelled this worker's consumer; subscribing again",
                    metadata: ["queue": "\(queue)", "error": "\(error)"])
                try await resubscribe(worker, recover: recover, logger: logger)
            }
        }
    }

    private func resubscribe(_ worker: Int, recover: @Sendable () async throws -> Void, logger: Logger) async throws {
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(5))
        let giveUp = ContinuousClock.now + .seconds(60)
        while true {
            do {
                try await recover()
                try await subscribe(worker)
                logger.notice("subscribed again to \(queue)")
                return
            } catch {
                if Task.isCancelled || stopping.load(ordering: .relaxed) { return }
                if ContinuousClock.now > giveUp {
                    logger.critical(
                        "could not subscribe again to \(queue) for a minute; stopping", metadata: ["error": "\(error)"])
                    throw error
                }
                try await Task.sleep(for: backoff.next())
            }
        }
    }
}
