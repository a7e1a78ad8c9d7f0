// The flows the load generator drives, each between one caller and one receiver, and the
// mix they are drawn from.
import AMQPClient
import CallRules
import Foundation
import RingingAuth
import RingingContract
import Synchronization

/// The seed flows: answered (initiate → incoming → ring receipt → accept → two tokens → end), rejected by the
/// receiver, cancelled by the caller, and unanswered until the ring deadline.
public enum FlowKind: String, Sendable, CaseIterable, Codable {
    case answered, rejected, cancelled, unanswered

    /// Requests one flow sends.
    public var requests: Int {
        switch self {
        case .answered: 6
        case .rejected, .cancelled: 2
        case .unanswered: 1
        }
    }
}

/// Weights of the flow kinds, e.g. `answered=70,rejected=10,cancelled=10,unanswered=10`.
public struct FlowMix: Sendable, Codable, CustomStringConvertible {
    public var weights: [FlowKind: Int]

    public static let standard = FlowMix(weights: [.answered: 70, .rejected: 10, .cancelled: 10, .unanswered: 10])

    public init(weights: [FlowKind: Int]) {
        self.weights = weights
    }

    /// Parses `kind=weight,...`; the error names the bad part.
    public init(parsing text: String) throws {
        var weights: [FlowKind: Int] = [:]
        for part in text.split(separator: ",") {
            let pieces = part.split(separator: "=")
            guard pieces.count == 2, let kind = FlowKind(rawValue: pieces[0].trimmingCharacters(in: .whitespaces)) else {
                throw BenchError(
                    "--mix: '\(part)' is not kind=weight with kind one of \(FlowKind.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            guard let weight = Int(pieces[1].trimmingCharacters(in: .whitespaces)), weight >= 0 else {
                throw BenchError("--mix: the weight of \(kind.rawValue) must be a whole number ≥ 0, not '\(pieces[1])'")
            }
            weights[kind] = weight
        }
        guard weights.values.reduce(0, +) > 0 else { throw BenchError("--mix: at least one weight must be above 0") }
        self.weights = weights
    }

    /// Requests per flow, on average.
    public var requestsPerFlow: Double { averageRequests(ringReceipts: true) }

    /// The same, with or without the answered flows' ring receipt.
    public func averageRequests(ringReceipts: Bool) -> Double {
        let total = Double(weights.values.reduce(0, +))
        return weights.reduce(0.0) { sum, weight in
            let requests = weight.key.requests - (weight.key == .answered && !ringReceipts ? 1 : 0)
            return sum + Double(weight.value) * Double(requests)
        } / total
    }

    public var description: String {
        FlowKind.allCases.compactMap { kind in weights[kind].map { "\(kind.rawValue)=\($0)" } }.joined(separator: ",")
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(Dictionary(uniqueKeysWithValues: weights.map { ($0.key.rawValue, $0.value) }))
    }

    public init(from decoder: any Decoder) throws {
        let raw = try decoder.singleValueContainer().decode([String: Int].self)
        weights = Dictionary(uniqueKeysWithValues: raw.compactMap { key, value in FlowKind(rawValue: key).map { ($0, value) } })
    }
}

/// Hands out flow kinds in the proportions of a mix, deterministically (no randomness, so
/// two runs send the same sequence).
final class FlowPicker: Sendable {
    private let weights: [(FlowKind, Double)]
    private let counts = Mutex<[FlowKind: Double]>([:])

    init(_ mix: FlowMix) {
        weights = FlowKind.allCases.compactMap { kind in
            mix.weights[kind].flatMap { $0 > 0 ? (kind, Double($0)) : nil }
        }
    }

    func next() -> FlowKind {
        counts.withLock { counts in
            let kind = weights.min { lhs, rhs in
                (counts[lhs.0, default: 0] + 1) / lhs.1 < (counts[rhs.0, default: 0] + 1) / rhs.1
            }!.0
            counts[kind, default: 0] += 1
            return kind
        }
    }
}

public struct BenchError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A bench user and its auth token.
struct BenchUser: Sendable {
    var uid: String
    var token: String
}

struct Pair: Sendable {
    var caller: BenchUser
    var receiver: BenchUser
}

/// Caller/receiver pairs, each in at most one flow at a time. New pairs are minted on demand;
/// a pair whose flow failed is retired (its call may still be ringing).
final class PairPool: Sendable {
    let prefix: String
    let auth: AuthTokens
    private let state = Mutex<(free: [Pair], minted: Int)>(([], 0))

    init(prefix: String, auth: AuthTokens) {
        self.prefix = prefix
        self.auth = auth
    }

    func prefill(_ count: Int) async throws {
        var pairs: [Pair] = []
        for _ in 0..<count { pairs.append(try await mint()) }
        state.withLock { $0.free.append(contentsOf: pairs) }
    }

    func take() async throws -> Pair {
        if let pair = state.withLock({ $0.free.popLast() }) { return pair }
        return try await mint()
    }

    func give(_ pair: Pair, reusable: Bool) {
        guard reusable else { return }
        state.withLock { $0.free.append(pair) }
    }

    private func mint() async throws -> Pair {
        let index = state.withLock { state in
            state.minted += 1
            return state.minted
        }
        let caller = "\(prefix)-c\(index)"
        let receiver = "\(prefix)-r\(index)"
        return Pair(
            caller: BenchUser(uid: caller, token: try await auth.mint(uid: caller)),
            receiver: BenchUser(uid: receiver, token: try await auth.mint(uid: receiver)))
    }
}

/// Runs one flow. `release` is called once the flow no longer needs its driver's attention
/// (an unanswered call then only waits for the server's deadline).
protocol FlowDriver: Sendable {
    func run(_ kind: FlowKind, _ pair: Pair, recorder: Recorder, release: @Sendable () -> Void) async -> Bool
}

/// A flow step failed and was already counted.
struct FlowAborted: Error {}

extension BenchBroker {
    /// Sends one request and records its latency and outcome; throws `FlowAborted` on an
    /// error reply or when no reply came.
    func send(_ type: RequestType, _ json: String, recorder: Recorder) async throws -> BenchReply.Answer {
        let sent = ContinuousClock.now
        do {
            let answer = try await request(routingKey: type.rawValue, body: Data(json.utf8))
            recorder.reply(type.rawValue, sent: sent, arrived: answer.arrivedAt, errorCode: answer.reply.error?.code.rawValue)
            if answer.reply.error != nil { throw FlowAborted() }
            return answer.reply
        } catch let failure as WaitFailure {
            recorder.error(failure.code)
            throw FlowAborted()
        }
    }

    /// Waits for an expected notification; a timeout is counted and aborts the flow.
    func arrival(_ slot: Slot<Arrival>, recorder: Recorder) async throws -> Arrival {
        do { return try await slot.value() } catch let failure as WaitFailure {
            recorder.error(failure.code == "timeout" ? "notification_timeout" : failure.code)
            throw FlowAborted()
        }
    }
}

/// The seed flows against call-control and the token service, measuring what a phone sees.
struct RingingFlows: FlowDriver {
    let broker: BenchBroker
    /// `timeout_s` of unanswered calls (the others use 45 s and never reach it).
    let ringTimeout: Int
    /// Whether the receiver sends `call.ringing` before accepting.
    var ringReceipts = true

    func run(_ kind: FlowKind, _ pair: Pair, recorder: Recorder, release: @Sendable () -> Void) async -> Bool {
        defer { release() }
        do {
            try await script(kind, pair, recorder: recorder, release: release)
            return true
        } catch is FlowAborted {
            return false
        } catch {
            recorder.error("\(error)")
            return false
        }
    }

    private func script(_ kind: FlowKind, _ pair: Pair, recorder: Recorder, release: @Sendable () -> Void) async throws {
        let (caller, receiver) = (pair.caller, pair.receiver)
        let ring = broker.expect("incoming_call.received", for: receiver.uid)
        let initiated = ContinuousClock.now
        let timeout = kind == .unanswered ? ringTimeout : 45
        let reply = try await broker.send(
            .initiate,
            #"{"auth_token":"\#(caller.token)","receiver_id":"\#(receiver.uid)","receiver_type":"user","call_type":"audio","timeout_s":\#(timeout)}"#,
            recorder: recorder)
        guard let call = reply.call, call.status == .initiated else {
            recorder.error("unexpected_status")
            throw FlowAborted()
        }
        let rung = try await broker.arrival(ring, recorder: recorder)
        recorder.record(.timeToRing, rung.arrivedAt - initiated, completedAt: rung.arrivedAt)
        guard rung.call.sessionID == call.sessionID else {
            recorder.error("wrong_call_rung")
            throw FlowAborted()
        }
        let session = call.sessionID
        let sid = session.uuidString.lowercased()

        switch kind {
        case .answered:
            // The receiver's phone shows the ring and says so; the caller sees "Ringing…".
            if ringReceipts {
                let ringing = broker.expect("outgoing_call.ringing", for: caller.uid, session: session)
                _ = try await broker.send(
                    .ringing, #"{"auth_token":"\#(receiver.token)","session_id":"\#(sid)","device_id":"bench"}"#,
                    recorder: recorder)
                let shown = try await broker.arrival(ringing, recorder: recorder)
                recorder.record(.timeToRinging, shown.arrivedAt - initiated, completedAt: shown.arrivedAt)
            }
            let accepted = broker.expect("outgoing_call.accepted", for: caller.uid, session: session)
            let acceptSent = ContinuousClock.now
            _ = try await broker.send(.accept, #"{"auth_token":"\#(receiver.token)","session_id":"\#(sid)"}"#, recorder: recorder)
            let answered = try await broker.arrival(accepted, recorder: recorder)
            recorder.record(.acceptToAccepted, answered.arrivedAt - acceptSent, completedAt: answered.arrivedAt)
            async let callerToken = broker.send(
                .generateToken, #"{"auth_token":"\#(caller.token)","session_id":"\#(sid)"}"#, recorder: recorder)
            async let receiverToken = broker.send(
                .generateToken, #"{"auth_token":"\#(receiver.token)","session_id":"\#(sid)"}"#, recorder: recorder)
            let tokens = try await (callerToken, receiverToken)
            guard tokens.0.token != nil, tokens.1.token != nil else {
                recorder.error("token_missing")
                throw FlowAborted()
            }
            let ended = broker.expect("call.ended", for: receiver.uid, session: session)
            _ = try await broker.send(.end, #"{"auth_token":"\#(caller.token)","session_id":"\#(sid)"}"#, recorder: recorder)
            _ = try await broker.arrival(ended, recorder: recorder)

        case .rejected:
            let rejected = broker.expect("outgoing_call.rejected", for: caller.uid, session: session)
            _ = try await broker.send(
                .reject, #"{"auth_token":"\#(receiver.token)","session_id":"\#(sid)","status":"rejected"}"#, recorder: recorder)
            let outcome = try await broker.arrival(rejected, recorder: recorder)
            try expect(outcome, .rejected, recorder: recorder)

        case .cancelled:
            let canceled = broker.expect("incoming_call.canceled", for: receiver.uid, session: session)
            _ = try await broker.send(
                .reject, #"{"auth_token":"\#(caller.token)","session_id":"\#(sid)","status":"cancelled"}"#, recorder: recorder)
            let outcome = try await broker.arrival(canceled, recorder: recorder)
            try expect(outcome, .cancelled, recorder: recorder)

        case .unanswered:
            let wait = Duration.seconds(ringTimeout + 30)
            let rejected = broker.expect("outgoing_call.rejected", for: caller.uid, session: session, timeout: wait)
            let canceled = broker.expect("incoming_call.canceled", for: receiver.uid, session: session, timeout: wait)
            release()
            let outcome = try await broker.arrival(rejected, recorder: recorder)
            try expect(outcome, .unanswered, recorder: recorder)
            let late = outcome.arrivedWallClock.timeIntervalSince(call.expiresAt)
            recorder.record(.timeoutLateness, .microseconds(Int64(max(0, late) * 1_000_000)), completedAt: outcome.arrivedAt)
            _ = try await broker.arrival(canceled, recorder: recorder)
        }
    }

    private func expect(_ arrival: Arrival, _ status: CallStatus, recorder: Recorder) throws {
        guard arrival.call.status == status else {
            recorder.error("unexpected_status")
            throw FlowAborted()
        }
    }
}
