// Writing the calls a batch changed, each once in its final state, with one statement for
// the whole batch (a sub-statement or two per table) rather than one per decision.
public import CallRules
import Foundation
public import PostgresClient

/// A call to write: its state now, and its row as the database holds it (nil: a new call).
public struct CallWrite: Sendable, Hashable {
    public var call: CallSession
    public var stored: CallSession?

    public init(call: CallSession, stored: CallSession?) {
        self.call = call
        self.stored = stored
    }

    /// The participants whose rows change, each with whether the change makes it active
    /// (a new entry in the one-active-call index, which may conflict).
    var participantChanges: [(participant: Participant, activates: Bool)] {
        var before: [String: (Participant, Bool)] = [:]
        if let stored {
            for participant in stored.participants {
                before[participant.uid] = (participant, participant.isActive(in: stored.status))
            }
        }
        return call.participants.compactMap { participant in
            let active = participant.isActive(in: call.status)
            guard let (old, wasActive) = before[participant.uid] else { return (participant, active) }
            guard old != participant || wasActive != active else { return nil }
            return (participant, active && !wasActive)
        }
    }
}

/// The columns of a set of call writes as arrays, one element per row, for `unnest`.
struct CallWriteColumns {
    // New calls.
    var newSessions: [UUID] = []
    var initiators: [String] = []
    var receivers: [String] = []
    var receiverTypes: [String] = []
    var callTypes: [String] = []
    var newStatuses: [String] = []
    var initiatedAt: [Date] = []
    var expiresAt: [Date] = []
    var newAnsweredAt: [Date?] = []
    var newEndedAt: [Date?] = []
    var newDurations: [Int?] = []
    var newEndedBy: [String?] = []
    var metadata: [String] = []
    var newSequences: [Int] = []
    var newRingPending: [Bool] = []
    var newEndReasons: [String?] = []
    // Changed calls.
    var sessions: [UUID] = []
    var statuses: [String] = []
    var answeredAt: [Date?] = []
    var endedAt: [Date?] = []
    var durations: [Int?] = []
    var endedBy: [String?] = []
    var sequences: [Int] = []
    var ringPending: [Bool] = []
    var endReasons: [String?] = []
    // Participants, new or changed: the rows that make a user active come last, so that a
    // user leaving one call and joining another in the same batch never meets the index twice.
    var participantSessions: [UUID] = []
    var uids: [String] = []
    var roles: [String] = []
    var participantStatuses: [String] = []
    var joinedAt: [Date?] = []
    var leftAt: [Date?] = []
    var active: [Bool] = []
    var participantInitiatedAt: [Date] = []
    var rangAt: [Date?] = []
    var leftReasons: [String?] = []
    var lastSeenAt: [Date?] = []

    init(_ writes: [CallWrite]) {
        var activations: [(CallSession, Participant)] = []
        for write in writes {
            let call = write.call
            if write.stored == nil {
                newSessions.append(call.sessionID)
                initiators.append(call.initiator)
                receivers.append(call.receiverID)
                receiverTypes.append(call.receiverType.rawValue)
                callTypes.append(call.callType.rawValue)
                newStatuses.append(call.status.rawValue)
                initiatedAt.append(call.initiatedAt)
                expiresAt.append(call.expiresAt)
                newAnsweredAt.append(call.answeredAt)
                newEndedAt.append(call.endedAt)
                newDurations.append(call.durationSeconds)
                newEndedBy.append(call.endedBy)
                metadata.append(
                    call.metadata.isEmpty
                        ? "{}"
                        : String(decoding: (try? JSONEncoder().encode(call.metadata)) ?? Data("{}".utf8), as: UTF8.self))
                newSequences.append(call.sequence)
                newRingPending.append(call.ringPending)
                newEndReasons.append(call.endReason?.rawValue)
            } else {
                sessions.append(call.sessionID)
                statuses.append(call.status.rawValue)
                answeredAt.append(call.answeredAt)
                endedAt.append(call.endedAt)
                durations.append(call.durationSeconds)
                endedBy.append(call.endedBy)
                sequences.append(call.sequence)
                ringPending.append(call.ringPending)
                endReasons.append(call.endReason?.rawValue)
            }
            for (participant, activates) in write.participantChanges {
                if activates { activations.append((call, participant)) } else { appendParticipant(participant, of: call) }
            }
        }
        for (call, participant) in activations { appendParticipant(participant, of: call) }
    }

    private mutating func appendParticipant(_ participant: Participant, of call: CallSession) {
        participantSessions.append(call.sessionID)
        uids.append(participant.uid)
        roles.append(participant.role.rawValue)
        participantStatuses.append(participant.status.rawValue)
        joinedAt.append(participant.joinedAt)
        leftAt.append(participant.leftAt)
        active.append(participant.isActive(in: call.status))
        participantInitiatedAt.append(call.initiatedAt)
        rangAt.append(participant.rangAt)
        leftReasons.append(participant.leftReason?.rawValue)
        lastSeenAt.append(participant.lastSeenAt)
    }
}

extension CallStore {
    /// Writes calls in their final state, in one statement (see `finishBatch`).
    public static func writeCalls(_ db: isolated PostgresConnection, _ writes: [CallWrite]) throws {
        _ = try finishBatch(db, calls: writes, deletingPublished: [], records: [], outbox: [])
    }

    /// A batch's one write: the calls it created or changed (each once, in its final state,
    /// with the participants whose rows change), the removal of the outbox rows earlier
    /// batches published (`published`), the replies recorded for idempotency and the outbox
    /// messages, returned with their ids. One statement: a sub-statement per table, two for
    /// `calls` (new and changed rows).
    ///
    /// Only the participants' rows meet the one-active-call index, in the order written:
    /// rows that make a user active come after every other, and a row this transaction has
    /// replaced no longer counts for the index, so a user who leaves one call and joins
    /// another in the batch passes it as with one statement per change. A user active twice
    /// in the result still fails it (23505), as does a racing duplicate of a recorded request.
    ///
    /// With `committing`, COMMIT goes in the same round trip (`queryThenCommit`): the
    /// statement must then be the last of the transaction.
    public static func finishBatch(
        _ db: isolated PostgresConnection, calls writes: [CallWrite], deletingPublished published: [Int64],
        records: [ProcessedRequest], outbox messages: [OutboxMessage], committing: Bool = false
    ) throws -> [OutboxMessage] {
        guard !writes.isEmpty || !published.isEmpty || !records.isEmpty || !messages.isEmpty else { return [] }
        let c = CallWriteColumns(writes)
        // The ids come from one sequence in the order of `n`: sorted, they match the messages.
        let statement: PostgresQuery =
            """
            WITH new_calls AS (INSERT INTO calls (session_id, initiator, receiver_id, receiver_type, call_type, status,
                    initiated_at, expires_at, answered_at, ended_at, duration_s, ended_by, metadata, sequence, ring_pending,
                    end_reason)
                SELECT s, i, r, rt, ct, st, ia, ea, aa, en, d, eb, m::jsonb, q, rp, er
                FROM unnest(\(c.newSessions)::uuid[], \(c.initiators)::text[], \(c.receivers)::text[],
                            \(c.receiverTypes)::text[], \(c.callTypes)::text[], \(c.newStatuses)::text[],
                            \(c.initiatedAt)::timestamptz[], \(c.expiresAt)::timestamptz[],
                            \(PostgresNullableArray(c.newAnsweredAt))::timestamptz[],
                            \(PostgresNullableArray(c.newEndedAt))::timestamptz[], \(PostgresNullableArray(c.newDurations))::int8[],
                            \(PostgresNullableArray(c.newEndedBy))::text[], \(c.metadata)::text[], \(c.newSequences)::int8[],
                            \(c.newRingPending)::bool[], \(PostgresNullableArray(c.newEndReasons))::text[])
                    AS u(s, i, r, rt, ct, st, ia, ea, aa, en, d, eb, m, q, rp, er)),
            changed_calls AS (UPDATE calls c SET status = u.st, answered_at = u.aa, ended_at = u.en, duration_s = u.d,
                    ended_by = u.eb, sequence = u.q, ring_pending = u.rp, end_reason = u.er
                FROM unnest(\(c.sessions)::uuid[], \(c.statuses)::text[], \(PostgresNullableArray(c.answeredAt))::timestamptz[],
                            \(PostgresNullableArray(c.endedAt))::timestamptz[], \(PostgresNullableArray(c.durations))::int8[],
                            \(PostgresNullableArray(c.endedBy))::text[], \(c.sequences)::int8[], \(c.ringPending)::bool[],
                            \(PostgresNullableArray(c.endReasons))::text[])
                    AS u(s, st, aa, en, d, eb, q, rp, er)
                WHERE c.session_id = u.s),
            participants AS (INSERT INTO call_participants (session_id, uid, role, status, joined_at, left_at, active,
                    initiated_at, rang_at, left_reason, last_seen_at)
                SELECT s, uid, role, st, ja, la, a, ia, ra, lr, ls
                FROM unnest(\(c.participantSessions)::uuid[], \(c.uids)::text[], \(c.roles)::text[],
                            \(c.participantStatuses)::text[], \(PostgresNullableArray(c.joinedAt))::timestamptz[],
                            \(PostgresNullableArray(c.leftAt))::timestamptz[], \(c.active)::bool[],
                            \(c.participantInitiatedAt)::timestamptz[], \(PostgresNullableArray(c.rangAt))::timestamptz[],
                            \(PostgresNullableArray(c.leftReasons))::text[], \(PostgresNullableArray(c.lastSeenAt))::timestamptz[])
                    WITH ORDINALITY AS u(s, uid, role, st, ja, la, a, ia, ra, lr, ls, n)
                ORDER BY n
                ON CONFLICT (session_id, uid) DO UPDATE SET status = excluded.status, joined_at = excluded.joined_at,
                    left_at = excluded.left_at, active = excluded.active, rang_at = excluded.rang_at,
                    left_reason = excluded.left_reason, last_seen_at = excluded.last_seen_at),
            gone AS (DELETE FROM outbox WHERE id = ANY(\(published.map { Int($0) }))),
            done AS (INSERT INTO processed_requests (message_id, request_type, actor, reply)
                SELECT * FROM unnest(\(records.map(\.messageID))::text[], \(records.map(\.type))::text[],
                                     \(records.map(\.actor))::text[], \(records.map(\.reply))::text[]))
            INSERT INTO outbox (exchange, routing_key, message_id, traceparent, body)
            SELECT e, k, m, nullif(t, ''), b
            FROM unnest(\(messages.map(\.exchange))::text[], \(messages.map(\.routingKey))::text[],
                        \(messages.map(\.messageID))::text[], \(messages.map { $0.traceparent ?? "" })::text[],
                        \(messages.map(\.body))::text[]) WITH ORDINALITY AS u(e, k, m, t, b, n)
            ORDER BY n
            RETURNING id
            """
        let rows = try committing ? db.queryThenCommit(statement) : db.query(statement)
        // No error may be thrown from here on: the batch may have committed, and a retry would
        // answer its requests as duplicates. Ids that cannot be read (which the server does
        // not send) leave the messages to the outbox relay, which publishes them after its
        // grace period.
        let ids = rows.compactMap { try? $0.decode(Int64.self, at: 0) }.sorted()
        guard ids.count == messages.count else { return [] }
        return zip(messages, ids).map { message, id in
            var stored = message
            stored.id = id
            return stored
        }
    }
}
