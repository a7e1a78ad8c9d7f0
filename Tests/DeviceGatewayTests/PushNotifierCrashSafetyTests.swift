// A push notifier SIGKILLed in the middle of a batch of rings and started again loses no push,
// and sends again only the pushes whose acceptance it had not recorded (DESIGN §8).
import Foundation
import PostgresClient
import PushProviderStubs
import TestSupport
import Testing

@Suite(.serialized) struct PushNotifierCrashSafetyTests {
    @Test func aNotifierKilledMidBatchLosesNoPushAndResendsOnlyUnrecordedOnes() async throws {
        // Four notifications at a time and a provider that takes 100 ms: the kill lands with
        // pushes accepted and recorded, accepted but not recorded, and not yet sent.
        try await PushFixture.run(["RINGING_PUSH_CONCURRENCY": "4"]) { f in
            let calls = 30
            f.production.setHold(.milliseconds(100))
            var tokens: [String] = []
            var sessions: [String] = []
            for index in 0..<calls {
                let caller = try await f.gateway.user("caller\(index)")
                let callee = try await f.gateway.user("callee\(index)")
                let token = PushFixture.apnsToken()
                try await f.register(callee, "phone", kind: "voip", token: token)
                tokens.append(token)
                sessions.append(try await f.call(caller, callee.uid, timeout: 120).0)
            }
            let ours = Set(tokens)
            let started = await f.production.wait { pushes in
                pushes.filter { ours.contains($0.token) && $0.answeredAt != nil }.count >= 10
            }
            #expect(started)
            f.notifier.kill()
            // What the provider accepted before the kill (requests are recorded as they arrive),
            // and what the notifier had recorded in its push log.
            let acceptedBefore = Set(f.production.accepted.map(\.token).filter(ours.contains))
            let database = try await PostgresConnection.connect(
                configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL))
            let logged = try await Set(
                database.query(
                    "SELECT session_id::text FROM push.push_log WHERE session_id = ANY(\(sessions.compactMap(UUID.init(uuidString:))))"
                ).map { try $0.decode(String.self, at: 0) })
            let loggedTokens = Set(zip(sessions, tokens).filter { logged.contains($0.0) }.map(\.1))
            #expect(loggedTokens.isSubset(of: acceptedBefore), "nothing is recorded that the provider did not accept")

            try await f.startNotifier()
            let all = await f.production.wait(timeout: .seconds(60)) { pushes in
                Set(pushes.filter { $0.status == 200 }.map(\.token)).isSuperset(of: ours)
            }
            #expect(all, "every ring was pushed once the notifier came back")
            // The redelivered notifications are done when every ring has its push-log row.
            let ids = sessions.compactMap(UUID.init(uuidString:))
            var rows = 0
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                rows =
                    try await database.query("SELECT count(*) FROM push.push_log WHERE session_id = ANY(\(ids))").first?
                    .decode(Int.self, at: 0) ?? 0
                if rows == calls { break }
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(rows == calls, "one push-log row per ring")
            var count: [String: Int] = [:]
            for push in f.production.accepted where ours.contains(push.token) { count[push.token, default: 0] += 1 }
            let resent = Set(count.filter { $0.value > 1 }.keys)
            #expect(resent.isSubset(of: acceptedBefore.subtracting(loggedTokens)), "only unrecorded pushes were sent again")
            #expect(count.values.allSatisfy { $0 <= 2 })
            print(
                "push crash: \(calls) rings; before the kill \(acceptedBefore.count) accepted, \(loggedTokens.count) recorded; "
                    + "after the restart \(resent.count) sent again (accepted but not recorded: \(acceptedBefore.subtracting(loggedTokens).count))"
            )
            await database.close()
        }
    }
}
