// The push phase (issue 14): one push-notifier process against local APNs and FCM stand-ins
// (HTTP/2 over TLS, as in the tests). Ring notifications are published as call-control
// publishes them, half to iPhones (VoIP) and half to Android phones (FCM); the stand-in records
// when each push request arrives. Reported: the pushes/s one instance sustains flat out, and the
// latency from the notification to the provider request at an offered rate.
import AMQPClient
import Foundation
import Histogram
public import Logging
import PostgresClient
import PushProviderStubs
import RingingContract
import Synchronization

public struct PushBenchConfiguration: Codable, Sendable {
    /// Notifications published at once for the flat-out measurement.
    public var flatOutNotifications = 10_000
    /// Offered notifications/s of the rate measurement, for `durationSeconds`.
    public var rate = 500.0
    public var durationSeconds = 10
    /// Users, each with one device (even: iPhone, odd: Android).
    public var users = 1_000
    /// The notifier executable.
    public var notifierPath = ""
    /// RINGING_PUSH_CONCURRENCY of the notifier (nil: its default).
    public var notifierConcurrency: Int?

    public init() {}
}

public struct PushBenchReport: Codable, Sendable {
    public struct FlatOut: Codable, Sendable {
        public var notifications: Int
        public var pushes: Int
        public var seconds: Double
        public var pushesPerSecond: Double
        public var latency: LatencySummary
    }

    public struct AtRate: Codable, Sendable {
        public var offeredPerSecond: Double
        public var notifications: Int
        public var pushes: Int
        public var achievedPerSecond: Double
        public var latency: LatencySummary
    }

    public var configuration: PushBenchConfiguration
    public var flatOut: FlatOut
    public var atRate: AtRate
    /// Pushes of one (session, device) sent more than once: 0 unless something is wrong.
    public var duplicates: Int
    /// Requests the stand-ins refused as breaking the providers' protocols.
    public var violations: Int
    /// CPU milliseconds per push, per process, over both measurements.
    public var cpu: [String: CPUUsage]

    public var text: String {
        func cpuLine() -> String {
            cpu.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.millisecondsPerRequest) ms" }.joined(separator: ", ")
        }
        return """
            push phase: one push-notifier, \(configuration.users) devices (half VoIP, half FCM), local HTTP/2 TLS providers
              flat out: \(flatOut.pushes) pushes of \(flatOut.notifications) notifications in \(String(format: "%.2f", flatOut.seconds)) s = \(Int(flatOut.pushesPerSecond)) pushes/s (target >= 500); notification -> provider request p50 \(flatOut.latency.p50) ms, p99 \(flatOut.latency.p99) ms
              at \(Int(atRate.offeredPerSecond))/s offered: \(atRate.pushes) pushes, \(Int(atRate.achievedPerSecond))/s; notification -> provider request p50 \(atRate.latency.p50) ms, p90 \(atRate.latency.p90) ms, p99 \(atRate.latency.p99) ms, max \(atRate.latency.max) ms (target p99 <= 50 ms)
              duplicates \(duplicates), protocol violations \(violations)
              CPU per push: \(cpuLine())
            """
    }
}

public struct PushBenchError: Error, CustomStringConvertible {
    public let description: String
}

public final class PushBench: Sendable {
    let configuration: PushBenchConfiguration
    let notifierAMQP: String
    let callControlAMQP: String
    let databaseURL: String
    let logger: Logger
    let progress: @Sendable (String) -> Void

    public init(
        configuration: PushBenchConfiguration, notifierAMQP: String, callControlAMQP: String, databaseURL: String,
        logger: Logger, progress: @escaping @Sendable (String) -> Void
    ) {
        self.configuration = configuration
        self.notifierAMQP = notifierAMQP
        self.callControlAMQP = callControlAMQP
        self.databaseURL = databaseURL
        self.logger = logger
        self.progress = progress
    }

    public func run() async throws -> PushBenchReport {
        let certificates = try TestCertificates()
        let credentials = try TestPushCredentials()
        let stub = try await PushProviderStub(name: "bench", certificates: certificates, credentials: credentials)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("push-bench-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var environment = ProcessInfo.processInfo.environment
        environment.merge(
            [
                "RINGING_AMQP_URL": notifierAMQP, "RINGING_PUSH_DATABASE_URL": databaseURL, "RINGING_HTTP_PORT": "0",
                "RINGING_INSTANCE": "push-bench", "RINGING_LOG_LEVEL": "info", "RINGING_APNS_KEY": credentials.apnsKeyPEM,
                "RINGING_APNS_KEY_ID": credentials.apnsKeyID, "RINGING_APNS_TEAM_ID": credentials.apnsTeamID,
                "RINGING_APNS_URL": stub.url, "RINGING_APNS_SANDBOX_URL": stub.url, "RINGING_FCM_URL": stub.url,
                "RINGING_FCM_CREDENTIALS": credentials.serviceAccountJSON(tokenURI: stub.tokenURI),
                "RINGING_PUSH_CA_FILE": try certificates.writeCA(to: directory),
            ]
        ) { $1 }
        if let concurrency = configuration.notifierConcurrency { environment["RINGING_PUSH_CONCURRENCY"] = "\(concurrency)" }
        let notifier = try NotifierProcess(path: configuration.notifierPath, environment: environment)
        defer { notifier.stop() }
        progress("push: waiting for the push notifier (\(configuration.notifierPath))")
        try await notifier.waitUntilReady()

        let run = UUID().uuidString.prefix(8).lowercased()
        let users = (0..<configuration.users).map { "push-bench-\(run)-\($0)" }
        let database = try await PostgresConnection.connect(configuration: try PostgresConfiguration(url: databaseURL))
        try await seed(database, users)
        let publisher = AMQPConnection(
            configuration: AMQPConfiguration(url: try AMQPURL(callControlAMQP), connectionName: "ringing-bench push"),
            logger: logger)
        let connection = Task { await publisher.run() }
        defer { connection.cancel() }
        try await publisher.waitUntilConnected()

        let cpuStart = CPUSampler.snapshot()
        let cpuClock = ContinuousClock.now
        // Flat out: every notification published at once; the notifier's rate is pushes over
        // the time from the first push request to the last.
        progress("push: flat out, \(configuration.flatOutNotifications) notifications")
        var sent: [String: Date] = [:]
        var batch: [AMQPMessage] = []
        for index in 0..<configuration.flatOutNotifications {
            let (message, session, at) = notification(for: users[index % users.count])
            sent[session] = at
            batch.append(message)
            if batch.count == 500 {
                try await publisher.publishAll(batch)
                batch = []
            }
        }
        try await publisher.publishAll(batch)
        let flatTarget = configuration.flatOutNotifications
        let flatDone = await stub.wait(timeout: .seconds(300)) { $0.count >= flatTarget }
        if !flatDone { progress("push: flat out did not finish within 300 s") }
        let flatPushes = stub.pushes
        let flatOut = PushBenchReport.FlatOut(
            notifications: flatTarget, pushes: flatPushes.count, seconds: Self.span(flatPushes),
            pushesPerSecond: Double(flatPushes.count) / max(0.001, Self.span(flatPushes)),
            latency: Self.latency(flatPushes, sent))

        // At a rate: notifications paced evenly over the duration.
        progress("push: \(Int(configuration.rate))/s for \(configuration.durationSeconds) s")
        let total = Int(configuration.rate * Double(configuration.durationSeconds))
        let startCount = flatPushes.count
        let start = ContinuousClock.now
        let interval = Duration.seconds(1 / configuration.rate)
        var rateSent: [String: Date] = [:]
        for index in 0..<total {
            try await Task.sleep(until: start + interval * index, clock: .continuous)
            let (message, session, at) = notification(for: users[index % users.count])
            rateSent[session] = at
            try await publisher.publish(message)
        }
        let rateTarget = startCount + total
        let rateDone = await stub.wait(timeout: .seconds(120)) { $0.count >= rateTarget }
        if !rateDone { progress("push: the rate measurement did not finish within 120 s") }
        let ratePushes = Array(stub.pushes.dropFirst(startCount))
        let atRate = PushBenchReport.AtRate(
            offeredPerSecond: configuration.rate, notifications: total, pushes: ratePushes.count,
            achievedPerSecond: Double(ratePushes.count) / max(0.001, Self.span(ratePushes)),
            latency: Self.latency(ratePushes, rateSent))
        let cpuSeconds = Double((ContinuousClock.now - cpuClock).components.seconds)
        let cpu = CPUSampler.usage(
            from: cpuStart, to: CPUSampler.snapshot(), seconds: max(1, cpuSeconds), requests: stub.pushes.count)

        var seen: [String: Int] = [:]
        for push in stub.pushes { seen["\(push.sessionID ?? "")/\(push.token)", default: 0] += 1 }
        let report = PushBenchReport(
            configuration: configuration, flatOut: flatOut, atRate: atRate, duplicates: seen.values.filter { $0 > 1 }.count,
            violations: stub.violations.count, cpu: cpu)
        try await database.query("DELETE FROM push.devices WHERE uid = ANY(\(users))")
        try await database.query(
            "DELETE FROM push.push_log WHERE session_id = ANY(\(Array(sent.keys).compactMap(UUID.init(uuidString:)) + Array(rateSent.keys).compactMap(UUID.init(uuidString:))))"
        )
        await database.close()
        await stub.stop()
        return report
    }

    /// One device per user, written straight into the registry (the requests are measured elsewhere).
    private func seed(_ database: PostgresConnection, _ users: [String]) async throws {
        let kinds = users.indices.map { $0 % 2 == 0 ? "voip" : "fcm" }
        let tokens = users.indices.map { index in
            index % 2 == 0
                ? (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
                : "bench-\(UUID().uuidString):\(UUID().uuidString)"
        }
        try await database.query(
            """
            INSERT INTO push.devices (uid, device_id, platform, kind, push_token, app_id, environment, registered_at)
            SELECT uid, 'phone', CASE kind WHEN 'fcm' THEN 'android' ELSE 'ios' END, kind, token, 'com.example.ringing',
                   'production', now()
            FROM unnest(\(users)::text[], \(kinds)::text[], \(tokens)::text[]) AS d(uid, kind, token)
            """)
    }

    /// A ring notification for `uid`, as call-control publishes it.
    private func notification(for uid: String) -> (AMQPMessage, String, Date) {
        let session = UUID().uuidString.lowercased()
        let now = Date()
        let stamp = WireTime.format(now)
        let body = Data(
            """
            {"event_id":"\(UUID().uuidString.lowercased())","type":"incoming_call.received","occurred_at":"\(stamp)","sequence":1,\
            "recipient":"\(uid)","call":{"session_id":"\(session)","initiator":"push-bench","receiver_id":"\(uid)",\
            "receiver_type":"user","call_type":"audio","status":"initiated","initiated_at":"\(stamp)",\
            "expires_at":"\(WireTime.format(now.addingTimeInterval(120)))","answered_at":null,"ended_at":null,"duration_s":null,\
            "ended_by":null,"end_reason":null,"metadata":{},"participants":[],"sequence":1}}
            """.utf8)
        var properties = AMQPProperties(contentType: "application/json", deliveryMode: .persistent, messageID: UUID().uuidString)
        properties.userID = Topology.publisherAccount
        return (
            AMQPMessage(
                exchange: Topology.notificationsExchange, routingKey: "user.\(uid).incoming_call.received", body: body,
                properties: properties), session, now
        )
    }

    static func span(_ pushes: [ReceivedPush]) -> Double {
        guard let first = pushes.map(\.receivedAt).min(), let last = pushes.map(\.receivedAt).max() else { return 0 }
        return last.timeIntervalSince(first)
    }

    static func latency(_ pushes: [ReceivedPush], _ sent: [String: Date]) -> LatencySummary {
        var histogram = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        for push in pushes {
            guard let session = push.sessionID, let at = sent[session] else { continue }
            histogram.record(UInt64(max(1, push.receivedAt.timeIntervalSince(at) * 1_000_000)))
        }
        return LatencySummary(histogram)
    }
}

/// The notifier as a child process; its log is read (on a thread of its own, until end of file)
/// until it is ready, then discarded.
final class NotifierProcess: Sendable {
    let process: Process
    let ready = AsyncStream<Void>.makeStream()

    init(path: String, environment: [String: String]) throws {
        process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.environment = environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let seen = ready.continuation
        let reader = pipe.fileHandleForReading
        Thread.detachNewThread {
            let buffer = LockedText()
            while true {
                let data = reader.availableData
                if data.isEmpty { break }
                if buffer.append(String(decoding: data, as: UTF8.self)) { seen.yield() }
            }
            seen.finish()
        }
    }

    func waitUntilReady() async throws {
        for await _ in ready.stream { return }
        throw PushBenchError(description: "the push notifier exited before it was ready")
    }

    /// SIGTERM, then up to 30 s for the notifier to finish the pushes in hand.
    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<3000 where process.isRunning { usleep(10_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// The notifier's output until its ready line.
final class LockedText: Sendable {
    private let state = Mutex<(text: String, done: Bool)>(("", false))

    /// Appends; true the first time the ready line shows.
    func append(_ more: String) -> Bool {
        state.withLock { state in
            if state.done { return false }
            state.text += more
            if state.text.contains("push-notifier ready") {
                state.done = true
                return true
            }
            if state.text.contains("push-notifier stopped") { FileHandle.standardError.write(Data(state.text.utf8)) }
            return false
        }
    }
}
