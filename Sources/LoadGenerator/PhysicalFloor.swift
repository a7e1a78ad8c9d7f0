// The physical floor: the same messages per request through the same kind of broker objects
// (a quorum queue in, topic exchanges out, persistent messages with confirms), and for the
// database only the minimum durable write of a batch: one transaction with one set-based
// statement per table touched (multi-row upserts from arrays), no statement per request.
// It has no rules, no locks and no reads, so it bounds from above what any design of
// call-control could reach on this machine; Ringing's targets are set against it.
import AMQPClient
import Foundation
import PostgresClient
import RingingContract

public enum PhysicalFloor {
    static let commandsExchange = "bench.floor-physical.commands"
    static let eventsExchange = "bench.floor-physical.events"
    static let notificationsExchange = "bench.floor-physical.notifications"
    static let queue = "bench.floor-physical.requests"
    /// Deliveries taken per transaction, and held unacknowledged per consumer.
    static let batchSize = 32
    static let prefetch: UInt16 = 64
    static let consumers = 4

    public static let route = BenchRoute(
        commandsExchange: commandsExchange, notificationsExchange: notificationsExchange, keepsNotifications: false)

    static let topology = Floor.topology(
        commands: commandsExchange, events: eventsExchange, notifications: notificationsExchange, queue: queue)

    /// One request's share of a batch's writes.
    struct Row {
        var type: String
        var body: Floor.Body
        var messageID: String
        var outbox: [(exchange: String, routingKey: String)]
    }

    /// Serves one consumer: a batch at a time, its outbox rows deleted in the next batch's
    /// transaction (as call-control does).
    static func serve(
        _ consumer: AMQPConsumer, publisher: AMQPConnection, pool: PostgresPool
    ) async throws {
        var published: [Int] = []
        while let batch = try await consumer.nextBatch(max: batchSize) {
            published = try await handle(batch, deleting: published, publisher: publisher, pool: pool)
        }
    }

    private static func handle(
        _ batch: [AMQPDelivery], deleting published: [Int], publisher: AMQPConnection, pool: PostgresPool
    ) async throws -> [Int] {
        let reply = #"{"ok":true,"pad":"\#(Floor.padding)"}"#
        var rows: [Row] = []
        var tokenCalls: [UUID] = []
        var replies: [AMQPMessage] = []
        for delivery in batch {
            guard let body = try? JSONDecoder().decode(Floor.Body.self, from: delivery.body) else {
                delivery.reject(requeue: false)
                continue
            }
            let type = delivery.routingKey
            if type == RequestType.generateToken.rawValue {
                tokenCalls.append(body.sessionID)
            } else if let cost = Floor.cost(type, status: body.status) {
                rows.append(
                    Row(
                        type: type, body: body, messageID: delivery.properties.messageID ?? UUID().uuidString,
                        outbox: [(eventsExchange, type)]
                            + cost.notifications.map { notification in
                                (
                                    notificationsExchange,
                                    "user.\(notification.toCaller ? body.caller : body.receiver).\(notification.name)"
                                )
                            }))
            }
            replies.append(contentsOf: Floor.replyMessage(delivery, reply))
        }
        if !tokenCalls.isEmpty {
            // The token service: the batch's calls with their participants, one read.
            _ = try await pool.query(
                """
                SELECT c.session_id, c.initiator, c.status, p.uid, p.role, p.status FROM bench_floor_calls c
                LEFT JOIN bench_floor_participants p ON p.session_id = c.session_id WHERE c.session_id = ANY(\(tokenCalls))
                """)
        }
        var ids: [Int] = []
        if !rows.isEmpty || !published.isEmpty {
            let writes = rows
            ids = try await pool.withConnection { connection in
                try await connection.withTransaction { db in try write(db, writes, reply: reply, deleting: published) }
            }
        }
        var messages: [AMQPMessage] = []
        for row in rows {
            for (exchange, routingKey) in row.outbox {
                messages.append(Floor.message(exchange: exchange, routingKey: routingKey))
            }
        }
        try await publisher.publishAll(messages + replies)
        for delivery in batch { delivery.ack() }
        return ids
    }

    /// One statement per table: the calls and the participants upserted from arrays (the last
    /// change of a call in the batch wins), the processed requests and the outbox inserted,
    /// the previous batch's published outbox rows deleted.
    private static func write(_ db: isolated PostgresConnection, _ rows: [Row], reply: String, deleting published: [Int])
        throws -> [Int]
    {
        var calls: [UUID: Row] = [:]
        var participants: [String: (UUID, String, String, String, Bool)] = [:]
        for row in rows {
            calls[row.body.sessionID] = row
            let id = row.body.sessionID
            let initiate = row.type == RequestType.initiate.rawValue
            participants["\(id)|\(row.body.caller)"] = (
                id, row.body.caller, "initiator", initiate ? "accepted" : row.type, initiate
            )
            participants["\(id)|\(row.body.receiver)"] = (
                id, row.body.receiver, "receiver", initiate ? "ringing" : row.type, false
            )
        }
        let callRows = Array(calls.values)
        if !callRows.isEmpty {
            try db.query(
                """
                INSERT INTO bench_floor_calls (session_id, initiator, receiver_id, status, initiated_at, expires_at, sequence, ring_pending)
                SELECT s, i, r, st, clock_timestamp(), clock_timestamp() + interval '45 s', 1, st = 'call.initiate'
                FROM unnest(\(callRows.map(\.body.sessionID))::uuid[], \(callRows.map(\.body.caller))::text[],
                            \(callRows.map(\.body.receiver))::text[], \(callRows.map(\.type))::text[]) AS u(s, i, r, st)
                ON CONFLICT (session_id) DO UPDATE SET status = excluded.status, sequence = bench_floor_calls.sequence + 1,
                    ring_pending = false, answered_at = clock_timestamp()
                """)
        }
        let parts = Array(participants.values)
        if !parts.isEmpty {
            try db.query(
                """
                INSERT INTO bench_floor_participants (session_id, uid, role, status, active, initiated_at)
                SELECT s, uid, role, st, act, clock_timestamp()
                FROM unnest(\(parts.map(\.0))::uuid[], \(parts.map(\.1))::text[], \(parts.map(\.2))::text[],
                            \(parts.map(\.3))::text[], \(parts.map(\.4))::bool[]) AS u(s, uid, role, st, act)
                ON CONFLICT (session_id, uid) DO UPDATE SET status = excluded.status, active = excluded.active,
                    joined_at = clock_timestamp()
                """)
        }
        if !rows.isEmpty {
            try db.query(
                """
                INSERT INTO bench_floor_processed (message_id, request_type, actor, reply)
                SELECT m, t, a, \(reply) FROM unnest(\(rows.map(\.messageID))::text[], \(rows.map(\.type))::text[],
                                                 \(rows.map(\.body.caller))::text[]) AS u(m, t, a)
                ON CONFLICT DO NOTHING
                """)
        }
        let outbox = rows.flatMap { row in row.outbox.enumerated().map { (row.messageID + ":\($0.offset)", $0.element) } }
        return try db.query(
            """
            WITH gone AS (DELETE FROM bench_floor_outbox WHERE id = ANY(\(published)))
            INSERT INTO bench_floor_outbox (exchange, routing_key, message_id, body)
            SELECT e, k, m, \(Floor.padding) FROM unnest(\(outbox.map(\.1.exchange))::text[], \(outbox.map(\.1.routingKey))::text[],
                                                    \(outbox.map(\.0))::text[]) AS u(e, k, m)
            RETURNING id
            """
        ).map { try $0.decode(Int.self, at: 0) }
    }
}
