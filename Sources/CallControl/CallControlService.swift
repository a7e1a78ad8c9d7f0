// The call-control service: consumes call.* and group.* requests, applies them with the
// ringing rules in PostgreSQL, publishes events, notifications and replies, fires ring
// deadlines and republishes what a dead instance left in the outbox.
import AMQPClient
import CallRules
import CallStore
import DedicatedThreads
import Foundation
public import Logging
import Metrics
import PostgresClient
import RingingAuth
import RingingContract
public import RingingOperations
import RingingService
import RingingTracing
public import ServiceLifecycle
import Synchronization

public final class CallControlService: ComposedService, Sendable {
    public let configuration: CallControlConfiguration
    let logger: Logger
    let publisher: AMQPConnection
    let consumerConnection: AMQPConnection
    let pool: PostgresPool
    let listener: PostgresListener
    let auth: AuthTokens
    let ringTimer = Doorbell()
    /// Which announced deadlines wake the ring timer.
    let deadlineGate = Mutex(DeadlineGate())
    /// Outbox rows already published, deleted by the next batch's transaction.
    let published = PublishedOutbox()
    /// The broker account events and notifications are published as (their `user_id`).
    var publisherUser: String { configuration.amqp.user }
    private let readyBell = Doorbell()
    private let ready = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)
    let workers: QueueWorkers

    /// True once migrations ran, the topology is declared and the consumers are started.
    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// Waits until `isReady`, or until `run` ended without getting there (it threw: the
    /// error is `run`'s), or the task is cancelled. Returns `isReady`.
    @discardableResult
    public func waitUntilReady() async -> Bool {
        while !isReady && !stopped.load(ordering: .relaxed) && !Task.isCancelled {
            await readyBell.wait(timeout: .seconds(1))
        }
        return isReady
    }

    public init(configuration: CallControlConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        var publishing = AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) publish")
        publishing.confirmWindow = 2000
        publisher = AMQPConnection(configuration: publishing, logger: logger)
        consumerConnection = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) consume"),
            logger: logger)
        pool = PostgresPool(
            configuration: configuration.database, size: configuration.workers + 2, acquireTimeout: .seconds(30), logger: logger)
        listener = PostgresListener(configuration: configuration.database, channels: ["ring_deadline"], logger: logger)
        workers = QueueWorkers(
            connection: consumerConnection, queue: Topology.callControlQueue, count: configuration.workers,
            prefetch: UInt16(configuration.prefetch), logger: logger)
        auth = try await AuthTokens(secret: configuration.authSecret)
    }

    /// The broker and database connections and the operations server: they run beside the
    /// service in its ServiceGroup, started before it and stopped after it.
    public var dependencies: [any Service] {
        [
            Background("amqp publish") { await self.publisher.run() },
            Background("amqp consume") { await self.consumerConnection.run() },
            Background("postgres listen") { await self.listener.run() },
        ]
            + OperationsServer.dependency(
                host: configuration.httpHost, port: configuration.httpPort, logger: logger
            ) { await self.readiness() }
    }

    /// Runs until cancelled or until a graceful shutdown (SIGTERM under a ServiceGroup): then
    /// stops taking requests and finishes the batches in hand. Its connections run as
    /// `dependencies` in the same ServiceGroup.
    public func run() async throws {
        defer {
            stopped.store(true, ordering: .relaxed)
            readyBell.ring()
        }
        if configuration.usesDevelopmentSecret {
            logger.warning("RINGING_AUTH_SECRET is not set: using the development secret, which anybody can mint tokens with")
        }
        try await migrate()
        try await publisher.declareRingingTopology(logger: logger)
        logger.info(
            "call-control ready",
            metadata: ["workers": "\(configuration.workers)", "instance": "\(configuration.instanceName)"])
        try await workers.subscribeAll()
        try await withThrowingTaskGroup(of: Void.self) { work in
            work.addTask {
                try await self.workers.run(
                    batchSize: self.configuration.batchSize,
                    recover: { try await self.publisher.declareRingingTopology(logger: self.logger, remember: false) },
                    handle: { batch, worker in
                        var logger = self.logger
                        logger[metadataKey: "worker"] = "\(worker)"
                        await self.handle(batch, logger: logger)
                    })
            }
            work.addTask { await cancelWhenGracefulShutdown { await self.runRingTimer() } }
            work.addTask { await cancelWhenGracefulShutdown { await self.runOutboxRelay() } }
            work.addTask { await cancelWhenGracefulShutdown { await self.runOutboxDeleter() } }
            work.addTask { await cancelWhenGracefulShutdown { await self.forwardDeadlineNotifications() } }
            // Stop taking work on a graceful shutdown (or cancellation); workers then
            // finish what they hold and return.
            work.addTask {
                try? await gracefulShutdown()
                self.logger.info("call-control stopping: no new requests, finishing the ones in hand")
                self.workers.stop()
            }
            ready.store(true, ordering: .relaxed)
            readyBell.ring()
            // A worker that could not subscribe again throws here: the service stops with it.
            while try await work.next() != nil {}
        }
        await deletePublished()
        await pool.close()
    }

    /// For /readyz: migrations done and consumers started, every worker's consumer
    /// subscribed, both broker connections up, and the database answering within two seconds.
    func readiness() async -> Readiness {
        let database = await pool.answers(within: .seconds(2))
        let live = workers.liveCount
        return Readiness(checks: [
            ("migrations and consumers", isReady),
            ("consumers subscribed (\(live) of \(configuration.workers))", live == configuration.workers),
            ("broker (publish)", publisher.isConnected), ("broker (consume)", consumerConnection.isConnected),
            ("broker not blocking publishes (no resource alarm)", !publisher.isBlocked),
            ("database", database),
        ])
    }

    // MARK: - Start

    private func migrate() async throws {
        let applied = try await StartUp.waitingForTheDatabase(to: "apply migrations", logger: logger) {
            try await pool.withConnection { try await Migrations.apply($0) }
        }
        if !applied.isEmpty { logger.notice("database migrated", metadata: ["versions": "\(applied)"]) }
    }

    // MARK: - Requests

    /// One batch: check and authenticate each request, apply the good ones in one
    /// transaction, publish what it committed, then settle every delivery.
    func handle(_ batch: [AMQPDelivery], logger: Logger) async {
        let started = ContinuousClock.now
        logger.trace("requests taken", metadata: ["count": "\(batch.count)"])
        var jobs: [(AMQPDelivery, RequestEnvelope, Job)] = []
        var refused: [(AMQPDelivery, RequestEnvelope?, CallError)] = []
        for delivery in batch {
            let envelope: RequestEnvelope
            do { envelope = try RequestEnvelope(delivery) } catch {
                refused.append((delivery, nil, error))
                continue
            }
            do {
                let request = try RequestParser.parse(routingKey: delivery.routingKey, body: delivery.body)
                let user = try await auth.verify(request.authToken ?? "")
                jobs.append(
                    (
                        delivery, envelope,
                        Job(
                            messageID: envelope.messageID, traceparent: RingingTracing.childTraceparent(of: envelope.traceparent),
                            request: request, user: user)
                    ))
            } catch {
                refused.append((delivery, envelope, error))
            }
        }

        guard let outcomes = await applyWithRetry(jobs.map(\.2), stillHeld: jobs.map(\.0), logger: logger) else { return }

        // Publish: replies (including refusals) and every committed event and notification.
        var messages: [AMQPMessage] = []
        var outboxIDs: [Int64] = []
        for ((_, envelope, job), outcome) in zip(jobs, outcomes) {
            messages.append(contentsOf: outcome.outbox.map { $0.amqpMessage(userID: publisherUser) })
            outboxIDs.append(contentsOf: outcome.outbox.map(\.id))
            if let reply = envelope.reply(outcome.reply) { messages.append(reply) }
            logger.debug(
                "request applied",
                metadata: [
                    "message_id": "\(job.messageID)", "type": "\(job.request.type.rawValue)", "outcome": "\(outcome.code)",
                    "session_id": "\(outcome.sessionID?.uuidString.lowercased() ?? "-")",
                ])
        }
        for (delivery, envelope, error) in refused {
            logger.info(
                "request refused",
                metadata: [
                    "message_id": "\(delivery.properties.messageID ?? "-")", "type": "\(delivery.routingKey)",
                    "error": "\(error)",
                ])
            if let reply = envelope?.reply(WireReply.error(error).encoded())
                ?? RequestEnvelope.bareReply(to: delivery, WireReply.error(error).encoded())
            {
                messages.append(reply)
            }
        }
        guard await publishWithRetry(messages, stillHeld: batch, logger: logger) else { return }
        published.add(outboxIDs)
        for (delivery, _, _) in jobs { delivery.ack() }
        let elapsed = ContinuousClock.now - started
        for ((_, _, job), outcome) in zip(jobs, outcomes) {
            Counter(
                label: "ringing_requests_total", dimensions: [("type", job.request.type.rawValue), ("outcome", outcome.code)]
            ).increment()
            Metrics.Timer(label: "ringing_request_duration_seconds", dimensions: [("type", job.request.type.rawValue)]).record(
                duration: elapsed)
        }
        for (delivery, _, error) in refused {
            let type = RequestType(rawValue: delivery.routingKey)?.rawValue ?? "unknown"
            Counter(label: "ringing_requests_total", dimensions: [("type", type), ("outcome", error.code.rawValue)]).increment()
        }
        for (delivery, _, error) in refused {
            // Malformed requests go to calls.dead-letter; refusals of well-formed ones are answered and done.
            if error.code == .invalidRequest { delivery.reject(requeue: false) } else { delivery.ack() }
        }
    }

    /// Runs the batch's transaction until it commits. A transient failure (database away,
    /// deadlock) is retried with backoff while the deliveries are still held; a conflict that
    /// aborts the batch (two requests racing for one user's active call) is retried one
    /// request per transaction, so each gets its own answer. Returns nil when the deliveries
    /// went stale meanwhile (the broker delivers them again).
    private func applyWithRetry(_ jobs: [Job], stillHeld: [AMQPDelivery], logger: Logger) async -> [JobOutcome]? {
        guard !jobs.isEmpty else { return [] }
        var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
        var oneByOne = false
        while true {
            if stillHeld.contains(where: \.isStale) { return nil }
            do {
                if oneByOne {
                    var outcomes: [JobOutcome] = []
                    for job in jobs { outcomes.append(try await applyAlone(job)) }
                    return outcomes
                }
                // The rows the last batches published go in this transaction.
                let deleting = published.take()
                do {
                    return try await pool.withConnection { connection in
                        try await connection.withTransaction { db in
                            try RequestProcessor.process(db, jobs, deletingPublished: deleting, committing: true)
                        }
                    }
                } catch {
                    published.restore(deleting)
                    throw error
                }
            } catch let error as PostgresError where error.sqlState == .uniqueViolation && !oneByOne {
                oneByOne = true
            } catch {
                // Cancelled (shutting down): leave the deliveries unsettled; the broker gives
                // them to another instance.
                if Task.isCancelled { return nil }
                let delay = backoff.next()
                logger.warning(
                    "applying requests failed; retrying",
                    metadata: ["error": "\(error)", "retry_in": "\(delay)", "requests": "\(jobs.count)"])
                try? await Task.sleep(for: delay)
            }
        }
    }

    /// One request in its own transaction; a lost race for the one-active-call index is
    /// answered `caller_busy` and recorded like any reply.
    private func applyAlone(_ job: Job) async throws -> JobOutcome {
        do {
            return try await pool.withConnection { connection in
                try await connection.withTransaction { db in try RequestProcessor.process(db, [job], committing: true) }[0]
            }
        } catch let error as PostgresError where error.sqlState == .uniqueViolation {
            let outcome = RequestProcessor.failure(CallError(.callerBusy, "user '\(job.user.uid)' is already in another call"))
            try await pool.withConnection { connection in
                try await connection.withTransaction { db in
                    try CallStore.recordProcessed(
                        db,
                        ProcessedRequest(
                            messageID: job.messageID, type: job.request.type.rawValue, actor: job.user.uid,
                            reply: String(decoding: outcome.reply, as: UTF8.self)))
                }
            }
            return outcome
        }
    }

    /// Publishes until every message is confirmed. Gives up only when the deliveries went
    /// stale: the outbox relay then republishes the committed messages and redelivery
    /// answers the requests from the idempotency record.
    private func publishWithRetry(_ messages: [AMQPMessage], stillHeld: [AMQPDelivery], logger: Logger) async -> Bool {
        var backoff = Backoff(initial: .milliseconds(50), maximum: .seconds(5))
        while true {
            do {
                try await publisher.publishAll(messages)
                return true
            } catch {
                if stillHeld.contains(where: \.isStale) || Task.isCancelled { return false }
                let delay = backoff.next()
                logger.warning("publishing failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try? await Task.sleep(for: delay)
            }
        }
    }

    // MARK: - Ring timer

    private func forwardDeadlineNotifications() async {
        for await event in listener.events {
            // A new deadline earlier than the timer's wake-up, or a reconnect after which
            // notifications may have been missed.
            switch event {
            case .listening:
                ringTimer.ring()
            case .notification(let notification):
                let deadline = WireTime.parse(notification.payload)
                if deadlineGate.withLock({ $0.wakes(for: deadline) }) { ringTimer.ring() }
            }
        }
    }

    /// Fires due ring deadlines and the liveness sweep (DESIGN §10), sleeping until the next
    /// deadline or until a new ring deadline is announced. Every instance runs it; `SKIP
    /// LOCKED` hands each call to exactly one of them, and the rules make a second firing a
    /// no-op.
    private func runRingTimer() async {
        var logger = self.logger
        logger[metadataKey: "task"] = "ring-timer"
        let limits = configuration.liveness
        // Heartbeats only move liveness deadlines later, and a new one (a join, an answer) is
        // at least the heartbeat timeout or the maximum duration away: looking this often
        // catches every one on time.
        let longest = min(5, limits.heartbeatTimeout, limits.maximumDuration)
        // The sweep runs when its earliest deadline is due, not on every wake-up (each new
        // ring deadline wakes the timer).
        var sweepAt = ContinuousClock.now
        while !Task.isCancelled {
            var wait: Duration = .milliseconds(Int64(longest * 1000))
            deadlineGate.withLock { $0.awake() }
            do {
                let fired = try await fireDue(logger: logger, what: "ring deadlines") { db, now in
                    try CallStore.lockDueCalls(db, limit: 100).map { call in
                        (call, CallRules.expireIfDue(call, at: now), Self.ringDeadline, call.expiresAt)
                    }
                }
                var swept = 0
                if ContinuousClock.now >= sweepAt {
                    swept = try await fireDue(logger: logger, what: "liveness sweep") { db, now in
                        try CallStore.lockCallsDueForSweep(
                            db, heartbeatTimeout: limits.heartbeatTimeout, maximumDuration: limits.maximumDuration, limit: 100
                        ).map { call in
                            let deadline = CallRules.livenessDeadline(call, limits)
                            return (
                                call, CallRules.sweepIfDue(call, at: now, limits: limits), deadline?.reason.rawValue ?? "",
                                deadline?.at ?? now
                            )
                        }
                    }
                    let next = try await pool.withConnection {
                        try await CallStore.secondsToNextSweep(
                            $0, heartbeatTimeout: limits.heartbeatTimeout, maximumDuration: limits.maximumDuration)
                    }
                    sweepAt = ContinuousClock.now + Self.duration(min(max(0, next ?? longest), longest))
                }
                if fired == 100 || swept == 100 {
                    if swept == 100 { sweepAt = ContinuousClock.now }
                    continue
                }
                let ring = try await pool.withConnection { try await CallStore.secondsToNextDeadline($0) } ?? longest
                wait = min(Self.duration(min(max(0, ring), longest)), max(.zero, sweepAt - ContinuousClock.now))
                wait += .milliseconds(2)
            } catch {
                logger.warning("ring timer failed; retrying", metadata: ["error": "\(error)"])
                wait = .seconds(1)
            }
            let wake = Date() + Double(wait.components.seconds) + Double(wait.components.attoseconds) * 1e-18
            deadlineGate.withLock { $0.willWake(at: wake) }
            await ringTimer.wait(timeout: wait)
        }
    }

    private static func duration(_ seconds: Double) -> Duration { .milliseconds(Int64(seconds * 1000)) }

    private static let ringDeadline = "ring_deadline"

    /// How late a timer acted: the ring timer's metric, and beside it the liveness sweep's
    /// by reason (`connection_lost`, `max_duration`).
    private static func lateness(_ reason: String) -> Metrics.Timer {
        reason == ringDeadline
            ? Metrics.Timer(label: "ringing_ring_timer_lateness_seconds")
            : Metrics.Timer(label: "ringing_liveness_sweep_lateness_seconds", dimensions: [("reason", reason)])
    }

    /// One round of a timer: in one transaction, locks the due calls, applies each one's
    /// decision (with the deadline it was due at, for the lateness metric) and writes the
    /// outbox; then publishes. Returns how many calls were due.
    private func fireDue(
        logger: Logger, what: String,
        _ due:
            @escaping @Sendable (isolated PostgresConnection, Date) throws -> [(
                call: CallSession, decision: CallDecision, reason: String, deadline: Date
            )]
    ) async throws -> Int {
        let outbox = try await pool.withConnection { connection in
            try await connection.withTransaction { db -> ([OutboxMessage], Int) in
                let now = try CallStore.now(db)
                let calls = try due(db, now)
                var writes: [CallWrite] = []
                var messages: [OutboxMessage] = []
                for (call, decision, reason, deadline) in calls where decision.changed {
                    Self.lateness(reason).record(
                        duration: .milliseconds(Int64(max(0, now.timeIntervalSince(deadline)) * 1000)))
                    writes.append(CallWrite(call: decision.call, stored: call))
                    messages.append(contentsOf: try RequestProcessor.messages(for: decision, traceparent: nil))
                }
                // Every due call's change and its messages in one statement, with COMMIT.
                let stored = try CallStore.finishBatch(
                    db, calls: writes, deletingPublished: [], records: [], outbox: messages, committing: true)
                return (stored, calls.count)
            }
        }
        guard !outbox.0.isEmpty else { return outbox.1 }
        logger.debug("\(what) fired", metadata: ["calls": "\(outbox.1)"])
        // If publishing fails here, the relay publishes these rows once the grace period passes.
        try await publisher.publishAll(outbox.0.map { $0.amqpMessage(userID: publisherUser) })
        published.add(outbox.0.map(\.id))
        return outbox.1
    }

    // MARK: - Outbox relay

    /// Deletes published rows that no batch took: when requests stop coming, within a tenth
    /// of a second of their publish (long before the relay's grace period would republish them).
    private func runOutboxDeleter() async {
        while !Task.isCancelled {
            await published.bell.wait(timeout: .seconds(1))
            // A batch that comes meanwhile takes the rows into its transaction.
            try? await Task.sleep(for: .milliseconds(100))
            await deletePublished()
        }
    }

    /// Deletes the published rows in a transaction of their own (at shutdown, or when idle).
    private func deletePublished() async {
        let ids = published.take()
        guard !ids.isEmpty else { return }
        do { try await pool.withConnection { try await CallStore.deleteOutbox($0, ids: ids) } } catch {
            published.restore(ids)
            logger.warning(
                "could not clear published outbox rows; retrying (the relay republishes them after the grace period)",
                metadata: ["error": "\(error)"])
        }
    }

    /// Republishes outbox messages whose publisher died between commit and confirm.
    private func runOutboxRelay() async {
        var logger = self.logger
        logger[metadataKey: "task"] = "outbox-relay"
        var lastCleanup = ContinuousClock.now
        var lastTopologyCheck = ContinuousClock.now
        while !Task.isCancelled {
            do {
                let claimed = try await pool.withConnection { connection in
                    try await CallStore.claimStaleOutbox(
                        connection, grace: configuration.outboxGrace, lease: .seconds(30), limit: 500)
                }
                if !claimed.isEmpty {
                    logger.notice(
                        "republishing outbox messages left by a stopped publisher", metadata: ["count": "\(claimed.count)"])
                    try await publisher.publishAll(claimed.map { $0.amqpMessage(userID: publisherUser) })
                    try await pool.withConnection { try await CallStore.deleteOutbox($0, ids: claimed.map(\.id)) }
                    if claimed.count == 500 { continue }
                }
                let figures = try await pool.withConnection { try await CallStore.operationalFigures($0) }
                Gauge(label: "ringing_ring_timers_pending").record(figures.ringTimersPending)
                Gauge(label: "ringing_active_calls").record(figures.activeCalls)
                Gauge(label: "ringing_outbox_backlog").record(figures.outboxBacklog)
                Gauge(label: "ringing_outbox_oldest_age_seconds").record(figures.outboxOldestSeconds)
                Gauge(label: "ringing_amqp_reconnects", dimensions: [("connection", "publish")]).record(publisher.reconnectCount)
                Gauge(label: "ringing_amqp_reconnects", dimensions: [("connection", "consume")]).record(
                    consumerConnection.reconnectCount)
                if ContinuousClock.now - lastCleanup > .seconds(600) {
                    lastCleanup = ContinuousClock.now
                    try await pool.query("DELETE FROM processed_requests WHERE processed_at < now() - interval '1 day'")
                }
                // The topology is call-control's (DESIGN §9): a queue deleted under the other
                // services (token-service, push-notifier) is back within 15 s, and their
                // workers subscribe again.
                if ContinuousClock.now - lastTopologyCheck > .seconds(15) {
                    lastTopologyCheck = ContinuousClock.now
                    try await publisher.declare(RingingTopology.declaration, remember: false)
                }
            } catch {
                logger.warning("outbox relay failed; retrying", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: .seconds(1))
        }
    }
}

/// Outbox rows whose messages the broker confirmed, waiting to be deleted. The next batch's
/// transaction deletes them (one statement there instead of a transaction of its own); the
/// deleter takes what no batch took. Rows lost here by a crash are republished by the relay,
/// and consumers drop the duplicate by `event_id`.
final class PublishedOutbox: Sendable {
    private let ids = Mutex<[Int64]>([])
    /// Rung when rows are added.
    let bell = Doorbell()

    func add(_ new: [Int64]) {
        guard !new.isEmpty else { return }
        ids.withLock { $0.append(contentsOf: new) }
        bell.ring()
    }

    /// Takes every row waiting.
    func take() -> [Int64] {
        ids.withLock { ids in
            defer { ids.removeAll() }
            return ids
        }
    }

    /// Gives back rows whose delete did not commit.
    func restore(_ back: [Int64]) { add(back) }
}
