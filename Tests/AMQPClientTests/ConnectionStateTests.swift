// The connection's state machine without a broker: connecting and reconnecting (backoff,
// setup of topology, bindings and consumers, stale deliveries), confirms and returns through
// it, consumers cancelled by the broker or the application, channels closed by the broker,
// blocking, settling with ack coalescing, request deadlines and shutdown.
import DedicatedThreads
import Foundation
import Testing

@testable import AMQPClient

@Suite struct ConnectionStateTests {
    typealias State = ConnectionState<Int, String, String>
    typealias Action = State.Action
    let t0 = ContinuousClock.now
    let lost = AMQPError(.connectionLost, "socket closed")

    func newState() -> State {
        State(
            confirmWindow: 2, backoff: Backoff(initial: .seconds(1), maximum: .seconds(4)), requestTimeout: .seconds(10),
            now: t0)
    }

    /// A state that is connected and set up.
    func connected() -> State {
        var state = newState()
        _ = state.loggedIn()
        _ = state.setUpFinished()
        return state
    }

    func spec(_ id: Int, queue: String = "q", onPublishChannel: Bool = false) -> ConsumerSpec {
        var spec = ConsumerSpec(id: id, queue: queue, prefetch: 10, noAck: false, exclusive: false, arguments: [:])
        spec.onPublishChannel = onPublishChannel
        return spec
    }

    func message(_ id: String) -> AMQPMessage {
        var properties = AMQPProperties()
        properties.messageID = id
        return AMQPMessage(exchange: "x", routingKey: "k", body: Data(), properties: properties)
    }

    /// The actions as short strings, logs left out.
    func describe(_ actions: [Action]) -> [String] {
        actions.compactMap { action in
            switch action {
            case .resolve(let outcomes):
                if outcomes.isEmpty { return nil }
                return "resolve "
                    + outcomes.map { ticket, outcome in
                        switch outcome {
                        case .confirmed: "\(ticket):ok"
                        case .failed(let error): "\(ticket):\(error.code)"
                        }
                    }.joined(separator: ",")
            case .openPublishChannel: return "open publish"
            case .openChannel(let channel): return "open \(channel)"
            case .declare(let topology): return "declare \(topology.queues.map(\.name).joined())"
            case .bind(let binding): return "bind \(binding.queue)<-\(binding.routingKey)"
            case .startConsumer(let id, _, let channel): return "start \(id) on \(channel)"
            case .cancelConsumer(let channel, let tag): return "cancel \(tag) on \(channel)"
            case .finish(let consumer, let error): return "finish \(consumer)\(error.map { " \($0.code)" } ?? "")"
            case .settle(let channel, let tag, let kind): return "settle \(channel):\(tag) \(kind)"
            case .perform(let request): return "perform \(request)"
            case .fail(let request, let error): return "fail \(request) \(error.code)"
            case .log: return nil
            case .connected(let reconnected): return reconnected ? "reconnected" : "connected"
            }
        }
    }

    @Test func aFailedConnectWaitsItsBackoffAndSetupDeclaresBindsAndStartsInOrder() {
        var state = newState()
        #expect(state.shouldConnect(at: t0))
        _ = state.connectFailed(AMQPError(.connectionFailed, "refused"), at: t0)
        #expect(!state.shouldConnect(at: t0 + .milliseconds(999)), "the first backoff is at least a second")
        #expect(state.shouldConnect(at: t0 + .seconds(2)))

        state.remember(AMQPTopology(queues: [AMQPQueue("q")]))
        let first = state.hold(AMQPBinding(queue: "q", exchange: "x", routingKey: "a"))
        let second = state.hold(AMQPBinding(queue: "q", exchange: "x", routingKey: "a"))
        #expect(first && !second, "a second hold binds nothing")
        #expect(describe(state.addConsumer(spec(7), "c7")) == [], "not connected: started with the connection")
        #expect(describe(state.request("declare r", at: t0)) == [], "waits for a connection")

        #expect(
            describe(state.loggedIn()) == ["open publish", "open 2", "declare q", "bind q<-a", "start 7 on 3"])
        #expect(state.isSettingUp && !state.isConnected)
        state.consumerStarted(7, channel: 3, tag: "ctag")
        #expect(describe(state.setUpFinished()) == ["perform declare r", "connected"])
        #expect(state.isConnected && state.generation == 1)
        #expect(state.consumer(on: 3) == "c7")
    }

    @Test func aLostConnectionFailsTheUnconfirmedKeepsTheWaitingAndReconnectsWithEverything() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        for ticket in 1...3 { state.publish(message("m\(ticket)"), ticket, deadline: t0 + .seconds(30)) }
        #expect(state.nextToWrite()?.ticket == 1)
        #expect(state.nextToWrite()?.ticket == 2)
        #expect(state.nextToWrite() == nil, "the window is full")
        let generation = state.generation

        let actions = state.connectionLost(lost, at: t0)
        #expect(describe(actions) == ["resolve 1:connectionLost,2:connectionLost"])
        #expect(!state.isConnected && state.generation == generation + 1)
        #expect(state.consumer(on: 3) == nil, "no consumer takes deliveries without a connection")
        #expect(state.nextToWrite() == nil, "nothing is written without a connection")
        #expect(describe(state.settle(generation: generation, channel: 3, tag: 1, kind: .ack(multiple: false))) == [])
        #expect(describe(state.flushAcks()) == [], "a delivery of the lost connection is back in its queue")

        #expect(state.shouldConnect(at: t0 + .seconds(2)))
        #expect(describe(state.loggedIn()) == ["open publish", "open 2", "start 1 on 3"])
        #expect(describe(state.publishChannelOpened(failing: lost)) == [], "nothing unconfirmed on the new channel")
        state.consumerStarted(1, channel: 3, tag: "t1b")
        #expect(describe(state.setUpFinished()) == ["reconnected"])
        #expect(state.reconnects == 1)
        #expect(state.nextToWrite()?.sequence == 1, "numbering starts over on the new channel")
        #expect(describe(state.confirmed(1, multiple: false, ack: true)) == ["resolve 3:ok"])
    }

    @Test func aStaleSettlementIsDroppedAndAFreshOneGoesOut() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        #expect(describe(state.settle(generation: state.generation - 1, channel: 3, tag: 1, kind: .ack(multiple: false))) == [])
        #expect(describe(state.flushAcks()) == [])
        #expect(
            describe(state.settle(generation: state.generation, channel: 3, tag: 1, kind: .nack(requeue: true))) == [
                "settle 3:1 nack(requeue: true)"
            ])
        #expect(
            describe(state.settle(generation: state.generation, channel: 3, tag: 1, kind: .reject(requeue: false))) == [],
            "settling twice would close the channel")
    }

    @Test func acksAreGatheredAndSentAsOneMultipleAckPlusSingles() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        let generation = state.generation
        for tag: UInt64 in [2, 1, 3, 5, 3] {
            #expect(describe(state.settle(generation: generation, channel: 3, tag: tag, kind: .ack(multiple: false))) == [])
        }
        #expect(describe(state.flushAcks()) == ["settle 3:3 ack(multiple: true)", "settle 3:5 ack(multiple: false)"])
        #expect(describe(state.flushAcks()) == [], "flushed once")
        // A reject goes at once, after the acks gathered before it.
        _ = state.settle(generation: generation, channel: 3, tag: 4, kind: .ack(multiple: false))
        #expect(
            describe(state.settle(generation: generation, channel: 3, tag: 6, kind: .reject(requeue: false))) == [
                "settle 3:4 ack(multiple: true)", "settle 3:6 reject(requeue: false)",
            ])
    }

    @Test func confirmsAndReturnsResolveThePublishesThroughTheState() {
        var state = connected()
        state.publish(message("a"), 1, deadline: t0 + .seconds(5))
        state.publish(message("b"), 2, deadline: t0 + .seconds(5))
        _ = state.nextToWrite()
        _ = state.nextToWrite()
        state.returned(exchange: "x", routingKey: "k", messageID: "b", replyText: "312 NO_ROUTE")
        #expect(describe(state.confirmed(2, multiple: true, ack: true)) == ["resolve 1:ok,2:unroutable"])
    }

    @Test func theBrokerCancellingAConsumerEndsItWithAnErrorAndKeepsItsChannelForSettling() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        let actions = state.brokerCancelled(channel: 3)
        #expect(describe(actions) == ["finish c1 consumerCancelled"])
        #expect(state.consumer(on: 3) == nil && state.consumers.isEmpty)
        #expect(describe(state.brokerCancelled(channel: 3)) == [], "only once")
        _ = state.settle(generation: state.generation, channel: 3, tag: 1, kind: .ack(multiple: false))
        #expect(describe(state.flushAcks()) == ["settle 3:1 ack(multiple: true)"], "deliveries in hand can be acked")
        // Subscribing again takes a new channel.
        #expect(describe(state.addConsumer(spec(2), "c2")) == ["start 2 on 4"])
    }

    @Test func theApplicationCancellingAConsumerSendsBasicCancelAndEndsItCleanly() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        #expect(describe(state.cancelConsumer(1)) == ["cancel t1 on 3", "finish c1"])
        #expect(describe(state.cancelConsumer(1)) == [])
        var disconnected = newState()
        _ = disconnected.addConsumer(spec(1), "c1")
        #expect(describe(disconnected.cancelConsumer(1)) == ["finish c1"], "no basic.cancel without a connection")
    }

    @Test func aConsumerThatCannotStartEndsWithItsError() {
        var state = connected()
        #expect(describe(state.addConsumer(spec(1, queue: "missing"), "c1")) == ["start 1 on 3"])
        #expect(describe(state.consumerFailed(1, AMQPError(.channelClosed, "404 NOT_FOUND"))) == ["finish c1 channelClosed"])
        #expect(state.consumers.isEmpty)
    }

    @Test func aChannelClosedByTheBrokerIsRecoveredByWhatUsedIt() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        _ = state.addConsumer(spec(2, queue: "amq.rabbitmq.reply-to", onPublishChannel: true), "replies")
        state.consumerStarted(2, channel: 1, tag: "t2")
        state.publish(message("a"), 1, deadline: t0 + .seconds(5))
        _ = state.nextToWrite()
        let closed = AMQPError(.channelClosed, "404 NOT_FOUND - no exchange 'x'")

        #expect(
            describe(state.channelClosed(1, closed)) == ["resolve 1:channelClosed", "open publish", "start 2 on 1"],
            "the publishing channel comes back with direct reply-to on it")
        #expect(describe(state.channelClosed(2, closed)) == ["open 2"])
        #expect(describe(state.channelClosed(3, closed)) == ["start 1 on 4"], "a consumer moves to a new channel")
        #expect(describe(state.settle(generation: state.generation, channel: 3, tag: 1, kind: .nack(requeue: true))) == [])
        #expect(ConnectionState<Int, String, String>.reopensChannel(after: closed, on: 2))
        #expect(!ConnectionState<Int, String, String>.reopensChannel(after: closed, on: 1))
        #expect(!ConnectionState<Int, String, String>.reopensChannel(after: lost, on: 3))
    }

    @Test func aBlockedConnectionWritesNothingUntilUnblockedAndAReconnectUnblocks() {
        var state = connected()
        #expect(state.setBlocked(true).count == 1 && state.isBlocked)
        #expect(state.setBlocked(true).isEmpty, "said once")
        state.publish(message("a"), 1, deadline: t0 + .seconds(5))
        #expect(state.nextToWrite() == nil)
        #expect(describe(state.expire(at: t0 + .seconds(1), notConnected: lost)) == [])
        _ = state.setBlocked(false)
        #expect(state.nextToWrite()?.ticket == 1)

        _ = state.setBlocked(true)
        _ = state.connectionLost(lost, at: t0)
        #expect(!state.isBlocked, "a new connection starts unblocked")
    }

    @Test func deadlinesFailWaitingPublishesAndRequests() {
        var state = newState()
        state.publish(message("a"), 1, deadline: t0 + .seconds(3))
        _ = state.request("bind b", at: t0)
        let notConnected = AMQPError(.timeout, "no connection")
        #expect(describe(state.expire(at: t0 + .seconds(2), notConnected: notConnected)) == [])
        #expect(describe(state.expire(at: t0 + .seconds(3), notConnected: notConnected)) == ["resolve 1:timeout"])
        #expect(describe(state.expire(at: t0 + .seconds(10), notConnected: notConnected)) == ["fail bind b timeout"])
    }

    @Test func bindingHoldsAreCountedAndOnlyTheLastReleaseUnbinds() {
        var state = connected()
        let binding = AMQPBinding(queue: "q", exchange: "x", routingKey: "user.1.#")
        let holds = [state.hold(binding), state.hold(binding)]
        #expect(holds == [true, false], "only the first hold binds")
        let releases = [state.release(binding), state.release(binding), state.release(binding)]
        #expect(releases == [false, true, false], "only the last release unbinds")
        _ = state.hold(binding)
        state.holdFailed(binding)
        #expect(state.bindingHolds.isEmpty, "a hold that could not be bound is not held")
    }

    @Test func shutdownFailsEverythingQueuedAndEndsEveryConsumer() {
        var state = connected()
        _ = state.addConsumer(spec(1), "c1")
        state.consumerStarted(1, channel: 3, tag: "t1")
        state.publish(message("a"), 1, deadline: t0 + .seconds(5))
        state.publish(message("b"), 2, deadline: t0 + .seconds(5))
        _ = state.nextToWrite()
        state.beginShutdown()
        #expect(!state.shouldConnect(at: t0 + .seconds(60)))
        #expect(state.nextToWrite()?.ticket == 2, "publishes already queued still go out while the connection drains")
        _ = state.connectionLost(AMQPError(.shutdown, "closing"), at: t0)
        let closed = AMQPError(.shutdown, "the connection has been shut down")
        #expect(describe(state.finishShutdown(closed)) == ["finish c1"])
        #expect(!state.shouldConnect(at: t0 + .seconds(60)))
    }
}
