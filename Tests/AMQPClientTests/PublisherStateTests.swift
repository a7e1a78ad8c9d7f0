// The publishing state machine without a broker: the confirm window, confirms (single and
// multiple), nacks, returns, a blocked connection, deadlines, a lost connection, shutdown.
import Foundation
import Testing

@testable import AMQPClient

@Suite struct PublisherStateTests {
    let t0 = ContinuousClock.now

    func message(_ key: String = "k", id: String? = nil) -> AMQPMessage {
        var properties = AMQPProperties()
        properties.messageID = id
        return AMQPMessage(exchange: "x", routingKey: key, body: Data(), properties: properties)
    }

    /// A state with `count` publishes waiting, tickets 1…count, deadlines 10 s out.
    func state(window: Int = 2, waiting count: Int) -> PublisherState<Int> {
        var state = PublisherState<Int>(window: window)
        for ticket in 1...count { state.enqueue(message(id: "m\(ticket)"), ticket, deadline: t0 + .seconds(10)) }
        return state
    }

    func codes(_ outcomes: [(Int, PublishOutcome)]) -> [String] {
        outcomes.map { ticket, outcome in
            switch outcome {
            case .confirmed: "\(ticket):ok"
            case .failed(let error): "\(ticket):\(error.code)"
            }
        }
    }

    @Test func theWindowBoundsWhatIsUnconfirmedAndConfirmsFreeIt() {
        var state = state(window: 2, waiting: 3)
        #expect(state.nextToWrite()?.sequence == 1)
        #expect(state.nextToWrite()?.sequence == 2)
        #expect(state.nextToWrite() == nil, "the window is full")
        #expect(codes(state.confirmed(1, multiple: false, ack: true)) == ["1:ok"])
        #expect(state.nextToWrite()?.ticket == 3)
        #expect(codes(state.confirmed(3, multiple: true, ack: true)) == ["2:ok", "3:ok"])
        #expect(state.isIdle)
    }

    @Test func aNackFailsAndAReturnMakesTheConfirmUnroutable() {
        var state = state(window: 10, waiting: 3)
        for _ in 1...3 { _ = state.nextToWrite() }
        #expect(codes(state.confirmed(1, multiple: false, ack: false)) == ["1:nacked"])
        state.returned(exchange: "x", routingKey: "k", messageID: "m3", replyText: "312 NO_ROUTE")
        #expect(codes(state.confirmed(3, multiple: true, ack: true)) == ["2:ok", "3:unroutable"])
    }

    @Test func nothingIsWrittenWhileBlockedAndTheWaitingFailAtTheirDeadline() {
        var state = state(window: 10, waiting: 2)
        _ = state.nextToWrite()
        state.setBlocked(true)
        #expect(state.nextToWrite() == nil, "blocked: nothing is written")
        #expect(state.expire(at: t0 + .seconds(5), notConnected: nil).isEmpty, "not before the deadline")
        let expired = state.expire(at: t0 + .seconds(10), notConnected: nil)
        #expect(codes(expired) == ["2:timeout", "1:timeout"], "the waiting one, then the unconfirmed one")
        if case .failed(let error) = expired[0].1 { #expect(error.message.contains("blocks publishing")) }
        state.enqueue(message(), 3, deadline: t0 + .seconds(20))
        state.setBlocked(false)
        #expect(state.nextToWrite()?.ticket == 3)
        #expect(state.confirmed(1, multiple: false, ack: true).isEmpty, "a late confirm of a given-up publish is ignored")
    }

    @Test func aLostConnectionFailsTheUnconfirmedAndKeepsTheWaiting() {
        var state = state(window: 1, waiting: 2)
        _ = state.nextToWrite()
        state.setBlocked(true)
        #expect(codes(state.connectionLost(AMQPError(.connectionLost, "gone"))) == ["1:connectionLost"])
        #expect(!state.blocked, "a new connection is not blocked")
        _ = state.channelOpened(failing: AMQPError(.channelClosed, "reopened"), connectionIsNew: true)
        #expect(state.nextToWrite()?.sequence == 1, "numbering starts over on the new channel")
        // While there is no connection, the deadline fails with the reason given.
        state.enqueue(message(), 3, deadline: t0 + .seconds(1))
        #expect(codes(state.expire(at: t0 + .seconds(1), notConnected: AMQPError(.timeout, "no connection"))) == ["3:timeout"])
        #expect(codes(state.shutDown(AMQPError(.shutdown, "bye"))) == ["2:shutdown"])
        #expect(state.isIdle)
    }
}
