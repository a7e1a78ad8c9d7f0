// How many publishes the connection may write at once (issue 17: several are corked into one
// segment only when several can go): what waits, within the confirm window, none while blocked.
import Foundation
import Testing

@testable import AMQPClient

@Suite struct PublisherWritableTests {
    @Test func writableIsWhatWaitsWithinTheWindowAndNoneWhileBlocked() {
        let deadline = ContinuousClock.now + .seconds(10)
        var state = PublisherState<Int>(window: 3)
        #expect(state.writable == 0)
        for ticket in 1...5 {
            state.enqueue(AMQPMessage(exchange: "x", routingKey: "k", body: Data()), ticket, deadline: deadline)
        }
        #expect(state.writable == 3, "five wait, the window holds three")
        _ = state.nextToWrite()
        _ = state.nextToWrite()
        #expect(state.writable == 1)
        state.setBlocked(true)
        #expect(state.writable == 0)
        #expect(state.nextToWrite() == nil)
        state.setBlocked(false)
        _ = state.confirmed(2, multiple: true, ack: true)
        #expect(state.writable == 3, "three wait, and the window is free again")
    }
}
