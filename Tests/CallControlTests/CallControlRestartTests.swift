// Losing the database or the broker pauses call-control; it reconnects and goes on without
// losing the requests in flight. Run on its own (`swift test --filter RestartTests`).
import CallRules
import Foundation
import RingingContract
import TestSupport
import Testing

@Suite(.serialized) struct CallControlRestartTests {
    @Test func aRequestSentWhileTheDatabaseIsDownIsAppliedWhenItReturns() async throws {
        let port = Int.random(in: 30_000...39_999)
        try await Scenario.run(httpPort: port) { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, timeout: 120)
            try StackServer.postgres.stop()
            // Not ready while the database is away (and ready again later).
            #expect(try await OperationsTests.get(port, "readyz").status == 503)
            // The request waits, unacknowledged, while the service retries the transaction.
            async let accepted = s.client.request(
                RequestType.accept.rawValue, token: bob.token,
                ["session_id": .string(call.sessionID.uuidString)])
            try StackServer.postgres.start()
            #expect(try await accepted.call?.status == .ongoing)
            try await alice.expect(.outgoingCallAccepted, call.sessionID)
            #expect(try Scenario.call(try await s.act(.end, alice, call.sessionID)).status == .ended)
        }
    }

    @Test func callControlReconnectsAfterABrokerRestart() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, timeout: 120)
            try StackServer.broker.stop()
            try StackServer.broker.start()
            // The client's reply queue went with its connection; a request is retried with the
            // same message_id until a reply comes, as a client library would.
            let accepted = try await CrashSafetyTests.send(
                s.client, .accept, token: bob.token, ["session_id": .string(call.sessionID.uuidString)])
            #expect(accepted.call?.status == .ongoing)
            try await alice.expect(.outgoingCallAccepted, call.sessionID, timeout: .seconds(60))
            let ended = try await CrashSafetyTests.send(
                s.client, .end, token: alice.token, ["session_id": .string(call.sessionID.uuidString)])
            #expect(ended.call?.status == .ended)
        }
    }
}
