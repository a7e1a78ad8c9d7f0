// The calls a batch works on, read once at its start and kept current in memory as its
// decisions change them: a request costs neither a lock nor a read of its own, and a call is
// written once, in its final state, with the batch's other writes (`takeWrites`). For its 1:1
// initiates the batch also holds, from the start, the calls still ringing between each pair
// (glare) and which call each of their users is active in (busy).
import CallRules
import CallStore
import Foundation
import PostgresClient

struct BatchCalls {
    /// The calls read at the start, by session_id; nil for an id that names no call. The
    /// batch's own writes replace them, so a later request sees an earlier one's change, as
    /// it would reading the database inside the transaction.
    private var calls: [UUID: CallSession?] = [:]
    /// The ids whose row lock this transaction holds.
    private var locked: Set<UUID> = []
    private var lockedPairs: Set<String> = []
    /// The (initiator, receiver) directions whose ringing calls were all locked and read at
    /// the start: with the pair's lock held, no other transaction can add one, so `calls`
    /// holds every one of them.
    private var glareKnown: Set<Direction> = []

    private struct Direction: Hashable {
        var from: String
        var to: String
    }
    /// For the users in `activeKnown`, the call each is active in: as read at the start, then
    /// kept current from the batch's own writes (a user's participation changes only through
    /// `save`). A concurrent transaction can still make one of them active meanwhile, as it
    /// could between two statements: the one-active-call index then fails the commit and the
    /// batch is applied again one request at a time.
    private var activeSessions: [String: UUID] = [:]
    private var activeKnown: Set<String> = []
    /// The calls changed and not yet written, in the order of their first change, each with
    /// its row as the database holds it (nil: a new call).
    private var unwritten: [UUID] = []
    private var stored: [UUID: CallSession?] = [:]

    /// The database's clock, read with the calls after the locks: the time of the batch's
    /// decisions.
    let now: Date
    /// The batch's mutations already applied, by idempotency key, read with the calls.
    let processed: [IdempotencyKey: ProcessedRequest]

    /// Takes the batch's locks (pair locks, then row locks, each in one order, so two
    /// instances' batches cannot deadlock on them), then reads in one statement the clock,
    /// the idempotency records of its mutations, the calls with their participants and the
    /// active calls of its initiates' users; BEGIN, the locks and the read go in one round
    /// trip (pipelined). A call that does not decode leaves every call to
    /// be read by its own request, which then answers `unavailable` alone, as it would
    /// without the batch read.
    init(_ db: isolated PostgresConnection, _ jobs: [Job]) throws {
        var pairs: [(String, String)] = []
        var users: Set<String> = []
        var toLock: Set<UUID> = []
        var toRead: Set<UUID> = []
        for job in jobs {
            switch job.request.command {
            case .initiate(let request) where request.receiverType == .user:
                users.formUnion([job.user.uid, request.receiverID])
                if request.receiverID != job.user.uid { pairs.append((job.user.uid, request.receiverID)) }
            case .accept(let id, _), .reject(let id, _, _), .end(let id, _), .ringing(let id, _), .heartbeat(let id, _):
                toLock.insert(id)
            case .get(let id):
                toRead.insert(id)
            default:
                break
            }
        }
        CallStore.lockPairs(db, pairs)
        lockedPairs = Set(pairs.map(CallStore.pairLockKey))
        // An initiate from a to b glares with a call b is ringing a with.
        let glare = pairs.map { (from: $0.1, to: $0.0) }
        CallStore.lockCalls(db, Array(toLock), ringing: glare)
        // BEGIN, the pair locks and the row locks go with the read: one round trip.
        let ids = Array(toLock.union(toRead))
        let read = try CallStore.readBatch(
            db, calls: ids, ringing: glare, activeOf: users.sorted(),
            processed: jobs.filter { $0.request.type.isMutation }.map(\.idempotencyKey))
        now = read.now
        processed = read.processed
        guard let found = read.calls else { return }
        for id in ids { calls[id] = .some(found[id]) }
        glareKnown = Set(glare.map { Direction(from: $0.from, to: $0.to) })
        locked = toLock
        // The glare candidates the read found: locked with the others, and still ringing.
        for (id, call) in found
        where !locked.contains(id) && call.receiverType == .user && call.status == .initiated
            && glareKnown.contains(Direction(from: call.initiator, to: call.receiverID))
        {
            calls[id] = .some(call)
            locked.insert(id)
        }
        activeSessions = read.activeCalls
        activeKnown = users
    }

    /// The newest 1:1 call `initiator` is ringing `receiver` with, under its row lock: from
    /// memory when the batch locked the pair's ringing calls at the start, otherwise looked up
    /// (and locked) now. Take the pair's lock first.
    mutating func ringingCall(_ db: isolated PostgresConnection, from initiator: String, to receiver: String) throws
        -> CallSession?
    {
        guard glareKnown.contains(Direction(from: initiator, to: receiver)) else {
            try flush(db)
            let call = try CallStore.lockRingingCall(db, from: initiator, to: receiver)
            if let call {
                calls[call.sessionID] = .some(call)
                locked.insert(call.sessionID)
            }
            return call
        }
        return calls.values.compactMap { $0 }
            .filter {
                $0.initiator == initiator && $0.receiverID == receiver && $0.receiverType == .user && $0.status == .initiated
            }
            .max { $0.initiatedAt < $1.initiatedAt }
    }

    /// Which of `uids` are active in a call: from memory when the batch read them all at the
    /// start, otherwise from the database (after the batch's changes are written).
    mutating func activeUsers(_ db: isolated PostgresConnection, among uids: [String]) throws -> Set<String> {
        guard activeKnown.isSuperset(of: uids) else {
            try flush(db)
            return try CallStore.activeUsers(db, among: uids)
        }
        return Set(uids.filter { activeSessions[$0] != nil })
    }

    /// Serialises initiates between two users, unless the batch already holds their lock.
    mutating func lockPair(_ db: isolated PostgresConnection, _ a: String, _ b: String) throws {
        guard lockedPairs.insert(CallStore.pairLockKey(a, b)).inserted else { return }
        try CallStore.lockPair(db, a, b)
    }

    /// The call under its row lock: from the batch's read when it took the lock, otherwise
    /// read and locked now.
    mutating func locked(_ db: isolated PostgresConnection, _ id: UUID) throws -> CallSession? {
        if locked.contains(id), let call = calls[id] { return call }
        try flush(db)
        let call = try CallStore.lockCall(db, id)
        calls[id] = .some(call)
        locked.insert(id)
        return call
    }

    /// The call as this transaction sees it, without taking its lock.
    mutating func read(_ db: isolated PostgresConnection, _ id: UUID) throws -> CallSession? {
        if let call = calls[id] { return call }
        try flush(db)
        let call = try CallStore.loadCall(db, id)
        calls[id] = .some(call)
        return call
    }

    /// A decision changed `call` (or made it): kept in memory, written with the batch. Throws
    /// the one-active-call index's error (23505) where writing the change now would: when it
    /// makes a user active who is active in another call, even if a later request of the
    /// batch would free them. The batch is then applied again one request at a time, each
    /// getting the answer it gets alone.
    mutating func save(_ call: CallSession) throws {
        let id = call.sessionID
        let current = calls[id] ?? nil
        for participant in call.participants where participant.isActive(in: call.status) {
            if let current, current.participants.contains(where: { $0.uid == participant.uid && $0.isActive(in: current.status) })
            {
                continue
            }
            if isActive(participant.uid, outside: id) {
                throw PostgresError(
                    .server, "user '\(participant.uid)' would be active in two calls (the batch's own check)",
                    sqlState: .uniqueViolation, constraint: "one_active_call_per_user")
            }
        }
        changed(call, from: current)
        for participant in call.participants where activeKnown.contains(participant.uid) {
            if participant.isActive(in: call.status) {
                activeSessions[participant.uid] = id
            } else if activeSessions[participant.uid] == id {
                activeSessions[participant.uid] = nil
            }
        }
    }

    /// Whether `uid` is active in a call other than `id`, as the database would see it with
    /// the batch's changes written: in a call the batch holds, or (for the users whose active
    /// calls it read) in one it does not.
    private func isActive(_ uid: String, outside id: UUID) -> Bool {
        if activeKnown.contains(uid), let session = activeSessions[uid], session != id { return true }
        return calls.values.contains { call in
            guard let call, call.sessionID != id else { return false }
            return call.participants.contains { $0.uid == uid && $0.isActive(in: call.status) }
        }
    }

    private mutating func changed(_ call: CallSession, from current: CallSession?) {
        if stored.index(forKey: call.sessionID) == nil {
            stored[call.sessionID] = .some(current)
            unwritten.append(call.sessionID)
        }
        calls[call.sessionID] = .some(call)
    }

    /// The changes not yet written, each call once in its final state; they count as written.
    mutating func takeWrites() -> [CallWrite] {
        let writes = unwritten.compactMap { id in calls[id].flatMap { $0 }.map { CallWrite(call: $0, stored: stored[id] ?? nil) }
        }
        unwritten = []
        stored = [:]
        return writes
    }

    /// Writes the changes so far, before a statement that reads what they change.
    mutating func flush(_ db: isolated PostgresConnection) throws {
        guard !unwritten.isEmpty else { return }
        try CallStore.writeCalls(db, takeWrites())
    }

    /// Keeps `uid`'s participation in call `id` live at `now` (DESIGN §10): on the batch's
    /// copy when it holds the call under its lock or has changes of it not yet written
    /// (written with the batch), otherwise with the guarded statement. A call the lock found
    /// missing needs neither.
    mutating func touch(_ db: isolated PostgresConnection, _ id: UUID, _ uid: String, at now: Date) throws {
        guard locked.contains(id) || stored.index(forKey: id) != nil, let held = calls[id] else {
            try CallStore.touch(db, id, uid, at: now)
            touched(id, uid, at: now)
            return
        }
        guard var call = held, let index = call.participants.firstIndex(where: { $0.uid == uid }),
            call.participants[index].status == .accepted, let lastSeen = call.participants[index].lastSeenAt, lastSeen < now
        else { return }
        let current = call
        call.participants[index].lastSeenAt = now
        changed(call, from: current)
    }

    /// `CallStore.touch` ran: the same guarded change on the copy in memory.
    private mutating func touched(_ id: UUID, _ uid: String, at now: Date) {
        guard var call = calls[id] ?? nil,
            let index = call.participants.firstIndex(where: { $0.uid == uid }),
            call.participants[index].status == .accepted, let lastSeen = call.participants[index].lastSeenAt
        else { return }
        call.participants[index].lastSeenAt = max(lastSeen, now)
        calls[id] = .some(call)
    }
}
