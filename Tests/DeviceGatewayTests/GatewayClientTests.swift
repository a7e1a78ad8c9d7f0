// The Swift client library through the device gateway, as an app on a phone uses it (no
// broker account), and ringctl both ways: through the gateway (its default) and over AMQP.
import AMQPClient
import CallRules
import Foundation
import Logging
import RingingClient
import RingingContract
import TestSupport
import Testing

extension Gateway {
    /// Clients of the library through this gateway, running while `body` runs.
    func withDevices(
        _ specs: [(uid: String, device: String)], _ body: @escaping @Sendable ([Device]) async throws -> Void
    ) async throws {
        var devices: [Device] = []
        for (uid, device) in specs {
            var configuration = RingingClientConfiguration(
                gateway: URL(string: "http://127.0.0.1:\(port)")!, authToken: try await auth.mint(uid: uid), deviceID: device)
            configuration.replyTimeout = .seconds(30)
            configuration.reconnectBackoff = (.milliseconds(100), .seconds(1))
            let client = try RingingClient(configuration: configuration, logger: quietLogger("gateway-client"))
            let recorder = Recorder()
            client.setDelegate(recorder)
            devices.append(Device(client: client, recorder: recorder))
        }
        let ready = devices
        try await withThrowingTaskGroup(of: Void.self) { group in
            for device in ready { group.addTask { try await device.client.run() } }
            defer { group.cancelAll() }
            for device in ready { try await device.client.waitUntilReady() }
            try await body(ready)
        }
    }
}

@Suite struct GatewayClientTests {
    @Test func theSeedFlowThroughTheGatewayFiresEachCallbackOnce() async throws {
        try await Gateway.run(tokens: true) { g in
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            try await g.withDevices([(alice, "alice-phone"), (bob, "bob-phone"), (bob, "bob-tablet")]) { devices in
                let (caller, phone, tablet) = (devices[0], devices[1], devices[2])
                #expect(caller.client.connectionState == .connected)
                #expect(caller.client.transport.keepsCallsLive, "the gateway heartbeats its users' calls")
                try await SeedFlow.run(caller: caller, phone: phone, tablet: tablet, bob: bob)
            }
        }
    }

    /// `group.set_members` is HTTP only at the gateway: the client takes that route for it.
    @Test func aServiceSetsAGroupThroughTheGatewayAndItRings() async throws {
        try await Gateway.run { g in
            let (alice, bob) = (TestEnvironment.uniqueName("alice"), TestEnvironment.uniqueName("bob"))
            let group = TestEnvironment.uniqueName("team")
            var configuration = RingingClientConfiguration(
                gateway: URL(string: "http://127.0.0.1:\(g.port)")!,
                authToken: try await g.auth.mint(uid: "backend", service: true))
            configuration.replyTimeout = .seconds(30)
            try await RingingClient.withClient(configuration: configuration, logger: quietLogger("service")) { service in
                try await service.setGroupMembers(groupID: group, members: [alice, bob])
            }
            try await g.withDevices([(alice, "a"), (bob, "b")]) { devices in
                let call = try await devices[0].client.initiateCall(receiverID: group, receiverType: .group)
                try await devices[1].expect(.incomingCallReceived, call.sessionID)
                await #expect { try await devices[0].client.setGroupMembers(groupID: group, members: [alice]) } throws: {
                    ($0 as? RingingError)?.code == .forbidden
                }
            }
        }
    }

    @Test func aClientThatCannotReachTheGatewaySaysWhere() async throws {
        var configuration = RingingClientConfiguration(
            gateway: URL(string: "http://127.0.0.1:1")!, authToken: try await Gateway.developmentAuth().mint(uid: "alice"))
        configuration.reconnectBackoff = (.milliseconds(50), .milliseconds(100))
        await #expect {
            try await RingingClient.withClient(configuration: configuration, logger: quietLogger("unreachable")) { _ in }
        } throws: { error in
            let ringing = error as? RingingError
            return ringing?.code == .unavailable && ringing?.message.contains("127.0.0.1:1") == true
        }
    }
}

/// ringctl, as a person at two terminals uses it: `listen` as bob, `call` as alice; through the
/// gateway and over the broker.
@Suite struct RingctlTests {
    static func stackArguments(_ way: String, _ g: Gateway) -> [String] {
        way == "gateway"
            ? ["--gateway", "http://127.0.0.1:\(g.port)"] : ["--amqp", "--amqp-url", TestEnvironment.amqpURL]
    }

    @Test(arguments: ["gateway", "amqp"])
    func listenAnswersWithOneKeyAndCallSeesEachStep(way: String) async throws {
        try await Gateway.run(tokens: true) { g in
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            let stack = Self.stackArguments(way, g)
            let listen = try CommandProcess("ringctl", ["listen", bob] + stack)
            defer { listen.stop() }
            try await listen.waitFor("listening as \(bob)")
            let call = try CommandProcess("ringctl", ["call", bob, "--as", alice, "--timeout", "60"] + stack)
            defer { call.stop() }
            try await call.waitFor("calling \(bob)")
            try await listen.waitFor("incoming audio call from \(alice)")
            // bob's listen sent the ring receipt: alice's terminal shows it ringing.
            try await call.waitFor("onOutgoingCallRinging")
            listen.type("a\n")
            try await listen.waitFor("accepted: the call is ongoing")
            try await call.waitFor("onOutgoingCallAccepted: the call is ongoing")
            listen.type("e\n")
            try await listen.waitFor("ended after")
            try await call.waitFor("onCallEndedMessageReceived: the call is ended")
            #expect(try await call.exitStatus() == 0)
            listen.type("q\n")
            #expect(try await listen.exitStatus() == 0)
            #expect(!listen.text.contains("answered on"), "listen is not told about its own answer:\n\(listen.text)")
        }
    }

    /// In a terminal (a pseudo-terminal from util-linux `script`), listen acts on single keys,
    /// without Enter and without echo.
    @Test func listenReadsSingleKeysInATerminal() async throws {
        try await Gateway.run { g in
            let bob = TestEnvironment.uniqueName("bob")
            let listen = try CommandProcess(
                "/usr/bin/script",
                [
                    "-qfec", "\(ServiceProcess.binaries.path)/ringctl listen \(bob) --gateway http://127.0.0.1:\(g.port)",
                    "/dev/null",
                ])
            defer { listen.stop() }
            try await listen.waitFor("listening as \(bob)")
            listen.type("x")
            try await listen.waitFor("unknown key 'x'")
            listen.type("e")
            try await listen.waitFor("no call to end")
            listen.type("q")
            #expect(try await listen.exitStatus() == 0)
        }
    }

    @Test(arguments: ["gateway", "amqp"])
    func theDemoPasses(way: String) async throws {
        try await Gateway.run(tokens: true) { g in
            let demo = try CommandProcess("ringctl", ["demo"] + Self.stackArguments(way, g))
            defer { demo.stop() }
            #expect(try await demo.exitStatus(timeout: .seconds(90)) == 0, "\(demo.text)")
            #expect(demo.text.contains("demo passed"))
            for callback in [
                "onOutgoingCallRinging", "onOutgoingCallAccepted", "onCallAnsweredElsewhere", "onCallEndedMessageReceived",
            ] {
                #expect(demo.text.contains(callback), "\(callback)")
            }
        }
    }

    @Test func ringctlSaysClearlyWhenTheGatewayIsDown() throws {
        let (status, output) = try runExecutable("ringctl", ["history", "alice", "--gateway", "http://127.0.0.1:1"])
        #expect(status != 0)
        #expect(output.contains("unavailable") && output.contains("127.0.0.1:1"), "\(output)")
        #expect(output.split(separator: "\n").count <= 2, "one clear line, not a stack trace: \(output)")
    }
}
