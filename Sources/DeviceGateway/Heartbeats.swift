// The gateway's half of DESIGN §10: it keeps its users' calls live by sending `call.heartbeat`
// every 30 s for each connected user with an accepted participation in an ongoing call. It
// learns those calls from the snapshots and notifications it hands its sockets, and forgets
// one when the server refuses its heartbeat.
public import Foundation

/// What the gateway reads of a call in a notification or a snapshot.
struct CallHeader: Decodable, Sendable {
    struct Member: Decodable, Sendable {
        var uid: String
        var status: String
    }

    var sessionID: UUID
    var sequence: Int
    var status: String
    var participants: [Member]

    enum CodingKeys: String, CodingKey {
        case sessionID = "session_id"
        case sequence, status, participants
    }

    /// Whether `uid` is an accepted participant of this call while it is ongoing.
    func isLive(for uid: String) -> Bool {
        status == "ongoing" && participants.contains { $0.uid == uid && $0.status == "accepted" }
    }
}

/// The calls each user of this instance is in, as far as the instance has seen: what it
/// sends heartbeats for.
public struct LiveParticipations: Sendable {
    struct Seen: Sendable {
        var sequence: Int
        var live: Bool
    }

    private var users: [String: [UUID: Seen]] = [:]
    /// Calls remembered per user before the ones no longer live are pruned.
    static let pruneAbove = 64

    public init() {}

    /// A snapshot or notification says whether `uid` is live in the call at `sequence`; news
    /// older than what was seen of the call is ignored.
    public mutating func observe(uid: String, sessionID: UUID, sequence: Int, live: Bool) {
        var calls = users[uid] ?? [:]
        if let known = calls[sessionID], known.sequence > sequence { return }
        calls[sessionID] = Seen(sequence: sequence, live: live)
        if calls.count > Self.pruneAbove { calls = calls.filter(\.value.live) }
        users[uid] = calls
    }

    /// The server refused a heartbeat: the call is over for the user, or they left it.
    public mutating func over(uid: String, sessionID: UUID) {
        users[uid]?[sessionID]?.live = false
    }

    /// The user's last socket on this instance closed.
    public mutating func forget(uid: String) {
        users[uid] = nil
    }

    /// Every (user, call) to send a heartbeat for, in a stable order.
    public var due: [(uid: String, sessionID: UUID)] {
        users.keys.sorted().flatMap { uid in
            users[uid]!.filter(\.value.live).keys.sorted { $0.uuidString < $1.uuidString }.map { (uid, $0) }
        }
    }
}
