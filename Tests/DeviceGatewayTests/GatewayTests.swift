// The gateway against the real broker and database: rings over sockets, the snapshot and its
// order guarantee, isolation between users, forged notifications, the close codes and limits.
import AMQPClient
import CallRules
import DeviceGateway
import Foundation
import LoadGenerator
import RingingAuth
import RingingContract
import RingingOperations
import TestSupport
import Testing

@Suite struct GatewayTests {
    static func initiate(_ from: TestDevice, to: TestDevice, timeout: Int = 45) async throws -> String {
        let reply = try await from.request(
            "call.initiate",
            ["receiver_id": .string(to.uid), "receiver_type": "user", "call_type": "audio", "timeout_s": .int(Int64(timeout))])
        guard reply["ok"] == true, case .string(let id)? = reply.at("call", "session_id") else {
            throw TimedOut(what: "a call from initiate: \(reply)")
        }
        return id
    }

    @Test func aCallRingsEveryDeviceAndStopsRingingOnTheOtherWhenAnswered() async throws {
        try await Gateway.run { g in
            let alice = try await g.device("alice")
            let bobPhone = try await g.device("bob", deviceID: "bob-phone")
            let bobLaptop = try await g.device(of: bobPhone, deviceID: "bob-laptop")
            let session = try await Self.initiate(alice, to: bobPhone)
            for device in [bobPhone, bobLaptop] {
                let ring = try await device.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
                #expect(ring.at("notification", "recipient") == .string(bobPhone.uid))
            }
            let accepted = try await bobPhone.request("call.accept", ["session_id": .string(session)])
            #expect(accepted.at("call", "status") == "ongoing")
            _ = try await alice.frame { $0["name"] == "outgoing_call.accepted" && $0.sessionID == session }
            let elsewhere = try await bobLaptop.frame {
                $0["name"] == "incoming_call.answered_elsewhere" && $0.sessionID == session
            }
            #expect(elsewhere.at("notification", "device_id") == "bob-phone", "the gateway set the socket's device id")
            let late = try await bobLaptop.request("call.accept", ["session_id": .string(session)])
            #expect(late.at("error", "code") == "invalid_state")
            let ended = try await alice.request("call.end", ["session_id": .string(session)])
            #expect(ended.at("call", "status") == "ended")
            _ = try await bobPhone.frame { $0["name"] == "call.ended" && $0.sessionID == session }
            let history = try await bobLaptop.request("call.history", ["limit": 5])
            guard case .array(let calls)? = history["calls"] else {
                Issue.record("history: \(history)")
                return
            }
            #expect(
                calls.contains {
                    if case .object(let c) = $0 { return c["session_id"] == .string(session) } else { return false }
                })
        }
    }

    @Test func theWelcomeCarriesTheCallsTheUserRingsOrIsIn() async throws {
        try await Gateway.run { g in
            let alice = try await g.device("alice")
            let bob = try await g.device("bob")
            let session = try await Self.initiate(alice, to: bob)
            _ = try await bob.frame { $0["name"] == "incoming_call.received" }
            // A second device of bob's that connects now sees the ring in its snapshot.
            let later = try await TestDevice.connect(g.wsURL, uid: bob.uid)
            later.send(["type": "hello", "auth_token": .string(try await g.auth.mint(uid: bob.uid)), "device_id": "tablet"])
            let welcome = try await later.frame { $0["type"] == "welcome" }
            #expect(welcome["uid"] == .string(bob.uid))
            #expect(welcome["device_id"] == "tablet")
            guard case .array(let calls)? = welcome["calls"], calls.count == 1, case .object(let call) = calls[0] else {
                Issue.record("one call in the snapshot: \(welcome)")
                return
            }
            #expect(call["session_id"] == .string(session))
            // Once declined, the call is in nobody's snapshot.
            _ = try await bob.request("call.reject", ["session_id": .string(session), "status": "rejected"])
            let live = try await alice.request("call.live")
            #expect(live["calls"] == .array([]))
        }
    }

    /// DESIGN §7's order guarantee: a ring that happens while a device connects is in the
    /// snapshot, in a later notification, or both, and never in neither. Many times over.
    @Test func aRingDuringTheConnectIsNeverLost() async throws {
        try await Gateway.run(
            ["RINGING_GATEWAY_REQUESTS_PER_S": "1000", "RINGING_GATEWAY_REQUEST_BURST": "1000"], limit: .seconds(240)
        ) { g in
            let alice = try await g.device("alice")
            for round in 0..<40 {
                let bob = try await g.user("bob\(round)")
                let device = try await TestDevice.connect(g.wsURL, uid: bob.uid)
                async let ring: String = Self.initiate(alice, to: TestDevice.placeholder(uid: bob.uid))
                device.send(["type": "hello", "auth_token": .string(bob.token)])
                let session = try await ring
                let welcome = try await device.frame { $0["type"] == "welcome" }
                let inSnapshot: Bool = {
                    guard case .array(let calls)? = welcome["calls"] else { return false }
                    return calls.contains {
                        if case .object(let c) = $0 { return c["session_id"] == .string(session) } else { return false }
                    }
                }()
                if !inSnapshot {
                    _ = try await device.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
                }
                _ = try await alice.request("call.reject", ["session_id": .string(session), "status": "cancelled"])
                await device.disconnect()
            }
        }
    }

    /// A socket of user A never receives a frame about a call A is not in: 200 users, 100
    /// calls between them, every frame of every socket checked.
    @Test func eachSocketSeesOnlyItsOwnUsersCalls() async throws {
        try await Gateway.run(limit: .seconds(240)) { g in
            var devices: [TestDevice] = []
            for index in 0..<200 { devices.append(try await g.device("fan\(index)")) }
            var sessions: [String] = []
            try await withThrowingTaskGroup(of: String.self) { group in
                for index in 0..<100 {
                    let (caller, callee) = (devices[index], devices[index + 100])
                    group.addTask { try await Self.initiate(caller, to: callee) }
                }
                for try await session in group { sessions.append(session) }
            }
            for index in 100..<200 {
                _ = try await devices[index].frame { $0["name"] == "incoming_call.received" }
            }
            for device in devices {
                for frame in device.frames where frame["type"] == "notification" {
                    #expect(frame.at("notification", "recipient") == .string(device.uid))
                    guard case .array(let participants)? = frame.at("notification", "call", "participants") else {
                        Issue.record("a notification without participants")
                        continue
                    }
                    let uids = participants.compactMap { value -> String? in
                        if case .object(let p) = value, case .string(let uid)? = p["uid"] { return uid }
                        return nil
                    }
                    #expect(uids.contains(device.uid), "\(device.uid) got a frame about a call it is not in")
                }
            }
            #expect(devices[100..<200].allSatisfy { $0.notifications("incoming_call.received").count == 1 })
            #expect(devices[0..<100].allSatisfy { $0.notifications().isEmpty })
            for device in devices { await device.disconnect() }
        }
    }

    /// Only call-control makes a device ring: a notification published by any other account
    /// (its `user_id` says who, and the broker checks it) is dropped by the gateway.
    /// The gateway's own queue deleted by an operator (the broker cancels its consumer): the
    /// queue and every socket's binding come back, each socket gets a fresh snapshot (what was
    /// routed meanwhile is lost), rings flow again and the consumer counts as live in /readyz.
    @Test func aDeletedGatewayQueueComesBackWithItsBindingsAndAFreshSnapshot() async throws {
        try await Gateway.run { g in
            let alice = try await g.device("alice")
            let bob = try await g.device("bob")
            try StackServer.rabbitmqctl("delete_queue", g.service.configuration.queueName)
            let fresh = try await bob.next { $0["type"] == "welcome" }
            #expect(fresh["uid"] == .string(bob.uid))
            let session = try await Self.initiate(alice, to: bob)
            _ = try await bob.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
            let readiness = await g.service.readiness()
            #expect(readiness.checks.contains { $0.name == "notification consumer" && $0.ok }, "\(readiness.checks)")
        }
    }

    @Test func aForgedNotificationIsDropped() async throws {
        try await Gateway.run { g in
            let alice = try await g.device("alice")
            let bob = try await g.device("bob")
            var configuration = AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: "forger")
            configuration.operationTimeout = .seconds(20)
            try await AMQPConnection.withConnection(configuration: configuration) { admin in
                var properties = AMQPProperties(contentType: "application/json", messageID: "forged")
                properties.userID = "admin"
                let forged =
                    #"{"event_id":"00000000-0000-0000-0000-000000000001","type":"incoming_call.received","occurred_at":"2026-01-01T00:00:00Z","sequence":1,"recipient":"\#(bob.uid)","call":{"session_id":"00000000-0000-0000-0000-000000000002","sequence":1}}"#
                try await admin.publish(
                    AMQPMessage(
                        exchange: Topology.notificationsExchange, routingKey: "user.\(bob.uid).incoming_call.received",
                        body: Data(forged.utf8), properties: properties, mandatory: false))
            }
            // A real ring afterwards arrives; the forged one before it never did.
            let session = try await Self.initiate(alice, to: bob)
            _ = try await bob.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
            #expect(bob.notifications().count == 1)
            #expect(!bob.notifications().contains { $0.sessionID == "00000000-0000-0000-0000-000000000002" })
        }
    }

    @Test func badFramesGetTheCloseCodesOfTheContract() async throws {
        try await Gateway.run(["RINGING_GATEWAY_HELLO_TIMEOUT_S": "1", "RINGING_GATEWAY_SOCKETS_PER_USER": "2"]) { g in
            let user = try await g.user("closer")
            func closeCode(_ frames: [String]) async throws -> (Int?, String?) {
                let device = try await TestDevice.connect(g.wsURL, uid: user.uid)
                for frame in frames { device.sendRaw(frame) }
                return try await device.closed()
            }
            let notJSON = try await closeCode(["hello?"])
            #expect(notJSON.0 == 4002)
            #expect(notJSON.1?.contains("JSON") == true)
            #expect(try await closeCode([#"{"type":"ping"}"#]).0 == 4002)
            #expect(try await closeCode([]).0 == 4002, "no hello within the timeout")
            let forged = try await closeCode([#"{"type":"hello","auth_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}"#])
            #expect(forged.0 == 4001)
            let expired = try await g.auth.mint(uid: user.uid, lifetime: .seconds(-60))
            #expect(try await closeCode([#"{"type":"hello","auth_token":"\#(expired)"}"#]).0 == 4001)
            let tooBig = try await closeCode([String(repeating: "x", count: 70_000)])
            #expect(tooBig.0 == 1009)
            // A request before hello is a protocol error.
            #expect(try await closeCode([#"{"type":"request","id":"1","request":"call.active"}"#]).0 == 4002)

            // auth with another user's token closes the socket.
            let device = try await TestDevice.connect(g.wsURL, uid: user.uid)
            try await device.hello(token: user.token)
            let mallory = try await g.auth.mint(uid: "mallory")
            device.send(["type": "auth", "auth_token": .string(mallory)])
            #expect(try await device.closed().code == 4001)

            // The same user's fresh token is taken, and the socket goes on.
            let second = try await TestDevice.connect(g.wsURL, uid: user.uid)
            try await second.hello(token: user.token)
            second.send(["type": "auth", "auth_token": .string(try await g.auth.mint(uid: user.uid))])
            let active = try await second.request("call.active")
            #expect(active["ok"] == true)

            // Per-socket refusals answer the request and keep the socket open.
            let unknown = try await second.request("call.dance")
            #expect(unknown.at("error", "field") == "request")
            let ownToken = try await second.request("call.active", ["auth_token": .string(user.token)])
            #expect(ownToken.at("error", "field") == "auth_token")
            let badBody = try await second.request(
                "call.initiate", ["receiver_id": "no spaces allowed", "receiver_type": "user", "call_type": "audio"])
            #expect(badBody.at("error", "field") == "receiver_id")

            // A third socket of the same user is one too many (limit 2 here).
            let another = try await TestDevice.connect(g.wsURL, uid: user.uid)
            try await another.hello(token: user.token)
            let third = try await TestDevice.connect(g.wsURL, uid: user.uid)
            third.send(["type": "hello", "auth_token": .string(user.token)])
            #expect(try await third.closed().code == 1013)
            #expect(!second.isClosed)
        }
    }

    @Test func aFloodOfRequestsIsRateLimitedAndTheSocketStaysOpen() async throws {
        try await Gateway.run(["RINGING_GATEWAY_REQUESTS_PER_S": "1", "RINGING_GATEWAY_REQUEST_BURST": "5"]) { g in
            let device = try await g.device("flood")
            let ids = (0..<50).map { "flood-\($0)" }
            for id in ids { device.send(["type": "request", "id": .string(id), "request": "call.active", "body": .object([:])]) }
            var limited: [Int] = []
            for (index, id) in ids.enumerated() {
                let reply = try await device.frame { $0["type"] == "reply" && $0["id"] == .string(id) }
                if reply.at("reply", "error", "code") == "rate_limited" { limited.append(index) }
            }
            #expect(limited.allSatisfy { $0 >= 5 }, "the first five are the burst")
            #expect(!limited.isEmpty, "fifty requests at once exceed one a second with bursts of five")
            let metrics = RingingMetrics.registry.emitToString()
            #expect(metrics.contains(#"ringing_gateway_requests_refused_total{code="rate_limited"}"#), "counted in metrics")
            #expect(!device.isClosed)
        }
    }

    @Test func anExpiredTokenClosesTheSocket() async throws {
        try await Gateway.run { g in
            let uid = TestEnvironment.uniqueName("brief")
            let token = try await g.auth.mint(uid: uid, lifetime: .seconds(8))
            let device = try await TestDevice.connect(g.wsURL, uid: uid)
            try await device.hello(token: token)
            let closed = try await device.closed()
            #expect(closed.code == 4001)
            #expect(closed.reason?.contains("expired") == true)
        }
    }
}

extension TestDevice {
    /// A stand-in naming a user, for requests addressed to a user whose socket is still connecting.
    static func placeholder(uid: String) -> PlaceholderDevice { PlaceholderDevice(uid: uid) }
}

struct PlaceholderDevice: Sendable { let uid: String }

extension GatewayTests {
    static func initiate(_ from: TestDevice, to: PlaceholderDevice) async throws -> String {
        let reply = try await from.request(
            "call.initiate", ["receiver_id": .string(to.uid), "receiver_type": "user", "call_type": "audio"])
        guard case .string(let id)? = reply.at("call", "session_id") else { throw TimedOut(what: "a call: \(reply)") }
        return id
    }
}

@Suite struct GatewayBenchSmokeTests {
    /// The benchmark's gateway phase end to end, briefly: sockets held, rings both ways, every
    /// figure present and no errors. Speed is the benchmark's business, not this test's.
    @Test func theGatewayPhaseHoldsItsSocketsAndRingsBothWays() async throws {
        try await Gateway.run { g in
            var configuration = GatewayBenchConfiguration()
            configuration.gatewayURL = g.wsURL
            configuration.idleSockets = 60
            configuration.pairs = 4
            configuration.ringsPerSecond = 8
            configuration.durationSeconds = 1
            configuration.gatewayPID = ProcessInfo.processInfo.processIdentifier
            let bench = try await GatewayBench(
                configuration: configuration, amqp: try AMQPURL(TestEnvironment.amqpURL),
                authSecret: AuthTokens.developmentSecret, logger: quietLogger("gateway-bench"), progress: { _ in })
            let report = try await bench.run()
            #expect(report.socketsHeld == 60)
            #expect(report.errors.isEmpty, "\(report.errors)")
            #expect(report.ringsGateway > 0 && report.timeToRingGateway.count == UInt64(report.ringsGateway))
            #expect(report.ringsAMQP > 0 && report.timeToRingAMQP.count == UInt64(report.ringsAMQP))
            #expect(report.gatewayRSSHeldKiB != nil)
            #expect(report.text.contains("the gateway hop adds"))
        }
    }
}
