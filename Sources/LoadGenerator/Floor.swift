// The floor: the same broker and database work as Ringing's requests, done by a minimal
// program with no ringing logic. Per request it consumes one message from a quorum queue,
// runs one transaction with the statements call-control runs for that request type
// (against look-alike tables with the same indexes), publishes the same messages with
// confirms, deletes its outbox rows, and acks. Its requests per second say what this
// machine can do at all; Ringing's are reported as a fraction of it.
public import AMQPClient
import Foundation
public import Logging
public import PostgresClient
import RingingContract
import RingingService

public enum Floor {
    static let commandsExchange = "bench.floor.commands"
    static let eventsExchange = "bench.floor.events"
    static let notificationsExchange = "bench.floor.notifications"
    static let queue = "bench.floor.requests"

    public static let route = BenchRoute(
        commandsExchange: commandsExchange, notificationsExchange: notificationsExchange, keepsNotifications: false)

    static let topology = topology(
        commands: commandsExchange, events: eventsExchange, notifications: notificationsExchange, queue: queue)

    /// A floor's broker objects: Ringing's kinds (topic exchanges, a quorum queue of requests).
    static func topology(commands: String, events: String, notifications: String, queue: String) -> AMQPTopology {
        AMQPTopology(
            exchanges: [
                AMQPExchange(commands, kind: .topic), AMQPExchange(events, kind: .topic),
                AMQPExchange(notifications, kind: .topic),
            ],
            queues: [.quorum(queue, arguments: ["x-delivery-limit": .int64(5), "x-overflow": "reject-publish"])],
            bindings: [AMQPBinding(queue: queue, exchange: commands, routingKey: "#")])
    }

    /// Tables shaped like call-control's, with the same keys and indexes.
    static let schema = """
        CREATE TABLE IF NOT EXISTS bench_floor_calls (
            session_id uuid PRIMARY KEY, initiator text NOT NULL, receiver_id text NOT NULL, status text NOT NULL,
            initiated_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, answered_at timestamptz,
            ended_at timestamptz, metadata jsonb NOT NULL DEFAULT '{}', sequence int NOT NULL, ring_pending bool NOT NULL);
        CREATE INDEX IF NOT EXISTS bench_floor_calls_deadline ON bench_floor_calls (expires_at) WHERE ring_pending;
        CREATE INDEX IF NOT EXISTS bench_floor_calls_pair ON bench_floor_calls (initiator, receiver_id) WHERE status = 'initiated';
        CREATE TABLE IF NOT EXISTS bench_floor_participants (
            session_id uuid NOT NULL, uid text NOT NULL, role text NOT NULL, status text NOT NULL,
            joined_at timestamptz, left_at timestamptz, active bool NOT NULL, initiated_at timestamptz NOT NULL,
            PRIMARY KEY (session_id, uid));
        CREATE INDEX IF NOT EXISTS bench_floor_participants_active ON bench_floor_participants (uid) WHERE active;
        CREATE INDEX IF NOT EXISTS bench_floor_participants_history ON bench_floor_participants (uid, initiated_at DESC, session_id DESC);
        CREATE TABLE IF NOT EXISTS bench_floor_processed (
            message_id text PRIMARY KEY, request_type text NOT NULL, actor text NOT NULL, reply text NOT NULL,
            processed_at timestamptz NOT NULL DEFAULT clock_timestamp());
        CREATE INDEX IF NOT EXISTS bench_floor_processed_age ON bench_floor_processed (processed_at);
        CREATE TABLE IF NOT EXISTS bench_floor_outbox (
            id bigserial PRIMARY KEY, exchange text NOT NULL, routing_key text NOT NULL, message_id text NOT NULL,
            body text NOT NULL, created_at timestamptz NOT NULL DEFAULT clock_timestamp());
        """

    /// What one request of a type costs call-control, counted from its code paths
    /// (RequestProcessor, CallStore, TokenService) for 1:1 calls, one request per transaction.
    struct Cost {
        /// Notifications published, besides one event (call.* mutations) and the reply.
        var notifications: [(toCaller: Bool, name: String)]
        /// Participant rows updated (accept: the receiver; reject, cancel, end: both).
        var participantUpdates: Int
    }

    static func cost(_ type: String, status: String?) -> Cost? {
        switch type {
        case RequestType.initiate.rawValue:
            return Cost(notifications: [(false, "incoming_call.received")], participantUpdates: 0)
        case RequestType.ringing.rawValue:
            return Cost(notifications: [(true, "outgoing_call.ringing")], participantUpdates: 1)
        case RequestType.accept.rawValue:
            return Cost(
                notifications: [(true, "outgoing_call.accepted"), (false, "incoming_call.answered_elsewhere")],
                participantUpdates: 1)
        case RequestType.reject.rawValue where status == "cancelled":
            return Cost(notifications: [(false, "incoming_call.canceled")], participantUpdates: 2)
        case RequestType.reject.rawValue:
            return Cost(
                notifications: [(true, "outgoing_call.rejected"), (false, "incoming_call.rejected_elsewhere")],
                participantUpdates: 2)
        case RequestType.end.rawValue:
            return Cost(notifications: [(false, "call.ended")], participantUpdates: 2)
        default:
            return nil
        }
    }

    /// What the floor's requests carry instead of an auth token and a session lookup.
    struct Body: Decodable {
        var sessionID: UUID
        var caller: String
        var receiver: String
        var status: String?

        enum CodingKeys: String, CodingKey {
            case sessionID = "session_id"
            case caller, receiver, status
        }
    }

    /// Bodies of the published messages are padded to the size of Ringing's (a call object).
    static let padding = String(repeating: "x", count: 700)

    /// An event or notification: persistent, confirmed, the size of Ringing's.
    static func message(exchange: String, routingKey: String) -> AMQPMessage {
        AMQPMessage(
            exchange: exchange, routingKey: routingKey, body: Data(#"{"pad":"\#(Floor.padding)"}"#.utf8),
            properties: AMQPProperties(
                contentType: "application/json", deliveryMode: .persistent, messageID: UUID().uuidString, type: routingKey),
            mandatory: false)
    }

    /// The reply to a request that asked for one.
    static func replyMessage(_ delivery: AMQPDelivery, _ reply: String) -> [AMQPMessage] {
        guard let replyTo = delivery.properties.replyTo else { return [] }
        return [
            AMQPMessage(
                exchange: "", routingKey: replyTo, body: Data(reply.utf8),
                properties: AMQPProperties(contentType: "application/json", correlationID: delivery.properties.correlationID),
                mandatory: false)
        ]
    }
}

/// The floor program: `workers` consumers, each handling one request at a time, and the
/// physical floor's consumers, each a batch at a time.
public final class FloorWorker: Sendable {
    let amqp: AMQPURL
    let database: PostgresConfiguration
    let workers: Int
    let logger: Logger

    public init(amqp: AMQPURL, database: PostgresConfiguration, workers: Int, logger: Logger) {
        self.amqp = amqp
        self.database = database
        self.workers = workers
        self.logger = logger
    }

    /// Creates the floor's exchanges, queue and tables (emptied), then serves until cancelled;
    /// `ready` is called once every consumer runs.
    public func run(ready: @Sendable () -> Void) async throws {
        var publishing = AMQPConfiguration(url: amqp, connectionName: "ringing-bench floor publish")
        publishing.confirmWindow = 4000
        let publisher = AMQPConnection(configuration: publishing, logger: logger)
        let consuming = AMQPConnection(
            configuration: AMQPConfiguration(url: amqp, connectionName: "ringing-bench floor consume"), logger: logger)
        let pool = PostgresPool(configuration: database, size: workers, acquireTimeout: .seconds(30), logger: logger)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await publisher.run() }
            group.addTask { await consuming.run() }
            defer { group.cancelAll() }
            try await publisher.declare(Floor.topology)
            try await publisher.declare(PhysicalFloor.topology)
            try await pool.withConnection { db in
                try await db.executeScript(Floor.schema)
                try await db.executeScript(
                    "TRUNCATE bench_floor_calls, bench_floor_participants, bench_floor_processed, bench_floor_outbox")
            }
            for _ in 0..<workers {
                let consumer = try await consuming.consume(queue: Floor.queue, prefetch: 1)
                group.addTask {
                    for try await delivery in consumer {
                        try await self.handle(delivery, publisher: publisher, pool: pool)
                    }
                }
            }
            for _ in 0..<PhysicalFloor.consumers {
                let consumer = try await consuming.consume(queue: PhysicalFloor.queue, prefetch: PhysicalFloor.prefetch)
                group.addTask {
                    try await PhysicalFloor.serve(consumer, publisher: publisher, pool: pool)
                }
            }
            ready()
            try await group.next()
        }
        await pool.close()
    }

    private func handle(_ delivery: AMQPDelivery, publisher: AMQPConnection, pool: PostgresPool) async throws {
        let type = delivery.routingKey
        guard let body = try? JSONDecoder().decode(Floor.Body.self, from: delivery.body) else {
            delivery.reject(requeue: false)
            return
        }
        let messageID = delivery.properties.messageID ?? UUID().uuidString
        let reply = #"{"ok":true,"pad":"\#(Floor.padding)"}"#
        var messages: [AMQPMessage] = []
        if type == RequestType.generateToken.rawValue {
            // The token service: the call and its participants, read outside a transaction.
            _ = try await pool.query(
                "SELECT session_id, initiator, status FROM bench_floor_calls WHERE session_id = \(body.sessionID)")
            _ = try await pool.query(
                "SELECT uid, role, status FROM bench_floor_participants WHERE session_id = \(body.sessionID)")
        } else if let cost = Floor.cost(type, status: body.status) {
            let outbox: [(exchange: String, routingKey: String)] =
                [(Floor.eventsExchange, type)]
                + cost.notifications.map { notification in
                    (
                        Floor.notificationsExchange,
                        "user.\(notification.toCaller ? body.caller : body.receiver).\(notification.name)"
                    )
                }
            let ids = try await pool.withConnection { connection in
                try await connection.withTransaction { db in
                    try Self.statements(
                        db, type: type, body: body, cost: cost, messageID: messageID, outbox: outbox, reply: reply)
                }
            }
            for (exchange, routingKey) in outbox {
                messages.append(Floor.message(exchange: exchange, routingKey: routingKey))
            }
            messages.append(contentsOf: Floor.replyMessage(delivery, reply))
            try await publisher.publishAll(messages)
            _ = try await pool.query("DELETE FROM bench_floor_outbox WHERE id = ANY(\(ids))")
            delivery.ack()
            return
        }
        try await publisher.publishAll(Floor.replyMessage(delivery, reply))
        delivery.ack()
    }

    /// The statements of one call.* request, in call-control's order.
    private static func statements(
        _ db: isolated PostgresConnection, type: String, body: Floor.Body, cost: Floor.Cost, messageID: String,
        outbox: [(exchange: String, routingKey: String)], reply: String
    ) throws -> [Int] {
        let id = body.sessionID
        _ = try db.query("SELECT clock_timestamp()")
        _ = try db.query(
            "SELECT message_id, request_type, actor, reply FROM bench_floor_processed WHERE message_id = ANY(\([messageID]))")
        if type == RequestType.initiate.rawValue {
            let pair = [body.caller, body.receiver].sorted().joined(separator: "\u{1}")
            _ = try db.query("SELECT pg_advisory_xact_lock(hashtextextended(\(pair), 0))")
            _ = try db.query(
                """
                SELECT session_id, status FROM bench_floor_calls WHERE initiator = \(body.receiver) AND receiver_id = \(body.caller)
                AND status = 'initiated' ORDER BY initiated_at DESC LIMIT 1 FOR UPDATE
                """)
            _ = try db.query(
                "SELECT uid FROM bench_floor_participants WHERE active AND uid = ANY(\([body.caller, body.receiver]))")
            _ = try db.query(
                """
                INSERT INTO bench_floor_calls (session_id, initiator, receiver_id, status, initiated_at, expires_at, sequence, ring_pending)
                VALUES (\(id), \(body.caller), \(body.receiver), 'initiated', clock_timestamp(), clock_timestamp() + interval '45 s', 1, true)
                """)
            _ = try db.query(
                """
                INSERT INTO bench_floor_participants (session_id, uid, role, status, active, initiated_at)
                VALUES (\(id), \(body.caller), 'initiator', 'accepted', true, clock_timestamp()),
                       (\(id), \(body.receiver), 'receiver', 'ringing', false, clock_timestamp())
                """)
        } else {
            _ = try db.query(
                "SELECT session_id, initiator, receiver_id, status, sequence FROM bench_floor_calls WHERE session_id = \(id) FOR UPDATE"
            )
            _ = try db.query(
                "SELECT session_id, uid, role, status, joined_at, left_at FROM bench_floor_participants WHERE session_id = \(id)")
            _ = try db.query(
                "UPDATE bench_floor_calls SET status = \(type), sequence = sequence + 1, ring_pending = false WHERE session_id = \(id)"
            )
            for uid in [body.receiver, body.caller].prefix(cost.participantUpdates) {
                _ = try db.query(
                    "UPDATE bench_floor_participants SET status = \(type), active = false WHERE session_id = \(id) AND uid = \(uid)"
                )
            }
        }
        if type != RequestType.initiate.rawValue {
            // Every request naming a call refreshes the actor's liveness (CallStore.touch).
            _ = try db.query(
                """
                UPDATE bench_floor_participants SET joined_at = greatest(joined_at, clock_timestamp())
                WHERE session_id = \(id) AND uid = \(body.caller) AND status = 'accepted' AND joined_at IS NOT NULL
                """)
        }
        var insert = PostgresQuery.StringInterpolation(literalCapacity: 200, interpolationCount: outbox.count * 4)
        insert.appendLiteral("INSERT INTO bench_floor_outbox (exchange, routing_key, message_id, body) VALUES ")
        for (index, message) in outbox.enumerated() {
            insert.appendLiteral(index == 0 ? "(" : ", (")
            insert.appendInterpolation(message.exchange)
            insert.appendLiteral(", ")
            insert.appendInterpolation(message.routingKey)
            insert.appendLiteral(", ")
            insert.appendInterpolation("\(messageID):\(index)")
            insert.appendLiteral(", ")
            insert.appendInterpolation(Floor.padding)
            insert.appendLiteral(")")
        }
        insert.appendLiteral(" RETURNING id")
        let ids = try db.query(PostgresQuery(stringInterpolation: insert)).map { try $0.decode(Int.self, at: 0) }
        _ = try db.query(
            "INSERT INTO bench_floor_processed (message_id, request_type, actor, reply) VALUES (\(messageID), \(type), \(body.caller), \(reply))"
        )
        return ids
    }

}

/// The floor's flows: the same request sequence as Ringing's, each request waiting for its
/// reply, without notifications to wait for (there is no logic to produce them).
struct FloorFlows: FlowDriver {
    let broker: BenchBroker
    /// As in `RingingFlows`: a comparison without ring receipts leaves them out of the floors too,
    /// so that both sides of a ratio carry the same requests.
    var ringReceipts = true

    func run(_ kind: FlowKind, _ pair: Pair, recorder: Recorder, release: @Sendable () -> Void) async -> Bool {
        defer { release() }
        let body =
            #"{"session_id":"\#(UUID().uuidString.lowercased())","caller":"\#(pair.caller.uid)","receiver":"\#(pair.receiver.uid)""#
        do {
            _ = try await broker.send(.initiate, body + "}", recorder: recorder)
            switch kind {
            case .answered:
                if ringReceipts { _ = try await broker.send(.ringing, body + "}", recorder: recorder) }
                _ = try await broker.send(.accept, body + "}", recorder: recorder)
                async let callerToken = broker.send(.generateToken, body + "}", recorder: recorder)
                async let receiverToken = broker.send(.generateToken, body + "}", recorder: recorder)
                _ = try await (callerToken, receiverToken)
                _ = try await broker.send(.end, body + "}", recorder: recorder)
            case .rejected:
                _ = try await broker.send(.reject, body + #","status":"rejected"}"#, recorder: recorder)
            case .cancelled:
                _ = try await broker.send(.reject, body + #","status":"cancelled"}"#, recorder: recorder)
            case .unanswered:
                break
            }
            return true
        } catch {
            return false
        }
    }
}
