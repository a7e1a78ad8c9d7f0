// Which sockets an instance holds, per user, and what each may still do: the gateway's
// bookkeeping as pure state machines (DESIGN §7), tested without a socket or a broker.
public import Foundation

/// The sockets of one gateway instance: those still waiting for their `hello`, and the
/// authenticated ones by user. Each transition says whether the socket may go on.
public struct SocketRegistry: Sendable {
    public struct Limits: Sendable {
        public var socketsPerUser: Int
        public var awaitingHello: Int

        public init(socketsPerUser: Int = 10, awaitingHello: Int = 1000) {
            self.socketsPerUser = socketsPerUser
            self.awaitingHello = awaitingHello
        }
    }

    public enum Admission: Sendable, Equatable {
        case admitted
        case refused(code: UInt16, reason: String)
    }

    public let limits: Limits
    public private(set) var awaitingHello = 0
    private var users: [String: Set<Int>] = [:]
    public private(set) var socketCount = 0

    public init(limits: Limits) { self.limits = limits }

    /// A new socket, before its `hello`.
    public mutating func accept() -> Admission {
        guard awaitingHello < limits.awaitingHello else {
            return .refused(
                code: CloseCode.tryAgainLater,
                reason: "\(limits.awaitingHello) sockets are already waiting for their hello on this instance; retry")
        }
        awaitingHello += 1
        return .admitted
    }

    /// The socket sent its hello (or gave up before): it no longer waits.
    public mutating func helloEnded() {
        awaitingHello = max(0, awaitingHello - 1)
    }

    /// An authenticated socket of `uid`: admitted unless the user already has the most
    /// sockets allowed on this instance.
    public mutating func open(_ socket: Int, uid: String) -> Admission {
        let held = users[uid, default: []]
        guard held.count < limits.socketsPerUser else {
            return .refused(
                code: CloseCode.tryAgainLater,
                reason: "user '\(uid)' already has \(limits.socketsPerUser) sockets on this instance; close one first")
        }
        users[uid, default: []].insert(socket)
        socketCount += 1
        return .admitted
    }

    /// A socket of `uid` closed.
    public mutating func close(_ socket: Int, uid: String) {
        guard users[uid]?.remove(socket) != nil else { return }
        socketCount -= 1
        if users[uid]?.isEmpty == true { users[uid] = nil }
    }

    /// Who a notification for `uid` goes to.
    public func sockets(of uid: String) -> Set<Int> { users[uid] ?? [] }

    public var userCount: Int { users.count }
}

/// A notification on its way to one socket.
public struct PendingNotification: Sendable, Equatable {
    public var frame: String
    public var sessionID: UUID?
    public var sequence: Int?
    /// When the broker delivered it, for the delivery latency.
    public var receivedAt: ContinuousClock.Instant

    public init(frame: String, sessionID: UUID?, sequence: Int?, receivedAt: ContinuousClock.Instant) {
        self.frame = frame
        self.sessionID = sessionID
        self.sequence = sequence
        self.receivedAt = receivedAt
    }
}

/// The order guarantee of DESIGN §7 for one socket: notifications that arrive while its
/// snapshot is being fetched wait for the welcome; afterwards, one whose call `sequence` is
/// lower than that call's in the snapshot is stale and dropped (equal or higher is delivered).
public struct SnapshotFilter: Sendable {
    enum State: Sendable {
        case awaitingSnapshot(buffered: [PendingNotification])
        case live(sequences: [UUID: Int])
    }

    var state: State = .awaitingSnapshot(buffered: [])

    public init() {}

    /// A (new) snapshot is being fetched: hold notifications until it is sent.
    public mutating func snapshotRequested() {
        if case .awaitingSnapshot = state { return }
        state = .awaitingSnapshot(buffered: [])
    }

    /// A notification arrived: returns it when it is to be sent now; nil when it waits for
    /// the welcome or is older than the snapshot.
    public mutating func offer(_ notification: PendingNotification) -> PendingNotification? {
        switch state {
        case .awaitingSnapshot(var buffered):
            buffered.append(notification)
            state = .awaitingSnapshot(buffered: buffered)
            return nil
        case .live(let sequences):
            return Self.isStale(notification, sequences) ? nil : notification
        }
    }

    /// The welcome with this snapshot (session id → sequence) was queued: returns the held
    /// notifications that are not older than it, in arrival order, to send right after.
    public mutating func welcomed(snapshot: [UUID: Int]) -> [PendingNotification] {
        let held: [PendingNotification]
        if case .awaitingSnapshot(let buffered) = state { held = buffered } else { held = [] }
        state = .live(sequences: snapshot)
        return held.filter { !Self.isStale($0, snapshot) }
    }

    public var isLive: Bool {
        if case .live = state { return true }
        return false
    }

    private static func isStale(_ notification: PendingNotification, _ sequences: [UUID: Int]) -> Bool {
        guard let session = notification.sessionID, let sequence = notification.sequence,
            let known = sequences[session]
        else { return false }
        return sequence < known
    }
}

/// Requests per socket: `rate` per second on average, bursts up to `burst` (a token bucket).
public struct TokenBucket: Sendable {
    public let rate: Double
    public let burst: Double
    private var tokens: Double
    private var updated: ContinuousClock.Instant

    public init(rate: Double, burst: Double, now: ContinuousClock.Instant) {
        self.rate = rate
        self.burst = burst
        tokens = burst
        updated = now
    }

    /// Takes one token if there is one.
    public mutating func take(now: ContinuousClock.Instant) -> Bool {
        let elapsed = now - updated
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        tokens = min(burst, tokens + max(0, seconds) * rate)
        updated = now
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
