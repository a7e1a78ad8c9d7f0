// The pool's state machine without a database: slots up to the size, idle reuse, waiters
// served in order, a failed open or a broken connection handing its slot on, cancellation
// before and after queueing, and closing.
import Testing

@testable import PostgresClient

@Suite struct PoolStateTests {
    typealias State = PoolState<String, String>

    func describe(_ acquire: State.Acquire) -> String {
        switch acquire {
        case .use(let connection): "use \(connection)"
        case .open: "open"
        case .wait: "wait"
        case .closed: "closed"
        }
    }

    func describe(_ release: State.Release) -> String {
        switch release {
        case .handOver(let waiter, let connection): "\(connection) to \(waiter)"
        case .kept: "kept"
        case .grantSlot(let waiter): "slot to \(waiter)"
        }
    }

    @Test func slotsUpToTheSizeThenWaitersAreServedInOrder() {
        var state = State(size: 2)
        #expect(describe(state.acquire()) == "open")
        #expect(describe(state.acquire()) == "open")
        #expect(describe(state.acquire()) == "wait", "both slots are taken")
        let (first, second) = (state.nextWaiterID(), state.nextWaiterID())
        let queued = [state.enqueue(first, "w1"), state.enqueue(second, "w2")]
        #expect(queued == [true, true])
        #expect(describe(state.release("c1", healthy: true)) == "c1 to w1", "the longest waiter first")
        #expect(describe(state.release("c2", healthy: true)) == "c2 to w2")
        #expect(describe(state.release("c1", healthy: true)) == "kept")
        #expect(describe(state.acquire()) == "use c1", "an idle connection is reused")
        #expect(state.open == 2)
    }

    @Test func aFailedOpenOrABrokenConnectionHandsItsSlotToTheNextWaiter() {
        var state = State(size: 1)
        _ = state.acquire()
        #expect(describe(state.acquire()) == "wait")
        _ = state.enqueue(state.nextWaiterID(), "w1")
        #expect(describe(state.release("c1", healthy: false)) == "slot to w1", "w1 opens a new connection")
        #expect(state.open == 1)
        let granted = state.giveUpSlot()
        #expect(granted == nil, "opening failed and nobody waits: the slot is free")
        #expect(state.open == 0)
        #expect(describe(state.acquire()) == "open")
    }

    @Test func aWaiterCancelledBeforeOrAfterQueueingIsNeverServed() {
        var state = State(size: 1)
        _ = state.acquire()
        let early = state.nextWaiterID()
        let cancelledEarly = state.cancel(early)
        #expect(cancelledEarly == nil, "not queued yet")
        let queuedEarly = state.enqueue(early, "early")
        #expect(!queuedEarly, "cancelled before it was queued")
        let late = state.nextWaiterID()
        let queuedLate = state.enqueue(late, "late")
        let cancelledLate = state.cancel(late)
        #expect(queuedLate && cancelledLate == "late")
        #expect(describe(state.release("c1", healthy: true)) == "kept", "no waiter is left")
    }

    @Test func closingFailsWaitersAndHandsBackIdleConnections() {
        var state = State(size: 2)
        _ = state.acquire()
        _ = state.acquire()
        _ = state.release("c1", healthy: true)
        _ = state.enqueue(state.nextWaiterID(), "w1")
        let (idle, waiters) = state.close()
        #expect(idle == ["c1"] && waiters == ["w1"])
        #expect(describe(state.acquire()) == "closed")
        #expect(describe(state.release("c2", healthy: true)) == "kept")
        #expect(state.idle.isEmpty, "a connection returned after closing is not kept")
    }
}
