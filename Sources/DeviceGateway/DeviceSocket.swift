// One device's socket: its user and token, its snapshot filter, its bounded queue of frames to
// write, its request rate, and how it is to be closed.
import AMQPClient
import CallRules
import Foundation
import Metrics
import RingingContract
import Synchronization

final class DeviceSocket: Sendable {
    struct Identity: Sendable {
        var uid: String
        var deviceID: String
        var token: String
        var expiresAt: Date?
    }

    let id: Int
    let queue: FrameQueue
    /// Set once, by whoever decides the socket must close, with the code and reason.
    let closing = Handoff<(code: UInt16, reason: String)>()
    /// Resolved once the hello authenticated the socket.
    let greeted = Handoff<Void>()
    /// Whether the socket still counts as waiting for its hello, and the binding it holds.
    let lifecycle = Mutex<(helloPending: Bool, binding: AMQPBinding?)>((true, nil))
    private let identity = Mutex<Identity?>(nil)
    private let filter = Mutex(SnapshotFilter())
    private let bucket: Mutex<TokenBucket>

    init(id: Int, configuration: GatewayConfiguration) {
        self.id = id
        queue = FrameQueue(maximumBytes: configuration.maximumUnsentBytes)
        bucket = Mutex(
            TokenBucket(
                rate: Double(configuration.requestsPerSecond), burst: Double(configuration.requestBurst),
                now: .now))
    }

    var current: Identity? { identity.withLock { $0 } }

    func authenticated(_ value: Identity) { identity.withLock { $0 = value } }

    /// Replaces the token (an `auth` frame of the same user).
    func replaceToken(_ token: String, expiresAt: Date?) {
        identity.withLock {
            $0?.token = token
            $0?.expiresAt = expiresAt
        }
    }

    /// Asks for the socket to be closed; the first reason given wins.
    func close(_ code: UInt16, _ reason: String) { closing.resolve((code, reason)) }

    /// Queues a frame; a device whose unsent frames exceed the budget is closed with 1008.
    func send(_ frame: QueuedFrame) {
        guard queue.enqueue(frame) else {
            close(CloseCode.tooSlow, "more than \(queue.maximumBytes) bytes of frames are waiting: the device reads too slowly")
            return
        }
    }

    func allowRequest() -> Bool { bucket.withLock { $0.take(now: .now) } }

    // MARK: - Notifications and snapshots

    /// A notification for this socket's user: sent now, held until the welcome, or dropped
    /// as older than the snapshot.
    func offer(_ notification: PendingNotification) {
        filter.withLock { filter in
            if let ready = filter.offer(notification) {
                send(QueuedFrame(text: ready.frame, receivedAt: ready.receivedAt))
            }
        }
    }

    func snapshotRequested() { filter.withLock { $0.snapshotRequested() } }

    /// Queues the welcome, then what was held for it, under the filter's lock so that no
    /// notification can slip in between.
    func welcome(_ frame: String, snapshot: [UUID: Int]) {
        filter.withLock { filter in
            send(QueuedFrame(text: frame, receivedAt: nil))
            for held in filter.welcomed(snapshot: snapshot) {
                send(QueuedFrame(text: held.frame, receivedAt: held.receivedAt))
            }
        }
    }
}

/// Reads what the gateway needs of a notification body: its call's id, sequence and status,
/// and who is in it.
enum NotificationBody {
    struct Header: Decodable {
        var call: CallHeader
    }

    static func header(_ body: Data) -> CallHeader? {
        (try? JSONDecoder().decode(Header.self, from: body))?.call
    }

    /// `user.<uid>.<name>` → (uid, name).
    static func route(_ routingKey: String) -> (uid: String, name: String)? {
        let parts = routingKey.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == "user", Identifier.isValid(String(parts[1])),
            parts[2].allSatisfy({ $0.isLetter || $0 == "_" || $0 == "." })
        else { return nil }
        return (String(parts[1]), String(parts[2]))
    }
}

/// The snapshot reply of `call.live`: the calls as JSON, and each call's sequence and
/// whether `uid` is live in it.
enum Snapshot {
    static func parse(_ reply: Data, uid: String) -> Result<
        (callsJSON: String, sequences: [UUID: Int], live: Set<UUID>), CallError
    > {
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: reply) else {
            return .failure(CallError(.unavailable, "the snapshot reply was not JSON"))
        }
        if case .object(let error)? = object["error"] {
            var code = CallError.Code.unavailable
            if case .string(let text)? = error["code"], let known = CallError.Code(rawValue: text) { code = known }
            var message = "the snapshot could not be taken"
            if case .string(let text)? = error["message"] { message = text }
            return .failure(CallError(code, message))
        }
        guard case .array(let calls)? = object["calls"] else {
            return .failure(CallError(.unavailable, "the snapshot reply had no calls"))
        }
        var sequences: [UUID: Int] = [:]
        var live: Set<UUID> = []
        for call in calls {
            guard case .object(let fields) = call, case .string(let id)? = fields["session_id"], let uuid = UUID(uuidString: id)
            else { continue }
            switch fields["sequence"] {
            case .int(let n)?: sequences[uuid] = Int(n)
            case .double(let d)?: sequences[uuid] = Int(d)
            default: continue
            }
            if fields["status"] == .string("ongoing"), case .array(let participants)? = fields["participants"],
                participants.contains(where: {
                    guard case .object(let member) = $0 else { return false }
                    return member["uid"] == .string(uid) && member["status"] == .string("accepted")
                })
            {
                live.insert(uuid)
            }
        }
        let json = String(decoding: (try? JSONEncoder().encode(JSONValue.array(calls))) ?? Data("[]".utf8), as: UTF8.self)
        return .success((json, sequences, live))
    }
}
