// The publishing side of a connection as a state machine (issue 15, item 6): which publishes
// wait, which were written and wait for their confirm, whether the broker blocks the
// connection, and every publish's deadline. Its transitions say what the connection's thread
// must do (write this publish, resolve those callers); it does no I/O, so every transition is
// unit-tested without a broker.
import Synchronization

/// How a publish ended, for its caller.
enum PublishOutcome: Equatable, Sendable {
    case confirmed
    case failed(AMQPError)
}

/// Who waits for a publish's outcome: its own caller, or the caller of `publishAll`, resumed
/// once every message of the group has its outcome (with the first failure, if any).
enum PublishWaiter: Sendable {
    case one(CheckedContinuation<Void, any Error>)
    case member(Group)

    final class Group: Sendable {
        private struct State {
            var remaining: Int
            var failure: AMQPError?
        }

        private let state: Mutex<State>
        private let continuation: CheckedContinuation<Void, any Error>

        init(count: Int, _ continuation: CheckedContinuation<Void, any Error>) {
            precondition(count > 0, "a group of publishes holds at least one")
            state = Mutex(State(remaining: count))
            self.continuation = continuation
        }

        func resolve(_ outcome: PublishOutcome) {
            let finished = state.withLock { state -> Result<Void, AMQPError>? in
                if case .failed(let error) = outcome, state.failure == nil { state.failure = error }
                state.remaining -= 1
                guard state.remaining == 0 else { return nil }
                return state.failure.map { .failure($0) } ?? .success(())
            }
            if let finished { continuation.resume(with: finished.mapError { $0 as any Error }) }
        }
    }

    func resolve(_ outcome: PublishOutcome) {
        switch self {
        case .one(let continuation):
            switch outcome {
            case .confirmed: continuation.resume()
            case .failed(let error): continuation.resume(throwing: error)
            }
        case .member(let group): group.resolve(outcome)
        }
    }
}

struct PublisherState<Ticket> {
    struct Publish {
        let message: AMQPMessage
        /// Whatever resumes the caller (a continuation; an id in the tests).
        let ticket: Ticket
        let deadline: ContinuousClock.Instant
        /// The publish sequence number on the channel, once written.
        var sequence: UInt64 = 0
        /// Set when the broker returned the message; its confirm then fails the publish.
        var returned: String?
    }

    /// How many publishes may be unconfirmed at once.
    let window: Int
    private(set) var waiting = FIFO<Publish>()
    /// Written and not yet confirmed, by sequence number.
    private(set) var unconfirmed: [Publish] = []
    private var nextSequence: UInt64 = 1
    /// The broker blocks the connection (a resource alarm): nothing is written until it unblocks.
    private(set) var blocked = false

    init(window: Int) { self.window = window }

    var isIdle: Bool { waiting.isEmpty && unconfirmed.isEmpty }

    /// A caller's publish: it waits its turn.
    mutating func enqueue(_ message: AMQPMessage, _ ticket: Ticket, deadline: ContinuousClock.Instant) {
        waiting.append(Publish(message: message, ticket: ticket, deadline: deadline))
    }

    /// How many publishes `nextToWrite` would hand out now: waiting ones, as far as the
    /// confirm window allows, none while the broker blocks us.
    var writable: Int { blocked ? 0 : max(0, min(waiting.count, window - unconfirmed.count)) }

    /// The next publish to write now (it counts as unconfirmed from here, with the next
    /// sequence number), or nil when none waits, the window is full or the broker blocks us.
    /// Only while connected.
    mutating func nextToWrite() -> Publish? {
        guard !blocked, unconfirmed.count < window, var publish = waiting.first else { return nil }
        _ = waiting.removeFirst()
        publish.sequence = nextSequence
        nextSequence += 1
        unconfirmed.append(publish)
        return publish
    }

    /// `basic.ack` (or, with `ack` false, `basic.nack`) for `tag`, or for every sequence up to
    /// it with `multiple`.
    mutating func confirmed(_ tag: UInt64, multiple: Bool, ack: Bool) -> [(Ticket, PublishOutcome)] {
        let settled: [Publish]
        if multiple {
            let count = unconfirmed.prefix { $0.sequence <= tag }.count
            settled = Array(unconfirmed.prefix(count))
            unconfirmed.removeFirst(count)
        } else if let index = unconfirmed.firstIndex(where: { $0.sequence == tag }) {
            settled = [unconfirmed.remove(at: index)]
        } else {
            settled = []  // a publish already given up on (its deadline passed)
        }
        return settled.map { publish in
            guard ack else {
                return (
                    publish.ticket, .failed(AMQPError(.nacked, "the broker refused the message to '\(publish.message.exchange)'"))
                )
            }
            if let returned = publish.returned {
                return (
                    publish.ticket,
                    .failed(
                        AMQPError(
                            .unroutable,
                            "message to exchange '\(publish.message.exchange)' with routing key '\(publish.message.routingKey)' matched no queue (\(returned))"
                        ))
                )
            }
            return (publish.ticket, .confirmed)
        }
    }

    /// `basic.return`, which comes before the confirm of the same message. Publishes on a
    /// channel are returned in the order they were written, so the earliest unconfirmed one to
    /// the same exchange and routing key (and message id) not yet returned is the one.
    mutating func returned(exchange: String, routingKey: String, messageID: String?, replyText: String) {
        if let index = unconfirmed.firstIndex(where: {
            $0.returned == nil && $0.message.exchange == exchange && $0.message.routingKey == routingKey
                && $0.message.properties.messageID == messageID
        }) {
            unconfirmed[index].returned = replyText
        }
    }

    /// `connection.blocked` / `connection.unblocked`.
    mutating func setBlocked(_ isBlocked: Bool) { blocked = isBlocked }

    /// Publishes whose deadline passed: still waiting (window full, blocked, or no connection:
    /// `notConnected` then says why), or written but not confirmed (they may have arrived).
    /// `notConnected` is only evaluated when a waiting publish expires.
    mutating func expire(
        at now: ContinuousClock.Instant, notConnected: @autoclosure () -> AMQPError?
    ) -> [(Ticket, PublishOutcome)] {
        var expired: [(Ticket, PublishOutcome)] = []
        while let first = waiting.first, first.deadline <= now {
            let why =
                notConnected()
                ?? AMQPError(
                    .timeout,
                    "not published within its deadline: \(blocked ? "the broker blocks publishing (a resource alarm)" : "the confirm window stayed full")"
                )
            expired.append((waiting.removeFirst().ticket, .failed(why)))
        }
        unconfirmed.removeAll { publish in
            guard publish.deadline <= now else { return false }
            expired.append(
                (
                    publish.ticket,
                    .failed(AMQPError(.timeout, "the broker did not confirm within the deadline (the message may have arrived)"))
                ))
            return true
        }
        return expired
    }

    /// The publishing channel was opened again (after a reconnect, or after the broker closed
    /// it): numbering starts over and what was unconfirmed fails with `error` (its fate is
    /// unknown). A new connection is not blocked.
    mutating func channelOpened(failing error: AMQPError, connectionIsNew: Bool) -> [(Ticket, PublishOutcome)] {
        let failed = failUnconfirmed(error)
        nextSequence = 1
        if connectionIsNew { blocked = false }
        return failed
    }

    /// The connection is gone: what was unconfirmed fails with `error`; what waits, waits on.
    mutating func connectionLost(_ error: AMQPError) -> [(Ticket, PublishOutcome)] {
        blocked = false
        return failUnconfirmed(error)
    }

    /// Shutting down: everything fails with `error`.
    mutating func shutDown(_ error: AMQPError) -> [(Ticket, PublishOutcome)] {
        var failed = failUnconfirmed(error)
        while !waiting.isEmpty { failed.append((waiting.removeFirst().ticket, .failed(error))) }
        return failed
    }

    private mutating func failUnconfirmed(_ error: AMQPError) -> [(Ticket, PublishOutcome)] {
        defer { unconfirmed.removeAll() }
        return unconfirmed.map { ($0.ticket, .failed(error)) }
    }
}
