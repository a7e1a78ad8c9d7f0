// The load generator's side of the broker: requests published with confirms and answered
// through direct reply-to, and one queue receiving every notification of the bench's users,
// sorted into a mailbox that flows wait on.
public import AMQPClient
public import CallRules
public import Foundation
public import Logging
public import RingingContract
import Synchronization

/// A reply as the load generator sees it: what the flows check of it, decoded without the
/// rest (participants, times), which would cost the bench more CPU than the flows need.
public struct BenchReply: Sendable {
    public var reply: Answer
    /// When the reply came off the socket (before decoding).
    public var arrivedAt: ContinuousClock.Instant

    public struct Answer: Decodable, Sendable {
        public var ok: Bool
        public var call: BenchCall?
        public var token: String?
        public var error: WireError?
    }
}

/// What the flows read of a call: which it is, its status and its ring deadline.
public struct BenchCall: Decodable, Sendable {
    public var sessionID: UUID
    public var status: CallStatus
    public var expiresAt: Date

    enum CodingKeys: String, CodingKey {
        case status
        case sessionID = "session_id"
        case expiresAt = "expires_at"
    }
}

/// A notification taken from the bench's queue.
public struct Arrival: Sendable {
    public var name: String
    public var recipient: String
    public var call: BenchCall
    public var arrivedAt: ContinuousClock.Instant
    /// The wall clock at arrival, to compare with server times such as `expires_at`.
    public var arrivedWallClock: Date

    /// A notification's body as the bench decodes it.
    struct Body: Decodable {
        var call: BenchCall
    }
}

/// Where the bench sends requests and where it listens for notifications.
public struct BenchRoute: Sendable {
    public var commandsExchange: String
    public var notificationsExchange: String
    /// Notifications are decoded and kept for flows only when true (the floor's are drained).
    public var keepsNotifications: Bool

    public static let ringing = BenchRoute(
        commandsExchange: Topology.commandsExchange, notificationsExchange: Topology.notificationsExchange,
        keepsNotifications: true)
}

public final class BenchBroker: Sendable {
    let route: BenchRoute
    let userPrefix: String
    let publisher: AMQPConnection
    let listener: AMQPConnection
    let logger: Logger
    private let replies = Mutex<[String: (slot: Slot<BenchReply>, deadline: ContinuousClock.Instant)]>([:])
    private let mailbox = Mutex(Mailbox())
    private let readySlot = Slot<Void>()

    struct Waiter {
        var name: String
        var session: UUID?
        var slot: Slot<Arrival>
        var deadline: ContinuousClock.Instant
    }

    struct Mailbox {
        var arrived: [String: [Arrival]] = [:]
        var waiting: [String: [Waiter]] = [:]
    }

    /// Notifications nobody in a flow waits for; dropped on arrival.
    static let ignored: Set<String> = ["incoming_call.answered_elsewhere", "incoming_call.rejected_elsewhere"]

    public init(url: AMQPURL, route: BenchRoute, userPrefix: String, logger: Logger) {
        self.route = route
        self.userPrefix = userPrefix
        self.logger = logger
        var publishing = AMQPConfiguration(url: url, connectionName: "ringing-bench \(userPrefix) requests")
        publishing.confirmWindow = 4000
        publisher = AMQPConnection(configuration: publishing, logger: logger)
        listener = AMQPConnection(
            configuration: AMQPConfiguration(url: url, connectionName: "ringing-bench \(userPrefix) notifications"),
            logger: logger)
    }

    /// Runs the connections, the consumers and the deadline sweep until cancelled.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.publisher.run() }
            group.addTask { await self.listener.run() }
            defer { group.cancelAll() }
            do {
                let replies = try await publisher.consumeDirectReplies()
                let queue = "ringing-bench.\(userPrefix)"
                try await listener.declare(
                    AMQPTopology(
                        exchanges: [AMQPExchange(route.notificationsExchange, kind: .topic)],
                        queues: [AMQPQueue(queue, durable: false, exclusive: true, autoDelete: true)],
                        bindings: [AMQPBinding(queue: queue, exchange: route.notificationsExchange, routingKey: "user.*.#")]))
                let notifications = try await listener.consume(queue: queue, prefetch: 2000)
                group.addTask {
                    while let batch = try await replies.nextBatch(max: 500) { self.receiveReplies(batch) }
                }
                group.addTask {
                    while let batch = try await notifications.nextBatch(max: 500) {
                        self.receiveNotifications(batch)
                        batch.last?.ackUpTo()
                    }
                }
                group.addTask { await self.sweepDeadlines() }
                readySlot.complete(.success(()))
            } catch {
                readySlot.complete(.failure(error))
                throw error
            }
            try await group.next()
        }
    }

    public func waitUntilReady() async throws {
        try await readySlot.value()
    }

    // MARK: - Requests

    /// Publishes a request (persistent, confirmed) and waits for its reply. Throws
    /// `WaitFailure` with code `timeout` or `publish_failed`.
    public func request(routingKey: String, body: Data, timeout: Duration = .seconds(10)) async throws -> BenchReply {
        let id = UUID().uuidString
        let slot = Slot<BenchReply>()
        replies.withLock { $0[id] = (slot, .now + timeout) }
        let message = AMQPMessage(
            exchange: route.commandsExchange, routingKey: routingKey, body: body,
            properties: AMQPProperties(
                contentType: "application/json", deliveryMode: .persistent, correlationID: id,
                replyTo: AMQPConnection.directReplyTo, messageID: id))
        do {
            try await publisher.publishRetryingRefusals(message)
        } catch {
            replies.withLock { _ = $0.removeValue(forKey: id) }
            throw WaitFailure(code: "publish_failed", detail: "\(routingKey): \(error)")
        }
        return try await slot.value()
    }

    private func receiveReplies(_ batch: [AMQPDelivery]) {
        let now = ContinuousClock.now
        for delivery in batch {
            guard let id = delivery.properties.correlationID,
                let slot = replies.withLock({ $0.removeValue(forKey: id)?.slot })
            else { continue }
            do {
                let reply = try WireTime.decoder.decode(BenchReply.Answer.self, from: delivery.body)
                guard reply.ok || reply.error != nil else {
                    slot.complete(.failure(WaitFailure(code: "bad_reply", detail: "ok is false without an error")))
                    continue
                }
                slot.complete(.success(BenchReply(reply: reply, arrivedAt: now)))
            } catch {
                slot.complete(.failure(WaitFailure(code: "bad_reply", detail: "\(error)")))
            }
        }
    }

    // MARK: - Notifications

    /// Returns a slot that completes with the next `name` notification for `uid` (of
    /// `session`, when given), or fails with `timeout`. Register before sending the request
    /// that causes it; a notification that came earlier is found in the mailbox.
    func expect(_ name: String, for uid: String, session: UUID? = nil, timeout: Duration = .seconds(10)) -> Slot<Arrival> {
        let slot = Slot<Arrival>()
        let found: Arrival? = mailbox.withLock { box in
            if let index = box.arrived[uid]?.firstIndex(where: { Self.matches($0, name, session) }) {
                return box.arrived[uid]!.remove(at: index)
            }
            box.waiting[uid, default: []].append(Waiter(name: name, session: session, slot: slot, deadline: .now + timeout))
            return nil
        }
        if let found { slot.complete(.success(found)) }
        return slot
    }

    private static func matches(_ arrival: Arrival, _ name: String, _ session: UUID?) -> Bool {
        arrival.name == name && (session == nil || arrival.call.sessionID == session)
    }

    private func receiveNotifications(_ batch: [AMQPDelivery]) {
        guard route.keepsNotifications else { return }
        let now = ContinuousClock.now
        let wallClock = Date()
        for delivery in batch {
            // user.<uid>.<name>; the name itself has a dot.
            let parts = delivery.routingKey.split(separator: ".", maxSplits: 2)
            guard parts.count == 3, parts[1].hasPrefix(userPrefix) else { continue }
            let uid = String(parts[1])
            let name = String(parts[2])
            guard !Self.ignored.contains(name),
                let event = try? WireTime.decoder.decode(Arrival.Body.self, from: delivery.body)
            else { continue }
            let arrival = Arrival(name: name, recipient: uid, call: event.call, arrivedAt: now, arrivedWallClock: wallClock)
            let slot: Slot<Arrival>? = mailbox.withLock { box in
                if let index = box.waiting[uid]?.firstIndex(where: { Self.matches(arrival, $0.name, $0.session) }) {
                    return box.waiting[uid]!.remove(at: index).slot
                }
                box.arrived[uid, default: []].append(arrival)
                return nil
            }
            slot?.complete(.success(arrival))
        }
    }

    // MARK: - Deadlines

    /// Fails replies and notifications that did not come in time, and forgets notifications
    /// nobody claimed within a minute.
    private func sweepDeadlines() async {
        var lastForgetting = ContinuousClock.now
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            let now = ContinuousClock.now
            // Unclaimed notifications (a minute's worth at the rate offered) are combed out every
            // few seconds, not on every sweep: the load generator shares the machine it measures.
            let forgetting = now - lastForgetting >= .seconds(5)
            if forgetting { lastForgetting = now }
            let lateReplies = replies.withLock { pending -> [Slot<BenchReply>] in
                let late = pending.filter { $0.value.deadline < now }
                for key in late.keys { pending.removeValue(forKey: key) }
                return late.values.map(\.slot)
            }
            for slot in lateReplies { slot.complete(.failure(WaitFailure(code: "timeout", detail: "no reply in time"))) }
            let lateWaiters = mailbox.withLock { box -> [Waiter] in
                var late: [Waiter] = []
                for (uid, waiters) in box.waiting where waiters.contains(where: { $0.deadline < now }) {
                    let (expired, live) = waiters.split(by: { $0.deadline < now })
                    late.append(contentsOf: expired)
                    box.waiting[uid] = live.isEmpty ? nil : live
                }
                guard forgetting else { return late }
                for uid in Array(box.arrived.keys) {
                    let live = box.arrived[uid]!.filter { now - $0.arrivedAt < .seconds(60) }
                    box.arrived[uid] = live.isEmpty ? nil : live
                }
                return late
            }
            for waiter in lateWaiters {
                waiter.slot.complete(.failure(WaitFailure(code: "timeout", detail: "no \(waiter.name) notification in time")))
            }
        }
        // Shutting down: nobody is left to answer.
        let pending = replies.withLock { pending in
            defer { pending = [:] }
            return pending.values.map(\.slot)
        }
        for slot in pending { slot.complete(.failure(CancellationError())) }
        let waiters = mailbox.withLock { box in
            defer { box.waiting = [:] }
            return box.waiting.values.flatMap { $0 }
        }
        for waiter in waiters { waiter.slot.complete(.failure(CancellationError())) }
    }
}

extension Array {
    /// The elements for which `predicate` holds, and the others, in order.
    fileprivate func split(by predicate: (Element) -> Bool) -> ([Element], [Element]) {
        var yes: [Element] = []
        var no: [Element] = []
        for element in self { if predicate(element) { yes.append(element) } else { no.append(element) } }
        return (yes, no)
    }
}
