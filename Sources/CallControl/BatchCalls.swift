// The calls a batch works on, read once at its start and kept current in memory as its
// decisions write them: each request then costs its decision's one write, not a lock and a
// read of its own.
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

    /// Takes the batch's locks (pair locks, then row locks, each in one order, so two
    /// instances' batches cannot deadlock on them), then reads the calls in one statement.
    /// A call that does not decode leaves every call to be read by its own request, which
    /// then answers `unavailable` alone, as it would without the batch read.
    init(_ db: isolated PostgresConnection, _ jobs: [Job]) throws {
        var pairs: [(String, String)] = []
        var toLock: Set<UUID> = []
        var toRead: Set<UUID> = []
        for job in jobs {
            switch job.request.command {
            case .initiate(let request) where request.receiverType == .user && request.receiverID != job.user.uid:
                pairs.append((job.user.uid, request.receiverID))
            case .accept(let id, _), .reject(let id, _, _), .end(let id, _), .ringing(let id, _), .heartbeat(let id, _):
                toLock.insert(id)
            case .get(let id):
                toRead.insert(id)
            default:
                break
            }
        }
        try CallStore.lockPairs(db, pairs)
        lockedPairs = Set(pairs.map(CallStore.pairLockKey))
        try CallStore.lockCalls(db, Array(toLock))
        locked = toLock
        let ids = Array(toLock.union(toRead))
        do {
            let found = try CallStore.readCalls(db, ids)
            for id in ids { calls[id] = .some(found[id]) }
        } catch is StoredValueError {
            locked = []
        }
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
        let call = try CallStore.lockCall(db, id)
        calls[id] = .some(call)
        locked.insert(id)
        return call
    }

    /// The call as this transaction sees it, without taking its lock.
    mutating func read(_ db: isolated PostgresConnection, _ id: UUID) throws -> CallSession? {
        if let call = calls[id] { return call }
        let call = try CallStore.loadCall(db, id)
        calls[id] = .some(call)
        return call
    }

    /// A decision wrote `call`.
    mutating func saved(_ call: CallSession) { calls[call.sessionID] = .some(call) }

    /// `CallStore.touch` ran: the same guarded change on the copy in memory.
    mutating func touched(_ id: UUID, _ uid: String, at now: Date) {
        guard var call = calls[id] ?? nil,
            let index = call.participants.firstIndex(where: { $0.uid == uid }),
            call.participants[index].status == .accepted, let lastSeen = call.participants[index].lastSeenAt
        else { return }
        call.participants[index].lastSeenAt = max(lastSeen, now)
        calls[id] = .some(call)
    }
}
