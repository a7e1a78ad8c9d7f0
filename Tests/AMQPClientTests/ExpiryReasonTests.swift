// The connection loop asks its state machine for expired deadlines on every turn: the reason
// "no connection" is built only when something expires, and once for all that expire together.
import DedicatedThreads
import Foundation
import Synchronization
import Testing

@testable import AMQPClient

@Suite struct ExpiryReasonTests {
    typealias State = ConnectionState<Int, String, String>
    let t0 = ContinuousClock.now

    final class Counter: Sendable {
        let built = Atomic<Int>(0)
        func reason() -> AMQPError {
            built.add(1, ordering: .relaxed)
            return AMQPError(.timeout, "no connection")
        }
    }

    func message(_ id: String) -> AMQPMessage {
        var properties = AMQPProperties()
        properties.messageID = id
        return AMQPMessage(exchange: "x", routingKey: "k", body: Data(), properties: properties)
    }

    @Test func theReasonIsBuiltOnlyWhenSomethingExpiresAndThenOnce() {
        var state = State(
            confirmWindow: 2, backoff: Backoff(initial: .seconds(1), maximum: .seconds(4)), requestTimeout: .seconds(10),
            now: t0)
        let counter = Counter()
        state.publish(message("a"), 1, deadline: t0 + .seconds(3))
        state.publish(message("b"), 2, deadline: t0 + .seconds(3))
        _ = state.request("bind b", at: t0 - .seconds(7))
        _ = state.request("bind c", at: t0 - .seconds(7))

        for second in 0..<3 {
            let actions = state.expire(at: t0 + .seconds(second), notConnected: counter.reason())
            #expect(actions.allSatisfy { if case .resolve(let outcomes) = $0 { outcomes.isEmpty } else { false } })
        }
        #expect(counter.built.load(ordering: .relaxed) == 0, "nothing expired: no reason built")

        let actions = state.expire(at: t0 + .seconds(3), notConnected: counter.reason())
        var resolved: [Int] = []
        var failed: [String] = []
        for action in actions {
            switch action {
            case .resolve(let outcomes):
                for (ticket, outcome) in outcomes {
                    if case .failed(let error) = outcome, error.message == "no connection" { resolved.append(ticket) }
                }
            case .fail(let request, let error):
                if error.message == "no connection" { failed.append(request) }
            default: break
            }
        }
        #expect(resolved.sorted() == [1, 2])
        #expect(failed.sorted() == ["bind b", "bind c"])
        #expect(counter.built.load(ordering: .relaxed) == 1, "four expiries, one reason")
    }
}
