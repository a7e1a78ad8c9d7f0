// Applies a batch of authenticated requests in one transaction: the rules decide, the store
// persists the change, its events and notifications go to the outbox, and the reply is
// recorded for idempotency — all committed together or not at all.
import CallRules
import CallStore
import Foundation
import Logging
import PostgresClient
import RingingAuth
import RingingContract
import RingingService

/// One authenticated, parsed request.
struct Job: Sendable {
    var messageID: String
    var traceparent: String?
    var request: Request
    var user: AuthenticatedUser

    var idempotencyKey: IdempotencyKey { IdempotencyKey(actor: user.uid, messageID: messageID) }
}

/// What a job produced: the reply and the outbox messages to publish after commit.
struct JobOutcome: Sendable {
    var reply: Data
    var outbox: [OutboxMessage]
    var code: String  // "ok" or the error code, for logs and metrics
    var sessionID: UUID?
    /// The call as the request left it, when it named or made one (for the liveness touch).
    var call: CallSession? = nil
}

enum RequestProcessor {
    /// Applies `jobs` in order inside the caller's transaction. The batch's reads come first,
    /// a few statements whatever its size: the pair locks of its 1:1 initiates, the row locks
    /// of the calls it changes (in one order), then one read of the clock, the idempotency
    /// records, those calls with their participants and the busy users. The decisions change the calls in memory; at the
    /// end one statement writes each changed call once in its final state, the idempotency
    /// records and the outbox messages, and removes `deletingPublished` (rows earlier batches
    /// published): nothing inside the batch reads them back (duplicates within the batch are
    /// found in memory; a request that must read the database first writes what the batch
    /// changed so far), and a racing duplicate from another instance still fails the commit.
    ///
    /// With `committing`, the write and COMMIT go in one round trip: the caller's transaction
    /// then ends with it.
    static func process(
        _ db: isolated PostgresConnection, _ jobs: [Job], deletingPublished: [Int64] = [], committing: Bool = false
    ) throws -> [JobOutcome] {
        var calls = try BatchCalls(db, jobs)
        let now = calls.now
        var processed = calls.processed
        var outcomes: [JobOutcome] = []
        outcomes.reserveCapacity(jobs.count)
        var records: [ProcessedRequest] = []
        for job in jobs {
            if job.request.type.isMutation, let earlier = processed[job.idempotencyKey] {
                outcomes.append(duplicate(job, earlier))
                continue
            }
            let outcome: JobOutcome
            do {
                outcome = try apply(db, job, at: now, calls: &calls)
            } catch let error as StoredValueError {
                // Nothing was written for this request; it is answered, not retried forever.
                Logger(label: "ringing.call-control").error(
                    "a stored call does not read back", metadata: ["error": "\(error)", "message_id": "\(job.messageID)"])
                outcomes.append(
                    failure(CallError(.unavailable, "the call cannot be read: \(error)"), sessionID: error.sessionID))
                continue
            }
            // Any request naming a call keeps the user's participation live (DESIGN §10).
            if let session = job.request.command.sessionID, needsTouch(outcome.call, job.user.uid, at: now) {
                try calls.touch(db, session, job.user.uid, at: now)
            }
            if job.request.type.isMutation {
                let record = ProcessedRequest(
                    messageID: job.messageID, type: job.request.type.rawValue, actor: job.user.uid,
                    reply: String(decoding: outcome.reply, as: UTF8.self))
                records.append(record)
                processed[job.idempotencyKey] = record
            }
            outcomes.append(outcome)
        }
        var stored = try CallStore.finishBatch(
            db, calls: calls.takeWrites(), deletingPublished: deletingPublished, records: records,
            outbox: outcomes.flatMap(\.outbox), committing: committing)[...]
        for index in outcomes.indices where !outcomes[index].outbox.isEmpty {
            let count = outcomes[index].outbox.count
            outcomes[index].outbox = Array(stored.prefix(count))
            stored = stored.dropFirst(count)
        }
        return outcomes
    }

    /// Whether a request on `call` must refresh `uid`'s `last_seen_at`: only an accepted
    /// participant of an ongoing call has one, and a call the request just wrote (or read
    /// under its lock) already shows whether it is at `now`. Without the call in hand (not
    /// found, or read without a lock) the guarded statement decides.
    static func needsTouch(_ call: CallSession?, _ uid: String, at now: Date) -> Bool {
        guard let call else { return true }
        guard let participant = call.participants.first(where: { $0.uid == uid }),
            participant.status == .accepted, let lastSeen = participant.lastSeenAt
        else { return false }
        return lastSeen < now
    }

    /// A repeated (`sub`, `message_id`): the original reply, nothing changed. The same user
    /// reusing a `message_id` for another kind of request gets an error instead.
    private static func duplicate(_ job: Job, _ earlier: ProcessedRequest) -> JobOutcome {
        guard earlier.type == job.request.type.rawValue else {
            return failure(.invalid("message_id", "message_id '\(job.messageID)' was already used for another request"))
        }
        return JobOutcome(
            reply: Data(earlier.reply.utf8), outbox: [], code: "duplicate", sessionID: job.request.command.sessionID)
    }

    static func failure(_ error: CallError, sessionID: UUID? = nil) -> JobOutcome {
        JobOutcome(reply: WireReply.error(error).encoded(), outbox: [], code: error.code.rawValue, sessionID: sessionID)
    }

    private static func apply(_ db: isolated PostgresConnection, _ job: Job, at now: Date, calls: inout BatchCalls) throws
        -> JobOutcome
    {
        let actor = job.user.uid
        switch job.request.command {
        case .initiate(let request):
            var glare: CallSession?
            var members: [String]?
            var involved = [actor]
            switch request.receiverType {
            case .user:
                if request.receiverID != actor {
                    try calls.lockPair(db, actor, request.receiverID)
                    glare = try calls.ringingCall(db, from: request.receiverID, to: actor)
                }
                involved.append(request.receiverID)
            case .group:
                members = try CallStore.groupMembers(db, request.receiverID)
                involved.append(contentsOf: members ?? [])
            }
            let context = CallRules.InitiateContext(
                sessionID: UUID(), activeUsers: try calls.activeUsers(db, among: involved), glareCall: glare,
                groupMembers: members)
            let decision = CallRules.initiate(request, by: actor, at: now, context: context)
            return try commit(decision, job: job, calls: &calls)

        case .accept(let id, let device):
            guard let call = try calls.locked(db, id) else { return notFound(id) }
            return try commit(CallRules.accept(call, by: actor, deviceID: device, at: now), job: job, calls: &calls)

        case .reject(let id, let status, let device):
            guard let call = try calls.locked(db, id) else { return notFound(id) }
            return try commit(
                CallRules.reject(call, status: status, by: actor, deviceID: device, at: now), job: job, calls: &calls)

        case .end(let id, let device):
            guard let call = try calls.locked(db, id) else { return notFound(id) }
            return try commit(CallRules.end(call, by: actor, deviceID: device, at: now), job: job, calls: &calls)

        case .ringing(let id, let device):
            guard let call = try calls.locked(db, id) else { return notFound(id) }
            return try commit(
                CallRules.ringReceipt(call, by: actor, deviceID: device, at: now), job: job, calls: &calls, reply: .ok)

        case .heartbeat(let id, _):
            guard let call = try calls.locked(db, id) else { return notFound(id) }
            return try commit(
                CallRules.heartbeat(call, by: actor, at: now), job: job, calls: &calls,
                reply: .ok)

        case .get(let id):
            guard let call = try calls.read(db, id) else { return notFound(id) }
            if let error = CallRules.authorizeRead(call, by: actor) { return failure(error, sessionID: id) }
            return JobOutcome(reply: WireReply.call(call).encoded(), outbox: [], code: "ok", sessionID: id)

        case .active:
            try calls.flush(db)
            let call = try CallStore.activeCall(db, of: actor)
            return JobOutcome(reply: WireReply.call(call).encoded(), outbox: [], code: "ok", sessionID: call?.sessionID)

        case .live:
            try calls.flush(db)
            let live = try CallStore.liveCalls(db, of: actor, at: now)
            return JobOutcome(reply: WireReply.live(live).encoded(), outbox: [], code: "ok")

        case .history(let query):
            try calls.flush(db)
            let page = try CallStore.history(db, of: actor, query)
            return JobOutcome(reply: WireReply.calls(page.calls, next: page.next?.encoded).encoded(), outbox: [], code: "ok")

        case .setGroupMembers(let group, let members):
            guard job.user.isService else {
                return failure(CallError(.forbidden, "group.set_members needs a token with the service role"))
            }
            try CallStore.setGroupMembers(db, group, members: members)
            return JobOutcome(reply: WireReply.ok.encoded(), outbox: [], code: "ok")

        case .generateToken, .jwks:
            return failure(
                CallError(.invalidRequest, "\(job.request.type.rawValue) is answered by the token service", field: "type"))
        case .registerDevice, .unregisterDevice, .listDevices:
            return failure(
                CallError(.invalidRequest, "\(job.request.type.rawValue) is answered by the push notifier", field: "type"))
        }
    }

    private static func notFound(_ id: UUID) -> JobOutcome {
        failure(CallError(.notFound, "no call with session_id \(id.uuidString.lowercased())", field: "session_id"), sessionID: id)
    }

    /// Keeps a decision's call for the batch's write (even a failing one may have changed the
    /// call: a timeout found on the way), with its events and notifications for the outbox.
    /// `reply` is the success reply: the call, unless the request type answers just ok.
    private static func commit(
        _ decision: CallDecision, job: Job, calls: inout BatchCalls, reply success: WireReply? = nil
    ) throws -> JobOutcome {
        var outbox: [OutboxMessage] = []
        // The call is encoded once for its events, notifications and the reply.
        var encoded = EncodedCalls()
        if decision.changed {
            try calls.save(decision.call)
            outbox = try messages(for: decision, traceparent: job.traceparent, calls: &encoded)  // written with the batch's
        }
        let reply: Data
        if let error = decision.error {
            reply = WireReply.error(error).encoded()
        } else if let success {
            reply = success.encoded()
        } else {
            reply = WireReply.call(json: try encoded.json(decision.call))
        }
        return JobOutcome(
            reply: reply, outbox: outbox, code: decision.error?.code.rawValue ?? "ok", sessionID: decision.call.sessionID,
            call: decision.call)
    }

    /// The events and notifications of a decision as outbox messages.
    static func messages(for decision: CallDecision, traceparent: String?) throws -> [OutboxMessage] {
        var calls = EncodedCalls()
        return try messages(for: decision, traceparent: traceparent, calls: &calls)
    }

    /// The same, encoding each distinct call snapshot once (kept in `calls` for the reply).
    static func messages(for decision: CallDecision, traceparent: String?, calls: inout EncodedCalls) throws
        -> [OutboxMessage]
    {
        var messages: [OutboxMessage] = []
        for event in decision.events {
            let body = try WireEvent.encoded(
                event, type: event.type.rawValue, traceparent: traceparent, callJSON: try calls.json(event.call))
            messages.append(
                OutboxMessage(
                    exchange: Topology.eventsExchange, routingKey: RoutingKey.event(event.type),
                    messageID: event.eventID.uuidString.lowercased(), traceparent: traceparent,
                    body: String(decoding: body, as: UTF8.self)))
        }
        for notification in decision.notifications {
            let body = try WireEvent.encoded(
                notification.event, type: notification.name.rawValue, recipient: notification.recipient,
                traceparent: traceparent, callJSON: try calls.json(notification.event.call))
            messages.append(
                OutboxMessage(
                    exchange: Topology.notificationsExchange,
                    routingKey: RoutingKey.notification(notification.name, for: notification.recipient),
                    messageID:
                        "\(notification.event.eventID.uuidString.lowercased()):\(notification.recipient):\(notification.name.rawValue)",
                    traceparent: traceparent, body: String(decoding: body, as: UTF8.self)))
        }
        return messages
    }

}

/// Call snapshots encoded as JSON, each once: a decision's events, notifications and reply
/// usually show the same call. A failure to encode is an error, never an empty body.
struct EncodedCalls {
    private var encoded: [(call: CallSession, json: Data)] = []

    mutating func json(_ call: CallSession) throws -> Data {
        if let found = encoded.first(where: { $0.call == call }) { return found.json }
        let json = try WireJSON.call(call)
        encoded.append((call, json))
        return json
    }
}
