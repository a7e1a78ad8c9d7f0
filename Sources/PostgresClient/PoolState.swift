// The pool's bookkeeping as a state machine (issue 15, item 6): which connections are idle,
// how many are open or being opened, who waits and in which order, and whether the pool is
// closed. Each transition says what the caller must do (use this connection, open a new one,
// wake that waiter); PostgresPool keeps it under a lock and does the connecting and resuming,
// so every path is unit-tested without a database.

struct PoolState<Connection, Waiter> {
    /// What `acquire` tells the caller to do.
    enum Acquire {
        /// Use this idle connection.
        case use(Connection)
        /// A slot is taken for you: open a new connection (and `giveUpSlot` if that fails).
        case open
        /// Wait your turn (`enqueue` with an id from `nextWaiterID`).
        case wait
        /// The pool is closed.
        case closed
    }

    /// What returning a connection tells the caller to do.
    enum Release {
        /// Hand it to the waiter that waited longest.
        case handOver(Waiter, Connection)
        /// Kept idle (or dropped, when broken or the pool is closed): nothing to do.
        case kept
        /// A broken connection's slot goes to this waiter, which opens a new connection.
        case grantSlot(Waiter)
    }

    let size: Int
    private(set) var idle: [Connection] = []
    /// Connections open, lent or being opened.
    private(set) var open = 0
    private(set) var waiters: [(id: Int, waiter: Waiter)] = []
    /// Waiters cancelled before they were queued.
    private var cancelledBeforeQueued: Set<Int> = []
    private var nextID = 0
    private(set) var closed = false

    init(size: Int) {
        precondition(size > 0, "a pool needs at least one connection")
        self.size = size
    }

    /// A caller wants a connection: an idle one, a slot to open one, or a place in line.
    mutating func acquire() -> Acquire {
        if closed { return .closed }
        if let connection = idle.popLast() { return .use(connection) }
        if open < size {
            open += 1
            return .open
        }
        return .wait
    }

    /// An id for the next waiter.
    mutating func nextWaiterID() -> Int {
        defer { nextID += 1 }
        return nextID
    }

    /// Queues a waiter; false when it was cancelled already (resume it with cancellation).
    mutating func enqueue(_ id: Int, _ waiter: Waiter) -> Bool {
        if cancelledBeforeQueued.remove(id) != nil { return false }
        waiters.append((id, waiter))
        return true
    }

    /// A waiter's task was cancelled: the waiter to resume with cancellation, if it is queued.
    mutating func cancel(_ id: Int) -> Waiter? {
        guard let index = waiters.firstIndex(where: { $0.id == id }) else {
            cancelledBeforeQueued.insert(id)
            return nil
        }
        return waiters.remove(at: index).waiter
    }

    /// A slot will not be filled (opening failed, or a broken connection came back): it goes
    /// to the next waiter, which opens a connection, or is freed.
    mutating func giveUpSlot() -> Waiter? {
        guard !waiters.isEmpty else {
            open -= 1
            return nil
        }
        return waiters.removeFirst().waiter
    }

    /// A lent connection comes back, healthy or not.
    mutating func release(_ connection: Connection, healthy: Bool) -> Release {
        guard healthy else { return giveUpSlot().map { .grantSlot($0) } ?? .kept }
        if closed {
            open -= 1
            return .kept
        }
        guard !waiters.isEmpty else {
            idle.append(connection)
            return .kept
        }
        return .handOver(waiters.removeFirst().waiter, connection)
    }

    /// Closes the pool: the idle connections to close and the waiters to fail.
    mutating func close() -> (idle: [Connection], waiters: [Waiter]) {
        closed = true
        defer {
            idle.removeAll()
            waiters.removeAll()
        }
        return (idle, waiters.map(\.waiter))
    }
}
