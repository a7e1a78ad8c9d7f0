// The deliveries of one consumer, buffered between the connection's thread and the task that
// processes them, readable one by one or in batches.
import DedicatedThreads
import Synchronization

/// The deliveries of one consumer. Iterate it from one task: one at a time as an
/// `AsyncSequence`, or several at a time with `nextBatch(max:)`. `cancel()` stops the
/// consumer; the sequence then ends.
public struct AMQPConsumer: AsyncSequence, Sendable {
    public typealias Element = AMQPDelivery
    let buffer: DeliveryBuffer
    let id: Int
    let inbox: Inbox<ConnectionCommand>

    public struct AsyncIterator: AsyncIteratorProtocol {
        let buffer: DeliveryBuffer
        var pending: [AMQPDelivery] = []

        public mutating func next() async throws -> AMQPDelivery? {
            if pending.isEmpty {
                guard let batch = try await buffer.nextBatch(max: 64) else { return nil }
                pending = batch.reversed()
            }
            return pending.popLast()
        }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(buffer: buffer) }

    /// Waits for at least one delivery and returns every one already there, up to `max`.
    /// Nil when the consumer has ended (cancelled, connection shut down, or the task was
    /// cancelled); throws when the broker cancelled it or it could not be resumed.
    public func nextBatch(max: Int) async throws -> [AMQPDelivery]? {
        try await buffer.nextBatch(max: max)
    }

    /// Tells the broker to stop delivering (`basic.cancel`) and ends the sequence once the
    /// deliveries already received are taken. Unsettled deliveries can still be settled.
    public func cancel() {
        _ = inbox.send(.cancelConsumer(id: id))
    }
}

/// Filled by the connection's thread, emptied by one task.
final class DeliveryBuffer: Sendable {
    private struct State {
        var items = FIFO<AMQPDelivery>()
        var waiter: (max: Int, continuation: CheckedContinuation<[AMQPDelivery]?, any Error>)?
        var ended = false
        var failure: (any Error)?
    }

    private let state = Mutex(State())

    func yield(_ delivery: AMQPDelivery) {
        let waiter = state.withLock { state -> CheckedContinuation<[AMQPDelivery]?, any Error>? in
            guard !state.ended else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter.continuation
            }
            state.items.append(delivery)
            return nil
        }
        waiter?.resume(returning: [delivery])
    }

    func finish(throwing error: (any Error)? = nil) {
        let waiter = state.withLock { state -> CheckedContinuation<[AMQPDelivery]?, any Error>? in
            guard !state.ended else { return nil }
            state.ended = true
            state.failure = error
            defer { state.waiter = nil }
            return state.waiter?.continuation
        }
        if let error { waiter?.resume(throwing: error) } else { waiter?.resume(returning: nil) }
    }

    func nextBatch(max: Int) async throws -> [AMQPDelivery]? {
        precondition(max > 0, "a batch holds at least one delivery")
        if let ready = try take(max) { return ready }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let immediate = state.withLock { state -> Result<[AMQPDelivery]?, any Error>? in
                    if let ready = Self.take(&state, max) { return ready }
                    // Cancelled before waiting: the cancellation handler already ran and
                    // found no waiter to resume.
                    if Task.isCancelled { return .success(nil) }
                    state.waiter = (max, continuation)
                    return nil
                }
                if let immediate { continuation.resume(with: immediate) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<[AMQPDelivery]?, any Error>? in
                defer { state.waiter = nil }
                return state.waiter?.continuation
            }
            waiter?.resume(returning: nil)
        }
    }

    private func take(_ max: Int) throws -> [AMQPDelivery]?? {
        let result = state.withLock { Self.take(&$0, max) }
        switch result {
        case .none: return .none
        case .some(.success(let batch)): return .some(batch)
        case .some(.failure(let error)): throw error
        }
    }

    /// Buffered deliveries, the end, or nil when the caller must wait.
    private static func take(_ state: inout State, _ max: Int) -> Result<[AMQPDelivery]?, any Error>? {
        if !state.items.isEmpty {
            var batch: [AMQPDelivery] = []
            while batch.count < max, !state.items.isEmpty { batch.append(state.items.removeFirst()) }
            return .success(batch)
        }
        if state.ended {
            if let failure = state.failure { return .failure(failure) }
            return .success(nil)
        }
        return nil
    }
}
