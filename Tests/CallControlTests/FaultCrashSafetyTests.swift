// Faults from outside (issue 15): a graceful shutdown while the database does not answer
// still ends, and the request the process held is answered by the next instance; a command
// queue deleted under a running instance comes back with its consumers. Runs alone (the
// suite name ends in CrashSafetyTests): it stops every PostgreSQL process with SIGSTOP for a
// while and deletes a shared queue.
import CallRules
import Foundation
import RingingAuth
import RingingContract
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite(.serialized) struct FaultCrashSafetyTests {
    /// SIGSTOP or SIGCONT to every PostgreSQL process of the stack.
    static func signalPostgres(_ signal: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/pkill")
        process.arguments = ["-\(signal)", "-x", "postgres"]
        try process.run()
        process.waitUntilExit()
    }

    @Test(.timeLimit(.minutes(3)))
    func sigtermDuringADatabaseStallExitsWithinTheBoundAndLosesNothing() async throws {
        let name = TestEnvironment.uniqueName("shutdown")
        let first = try ServiceProcess(
            executable: "call-control", name: name,
            environment: [
                "RINGING_SHUTDOWN_TIMEOUT_S": "2", "RINGING_CALL_CONTROL_WORKERS": "1", "RINGING_LOG_LEVEL": "trace",
            ],
            readyLine: "call-control ready")
        defer { if first.isRunning { first.kill() } }
        try await first.waitUntilReady()
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        let (alice, bob) = (TestEnvironment.uniqueName("alice"), TestEnvironment.uniqueName("bob"))
        let token = try await auth.mint(uid: alice)
        try await RingingTestClient.with { client in
            try Self.signalPostgres("STOP")
            var resumed = false
            defer { if !resumed { try? Self.signalPostgres("CONT") } }
            // A request the instance takes and cannot apply: the database does not answer.
            let messageID = UUID().uuidString
            async let reply = client.request(
                RequestType.initiate.rawValue, token: token,
                ["receiver_id": .string(bob), "receiver_type": "user", "call_type": "audio"], messageID: messageID)
            try await first.waitForOutput("requests taken")
            first.terminate()
            #expect(!first.isRunning, "the instance exited although the database hung")
            try Self.signalPostgres("CONT")
            resumed = true
            // The request it held was not acknowledged: the next instance answers it.
            let second = try ServiceProcess(
                executable: "call-control", name: name + "-2", environment: [:], readyLine: "call-control ready")
            defer { second.terminate() }
            try await second.waitUntilReady()
            let answered = try await reply
            #expect(answered.call?.status == .initiated, "\(answered.error?.message ?? "")")
        }
    }

    @Test(.timeLimit(.minutes(3)))
    func aDeletedCommandQueueIsDeclaredAgainAndItsConsumersComeBack() async throws {
        let instance = try ServiceProcess(
            executable: "call-control", name: TestEnvironment.uniqueName("queue-gone"),
            environment: ["RINGING_CALL_CONTROL_WORKERS": "2"], readyLine: "call-control ready")
        defer { if instance.isRunning { instance.kill() } }
        try await instance.waitUntilReady()
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        let (alice, bob) = (TestEnvironment.uniqueName("alice"), TestEnvironment.uniqueName("bob"))
        try await RingingTestClient.with { client in
            _ = try await client.amqp.deleteQueue(Topology.callControlQueue)
            try await instance.waitForOutput("subscribed again to \(Topology.callControlQueue)")
            // The queue is back, bound and consumed: a request is answered.
            let reply = try await client.request(
                RequestType.initiate.rawValue, token: try await auth.mint(uid: alice),
                ["receiver_id": .string(bob), "receiver_type": "user", "call_type": "audio"])
            #expect(reply.call?.status == .initiated, "\(reply.error?.message ?? "")")
        }
        #expect(instance.log.contains("cancelled this worker's consumer"), "the cancellation is not silent")
        #expect(instance.terminate() == 0)
    }

    /// The token service's queue deleted: call-control declares it again (the topology is
    /// its to declare) and the token service's workers subscribe again.
    @Test(.timeLimit(.minutes(3)))
    func aDeletedTokenQueueComesBackAndTheTokenServiceWithIt() async throws {
        let callControl = try ServiceProcess(
            executable: "call-control", name: TestEnvironment.uniqueName("cc-token-gone"), environment: [:],
            readyLine: "call-control ready")
        defer { callControl.terminate() }
        try await callControl.waitUntilReady()
        let tokens = try ServiceProcess(
            executable: "token-service", name: TestEnvironment.uniqueName("token-gone"),
            environment: ["RINGING_TOKEN_DATABASE_URL": TestEnvironment.readerDatabaseURL], readyLine: "token-service ready")
        defer { tokens.terminate() }
        try await tokens.waitUntilReady()
        try await RingingTestClient.with { client in
            _ = try await client.amqp.deleteQueue(Topology.tokenServiceQueue)
            try await tokens.waitForOutput("subscribed again to \(Topology.tokenServiceQueue)", timeout: .seconds(90))
            let keys = try await client.request(RequestType.jwks.rawValue, token: nil)
            #expect(keys.keys?.isEmpty == false, "\(keys.error?.message ?? "")")
        }
        #expect(tokens.log.contains("cancelled this worker's consumer"))
        #expect(tokens.terminate() == 0)
    }

    /// `/readyz` of an instance: its status and body.
    static func readiness(port: Int) async -> (Int, String) {
        guard let (data, response) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/readyz")!),
            let http = response as? HTTPURLResponse
        else { return (0, "") }
        return (http.statusCode, String(decoding: data, as: UTF8.self))
    }

    /// Polls `/readyz` until `done` holds (the readiness endpoint has nothing to wait on).
    static func awaitReadiness(port: Int, _ what: String, _ done: @escaping @Sendable (Int, String) -> Bool) async throws {
        try await withDeadline(.seconds(90), what) {
            while true {
                let (status, body) = await Self.readiness(port: port)
                if done(status, body) { return }
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }

    /// The broker's memory alarm while a ring deadline fires: call-control's publish of the
    /// outcome is held (not written while the connection is blocked), `/readyz` says the broker
    /// blocks publishing; once the alarm clears the outcome is published, exactly once.
    @Test(.timeLimit(.minutes(3)))
    func aMemoryAlarmMakesTheInstanceNotReadyAndNothingIsLostOnceItClears() async throws {
        let port = Int.random(in: 41_000..<49_000)
        let instance = try ServiceProcess(
            executable: "call-control", name: TestEnvironment.uniqueName("alarm"),
            environment: ["RINGING_HTTP_PORT": "\(port)", "RINGING_OUTBOX_GRACE_S": "2"], readyLine: "call-control ready")
        defer { if instance.isRunning { instance.kill() } }
        try await instance.waitUntilReady()
        try await Self.awaitReadiness(port: port, "ready at first") { status, _ in status == 200 }
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        let (alice, bob) = (TestEnvironment.uniqueName("alice"), TestEnvironment.uniqueName("bob"))
        try await RingingTestClient.with { client in
            let events = try await Capture.start(client.amqp, exchange: Topology.eventsExchange, keys: ["call.#"])
            let initiated = try await client.request(
                RequestType.initiate.rawValue, token: try await auth.mint(uid: alice),
                ["receiver_id": .string(bob), "receiver_type": "user", "call_type": "audio", "timeout_s": 5])
            let session = try #require(initiated.call?.sessionID)
            var cleared = false
            try StackServer.rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
            defer { if !cleared { try? StackServer.rabbitmqctl("set_vm_memory_high_watermark", "0.4") } }
            // The deadline fires during the alarm: the outcome cannot be published.
            try await Self.awaitReadiness(port: port, "not ready while the broker blocks publishing") { status, body in
                status == 503 && body.contains("broker not blocking publishes (no resource alarm): not ready")
            }
            try StackServer.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            cleared = true
            try await Self.awaitReadiness(port: port, "ready again after the alarm") { status, _ in status == 200 }
            _ = try await events.next("the unanswered outcome", timeout: .seconds(60)) {
                $0.type == "call.unanswered" && $0.call.sessionID == session
            }
            var seen = Set<UUID>()
            let unique = events.events.filter { $0.call.sessionID == session && seen.insert($0.eventID).inserted }
            #expect(unique.map(\.type).sorted() == ["call.initiated", "call.unanswered"])
        }
        #expect(instance.log.contains("blocked by the broker"), "the alarm is not silent")
        #expect(instance.terminate() == 0)
    }

    // MARK: - Under load

    /// 300 calls through three instances, with `fault` (given the instances) once a third of
    /// the calls are placed; every call ends where its plan put it, with exactly its events
    /// (the crash harness's checks).
    static func underLoad(
        _ name: String, environment: [String: String] = [:],
        fault: @escaping @Sendable ([ServiceProcess]) async throws -> Void
    ) async throws {
        let run = TestEnvironment.uniqueName(name)
        let instances = try CrashSafetyTests.startInstances(run, environment: environment)
        defer { for instance in instances where instance.isRunning { instance.terminate() } }
        for instance in instances { try await instance.waitUntilReady() }
        try await CrashSafetyTests.driveCallsAndCheck(run: run, count: 300) { answered in
            if answered == 300 / 3 { try await fault(instances) }
        }
        for instance in instances where instance.isRunning {
            #expect(instance.terminate() == 0, "\(instance.name) stops cleanly")
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func underLoadPostgreSQLPausedFor20Seconds() async throws {
        try await Self.underLoad(
            "pg-pause",
            fault: { _ in
                try Self.signalPostgres("STOP")
                try? await Task.sleep(for: .seconds(20))
                try Self.signalPostgres("CONT")
            })
    }

    @Test(.timeLimit(.minutes(5)))
    func underLoadPostgreSQLRestarted() async throws {
        try await Self.underLoad(
            "pg-restart",
            fault: { _ in
                try StackServer.postgres.stop()
                try StackServer.postgres.start()
            })
    }

    @Test(.timeLimit(.minutes(5)))
    func underLoadTheCommandQueueDeletedAndDeclaredAgain() async throws {
        try await Self.underLoad(
            "queue-gone",
            fault: { _ in
                try await RingingTestClient.with { client in _ = try await client.amqp.deleteQueue(Topology.callControlQueue) }
            })
    }

    @Test(.timeLimit(.minutes(5)))
    func underLoadABrokerMemoryAlarm() async throws {
        try await Self.underLoad(
            "alarm",
            fault: { _ in
                try StackServer.rabbitmqctl("set_vm_memory_high_watermark", "0.0000001")
                try? await Task.sleep(for: .seconds(5))
                try StackServer.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
            })
    }

    /// SIGTERM to one instance while the database hangs, under load: it exits within its
    /// bound, and what it held is answered by the others once the database is back.
    @Test(.timeLimit(.minutes(5)))
    func underLoadSIGTERMDuringADatabaseStall() async throws {
        try await Self.underLoad(
            "term-stall", environment: ["RINGING_SHUTDOWN_TIMEOUT_S": "2"],
            fault: { instances in
                try Self.signalPostgres("STOP")
                instances[0].terminate()
                #expect(!instances[0].isRunning, "exited although the database hung")
                try Self.signalPostgres("CONT")
            })
    }
}
