// The schema, as versioned migrations applied at start under an advisory lock, so that several
// instances starting at once migrate exactly once.
public import PostgresClient

public enum Migrations {
    /// Every instance of every service takes this lock while migrating.
    static let advisoryLock = 0x5249_4E47  // "RING"

    static let all: [SchemaMigration] = [
        (
            1, "calls, participants, idempotency, outbox, groups",
            """
            CREATE TABLE calls (
                session_id    uuid PRIMARY KEY,
                initiator     text NOT NULL,
                receiver_id   text NOT NULL,
                receiver_type text NOT NULL CHECK (receiver_type IN ('user', 'group')),
                call_type     text NOT NULL CHECK (call_type IN ('audio', 'video')),
                status        text NOT NULL CHECK (status IN ('initiated', 'ongoing', 'ended', 'rejected', 'busy', 'cancelled', 'unanswered')),
                initiated_at  timestamptz NOT NULL,
                expires_at    timestamptz NOT NULL,
                answered_at   timestamptz,
                ended_at      timestamptz,
                duration_s    integer,
                ended_by      text,
                metadata      jsonb NOT NULL DEFAULT '{}'::jsonb,
                sequence      integer NOT NULL,
                -- the ring deadline still has to be acted on (see CallSession.ringPending)
                ring_pending  boolean NOT NULL
            );
            CREATE INDEX calls_ring_deadline ON calls (expires_at) WHERE ring_pending;
            CREATE INDEX calls_ringing_pair ON calls (initiator, receiver_id) WHERE status = 'initiated' AND receiver_type = 'user';

            CREATE TABLE call_participants (
                session_id   uuid NOT NULL REFERENCES calls (session_id) ON DELETE CASCADE,
                uid          text NOT NULL,
                role         text NOT NULL CHECK (role IN ('initiator', 'receiver')),
                status       text NOT NULL CHECK (status IN ('ringing', 'accepted', 'rejected', 'busy', 'missed', 'left')),
                joined_at    timestamptz,
                left_at      timestamptz,
                -- initiator of a ringing call, or accepted participant of an ongoing one
                active       boolean NOT NULL,
                initiated_at timestamptz NOT NULL,
                PRIMARY KEY (session_id, uid)
            );
            -- At most one active call per user, whatever races happen.
            CREATE UNIQUE INDEX one_active_call_per_user ON call_participants (uid) WHERE active;
            CREATE INDEX call_participants_history ON call_participants (uid, initiated_at DESC, session_id DESC);

            -- Requests already applied, by message_id, with the reply they got.
            CREATE TABLE processed_requests (
                message_id   text PRIMARY KEY,
                request_type text NOT NULL,
                actor        text NOT NULL,
                reply        text NOT NULL,
                processed_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX processed_requests_age ON processed_requests (processed_at);

            -- Events and notifications written with the change that caused them, published after commit.
            CREATE TABLE outbox (
                id            bigserial PRIMARY KEY,
                exchange      text NOT NULL,
                routing_key   text NOT NULL,
                message_id    text NOT NULL,
                traceparent   text,
                body          text NOT NULL,
                created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
                claimed_until timestamptz
            );

            CREATE TABLE call_groups (
                group_id   text PRIMARY KEY,
                updated_at timestamptz NOT NULL
            );
            CREATE TABLE call_group_members (
                group_id text NOT NULL REFERENCES call_groups (group_id) ON DELETE CASCADE,
                uid      text NOT NULL,
                PRIMARY KEY (group_id, uid)
            );

            -- Wakes every instance's ring timer when a new deadline is set.
            CREATE FUNCTION notify_ring_deadline() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.ring_pending THEN
                    PERFORM pg_notify('ring_deadline', to_char(NEW.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'));
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER calls_ring_deadline_notify AFTER INSERT ON calls
                FOR EACH ROW EXECUTE FUNCTION notify_ring_deadline();
            """
        ),
        (
            2, "read access for the token service's role",
            """
            -- The token service reads sessions with a read-only role; grant it where it exists
            -- (the local stack creates ringing_reader; elsewhere grant it by hand).
            DO $$
            BEGIN
                IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'ringing_reader') THEN
                    GRANT SELECT ON calls, call_participants TO ringing_reader;
                END IF;
            END $$;
            """
        ),
        (
            3, "idempotency keyed by user and message_id",
            """
            -- DESIGN §2: the key is (sub, message_id); the same message_id from two users is two requests.
            ALTER TABLE processed_requests DROP CONSTRAINT processed_requests_pkey;
            ALTER TABLE processed_requests ADD PRIMARY KEY (actor, message_id);
            """
        ),
        (
            4, "ring receipts, liveness and end reasons",
            """
            -- DESIGN §10. Why the server ended a call on its own; existing unanswered calls say so.
            ALTER TABLE calls ADD COLUMN end_reason text
                CHECK (end_reason IN ('unanswered', 'connection_lost', 'max_duration'));
            UPDATE calls SET end_reason = 'unanswered' WHERE status = 'unanswered';
            -- rang_at: the receiver's first ring receipt. last_seen_at: while the participant is
            -- in an ongoing call, the latest of joined_at, its heartbeats and its requests naming
            -- the call. Calls already ongoing get a full timeout from now.
            ALTER TABLE call_participants
                ADD COLUMN rang_at timestamptz,
                ADD COLUMN left_reason text CHECK (left_reason IN ('connection_lost')),
                ADD COLUMN last_seen_at timestamptz;
            UPDATE call_participants p SET last_seen_at = clock_timestamp()
                FROM calls c WHERE c.session_id = p.session_id AND c.status = 'ongoing' AND p.status = 'accepted';
            -- The two sweeps' deadlines: silent participants, and calls past the maximum duration.
            CREATE INDEX call_participants_liveness ON call_participants (last_seen_at)
                WHERE status = 'accepted' AND last_seen_at IS NOT NULL;
            CREATE INDEX calls_ongoing_since ON calls (answered_at) WHERE status = 'ongoing';
            """
        ),
    ]

    /// Applies every migration not yet applied, in one transaction under the advisory lock.
    /// Returns the versions applied now.
    @discardableResult
    public static func apply(_ database: isolated PostgresConnection) throws -> [Int] {
        try database.applyMigrations(all, lock: advisoryLock)
    }

    /// The newest schema version this code knows.
    public static var latestVersion: Int { all.map(\.version).max() ?? 0 }
}
