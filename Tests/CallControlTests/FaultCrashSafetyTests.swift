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
}
