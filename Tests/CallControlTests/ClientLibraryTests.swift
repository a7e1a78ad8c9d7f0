// The client library against the real stack: the seed's calls and callbacks, each callback
// exactly once with the right status; and `ringctl demo`.
import AMQPClient
import CallRules
import Foundation
import Logging
import RingingClient
import RingingClientAMQP
import RingingContract
import Synchronization
import TestSupport
import Testing

@Suite struct ClientLibraryTests {
    static func withDevices(
        _ s: Scenario, _ specs: [(String, String)], _ body: @escaping @Sendable ([Device]) async throws -> Void
    ) async throws {
        let url = try AMQPURL(TestEnvironment.amqpURL)
        var devices: [Device] = []
        var tasks: [RingingClient] = []
        for (uid, device) in specs {
            var configuration = RingingClientConfiguration(authToken: try await s.auth.mint(uid: uid), deviceID: device)
            configuration.replyTimeout = .seconds(10)
            var logger = Logger(label: "client-test")
            logger.logLevel = .warning
            let client = try RingingClient(amqp: url, configuration: configuration, logger: logger)
            let recorder = Recorder()
            client.setDelegate(recorder)
            devices.append(Device(client: client, recorder: recorder))
            tasks.append(client)
        }
        let clients = tasks
        let ready = devices
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in clients { group.addTask { try await client.run() } }
            defer { group.cancelAll() }
            for client in clients { try await client.waitUntilReady() }
            try await body(ready)
        }
    }

    @Test func theSeedFlowFiresEveryCallbackExactlyOnce() async throws {
        try await Scenario.run(tokens: true) { s in
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            try await Self.withDevices(s, [(alice, "alice-phone"), (bob, "bob-phone"), (bob, "bob-tablet")]) { devices in
                let (caller, phone, tablet) = (devices[0], devices[1], devices[2])
                #expect(!caller.client.transport.keepsCallsLive, "over AMQP the client sends heartbeats itself")
                try await SeedFlow.run(caller: caller, phone: phone, tablet: tablet, bob: bob)
            }
        }
    }

    @Test func rejectAndCancelReachTheOtherSide() async throws {
        try await Scenario.run { s in
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            try await Self.withDevices(s, [(alice, "a"), (bob, "b")]) { devices in
                let (caller, callee) = (devices[0], devices[1])
                let rejected = try await caller.client.initiateCall(receiverID: bob)
                try await callee.expect(.incomingCallReceived, rejected.sessionID)
                try await caller.expect(.outgoingCallRinging, rejected.sessionID)
                #expect(try await callee.client.rejectCall(sessionID: rejected.sessionID, status: .rejected).status == .rejected)
                try await caller.expect(.outgoingCallRejected, rejected.sessionID)

                let cancelled = try await caller.client.initiateCall(receiverID: bob)
                try await callee.expect(.incomingCallReceived, cancelled.sessionID)
                #expect(
                    try await caller.client.rejectCall(sessionID: cancelled.sessionID, status: .cancelled).status == .cancelled)
                try await callee.expect(.incomingCallCanceled, cancelled.sessionID)

                #expect(caller.recorder.log(rejected.sessionID) == ["ringing:initiated:b", "rejected:rejected"])
                #expect(callee.recorder.log(rejected.sessionID) == ["incoming:initiated"], "its own decline is not news to it")
                #expect(callee.recorder.log(cancelled.sessionID) == ["incoming:initiated", "canceled:cancelled"])
                // An error names the code and the field.
                await #expect { try await caller.client.initiateCall(receiverID: "not a uid") } throws: { error in
                    (error as? RingingError)?.code == .invalidRequest && (error as? RingingError)?.field == "receiver_id"
                }
            }
        }
    }

    @Test func ringctlDemoPasses() async throws {
        try await Scenario.run(tokens: true) { _ in
            let (status, output) = try runExecutable("ringctl", ["demo", "--amqp"])
            #expect(status == 0, "\(output)")
            #expect(output.contains("demo passed"))
            for callback in [
                "onIncomingCallReceived", "onOutgoingCallRinging", "onOutgoingCallAccepted", "onCallAnsweredElsewhere",
                "onCallEndedMessageReceived",
            ] {
                #expect(output.contains(callback))
            }
        }
    }

    @Test func ringctlSaysClearlyWhenTheStackIsDown() throws {
        let (status, output) = try runExecutable(
            "ringctl", ["history", "alice", "--amqp-url", "amqp://guest:guest@127.0.0.1:1/"])
        #expect(status != 0)
        #expect(output.contains("unavailable") && output.contains("127.0.0.1:1"), "\(output)")
        #expect(output.split(separator: "\n").count <= 2, "one clear line, not a stack trace: \(output)")
    }
}

@Suite(.serialized) struct ClientRestartTests {
    @Test func theClientRidesOutABrokerRestartMidCall() async throws {
        try await Scenario.run { s in
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            try await ClientLibraryTests.withDevices(s, [(alice, "a"), (bob, "b")]) { devices in
                let (caller, callee) = (devices[0], devices[1])
                let call = try await caller.client.initiateCall(receiverID: bob, timeout: 120)
                try await callee.expect(.incomingCallReceived, call.sessionID)
                try StackServer.broker.stop()
                try StackServer.broker.start()
                // Notifications published while a connection is down are lost with its
                // auto-delete queue: wait until everyone listens again.
                try await s.client.amqp.waitUntilConnected()
                for device in devices { try await device.client.waitUntilConnected() }
                // The library retries with the same message_id until it gets the reply.
                #expect(try await callee.client.acceptCall(sessionID: call.sessionID).status == .ongoing)
                // Its notification queue came back with the connection: alice hears about it.
                try await caller.expect(.outgoingCallAccepted, call.sessionID)
                #expect(try await caller.client.endCall(sessionID: call.sessionID).status == .ended)
            }
        }
    }
}
