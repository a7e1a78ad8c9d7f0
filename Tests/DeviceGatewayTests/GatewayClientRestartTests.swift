// The client library across the loss of its gateway: it reconnects by itself, sends again
// what was waiting for a reply (same id), and catches up from the new welcome's snapshot: a
// call that started ringing while it was away rings, one that ended while it was away stops.
// Runs alone (the suite name ends in RestartTests): it kills and restarts a gateway process.
import CallRules
import Foundation
import RingingClient
import Synchronization
import TestSupport
import Testing

@Suite(.serialized) struct GatewayClientRestartTests {
    /// A gateway process on a fixed port, killed and started again by the test.
    final class GatewayOnPort: Sendable {
        let port: Int
        private let process = Mutex<ServiceProcess?>(nil)

        init(port: Int) { self.port = port }

        func start() async throws {
            let started = try ServiceProcess(
                executable: "device-gateway", name: TestEnvironment.uniqueName("gw-client"),
                environment: ["RINGING_GATEWAY_PORT": "\(port)"], readyLine: "device-gateway ready")
            process.withLock { $0 = started }
            try await started.waitUntilReady()
        }

        func kill() { process.withLock { $0 }?.kill() }
    }

    /// Waits until the client reports `connected` again after having lost its gateway.
    static func reconnected(_ device: Device) async throws {
        try await withDeadline(.seconds(60), "the client to reconnect") {
            try await device.client.waitUntilConnected()
        }
    }

    @Test(.timeLimit(.minutes(4)))
    func theClientReconnectsResendsAndCatchesUpFromTheSnapshot() async throws {
        try await Gateway.run { g in
            let port = Int.random(in: 30_000..<40_000)
            let gateway = GatewayOnPort(port: port)
            defer { gateway.kill() }
            try await gateway.start()
            let alice = TestEnvironment.uniqueName("alice")
            let bob = TestEnvironment.uniqueName("bob")
            let bobToken = try await g.auth.mint(uid: bob)
            var configuration = RingingClientConfiguration(
                gateway: URL(string: "http://127.0.0.1:\(port)")!, authToken: bobToken, deviceID: "bobs-phone")
            configuration.replyTimeout = .seconds(20)
            configuration.reconnectBackoff = (.milliseconds(100), .milliseconds(500))
            let bobClient = try RingingClient(configuration: configuration, logger: quietLogger("bob"))
            let bobRecorder = Recorder()
            bobClient.setDelegate(bobRecorder)
            let bobDevice = Device(client: bobClient, recorder: bobRecorder)
            try await g.withDevices([(alice, "alice-phone")]) { devices in
                let caller = devices[0]
                try await RingingClient.withClient(bobClient) { _ in
                    // 1. The gateway dies; a call rings meanwhile; a request waits.
                    gateway.kill()
                    let call = try await caller.client.initiateCall(receiverID: bob, timeout: 120)
                    async let waiting = bobClient.callHistory(limit: 5)
                    try await gateway.start()
                    try await Self.reconnected(bobDevice)
                    // The snapshot of the new welcome makes it ring, once.
                    try await bobDevice.expect(.incomingCallReceived, call.sessionID)
                    let page = try await waiting
                    #expect(page.calls.contains { $0.sessionID == call.sessionID }, "the waiting request was sent again")
                    #expect(bobRecorder.connectionStates.contains { if case .reconnecting = $0 { true } else { false } })

                    // 2. Gone again; the caller cancels meanwhile: back, the phone stops ringing.
                    gateway.kill()
                    _ = try await caller.client.rejectCall(sessionID: call.sessionID, status: .cancelled)
                    try await gateway.start()
                    try await Self.reconnected(bobDevice)
                    try await bobDevice.expect(.incomingCallCanceled, call.sessionID)
                    #expect(bobRecorder.log(call.sessionID) == ["incoming:initiated", "canceled:cancelled"])
                }
            }
        }
    }
}
