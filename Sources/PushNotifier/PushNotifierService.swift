// The push notifier (DESIGN §8): answers device.register / unregister / list from
// push-notifier.requests, and turns the notifications that make a phone ring or stop ringing
// into APNs and FCM pushes, each accepted by its provider once.
public import AMQPClient
import AsyncHTTPClient
import CallRules
import DedicatedThreads
import Foundation
public import Logging
import Metrics
import PostgresClient
import PushRules
import RingingAuth
import RingingContract
public import RingingOperations
import RingingService
public import ServiceLifecycle
import Synchronization

public final class PushNotifierService: ComposedService, Sendable {
    /// The notifier's own queue on `calls.notifications`.
    public static let notificationQueue = "push-notifier.notifications"
    /// A notification is delivered this often (restarts, shutdowns) before it is dead-lettered.
    static let notificationDeliveryLimit: Int64 = 20

    public let configuration: PushNotifierConfiguration
    let logger: Logger
    let publisher: AMQPConnection
    let consumerConnection: AMQPConnection
    let pool: PostgresPool
    let auth: AuthTokens
    let http: HTTPClient
    let provider: ProviderClient
    let requests: QueueWorkers
    let notifications: QueueWorkers
    let retryPolicy = PushRetryPolicy()
    private let ready = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    /// Pushes being sent by this instance: a duplicate notification (an outbox republish)
    /// arriving meanwhile does not send them a second time.
    private let inFlight = Mutex<Set<PushKey>>([])

    public init(configuration: PushNotifierConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        publisher = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) publish"),
            logger: logger)
        consumerConnection = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) consume"),
            logger: logger)
        pool = PostgresPool(
            configuration: configuration.database, size: configuration.workers + 8, acquireTimeout: .seconds(10),
            logger: logger)
        auth = try await AuthTokens(secret: configuration.authSecret)
        http = try ProviderClient.makeHTTPClient(caFile: configuration.caFile)
        provider = try await ProviderClient(configuration: configuration, http: http)
        requests = QueueWorkers(
            connection: consumerConnection, queue: Topology.pushNotifierQueue, count: configuration.workers, prefetch: 32,
            logger: logger)
        notifications = QueueWorkers(
            connection: consumerConnection, queue: Self.notificationQueue, count: 1,
            prefetch: UInt16(min(configuration.concurrency, Int(UInt16.max))), logger: logger)
    }

    /// The notifier's queue and its bindings: the notifications that make a push.
    public static let topology = AMQPTopology(
        exchanges: [],
        queues: [RingingTopology.serviceQueue(notificationQueue, deliveryLimit: notificationDeliveryLimit)],
        bindings: PushPlanner.notifications.map {
            AMQPBinding(queue: notificationQueue, exchange: Topology.notificationsExchange, routingKey: "user.*.\($0.rawValue)")
        })

    public var isReady: Bool { ready.load(ordering: .relaxed) }

    public var dependencies: [any Service] {
        [
            Background("amqp publish") { await self.publisher.run() },
            Background("amqp consume") { await self.consumerConnection.run() },
        ]
            + OperationsServer.dependency(
                host: configuration.httpHost, port: configuration.httpPort, logger: logger
            ) { await self.readiness() }
    }

    public func run() async throws {
        for provider in PushProvider.allCases where !self.provider.enabled(provider) {
            logger.notice(
                "\(provider == .apns ? "APNs" : "FCM") is off: \(provider == .apns ? "RINGING_APNS_KEY, RINGING_APNS_KEY_ID and RINGING_APNS_TEAM_ID are" : "RINGING_FCM_CREDENTIALS is") not set, so \(provider == .apns ? "iPhones" : "Android phones") get no pushes"
            )
        }
        try await migrate()
        try await publisher.awaitRingingTopology(logger: logger)
        try await StartUp.waitingForTheBroker(to: "declare the push queues", logger: logger) {
            try await consumerConnection.declare(Self.topology)
        }
        try await requests.subscribeAll()
        try await notifications.subscribeAll()
        let (stream, continuation) = AsyncStream<AMQPDelivery>.makeStream()
        let recover: @Sendable () async throws -> Void = {
            try await self.publisher.awaitRingingTopology(logger: self.logger)
            try await self.consumerConnection.declare(Self.topology)
        }
        let answering = RequestAnswering(
            publisher: publisher, logger: logger, unavailableMessage: "the device registry is not reachable now; retry",
            respond: { try await self.respond($0) })
        try await withThrowingTaskGroup(of: Void.self) { work in
            work.addTask {
                try await self.requests.run(batchSize: 32, recover: recover, handle: { batch, _ in await answering.work(batch) })
            }
            work.addTask {
                defer { continuation.finish() }
                try await self.notifications.run(
                    batchSize: 64, recover: recover,
                    handle: { batch, _ in for delivery in batch { continuation.yield(delivery) } })
            }
            work.addTask {
                await withDiscardingTaskGroup { group in
                    for await delivery in stream { group.addTask { await self.process(delivery) } }
                }
            }
            work.addTask { await cancelWhenGracefulShutdown { await self.forgetOldPushes() } }
            work.addTask {
                try? await gracefulShutdown()
                self.logger.info("push-notifier stopping: no new notifications, finishing the pushes in hand")
                self.stopping.store(true, ordering: .relaxed)
                self.requests.stop()
                self.notifications.stop()
            }
            ready.store(true, ordering: .relaxed)
            logger.info(
                "push-notifier ready",
                metadata: [
                    "apns": "\(provider.enabled(.apns) ? "on" : "off")", "fcm": "\(provider.enabled(.fcm) ? "on" : "off")",
                    "concurrency": "\(configuration.concurrency)",
                ])
            while try await work.next() != nil {}
        }
        try? await http.shutdown()
        await pool.close()
    }

    /// The `push` schema, migrated by whichever instance gets the lock first; waits for the
    /// database like every other start.
    private func migrate() async throws {
        let applied = try await StartUp.waitingForTheDatabase(to: "apply the push schema's migrations", logger: logger) {
            try await pool.withConnection { try await DeviceStore.migrate($0) }
        }
        if !applied.isEmpty { logger.info("push schema migrated", metadata: ["versions": "\(applied)"]) }
    }

    func readiness() async -> Readiness {
        let database = await pool.answers(within: .seconds(2))
        let live = requests.liveCount + notifications.liveCount
        let expected = requests.count + notifications.count
        return Readiness(checks: [
            ("consumers", isReady),
            ("consumers subscribed (\(live) of \(expected))", live == expected),
            ("broker (publish)", publisher.isConnected),
            ("broker not blocking publishes (no resource alarm)", !publisher.isBlocked),
            ("broker (consume)", consumerConnection.isConnected),
            ("database", database),
        ])
    }

    // MARK: - Device registry

    private func respond(_ request: Request) async throws -> WireReply {
        let user = try await auth.verify(request.authToken ?? "")
        switch request.command {
        case .registerDevice(let registration):
            try await registry { try DeviceStore.register($0, uid: user.uid, registration, now: Date()) }
            logger.info(
                "device registered",
                metadata: [
                    "uid": "\(user.uid)", "device_id": "\(registration.deviceID)", "kind": "\(registration.kind.rawValue)",
                ])
            return .ok
        case .unregisterDevice(let deviceID):
            try await registry { try DeviceStore.unregister($0, uid: user.uid, deviceID: deviceID) }
            return .ok
        case .listDevices:
            return .devices(try await registry { try DeviceStore.list($0, uid: user.uid) })
        default:
            throw CallError(
                .invalidRequest, "\(request.type.rawValue) is not answered by the push notifier", field: "type")
        }
    }

    /// A registry statement, retried while the database is away for up to 10 s, then
    /// `unavailable`. A unique violation (two registrations of one token racing) is tried again.
    private func registry<T: Sendable>(_ body: @escaping @Sendable (isolated PostgresConnection) throws -> T) async throws
        -> T
    {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do {
                return try await pool.withConnection { try await body($0) }
            } catch let error as PostgresError
                where (error.isTransient || error.sqlState == .uniqueViolation) && ContinuousClock.now < deadline
            {
                let delay = backoff.next()
                logger.warning("device registry statement failed; retrying", metadata: ["error": "\(error)"])
                try await Task.sleep(for: delay)
            } catch let error as PostgresError {
                logger.error("device registry statement failed", metadata: ["error": "\(error)"])
                throw CallError(.unavailable, "the device registry is not reachable now; retry")
            }
        }
    }

    // MARK: - Pushes

    /// Why a push ended.
    enum PushResult: Sendable { case accepted, pruned, failed, expired, interrupted }

    /// One notification: its pushes, each until accepted once; then the delivery is settled.
    func process(_ delivery: AMQPDelivery) async {
        guard delivery.properties.userID == Topology.publisherAccount else {
            Counter(label: "ringing_push_notifications_dropped_total", dimensions: [("reason", "not_call_control")]).increment()
            logger.warning(
                "dropped a notification not published by call-control",
                metadata: ["user_id": "\(delivery.properties.userID ?? "none")", "routing_key": "\(delivery.routingKey)"])
            delivery.ack()
            return
        }
        guard let notification = try? WireTime.decoder.decode(WireEvent.self, from: delivery.body),
            let name = NotificationName(rawValue: notification.type), let uid = notification.recipient
        else {
            Counter(label: "ringing_push_notifications_dropped_total", dimensions: [("reason", "unparseable")]).increment()
            logger.error(
                "a notification does not parse; it goes to calls.dead-letter",
                metadata: ["routing_key": "\(delivery.routingKey)", "bytes": "\(delivery.body.count)"])
            delivery.reject(requeue: false)
            return
        }
        guard PushPlanner.notifications.contains(name) else {
            delivery.ack()
            return
        }
        let sessionID = notification.call.sessionID
        guard let devices = await database("reading the user's devices", { try DeviceStore.devices($0, uid: uid) }) else {
            return settle(delivery, interrupted: true)
        }
        let planned = PushPlanner.plan(
            name: name, notification: notification, devices: devices, now: Date(), retryWindow: configuration.retryWindow
        ).filter { provider.enabled($0.request.provider) }
        if name == .incomingCallReceived && !devices.isEmpty && notification.call.expiresAt <= Date() {
            Counter(label: "ringing_push_skipped_total", dimensions: [("reason", "ring_expired")]).increment()
            logger.info("ring already expired; no push", metadata: ["session_id": "\(sessionID)", "uid": "\(uid)"])
        }
        if planned.isEmpty { return delivery.ack() }
        guard let done = await database("reading the push log", { try DeviceStore.accepted($0, sessionID: sessionID, uid: uid) })
        else { return settle(delivery, interrupted: true) }
        let todo = inFlight.withLock { sending in
            planned.filter { !done.contains($0.key) && sending.insert($0.key).inserted }
        }
        defer { inFlight.withLock { sending in for push in todo { sending.remove(push.key) } } }
        if todo.count < planned.count {
            Counter(label: "ringing_push_skipped_total", dimensions: [("reason", "already_accepted_or_in_flight")]).increment(
                by: planned.count - todo.count)
        }
        let interrupted = await withTaskGroup(of: PushResult.self) { group in
            for push in todo { group.addTask { await self.deliver(push) } }
            var interrupted = false
            for await result in group where result == .interrupted { interrupted = true }
            return interrupted
        }
        settle(delivery, interrupted: interrupted)
    }

    /// An interrupted notification (shutting down, or the database gone meanwhile) goes back to
    /// the queue for this or another instance; the push log keeps what was accepted from
    /// being pushed again.
    private func settle(_ delivery: AMQPDelivery, interrupted: Bool) {
        if interrupted { delivery.reject(requeue: true) } else { delivery.ack() }
    }

    /// One push, until the provider accepts it, calls the token dead, refuses it for good, or
    /// its deadline passes.
    func deliver(_ push: PlannedPush) async -> PushResult {
        let providerName = push.request.provider.rawValue
        var metadata: Logger.Metadata = [
            "session_id": "\(push.key.sessionID)", "uid": "\(push.key.uid)", "device_id": "\(push.key.deviceID)",
            "notification": "\(push.key.notification)", "provider": "\(providerName)",
        ]
        func count(_ outcome: String) {
            Counter(label: "ringing_push_sent_total", dimensions: [("provider", providerName), ("outcome", outcome)]).increment()
        }
        var attempt = 0
        var refreshed = false
        while true {
            if stopping.load(ordering: .relaxed) { return .interrupted }
            let answer = await provider.attempt(push)
            Metrics.Timer(label: "ringing_push_latency_seconds", dimensions: [("provider", providerName)]).recordNanoseconds(
                Int64(max(0, Date().timeIntervalSince(push.occurredAt)) * 1e9))
            switch answer {
            case .accepted:
                let recorded = await database("recording an accepted push") {
                    try DeviceStore.recordAccepted($0, push.key, provider: push.request.provider, at: Date())
                }
                if recorded == nil {
                    logger.warning("an accepted push was not recorded; a redelivery may push it again", metadata: metadata)
                }
                count("accepted")
                return .accepted
            case .unregistered(let reason):
                metadata["reason"] = "\(reason)"
                _ = await database("deleting a dead device") { try DeviceStore.prune($0, push.device) }
                count("pruned")
                Counter(label: "ringing_push_tokens_pruned_total", dimensions: [("provider", providerName)]).increment()
                logger.info(
                    "deleted device \(push.key.deviceID): the provider calls its token dead (\(reason))", metadata: metadata)
                return .pruned
            case .refreshCredentials(let reason) where !refreshed:
                refreshed = true
                logger.notice("the provider refused the provider token; making a new one", metadata: ["reason": "\(reason)"])
            case .refreshCredentials(let reason), .rejected(let reason):
                metadata["reason"] = "\(reason)"
                count("failed")
                logger.error("the provider refused the push", metadata: metadata)
                return .failed
            case .retry(let reason, let after):
                metadata["reason"] = "\(reason)"
                guard
                    let next = retryPolicy.nextAttempt(after: attempt, providerDelay: after, now: Date(), until: push.retryUntil)
                else {
                    count("expired")
                    logger.warning("push given up: its deadline passed while the provider kept refusing", metadata: metadata)
                    return .expired
                }
                count("retried")
                logger.debug("push refused for now; retrying", metadata: metadata)
                attempt += 1
                try? await Task.sleep(for: .seconds(max(0, next.timeIntervalSinceNow)))
            }
        }
    }

    /// A push-log or registry statement for the push path: tried once even while shutting down
    /// (an accepted push is still recorded), retried while the database is away (the
    /// notification stays unacknowledged meanwhile) unless shutting down; nil when it gave up or
    /// the statement failed for another reason (logged).
    private func database<T: Sendable>(
        _ what: String, _ body: @escaping @Sendable (isolated PostgresConnection) throws -> T
    ) async -> T? {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        while true {
            do {
                return try await pool.withConnection { try await body($0) }
            } catch let error as PostgresError where error.isTransient && !stopping.load(ordering: .relaxed) {
                let delay = backoff.next()
                logger.warning("\(what) failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
            } catch {
                logger.error("\(what) failed", metadata: ["error": "\(error)"])
                return nil
            }
        }
    }

    /// The push log only has to outlive redeliveries: rows older than a day go, every 10 minutes.
    private func forgetOldPushes() async {
        while !Task.isCancelled {
            if let removed = await database(
                "forgetting old pushes",
                {
                    try DeviceStore.forgetPushes($0, olderThan: Date().addingTimeInterval(-86_400))
                }), removed > 0
            {
                logger.info("forgot old pushes", metadata: ["rows": "\(removed)"])
            }
            try? await Task.sleep(for: .seconds(600))
        }
    }
}
