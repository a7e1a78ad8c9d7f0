// The gateway across a broker restart and across the SIGKILL of an instance: its queue and
// bindings come back, every socket gets a fresh snapshot, and nothing committed is lost.
// Runs alone (the suite name ends in RestartTests): it stops the shared broker.
import CallRules
import DeviceGateway
import Foundation
import TestSupport
import Testing

@Suite(.serialized) struct GatewayRestartTests {
    /// While the broker is away the gateway's queue and bindings are gone; when it is back
    /// they are re-created and each socket gets a new welcome, so rings resume.
    @Test func afterABrokerRestartSocketsGetAFreshSnapshotAndRingAgain() async throws {
        try await Gateway.run(limit: .seconds(240)) { g in
            let alice = try await g.device("alice")
            let bob = try await g.device("bob")
            try StackServer.broker.stop()
            try StackServer.broker.start()
            // `next` looks past the first welcome, which `hello` already took.
            let fresh = try await bob.next { $0["type"] == "welcome" }
            #expect(fresh["uid"] == .string(bob.uid))
            _ = try await alice.next { $0["type"] == "welcome" }
            // The requests path is back too, and bob's binding with it.
            var session: String?
            for _ in 0..<30 where session == nil {
                let reply = try await alice.request(
                    "call.initiate", ["receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio"])
                if case .string(let id)? = reply.at("call", "session_id") { session = id }
            }
            let id = try #require(session)
            _ = try await bob.frame { $0["name"] == "incoming_call.received" && $0.sessionID == id }
            #expect(!bob.isClosed)
        }
    }

    /// A gateway instance killed with SIGKILL loses nothing committed: its devices reconnect
    /// to another instance and find the ring in their snapshot.
    @Test func devicesOfAKilledInstanceReconnectElsewhereAndGetTheSnapshot() async throws {
        try await Gateway.run(limit: .seconds(240)) { g in
            let portA = Int.random(in: 20_000..<30_000)
            let gatewayA = try ServiceProcess(
                executable: "device-gateway", name: TestEnvironment.uniqueName("gw-a"),
                environment: ["RINGING_GATEWAY_PORT": "\(portA)"], readyLine: "device-gateway ready")
            defer { gatewayA.kill() }
            try await gatewayA.waitUntilReady()
            let bob = try await g.user("bob")
            let onA = try await TestDevice.connect("ws://127.0.0.1:\(portA)/v1/ws", uid: bob.uid)
            try await onA.hello(token: bob.token)
            let alice = try await g.device("alice")
            let session = try await GatewayTests.initiate(alice, to: TestDevice.placeholder(uid: bob.uid))
            _ = try await onA.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
            gatewayA.kill()
            _ = try await onA.closed()
            // The device reconnects to the other instance (the one of this test).
            let onB = try await TestDevice.connect(g.wsURL, uid: bob.uid)
            onB.send(["type": "hello", "auth_token": .string(bob.token)])
            let welcome = try await onB.frame { $0["type"] == "welcome" }
            guard case .array(let calls)? = welcome["calls"] else {
                Issue.record("no calls: \(welcome)")
                return
            }
            #expect(
                calls.contains {
                    if case .object(let c) = $0 { return c["session_id"] == .string(session) } else { return false }
                })
            let accepted = try await onB.request("call.accept", ["session_id": .string(session)])
            #expect(accepted.at("call", "status") == "ongoing")
            _ = try await alice.frame { $0["name"] == "outgoing_call.accepted" && $0.sessionID == session }
        }
    }
}
