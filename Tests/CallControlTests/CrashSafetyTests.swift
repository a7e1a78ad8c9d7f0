// Three call-control processes share the queue; one is killed with SIGKILL while 1,000 calls
// are in flight. Afterwards every call is exactly where its requests put it.
import AMQPClient
import CallRules
import Foundation
import PostgresClient
import RingingAuth
import RingingContract
import Synchronization
import TestSupport
import Testing

@Suite struct CrashSafetyTests {
    final class Progress: Sendable {
        let sessions = Mutex<[Int: UUID]>([:])
        let replies = Atomic<Int>(0)
        let milestonesRan = Atomic<Bool>(false)
        let finished = Mutex<Set<UUID>>([])
    }

    enum Plan: Int, CaseIterable {
        case acceptAndEnd, reject, cancel, timeOut

        var finalStatus: CallStatus {
            switch self {
            case .acceptAndEnd: .ended
            case .reject: .rejected
            case .cancel: .cancelled
            case .timeOut: .unanswered
            }
        }

        var events: [String] {
            switch self {
            case .acceptAndEnd: ["call.initiated", "call.accepted", "call.ended"]
            case .reject: ["call.initiated", "call.rejected"]
            case .cancel: ["call.initiated", "call.cancelled"]
            case .timeOut: ["call.initiated", "call.unanswered"]
            }
        }
    }

    /// A request that is retried with the same message_id when its reply does not come (the
    /// instance that took it may have died after committing): the retry gets the original reply.
    static func send(_ client: RingingTestClient, _ type: RequestType, token: String, _ fields: JSONObject) async throws
        -> WireReply
    {
        let id = UUID().uuidString
        var body = fields
        body["auth_token"] = .string(token)
        let data = try JSONEncoder().encode(body)
        for attempt in 1...6 {
            do {
                return try await client.send(type.rawValue, body: data, messageID: id, timeout: .seconds(15))
            } catch is TimedOut where attempt < 6 {
                continue
            } catch let error as AMQPError where attempt < 6 {
                // The fault tests: a publish held by a blocked broker past its deadline, or
                // unroutable while the command queue is gone. Sent again, same message_id.
                _ = error
                try await Task.sleep(for: .seconds(1))
                continue
            }
        }
        throw TimedOut(what: "a reply to \(type.rawValue) after 6 attempts")
    }

    /// Three call-control processes, for the tests that change the set of instances under load.
    static func startInstances(_ run: String, count: Int = 3, environment: [String: String] = [:]) throws -> [ServiceProcess] {
        try (0..<count).map { try callControl("\(run)-\($0)", environment: environment) }
    }

    static func callControl(_ name: String, environment: [String: String] = [:]) throws -> ServiceProcess {
        try ServiceProcess(
            executable: "call-control", name: name,
            environment: ["RINGING_CALL_CONTROL_WORKERS": "2", "RINGING_OUTBOX_GRACE_S": "2"].merging(environment) { $1 },
            readyLine: "call-control ready")
    }

    /// Drives `count` calls through their plans, 100 requests in flight, running `milestone`
    /// once when `count / 3` and again when `2 * count / 3` initiates have been answered;
    /// then checks every call's events and stored state against its plan.
    /// With `tokens`, both sides of every answered call also get a call token.
    static func driveCallsAndCheck(
        run: String, count: Int, tokens withTokens: Bool = false, milestone: @escaping @Sendable (Int) async throws -> Void
    ) async throws {
        try await RingingTestClient.with { client in
            let events = try await Capture.start(client.amqp, exchange: Topology.eventsExchange, keys: ["#"])
            let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
            var tokens: [(caller: String, callee: String, callerToken: String, calleeToken: String)] = []
            for index in 0..<count {
                let caller = "\(run)-a\(index)"
                let callee = "\(run)-b\(index)"
                tokens.append((caller, callee, try await auth.mint(uid: caller), try await auth.mint(uid: callee)))
            }
            let progress = Progress()

            // Every call in flight at once (100 requests at a time); the milestones happen meanwhile.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<count {
                    if index >= 100 { try await group.next() }
                    let plan = Plan(rawValue: index % 4)!
                    let party = tokens[index]
                    group.addTask {
                        let initiated = try await Self.send(
                            client, .initiate, token: party.callerToken,
                            [
                                "receiver_id": .string(party.callee), "receiver_type": "user", "call_type": "audio",
                                "timeout_s": .int(plan == .timeOut ? 8 : 120),
                            ])
                        guard let call = initiated.call else {
                            throw ScenarioError("initiate \(index) failed: \(initiated.error?.message ?? "")")
                        }
                        progress.sessions.withLock { $0[index] = call.sessionID }
                        let answered = progress.replies.add(1, ordering: .relaxed).newValue
                        if answered == count / 3 || answered == 2 * count / 3 {
                            try await milestone(answered)
                            progress.milestonesRan.store(true, ordering: .relaxed)
                        }
                        let id: JSONObject = ["session_id": .string(call.sessionID.uuidString)]
                        switch plan {
                        case .acceptAndEnd:
                            let accepted = try await Self.send(client, .accept, token: party.calleeToken, id)
                            #expect(accepted.call?.status == .ongoing, "accept \(index): \(accepted.error?.message ?? "")")
                            if withTokens {
                                for token in [party.callerToken, party.calleeToken] {
                                    let issued = try await Self.send(client, .generateToken, token: token, id)
                                    #expect(issued.token != nil, "token \(index): \(issued.error?.message ?? "")")
                                }
                            }
                            let ended = try await Self.send(client, .end, token: party.callerToken, id)
                            #expect(ended.call?.status == .ended, "end \(index): \(ended.error?.message ?? "")")
                        case .reject:
                            let rejected = try await Self.send(
                                client, .reject, token: party.calleeToken, id.merging(["status": "rejected"]) { $1 })
                            #expect(rejected.call?.status == .rejected, "reject \(index): \(rejected.error?.message ?? "")")
                        case .cancel:
                            let cancelled = try await Self.send(
                                client, .reject, token: party.callerToken, id.merging(["status": "cancelled"]) { $1 })
                            #expect(cancelled.call?.status == .cancelled, "cancel \(index): \(cancelled.error?.message ?? "")")
                        case .timeOut:
                            break
                        }
                    }
                }
                try await group.waitForAll()
            }
            let milestonesRan = progress.milestonesRan.load(ordering: .relaxed)
            #expect(milestonesRan)

            // Every call's last event arrives (the timeouts within their deadline plus the sweep).
            let byIndex = progress.sessions.withLock { $0 }
            #expect(byIndex.count == count, "no request lost")
            let expected = Dictionary(uniqueKeysWithValues: byIndex.map { ($0.value, Plan(rawValue: $0.key % 4)!) })
            let finals = Set(CallStatus.allCases.filter(\.isTerminal).map { "call.\($0.rawValue)" }).union(["call.ended"])
            do {
                _ = try await events.next("the final event of every call", timeout: .seconds(120)) { event in
                    guard expected[event.call.sessionID] != nil, finals.contains(event.type) else { return false }
                    return progress.finished.withLock {
                        $0.insert(event.call.sessionID)
                        return $0.count == count
                    }
                }
            } catch {
                // Say which calls lack their final event, what they got and where the database has them.
                let finished = progress.finished.withLock { $0 }
                let missing = expected.filter { !finished.contains($0.key) }.prefix(5)
                let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
                for (session, plan) in missing {
                    let got = events.events.filter { $0.call.sessionID == session }.map { "\($0.sequence):\($0.type)" }
                    let rows = try await pool.query(
                        "SELECT status, sequence, (SELECT count(*) FROM outbox o WHERE o.body LIKE '%' || c.session_id::text || '%') FROM calls c WHERE session_id = \(session)"
                    )
                    let stored = try rows.map { try $0.decodeColumns((String, Int, Int).self) }
                    Issue.record("\(session) (\(plan)): events \(got), stored (status, sequence, outbox) \(stored)")
                }
                await pool.close()
                throw error
            }

            // Consumers deduplicate on event_id; after that, each call has exactly its events, in sequence.
            var byCall: [UUID: [UUID: WireEvent]] = [:]
            for event in events.events where expected[event.call.sessionID] != nil {
                byCall[event.call.sessionID, default: [:]][event.eventID] = event
            }
            var wrong: [String] = []
            for (session, plan) in expected {
                let list = (byCall[session] ?? [:]).values.sorted { $0.sequence < $1.sequence }
                if list.map(\.type) != plan.events || list.map(\.sequence) != Array(1...plan.events.count) {
                    wrong.append("\(session): \(list.map { "\($0.sequence):\($0.type)" })")
                }
            }
            #expect(wrong.isEmpty, "calls with missing or extra events: \(wrong.prefix(5))")

            // And the database agrees.
            let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
            let rows = try await pool.query(
                "SELECT session_id, status, sequence FROM calls WHERE session_id = ANY(\(Array(expected.keys)))")
            #expect(rows.count == count)
            for row in rows {
                let (session, status, sequence) = try row.decodeColumns((UUID, String, Int).self)
                let plan = expected[session]!
                #expect(
                    status == plan.finalStatus.rawValue && sequence == plan.events.count, "\(session) is \(status) at \(sequence)"
                )
            }
            await pool.close()
        }
    }

    @Test(.timeLimit(.minutes(5)))
    func aKilledInstanceLosesAndDuplicatesNothing() async throws {
        let run = TestEnvironment.uniqueName("crash")
        let instances = try Self.startInstances(run)
        defer { for instance in instances where instance.isRunning { instance.terminate() } }
        for instance in instances { try await instance.waitUntilReady() }
        try await Self.driveCallsAndCheck(run: run, count: 1000) { answered in
            if answered == 1000 / 3 { instances[0].kill() }
        }
        #expect(!instances[0].isRunning)
        // The survivors stop cleanly on SIGTERM.
        for instance in instances.dropFirst() { #expect(instance.terminate() == 0) }
    }
}

@Suite struct ScaleOutTests {
    final class Added: Sendable {
        let instance = Mutex<ServiceProcess?>(nil)
    }

    /// Three call-control and two token-service processes serve 600 calls (with call tokens);
    /// a fourth call-control joins a third of the way, and one call-control and one token
    /// service leave (SIGTERM) two thirds of the way. Nothing is lost or duplicated.
    @Test(.timeLimit(.minutes(5)))
    func instancesComeAndGoUnderLoadWithoutLoss() async throws {
        let run = TestEnvironment.uniqueName("scale")
        let callControls = try CrashSafetyTests.startInstances(run)
        let tokenServices = try (0..<2).map {
            try ServiceProcess(
                executable: "token-service", name: "\(run)-t\($0)",
                environment: ["RINGING_TOKEN_DATABASE_URL": TestEnvironment.readerDatabaseURL], readyLine: "token-service ready")
        }
        let added = Added()
        defer {
            for instance in callControls + tokenServices where instance.isRunning { instance.terminate() }
            _ = added.instance.withLock { $0?.terminate() }
        }
        for instance in callControls + tokenServices { try await instance.waitUntilReady() }
        let count = 600
        try await CrashSafetyTests.driveCallsAndCheck(run: run, count: count, tokens: true) { answered in
            if answered == count / 3 {
                let fourth = try CrashSafetyTests.callControl("\(run)-3")
                added.instance.withLock { $0 = fourth }
                try await fourth.waitUntilReady()
            } else {
                #expect(callControls[1].terminate() == 0, "a call-control instance leaves cleanly")
                #expect(tokenServices[0].terminate() == 0, "a token-service instance leaves cleanly")
            }
        }
        #expect(added.instance.withLock { $0?.isRunning } == true)
    }
}
