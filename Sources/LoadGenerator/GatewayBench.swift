// The gateway phase of the benchmark: many idle WebSockets held by one gateway instance, and
// caller/receiver pairs ringing at a fixed rate, once through the gateway and once straight
// over AMQP in the same run, so that the gateway hop's cost is the difference.
public import AMQPClient
import CallRules
import Foundation
import Histogram
import HummingbirdWSClient
public import Logging
import RingingAuth
import RingingContract
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

public struct GatewayBenchConfiguration: Codable, Sendable {
    public var gatewayURL = "ws://127.0.0.1:8080/v1/ws"
    /// Idle sockets held while the rings run.
    public var idleSockets = 10_000
    public var pairs = 200
    public var ringsPerSecond = 200.0
    public var durationSeconds = 20
    /// Sockets connecting at once (the gateway refuses more than 1,000 waiting for hello).
    public var connectConcurrency = 200
    /// The gateway's process id, for its resident memory (none: not reported).
    public var gatewayPID: Int32?

    public init() {}

    enum CodingKeys: String, CodingKey {
        case gatewayURL = "gateway_url"
        case idleSockets = "idle_sockets"
        case pairs
        case ringsPerSecond = "rings_per_s"
        case durationSeconds = "duration_s"
        case connectConcurrency = "connect_concurrency"
        case gatewayPID = "gateway_pid"
    }
}

public struct GatewayBenchReport: Codable, Sendable {
    public var configuration: GatewayBenchConfiguration
    public var socketsHeld: Int
    public var connectSeconds: Double
    public var gatewayRSSBeforeKiB: Int?
    public var gatewayRSSHeldKiB: Int?
    public var rssPerIdleSocketKiB: Double?
    public var timeToRingGateway: LatencySummary
    public var timeToRingAMQP: LatencySummary
    public var ringsGateway: Int
    public var ringsAMQP: Int
    public var skippedRings: Int
    /// Notifications that came again (delivery is at least once); not counted as rings.
    public var duplicateNotifications: Int
    public var errors: [String: Int]

    enum CodingKeys: String, CodingKey {
        case configuration
        case socketsHeld = "sockets_held"
        case connectSeconds = "connect_s"
        case gatewayRSSBeforeKiB = "gateway_rss_before_kib"
        case gatewayRSSHeldKiB = "gateway_rss_held_kib"
        case rssPerIdleSocketKiB = "rss_per_idle_socket_kib"
        case timeToRingGateway = "time_to_ring_gateway"
        case timeToRingAMQP = "time_to_ring_amqp"
        case ringsGateway = "rings_gateway"
        case ringsAMQP = "rings_amqp"
        case skippedRings = "skipped_rings"
        case duplicateNotifications = "duplicate_notifications"
        case errors
    }

    public var hopAddedP50: Double { ((timeToRingGateway.p50 - timeToRingAMQP.p50) * 100).rounded() / 100 }
    public var hopAddedP99: Double { ((timeToRingGateway.p99 - timeToRingAMQP.p99) * 100).rounded() / 100 }

    public var text: String {
        func kib(_ value: Int?) -> String { value.map { "\($0) KiB" } ?? "n/a" }
        var lines = [
            "Gateway phase (\(configuration.gatewayURL))",
            "  idle sockets held: \(socketsHeld) of \(configuration.idleSockets) (connected in \(String(format: "%.1f", connectSeconds)) s)",
            "  gateway RSS: \(kib(gatewayRSSBeforeKiB)) before, \(kib(gatewayRSSHeldKiB)) holding them: "
                + (rssPerIdleSocketKiB.map { String(format: "%.1f KiB per idle socket", $0) } ?? "n/a")
                + " (target ≤ 30 KiB: \(rssPerIdleSocketKiB.map { $0 <= 30 ? "met" : "missed" } ?? "n/a"))",
            "  rings at \(Int(configuration.ringsPerSecond))/s for \(configuration.durationSeconds) s each way, \(configuration.pairs) pairs:",
            "    time-to-ring through the gateway: p50 \(timeToRingGateway.p50) ms, p99 \(timeToRingGateway.p99) ms (\(ringsGateway) rings)",
            "    time-to-ring over AMQP:           p50 \(timeToRingAMQP.p50) ms, p99 \(timeToRingAMQP.p99) ms (\(ringsAMQP) rings)",
            "    the gateway hop adds: p50 \(hopAddedP50) ms (target ≤ 2: \(hopAddedP50 <= 2 ? "met" : "missed")), p99 \(hopAddedP99) ms (target ≤ 10: \(hopAddedP99 <= 10 ? "met" : "missed"))",
        ]
        if skippedRings > 0 { lines.append("  rings skipped (no free pair at their tick): \(skippedRings)") }
        if duplicateNotifications > 0 {
            lines.append("  notifications delivered twice (at least once; devices deduplicate): \(duplicateNotifications)")
        }
        if !errors.isEmpty {
            lines.append("  errors: " + errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        }
        return lines.joined(separator: "\n")
    }
}

/// Raises this process's open-file limit to its hard limit (one descriptor per socket).
public func raiseOpenFileLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return -1 }
    limit.rlim_cur = limit.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    return Int(limit.rlim_cur)
}

/// The resident memory of a process, from /proc.
func residentKiB(_ pid: Int32) -> Int? {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    }
    return nil
}

public final class GatewayBench: Sendable {
    let configuration: GatewayBenchConfiguration
    let amqp: AMQPURL
    let auth: AuthTokens
    let logger: Logger
    let progress: @Sendable (String) -> Void
    let runID = String(UUID().uuidString.prefix(6)).lowercased()

    private struct Tally {
        var gateway = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var amqp = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        var errors: [String: Int] = [:]
        var skipped = 0
        var duplicates = 0
    }

    private let tally = Mutex(Tally())

    public init(
        configuration: GatewayBenchConfiguration, amqp: AMQPURL, authSecret: String, logger: Logger,
        progress: @escaping @Sendable (String) -> Void
    ) async throws {
        self.configuration = configuration
        self.amqp = amqp
        auth = try await AuthTokens(secret: authSecret)
        self.logger = logger
        self.progress = progress
    }

    private func error(_ what: String) { tally.withLock { $0.errors[what, default: 0] += 1 } }

    static func microseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        return UInt64(max(0, seconds)) * 1_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000_000)
    }

    public func run() async throws -> GatewayBenchReport {
        let files = raiseOpenFileLimit()
        if files < configuration.idleSockets + 4 * configuration.pairs + 100 {
            progress("gateway: warning: this process may open only \(files) files; raise `ulimit -n`")
        }
        let before = configuration.gatewayPID.flatMap(residentKiB)
        let idle = SocketSet()
        let started = ContinuousClock.now
        return try await withThrowingTaskGroup(of: Void.self) { group in
            // The idle sockets, connected a batch at a time, then held until the end.
            var next = 0
            while next < configuration.idleSockets {
                let batch = min(configuration.connectConcurrency, configuration.idleSockets - next)
                for index in next..<(next + batch) {
                    let token = try await auth.mint(uid: "gwbench-\(runID)-idle-\(index)")
                    group.addTask { await idle.hold(self.configuration.gatewayURL, token: token, onError: self.error) }
                }
                next += batch
                await idle.waitForWelcomes(next, orFailures: true)
                if next % 1000 < batch { progress("gateway: \(idle.welcomed) idle sockets welcomed") }
            }
            let connectSeconds = Double((ContinuousClock.now - started).components.seconds)
            let held = configuration.gatewayPID.flatMap(residentKiB)
            progress("gateway: \(idle.welcomed) idle sockets held; ringing over AMQP at \(Int(configuration.ringsPerSecond))/s")
            let amqpRings = try await ringOverAMQP()
            progress("gateway: ringing through the gateway at \(Int(configuration.ringsPerSecond))/s")
            let gatewayRings = try await ringThroughGateway()
            let socketsHeld = idle.welcomed - idle.closedAfterWelcome
            idle.release()
            group.cancelAll()
            let result = tally.withLock { $0 }
            var perSocket: Double?
            if let before, let held, socketsHeld > 0 {
                perSocket = (Double(held - before) / Double(socketsHeld) * 10).rounded() / 10
            }
            return GatewayBenchReport(
                configuration: configuration, socketsHeld: socketsHeld, connectSeconds: connectSeconds,
                gatewayRSSBeforeKiB: before, gatewayRSSHeldKiB: held, rssPerIdleSocketKiB: perSocket,
                timeToRingGateway: LatencySummary(result.gateway), timeToRingAMQP: LatencySummary(result.amqp),
                ringsGateway: gatewayRings, ringsAMQP: amqpRings, skippedRings: result.skipped,
                duplicateNotifications: result.duplicates,
                errors: result.errors)
        }
    }

    // MARK: - Ringing at a rate

    /// Rings `ringsPerSecond` for `durationSeconds`, each tick on the next free pair; `ring`
    /// returns once the pair is free again.
    private func atRate(_ ring: @escaping @Sendable (Int) async -> Void) async -> Int {
        let free = FreePairs(count: configuration.pairs)
        let interval = Duration.seconds(1 / configuration.ringsPerSecond)
        let end = ContinuousClock.now + .seconds(configuration.durationSeconds)
        var tick = ContinuousClock.now
        var rings = 0
        await withDiscardingTaskGroup { group in
            while tick < end {
                try? await Task.sleep(until: tick, clock: .continuous)
                tick += interval
                guard let pair = free.take() else {
                    tally.withLock { $0.skipped += 1 }
                    continue
                }
                rings += 1
                group.addTask {
                    await ring(pair)
                    free.give(back: pair)
                }
            }
        }
        return rings
    }

    private func ringThroughGateway() async throws -> Int {
        let sockets = SocketSet()
        var callers: [BenchSocket] = []
        var receivers: [BenchSocket] = []
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for pair in 0..<configuration.pairs {
                let caller = BenchSocket(uid: "gwbench-\(runID)-c\(pair)")
                let receiver = BenchSocket(uid: "gwbench-\(runID)-r\(pair)")
                for socket in [caller, receiver] {
                    let token = try await auth.mint(uid: socket.uid)
                    group.addTask {
                        await sockets.hold(self.configuration.gatewayURL, token: token, socket: socket, onError: self.error)
                    }
                }
                callers.append(caller)
                receivers.append(receiver)
            }
            await sockets.waitForWelcomes(2 * configuration.pairs, orFailures: true)
            let (c, r) = (callers, receivers)
            let rings = await atRate { pair in
                let (caller, receiver) = (c[pair], r[pair])
                let sent = ContinuousClock.now
                let rung = receiver.expect("incoming_call.received")
                let rejected = caller.expect("outgoing_call.rejected")
                caller.request(
                    "call.initiate", ["receiver_id": .string(receiver.uid), "receiver_type": "user", "call_type": "audio"])
                guard let ring = await rung.value(within: .seconds(10)) else { return self.error("gateway: no ring in 10 s") }
                self.tally.withLock { _ = $0.gateway.record(Self.microseconds(ring.at - sent)) }
                receiver.request("call.reject", ["session_id": .string(ring.sessionID), "status": "rejected"])
                if await rejected.value(within: .seconds(10)) == nil { self.error("gateway: no rejection in 10 s") }
            }
            let duplicates = (c + r).map(\.waiters.duplicates).reduce(0, +)
            tally.withLock { tally in
                tally.duplicates += duplicates
                for socket in c + r {
                    for (code, count) in socket.failedReplies.withLock({ $0 }) {
                        tally.errors["gateway: reply \(code)", default: 0] += count
                    }
                }
            }
            sockets.release()
            group.cancelAll()
            return rings
        }
    }

    private func ringOverAMQP() async throws -> Int {
        var configuration = AMQPConfiguration(url: amqp, connectionName: "ringing-bench gateway-phase")
        configuration.confirmWindow = 2000
        let pairs = self.configuration.pairs
        let callers = (0..<pairs).map { "gwbench-\(runID)-ac\($0)" }
        let receivers = (0..<pairs).map { "gwbench-\(runID)-ar\($0)" }
        var tokens: [String: String] = [:]
        for uid in callers + receivers { tokens[uid] = try await auth.mint(uid: uid) }
        let queue = "bench.gateway-phase.\(runID)"
        let waiters = NotificationWaiters()
        return try await AMQPConnection.withConnection(configuration: configuration, logger: logger) { connection in
            try await connection.declare(
                AMQPTopology(
                    queues: [AMQPQueue(queue, durable: false, exclusive: true, autoDelete: true)],
                    bindings: (callers + receivers).map {
                        AMQPBinding(queue: queue, exchange: Topology.notificationsExchange, routingKey: "user.\($0).#")
                    }), remember: false)
            let notifications = try await connection.consume(queue: queue, prefetch: 1000, noAck: true)
            let tokensByUID = tokens
            return try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for try await delivery in notifications {
                        waiters.deliver(routingKey: delivery.routingKey, body: delivery.body, at: .now)
                    }
                }
                defer { group.cancelAll() }
                @Sendable func publish(_ type: String, as uid: String, _ body: JSONObject) async {
                    var fields = body
                    fields["auth_token"] = .string(tokensByUID[uid] ?? "")
                    let message = AMQPMessage(
                        exchange: Topology.commandsExchange, routingKey: type,
                        body: (try? JSONEncoder().encode(fields)) ?? Data(),
                        properties: AMQPProperties(contentType: "application/json", messageID: UUID().uuidString))
                    do { try await connection.publishRetryingRefusals(message) } catch {
                        self.error("amqp: publish \(type) failed: \(error)")
                    }
                }
                defer { self.tally.withLock { $0.duplicates += waiters.duplicates } }
                return await atRate { pair in
                    let (caller, receiver) = (callers[pair], receivers[pair])
                    let rung = waiters.expect(uid: receiver, "incoming_call.received")
                    let rejected = waiters.expect(uid: caller, "outgoing_call.rejected")
                    let sent = ContinuousClock.now
                    await publish(
                        "call.initiate", as: caller,
                        ["receiver_id": .string(receiver), "receiver_type": "user", "call_type": "audio"])
                    guard let ring = await rung.value(within: .seconds(10)) else { return self.error("amqp: no ring in 10 s") }
                    self.tally.withLock { _ = $0.amqp.record(Self.microseconds(ring.at - sent)) }
                    await publish("call.reject", as: receiver, ["session_id": .string(ring.sessionID), "status": "rejected"])
                    if await rejected.value(within: .seconds(10)) == nil { self.error("amqp: no rejection in 10 s") }
                }
            }
        }
    }
}

/// The pairs not ringing right now, taken in turn (least recently used first), so that each
/// socket sends a few requests a second, as a phone does, and none hits the gateway's rate limit.
final class FreePairs: Sendable {
    private let pairs: Mutex<[Int]>

    init(count: Int) { pairs = Mutex(Array(0..<count)) }

    func take() -> Int? { pairs.withLock { $0.isEmpty ? nil : $0.removeFirst() } }

    func give(back pair: Int) { pairs.withLock { $0.append(pair) } }
}

/// A notification someone waits for: when it came and for which call.
struct RingArrival: Sendable {
    var at: ContinuousClock.Instant
    var sessionID: String
}

extension Slot {
    /// The value, or nil once `timeout` has passed (the slot is then completed as timed out,
    /// so a value arriving later is dropped).
    func value(within timeout: Duration) async -> Value? {
        await withTaskGroup(of: Value?.self) { group in
            group.addTask { try? await self.value() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                self.complete(.failure(WaitFailure(code: "timeout", detail: "nothing within \(timeout)")))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
    }
}

/// Expected notifications by (user, name), fulfilled from a broker or a socket. Delivery is
/// at least once: a repeat of a notification already seen (same user, name and call) is
/// counted and never taken for the next call's.
final class NotificationWaiters: Sendable {
    private struct State {
        var expected: [String: Slot<RingArrival>] = [:]
        var seen: Set<String> = []
        var duplicates = 0
    }

    private let state = Mutex(State())

    var duplicates: Int { state.withLock { $0.duplicates } }

    func expect(uid: String, _ name: String) -> Slot<RingArrival> {
        let expectation = Slot<RingArrival>()
        state.withLock { $0.expected["\(uid) \(name)"] = expectation }
        return expectation
    }

    func deliver(routingKey: String, body: Data, at: ContinuousClock.Instant) {
        let parts = routingKey.split(separator: ".", maxSplits: 2)
        guard parts.count == 3 else { return }
        deliver(uid: String(parts[1]), name: String(parts[2]), body: body, at: at)
    }

    func deliver(uid: String, name: String, body: Data, at: ContinuousClock.Instant) {
        struct Header: Decodable {
            struct Call: Decodable {
                var sessionID: String
                enum CodingKeys: String, CodingKey { case sessionID = "session_id" }
            }
            var call: Call
        }
        let session = (try? JSONDecoder().decode(Header.self, from: body))?.call.sessionID ?? ""
        let expectation = state.withLock { state -> Slot<RingArrival>? in
            guard state.seen.insert("\(uid) \(name) \(session)").inserted else {
                state.duplicates += 1
                return nil
            }
            return state.expected.removeValue(forKey: "\(uid) \(name)")
        }
        expectation?.complete(.success(RingArrival(at: at, sessionID: session)))
    }
}

/// One benchmark device on the gateway: requests out, notifications to whoever waits.
final class BenchSocket: Sendable {
    let uid: String
    let waiters = NotificationWaiters()
    let outgoing: (stream: AsyncStream<String>, continuation: AsyncStream<String>.Continuation)
    let welcomed = Atomic<Bool>(false)
    let failedReplies = Mutex<[String: Int]>([:])
    private let counter = Mutex(0)

    init(uid: String) {
        self.uid = uid
        outgoing = AsyncStream<String>.makeStream()
    }

    func expect(_ name: String) -> Slot<RingArrival> { waiters.expect(uid: uid, name) }

    func request(_ type: String, _ body: JSONObject) {
        let id = counter.withLock { count -> Int in
            count += 1
            return count
        }
        let frame: JSONObject = [
            "type": "request", "id": .string("\(uid)-\(id)"), "request": .string(type), "body": .object(body),
        ]
        outgoing.continuation.yield(String(decoding: (try? JSONEncoder().encode(frame)) ?? Data(), as: UTF8.self))
    }

    /// A frame from the gateway: notifications go to their waiters.
    func received(_ text: String, at: ContinuousClock.Instant) {
        if text.hasPrefix(#"{"type":"reply""#), text.contains(#""ok":false"#) {
            let code = text.range(of: #""code":""#).map { text[$0.upperBound...].prefix { $0 != "\"" } } ?? "?"
            failedReplies.withLock { $0[String(code), default: 0] += 1 }
            return
        }
        guard text.hasPrefix(#"{"type":"notification""#) else { return }
        guard let data = text.data(using: .utf8),
            let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
            let name = object["name"] as? String, let notification = object["notification"],
            let body = try? JSONSerialization.data(withJSONObject: notification)
        else { return }
        waiters.deliver(uid: uid, name: name, body: body, at: at)
    }
}

/// Sockets held open until released, counting welcomes.
final class SocketSet: Sendable {
    private struct State {
        var welcomed = 0
        var failed = 0
        var closedAfterWelcome = 0
        var released = false
        var waiters: [(Int, CheckedContinuation<Void, Never>)] = []
        var sockets: [BenchSocket] = []
    }

    private let state = Mutex(State())

    var welcomed: Int { state.withLock { $0.welcomed } }
    var closedAfterWelcome: Int { state.withLock { $0.closedAfterWelcome } }

    /// Connects, says hello, and keeps the socket open until `release()`.
    func hold(
        _ url: String, token: String, socket: BenchSocket? = nil, onError: @escaping @Sendable (String) -> Void
    ) async {
        let socket = socket ?? BenchSocket(uid: "idle")
        state.withLock { $0.sockets.append(socket) }
        var configuration = WebSocketClientConfiguration()
        configuration.maxFrameSize = 1 << 20
        do {
            try await WebSocketClient.connect(url: url, configuration: configuration, logger: Logger(label: "bench-socket")) {
                inbound, outbound, _ in
                try await outbound.write(.text(#"{"type":"hello","auth_token":"\#(token)"}"#))
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await text in socket.outgoing.stream { try await outbound.write(.text(text)) }
                    }
                    for try await message in inbound.messages(maxSize: 1 << 20) {
                        guard case .text(let text) = message else { continue }
                        let now = ContinuousClock.now
                        if text.hasPrefix(#"{"type":"welcome""#), !socket.welcomed.exchange(true, ordering: .relaxed) {
                            self.welcome()
                            continue
                        }
                        socket.received(text, at: now)
                    }
                    group.cancelAll()
                }
            }
        } catch {
            if !Task.isCancelled { onError("socket: \("\(error)".prefix(60))") }
        }
        let welcomed = socket.welcomed.load(ordering: .relaxed)
        state.withLock { state in
            if welcomed { state.closedAfterWelcome += state.released ? 0 : 1 } else { state.failed += 1 }
        }
        wake()
    }

    private func welcome() {
        state.withLock { $0.welcomed += 1 }
        wake()
    }

    private func wake() {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let done = state.welcomed + state.failed
            let ready = state.waiters.filter { $0.0 <= done }.map(\.1)
            state.waiters.removeAll { $0.0 <= done }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    /// Waits until `count` sockets were welcomed (or failed).
    func waitForWelcomes(_ count: Int, orFailures: Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = state.withLock { state -> Bool in
                if state.welcomed + state.failed >= count { return true }
                state.waiters.append((count, continuation))
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Closes every socket (their outgoing streams end).
    func release() {
        let sockets = state.withLock { state -> [BenchSocket] in
            state.released = true
            return state.sockets
        }
        for socket in sockets { socket.outgoing.continuation.finish() }
    }
}
