// Reading and writing call sessions, idempotency records, groups and the outbox. Every
// function runs inside the caller's transaction on one connection.
public import CallRules
public import Foundation
import Metrics
public import PostgresClient
public import RingingContract

/// A message written to the outbox with the change that caused it.
public struct OutboxMessage: Sendable, Hashable {
    public var id: Int64
    public var exchange: String
    public var routingKey: String
    public var messageID: String
    public var traceparent: String?
    public var body: String

    public init(id: Int64 = 0, exchange: String, routingKey: String, messageID: String, traceparent: String?, body: String) {
        self.id = id
        self.exchange = exchange
        self.routingKey = routingKey
        self.messageID = messageID
        self.traceparent = traceparent
        self.body = body
    }
}

/// What makes a request the same request again: the acting user and the `message_id`.
public struct IdempotencyKey: Sendable, Hashable {
    public var actor: String
    public var messageID: String

    public init(actor: String, messageID: String) {
        self.actor = actor
        self.messageID = messageID
    }
}

/// A request recorded as processed, with the reply it got.
public struct ProcessedRequest: Sendable, Hashable {
    public var messageID: String
    public var type: String
    public var actor: String
    public var reply: String

    public init(messageID: String, type: String, actor: String, reply: String) {
        self.messageID = messageID
        self.type = type
        self.actor = actor
        self.reply = reply
    }
}

public enum CallStore {
    // MARK: - Time and idempotency

    /// The database's clock: every instance agrees on it, so deadlines do not depend on
    /// which machine looks.
    public static func now(_ db: isolated PostgresConnection) throws -> Date {
        try db.query("SELECT clock_timestamp()")[0].decode(Date.self, at: 0)
    }

    public static func recordProcessed(_ db: isolated PostgresConnection, _ request: ProcessedRequest) throws {
        try recordProcessed(db, [request])
    }

    /// Records the replies of a batch in one statement.
    public static func recordProcessed(_ db: isolated PostgresConnection, _ requests: [ProcessedRequest]) throws {
        guard !requests.isEmpty else { return }
        try db.query(
            """
            INSERT INTO processed_requests (message_id, request_type, actor, reply)
            SELECT * FROM unnest(\(requests.map(\.messageID))::text[], \(requests.map(\.type))::text[],
                                 \(requests.map(\.actor))::text[], \(requests.map(\.reply))::text[])
            """)
    }

    // MARK: - Calls

    static let callColumns: StaticString = """
        session_id, initiator, receiver_id, receiver_type, call_type, status, initiated_at, expires_at, \
        answered_at, ended_at, duration_s, ended_by, metadata::text, sequence, end_reason
        """
    static let callColumnsOfC: StaticString = """
        c.session_id, c.initiator, c.receiver_id, c.receiver_type, c.call_type, c.status, c.initiated_at, c.expires_at, \
        c.answered_at, c.ended_at, c.duration_s, c.ended_by, c.metadata::text, c.sequence, c.end_reason
        """

    /// Loads a call and takes its row lock until the transaction ends: requests on one call
    /// are applied one after another, whichever instance takes them.
    public static func lockCall(_ db: isolated PostgresConnection, _ id: UUID) throws -> CallSession? {
        try loadCalls(db, try db.query("SELECT \(fragment: callColumns) FROM calls WHERE session_id = \(id) FOR UPDATE")).first
    }

    /// A call without locking it, read in one statement.
    public static func loadCall(_ db: isolated PostgresConnection, _ id: UUID) throws -> CallSession? {
        try readCalls(db, [id])[id]
    }

    /// The receiver's ringing 1:1 call to the initiator (glare), locked.
    public static func lockRingingCall(_ db: isolated PostgresConnection, from initiator: String, to receiver: String) throws
        -> CallSession?
    {
        try loadCalls(
            db,
            try db.query(
                """
                SELECT \(fragment: callColumns) FROM calls
                WHERE initiator = \(initiator) AND receiver_id = \(receiver) AND receiver_type = 'user' AND status = 'initiated'
                ORDER BY initiated_at DESC LIMIT 1 FOR UPDATE
                """)
        ).first
    }

    /// Serialises initiates between the same two users (in either direction), so that glare
    /// is seen even when both press call at the same moment.
    public static func lockPair(_ db: isolated PostgresConnection, _ a: String, _ b: String) throws {
        try db.query("SELECT pg_advisory_xact_lock(hashtextextended(\(pairLockKey(a, b)), 0))")
    }

    /// The advisory lock key of two users, the same in either direction.
    public static func pairLockKey(_ a: String, _ b: String) -> String { a < b ? "\(a)|\(b)" : "\(b)|\(a)" }

    /// Takes the pair locks of a batch's 1:1 initiates in one statement, each key once and in
    /// one order (the keys of `lockPair`, so instances interlock whichever they run). The
    /// statement goes with the transaction's next one (`queryLater`), which runs once the
    /// locks are held; a failure to take them is thrown there.
    public static func lockPairs(_ db: isolated PostgresConnection, _ pairs: [(String, String)]) {
        let keys = Set(pairs.map(pairLockKey)).sorted()
        guard !keys.isEmpty else { return }
        db.queryLater("SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest(\(keys)::text[]) AS k")
    }

    /// Takes the row locks of `ids` in one statement, in session_id order (the sort runs
    /// before the locks are taken), until the transaction ends, together with those of the
    /// 1:1 calls each `from` is still ringing `to` with (the glare candidates of an initiate
    /// from `to` to `from`; take the pairs' locks first, so that no new one can appear). The
    /// statement goes with the next one (`queryLater`): read the calls there
    /// (`readBatch(calls:ringing:)`). A statement that waited for a lock reads other rows from
    /// before the wait; the next statement reads them as they are once the locks are held.
    public static func lockCalls(_ db: isolated PostgresConnection, _ ids: [UUID], ringing: [(from: String, to: String)] = []) {
        guard !ringing.isEmpty else {
            guard !ids.isEmpty else { return }
            db.queryLater("SELECT session_id FROM calls WHERE session_id = ANY(\(ids)) ORDER BY session_id FOR UPDATE")
            return
        }
        db.queryLater(
            """
            SELECT c.session_id FROM calls c
            WHERE c.session_id IN (\(callsOrRinging: ids, ringing))
            ORDER BY c.session_id FOR UPDATE OF c
            """)
    }

    /// The call each of `uids` is active in, for those active in one.
    public static func activeCalls(_ db: isolated PostgresConnection, of uids: [String]) throws -> [String: UUID] {
        guard !uids.isEmpty else { return [:] }
        var result: [String: UUID] = [:]
        for row in try db.query("SELECT uid, session_id FROM call_participants WHERE active AND uid = ANY(\(uids))") {
            result[try row.decode(String.self, at: 0)] = try row.decode(UUID.self, at: 1)
        }
        return result
    }

    public static func activeUsers(_ db: isolated PostgresConnection, among uids: [String]) throws -> Set<String> {
        Set(try activeCalls(db, of: uids).keys)
    }

    /// The user's active call, if any.
    public static func activeCall(_ db: isolated PostgresConnection, of uid: String) throws -> CallSession? {
        try loadCalls(
            db,
            try db.query(
                """
                SELECT \(fragment: callColumnsOfC) FROM calls c JOIN call_participants p ON p.session_id = c.session_id
                WHERE p.uid = \(uid) AND p.active
                """)
        ).first
    }

    /// Every call in which the user now rings (participant `ringing`, call `initiated` or
    /// `ongoing`, deadline not passed) or is in (participant `accepted`, call `initiated` or
    /// `ongoing`): the snapshot a device gets when it connects (`call.live`).
    public static func liveCalls(_ db: isolated PostgresConnection, of uid: String, at now: Date) throws -> [CallSession] {
        try loadCalls(
            db,
            try db.query(
                """
                SELECT \(fragment: callColumnsOfC) FROM call_participants p JOIN calls c ON c.session_id = p.session_id
                WHERE p.uid = \(uid) AND c.status IN ('initiated', 'ongoing')
                  AND (p.status = 'accepted' OR (p.status = 'ringing' AND c.expires_at > \(now)))
                ORDER BY c.initiated_at, c.session_id
                """))
    }

    /// Calls whose ring deadline has passed, locked, skipping those another instance holds.
    public static func lockDueCalls(_ db: isolated PostgresConnection, limit: Int) throws -> [CallSession] {
        try loadCalls(
            db,
            try db.query(
                """
                SELECT \(fragment: callColumns) FROM calls
                WHERE ring_pending AND expires_at <= clock_timestamp()
                ORDER BY expires_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
                """))
    }

    /// Ongoing calls the liveness sweep has to look at (DESIGN §10): an accepted participant
    /// silent for `heartbeatTimeout`, or answered more than `maximumDuration` ago. Locked,
    /// skipping those another instance holds.
    public static func lockCallsDueForSweep(
        _ db: isolated PostgresConnection, heartbeatTimeout: Double, maximumDuration: Double, limit: Int
    ) throws -> [CallSession] {
        try loadCalls(
            db,
            try db.query(
                """
                SELECT \(fragment: callColumns) FROM calls
                WHERE status = 'ongoing' AND session_id IN (
                    SELECT session_id FROM call_participants
                    WHERE status = 'accepted' AND last_seen_at IS NOT NULL
                      AND last_seen_at <= clock_timestamp() - make_interval(secs => \(heartbeatTimeout))
                    UNION
                    SELECT session_id FROM calls
                    WHERE status = 'ongoing' AND answered_at <= clock_timestamp() - make_interval(secs => \(maximumDuration)))
                ORDER BY answered_at LIMIT \(limit) FOR UPDATE SKIP LOCKED
                """))
    }

    /// Seconds until the earliest pending ring deadline (negative when overdue), nil if none.
    public static func secondsToNextDeadline(_ db: isolated PostgresConnection) throws -> Double? {
        try db.query("SELECT extract(epoch FROM min(expires_at) - clock_timestamp())::float8 FROM calls WHERE ring_pending")[0]
            .decode(Double?.self, at: 0)
    }

    /// Seconds until the liveness sweep next has something to do (negative when overdue), nil
    /// if no call is ongoing.
    public static func secondsToNextSweep(
        _ db: isolated PostgresConnection, heartbeatTimeout: Double, maximumDuration: Double
    ) throws -> Double? {
        try db.query(
            """
            SELECT extract(epoch FROM least(
                (SELECT min(last_seen_at) FROM call_participants WHERE status = 'accepted' AND last_seen_at IS NOT NULL)
                    + make_interval(secs => \(heartbeatTimeout)),
                (SELECT min(answered_at) FROM calls WHERE status = 'ongoing') + make_interval(secs => \(maximumDuration))
            ) - clock_timestamp())::float8
            """)[0].decode(Double?.self, at: 0)
    }

    /// Records that an accepted participant of an ongoing call was heard from (a heartbeat,
    /// or a request naming the call). Does nothing for anyone else.
    public static func touch(_ db: isolated PostgresConnection, _ sessionID: UUID, _ uid: String, at time: Date) throws {
        try db.query(
            """
            UPDATE call_participants SET last_seen_at = greatest(last_seen_at, \(time))
            WHERE session_id = \(sessionID) AND uid = \(uid) AND status = 'accepted' AND last_seen_at IS NOT NULL
            """)
    }

    public static func history(_ db: isolated PostgresConnection, of uid: String, _ query: HistoryQuery) throws -> (
        calls: [CallSession], next: HistoryCursor?
    ) {
        let before = query.before
        let status = query.status?.rawValue
        let callType = query.callType?.rawValue
        let role: String? = query.direction.map { $0 == .outgoing ? "initiator" : "receiver" }
        let rows = try db.query(
            """
            SELECT \(fragment: callColumnsOfC) FROM call_participants p JOIN calls c ON c.session_id = p.session_id
            WHERE p.uid = \(uid)
              AND (\(before?.initiatedAt)::timestamptz IS NULL OR (p.initiated_at, p.session_id) < (\(before?.initiatedAt), \(before?.sessionID)))
              AND (\(status)::text IS NULL OR c.status = \(status))
              AND (\(callType)::text IS NULL OR c.call_type = \(callType))
              AND (\(role)::text IS NULL OR p.role = \(role))
            ORDER BY p.initiated_at DESC, p.session_id DESC
            LIMIT \(query.limit + 1)
            """)
        var calls = try loadCalls(db, rows)
        var next: HistoryCursor?
        if calls.count > query.limit {
            calls.removeLast()
            next = calls.last.map { HistoryCursor(initiatedAt: $0.initiatedAt, sessionID: $0.sessionID) }
        }
        return (calls, next)
    }

    // MARK: - Groups

    public static func groupMembers(_ db: isolated PostgresConnection, _ groupID: String) throws -> [String]? {
        let rows = try db.query(
            """
            SELECT g.group_id, m.uid FROM call_groups g LEFT JOIN call_group_members m ON m.group_id = g.group_id
            WHERE g.group_id = \(groupID) ORDER BY m.uid
            """)
        guard !rows.isEmpty else { return nil }
        return try rows.compactMap { try $0.decode(String?.self, at: 1) }
    }

    public static func setGroupMembers(_ db: isolated PostgresConnection, _ groupID: String, members: [String]) throws {
        try db.query(
            """
            INSERT INTO call_groups (group_id, updated_at) VALUES (\(groupID), clock_timestamp())
            ON CONFLICT (group_id) DO UPDATE SET updated_at = excluded.updated_at
            """)
        try db.query("DELETE FROM call_group_members WHERE group_id = \(groupID) AND NOT (uid = ANY(\(members)))")
        try db.query(
            """
            INSERT INTO call_group_members (group_id, uid) SELECT \(groupID), unnest(\(members)::text[]) ON CONFLICT DO NOTHING
            """)
    }

    // MARK: - Outbox

    /// Removes messages whose publish the broker confirmed. A lost delete only means a
    /// duplicate later, which consumers drop by `event_id`, so it need not wait for the disk.
    public static func deleteOutbox(_ db: isolated PostgresConnection, ids: [Int64]) throws {
        guard !ids.isEmpty else { return }
        try db.withTransaction { db in
            try db.query("SET LOCAL synchronous_commit = off")
            try deletePublishedOutbox(db, ids: ids)
        }
    }

    /// Removes published messages inside the caller's transaction (a batch's).
    public static func deletePublishedOutbox(_ db: isolated PostgresConnection, ids: [Int64]) throws {
        guard !ids.isEmpty else { return }
        try db.query("DELETE FROM outbox WHERE id = ANY(\(ids.map { Int($0) }))")
    }

    /// Leases messages that nobody published within `grace` (their publisher died): another
    /// instance skips them for `lease`.
    public static func claimStaleOutbox(_ db: isolated PostgresConnection, grace: Duration, lease: Duration, limit: Int) throws
        -> [OutboxMessage]
    {
        let graceSeconds = Double(grace.components.seconds) + Double(grace.components.attoseconds) / 1e18
        let leaseSeconds = Double(lease.components.seconds) + Double(lease.components.attoseconds) / 1e18
        return try db.query(
            """
            UPDATE outbox SET claimed_until = clock_timestamp() + make_interval(secs => \(leaseSeconds))
            WHERE id IN (
                SELECT id FROM outbox
                WHERE created_at < clock_timestamp() - make_interval(secs => \(graceSeconds))
                  AND (claimed_until IS NULL OR claimed_until < clock_timestamp())
                ORDER BY id LIMIT \(limit) FOR UPDATE SKIP LOCKED)
            RETURNING id, exchange, routing_key, message_id, traceparent, body
            """
        ).map { row in
            let (id, exchange, routingKey, messageID, traceparent, body) = try row.decodeColumns(
                (Int64, String, String, String, String?, String).self)
            return OutboxMessage(
                id: id, exchange: exchange, routingKey: routingKey, messageID: messageID, traceparent: traceparent, body: body)
        }
    }

    /// How many messages wait in the outbox, and the age of the oldest in seconds.
    public static func outboxBacklog(_ db: isolated PostgresConnection) throws -> (count: Int, oldestSeconds: Double) {
        try db.query(
            """
            SELECT count(*)::int8,
                   coalesce(extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox ORDER BY id LIMIT 1)), 0)::float8
            FROM outbox
            """)[0]
            .decodeColumns((Int, Double).self)
    }

    /// Figures for the operations surface: ring timers pending, calls with an active
    /// participant, and the outbox backlog with the age of its oldest message (seconds).
    public static func operationalFigures(_ db: isolated PostgresConnection) throws -> (
        ringTimersPending: Int, activeCalls: Int, outboxBacklog: Int, outboxOldestSeconds: Double
    ) {
        try db.query(
            """
            SELECT (SELECT count(*) FROM calls WHERE ring_pending)::int8,
                   (SELECT count(DISTINCT session_id) FROM call_participants WHERE active)::int8,
                   (SELECT count(*) FROM outbox)::int8,
                   -- The oldest message is the one with the lowest id: one index probe.
                   coalesce(extract(epoch FROM clock_timestamp() - (SELECT created_at FROM outbox ORDER BY id LIMIT 1)), 0)::float8
            """)[0].decodeColumns((Int, Int, Int, Double).self)
    }

    // MARK: - Loading

    private static func loadCalls(_ db: isolated PostgresConnection, _ rows: PostgresRows) throws -> [CallSession] {
        guard !rows.isEmpty else { return [] }
        var calls = try rows.map(decodeCall)
        let ids = calls.map(\.sessionID)
        var participants: [UUID: [Participant]] = [:]
        for row in try db.query(
            """
            SELECT session_id, uid, role, status, joined_at, left_at, rang_at, left_reason, last_seen_at FROM call_participants
            WHERE session_id = ANY(\(ids)) ORDER BY session_id, role DESC, uid
            """)
        {
            let id = try row.decode(UUID.self, at: 0)
            participants[id, default: []].append(try decodeParticipant(row, from: 1, of: id))
        }
        for index in calls.indices { calls[index].participants = inOrder(participants[calls[index].sessionID] ?? []) }
        return calls
    }

    /// Reads calls with their participants in one statement (one snapshot), without locks:
    /// for readers that need no row lock (`call.get`, the token service).
    public static func readCalls(_ db: isolated PostgresConnection, _ ids: [UUID]) throws -> [UUID: CallSession] {
        guard !ids.isEmpty else { return [:] }
        var calls: [UUID: CallSession] = [:]
        for row in try db.query(
            """
            SELECT \(fragment: callColumnsOfC),
                   p.uid, p.role, p.status, p.joined_at, p.left_at, p.rang_at, p.left_reason, p.last_seen_at
            FROM calls c LEFT JOIN call_participants p ON p.session_id = c.session_id
            WHERE c.session_id = ANY(\(ids))
            """)
        {
            let id = try row.decode(UUID.self, at: 0)
            if calls[id] == nil { calls[id] = try decodeCall(row) }
            if try row.decode(String?.self, at: 15) != nil {
                calls[id]!.participants.append(try decodeParticipant(row, from: 15, of: id))
            }
        }
        for id in calls.keys { calls[id]!.participants = inOrder(calls[id]!.participants) }
        return calls
    }

    /// What a batch reads after taking its locks, in one statement (one snapshot): the
    /// database's clock, the requests of `keys` already applied (by (`sub`, `message_id`), the
    /// idempotency key of DESIGN §2, each looked up as a pair in the primary key), the
    /// calls `ids` with their participants, and the call each of `users` is active in.
    /// `calls` is nil when one of them does not read back (`undecodable`): the batch then
    /// reads each call with its own request, which answers `unavailable` alone.
    public struct BatchRead: Sendable {
        public var now: Date
        public var processed: [IdempotencyKey: ProcessedRequest]
        public var calls: [UUID: CallSession]?
        public var undecodable: StoredValueError?
        public var activeCalls: [String: UUID]
    }

    /// Reads, in one statement, the clock, the idempotency records of `keys`, the calls `ids`
    /// and the 1:1 calls each `from` is ringing `to` with (those `lockCalls` locked, as they are
    /// now), each with its participants, and the calls `users` are active in.
    public static func readBatch(
        _ db: isolated PostgresConnection, calls ids: [UUID], ringing: [(from: String, to: String)] = [],
        activeOf users: [String], processed keys: [IdempotencyKey]
    ) throws -> BatchRead {
        // One row shape for four kinds (last column): a call with a participant ('c'), the
        // clock in initiated_at's place ('n'), a processed request in four text columns
        // ('r'), an active participation as session_id and uid ('a').
        let rows = try db.query(
            """
            SELECT \(fragment: callColumnsOfC),
                   p.uid, p.role, p.status, p.joined_at, p.left_at, p.rang_at, p.left_reason, p.last_seen_at, 'c'
            FROM calls c LEFT JOIN call_participants p ON p.session_id = c.session_id
            WHERE c.session_id IN (\(callsOrRinging: ids, ringing))
            UNION ALL
            SELECT NULL, NULL, NULL, NULL, NULL, NULL, clock_timestamp(), NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'n'
            UNION ALL
            SELECT NULL, r.message_id, r.request_type, r.actor, r.reply, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'r'
            FROM unnest(\(keys.map(\.actor))::text[], \(keys.map(\.messageID))::text[]) AS k(actor, message_id)
            JOIN processed_requests r ON r.actor = k.actor AND r.message_id = k.message_id
            UNION ALL
            SELECT a.session_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                   a.uid, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'a'
            FROM call_participants a WHERE a.active AND a.uid = ANY(\(users))
            """)
        var now: Date?
        var processed: [IdempotencyKey: ProcessedRequest] = [:]
        var calls: [UUID: CallSession] = [:]
        var undecodable: StoredValueError?
        var active: [String: UUID] = [:]
        for row in rows {
            switch try row.decode(String.self, at: 23) {
            case "n":
                now = try row.decode(Date.self, at: 6)
            case "r":
                let (id, type, actor, reply) = try (
                    row.decode(String.self, at: 1), row.decode(String.self, at: 2), row.decode(String.self, at: 3),
                    row.decode(String.self, at: 4)
                )
                processed[IdempotencyKey(actor: actor, messageID: id)] = ProcessedRequest(
                    messageID: id, type: type, actor: actor, reply: reply)
            case "a":
                active[try row.decode(String.self, at: 15)] = try row.decode(UUID.self, at: 0)
            default:
                guard undecodable == nil else { continue }
                do {
                    let id = try row.decode(UUID.self, at: 0)
                    if calls[id] == nil { calls[id] = try decodeCall(row) }
                    if try row.decode(String?.self, at: 15) != nil {
                        calls[id]!.participants.append(try decodeParticipant(row, from: 15, of: id))
                    }
                } catch let error as StoredValueError {
                    undecodable = error
                }
            }
        }
        guard let now else { throw PostgresError(.decoding, "the clock query returned no row") }
        for id in calls.keys { calls[id]!.participants = inOrder(calls[id]!.participants) }
        return BatchRead(
            now: now, processed: processed, calls: undecodable == nil ? calls : nil, undecodable: undecodable,
            activeCalls: active)
    }

    /// The initiator first, then the others by uid.
    private static func inOrder(_ participants: [Participant]) -> [Participant] {
        participants.sorted { lhs, rhs in lhs.role == rhs.role ? lhs.uid < rhs.uid : lhs.role == .initiator }
    }

    /// A call from the columns of `callColumns` (from column 0), without participants.
    private static func decodeCall(_ row: PostgresRow) throws -> CallSession {
        let (id, initiator, receiverID, receiverType, callType, status, initiatedAt, expiresAt) =
            try row.decodeColumns((UUID, String, String, String, String, String, Date, Date).self)
        let answeredAt = try row.decode(Date?.self, at: 8)
        let endedAt = try row.decode(Date?.self, at: 9)
        let duration = try row.decode(Int?.self, at: 10)
        let endedBy = try row.decode(String?.self, at: 11)
        let metadataText = try row.decode(String.self, at: 12)
        let sequence = try row.decode(Int.self, at: 13)
        let endReason = try row.decode(String?.self, at: 14).map {
            try StoredValue.parse(EndReason.self, $0, "calls", "end_reason", id)
        }
        // Most calls carry no metadata: "{}" needs no decoder.
        guard
            let metadata = metadataText == "{}"
                ? [:] : try? JSONDecoder().decode(JSONObject.self, from: Data(metadataText.utf8))
        else {
            throw StoredValue.error("calls", "metadata", metadataText, id)
        }
        return CallSession(
            sessionID: id, initiator: initiator, receiverID: receiverID,
            receiverType: try StoredValue.parse(ReceiverType.self, receiverType, "calls", "receiver_type", id),
            callType: try StoredValue.parse(CallType.self, callType, "calls", "call_type", id),
            status: try StoredValue.parse(CallStatus.self, status, "calls", "status", id),
            initiatedAt: initiatedAt, expiresAt: expiresAt, answeredAt: answeredAt, endedAt: endedAt,
            durationSeconds: duration,
            endedBy: endedBy, endReason: endReason, metadata: metadata, participants: [], sequence: sequence)
    }

    /// A participant from uid, role, status, joined_at, left_at, rang_at, left_reason,
    /// last_seen_at starting at column `base`.
    private static func decodeParticipant(_ row: PostgresRow, from base: Int, of id: UUID) throws -> Participant {
        let uid = try row.decode(String.self, at: base)
        let role = try row.decode(String.self, at: base + 1)
        let status = try row.decode(String.self, at: base + 2)
        let leftReason = try row.decode(String?.self, at: base + 6).map {
            try StoredValue.parse(LeftReason.self, $0, "call_participants", "left_reason", id)
        }
        return Participant(
            uid: uid, role: try StoredValue.parse(ParticipantRole.self, role, "call_participants", "role", id),
            status: try StoredValue.parse(ParticipantStatus.self, status, "call_participants", "status", id),
            joinedAt: try row.decode(Date?.self, at: base + 3), leftAt: try row.decode(Date?.self, at: base + 4),
            rangAt: try row.decode(Date?.self, at: base + 5), leftReason: leftReason,
            lastSeenAt: try row.decode(Date?.self, at: base + 7))
    }
}

/// A stored value that does not read back: an error naming the table, the column, the value
/// and the call, never a default (a wrong status would be worse than no answer).
public struct StoredValueError: Error, CustomStringConvertible, Sendable {
    public var table: String
    public var column: String
    public var value: String
    public var sessionID: UUID

    public var description: String {
        "\(table).\(column) of call \(sessionID.uuidString.lowercased()) holds '\(value.prefix(200))', which this version cannot read"
    }
}

enum StoredValue {
    static func parse<T: RawRepresentable>(_ type: T.Type, _ text: String, _ table: String, _ column: String, _ id: UUID) throws
        -> T where T.RawValue == String
    {
        guard let value = T(rawValue: text) else { throw error(table, column, text, id) }
        return value
    }

    static func error(_ table: String, _ column: String, _ value: String, _ id: UUID) -> StoredValueError {
        Counter(label: "ringing_row_decode_errors_total", dimensions: [("table", table), ("column", column)]).increment()
        return StoredValueError(table: table, column: column, value: value, sessionID: id)
    }
}

extension PostgresQuery.StringInterpolation {
    /// A subquery of session ids: `ids`, and the 1:1 calls each `from` is still ringing `to`
    /// with (the glare candidates). `lockCalls` locks exactly the rows `readBatch` then reads,
    /// so both splice this one.
    fileprivate mutating func appendInterpolation(callsOrRinging ids: [UUID], _ ringing: [(from: String, to: String)]) {
        appendLiteral("SELECT unnest(")
        appendInterpolation(ids)
        appendLiteral("::uuid[]) UNION ALL SELECT r.session_id FROM unnest(")
        appendInterpolation(ringing.map(\.from))
        appendLiteral("::text[], ")
        appendInterpolation(ringing.map(\.to))
        // One index lookup per pair (OFFSET 0 keeps the subquery apart): joined, the planner
        // read every ringing call when its statistics saw few.
        appendLiteral(
            """
            ::text[]) AS q(initiator, receiver),
                LATERAL (SELECT session_id FROM calls WHERE initiator = q.initiator AND receiver_id = q.receiver
                    AND receiver_type = 'user' AND status = 'initiated' OFFSET 0) AS r
            """)
    }
}
