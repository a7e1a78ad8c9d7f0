// The frames waiting to be written to one socket, bounded in bytes: a device that cannot
// keep up is closed rather than allowed to grow the gateway's memory.
import Synchronization

/// A frame to write and, for a notification, when the broker delivered it.
struct QueuedFrame: Sendable {
    var text: String
    var receivedAt: ContinuousClock.Instant?
}

/// Written to by any task, read by the socket's one writer task.
final class FrameQueue: Sendable {
    private struct State {
        var frames: [QueuedFrame] = []
        var head = 0
        var bytes = 0
        var finished = false
        var waiter: CheckedContinuation<QueuedFrame?, Never>?
    }

    let maximumBytes: Int
    private let state = Mutex(State())

    init(maximumBytes: Int) { self.maximumBytes = maximumBytes }

    /// Queues a frame; false when the queue would exceed its byte budget (the device is too
    /// slow) or is finished.
    func enqueue(_ frame: QueuedFrame) -> Bool {
        let result = state.withLock { state -> (Bool, CheckedContinuation<QueuedFrame?, Never>?) in
            guard !state.finished else { return (false, nil) }
            if let waiter = state.waiter {
                state.waiter = nil
                return (true, waiter)
            }
            guard state.bytes + frame.text.utf8.count <= maximumBytes else { return (false, nil) }
            state.frames.append(frame)
            state.bytes += frame.text.utf8.count
            return (true, nil)
        }
        result.1?.resume(returning: frame)
        return result.0
    }

    /// The next frame; nil once finished (or when the task is cancelled).
    func next() async -> QueuedFrame? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<QueuedFrame?, Never>) in
                let ready = state.withLock { state -> QueuedFrame?? in
                    if state.head < state.frames.count {
                        let frame = state.frames[state.head]
                        state.head += 1
                        state.bytes -= frame.text.utf8.count
                        if state.head == state.frames.count {
                            state.frames.removeAll(keepingCapacity: true)
                            state.head = 0
                        }
                        return .some(frame)
                    }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            finish()
        }
    }

    /// No more frames: the writer ends once it has taken what is queued.
    func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<QueuedFrame?, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }
}

/// One value handed to every task that waits for it, with cancellation.
final class Handoff<Value: Sendable>: Sendable {
    private struct State {
        var value: Value?
        var closed = false
        var nextWaiter = 0
        var waiters: [Int: CheckedContinuation<Value?, Never>] = [:]
    }

    private let state = Mutex(State())

    init() {}

    /// Hands the value over (the first one only) to every waiter, present and future.
    func resolve(_ value: Value) { settle(value) }

    /// No value will come (its producer ended first): every waiter, present and future, gets
    /// nil. Nothing changes once a value was handed over.
    func close() { settle(nil) }

    private func settle(_ value: Value?) {
        let waiters = state.withLock { state -> [CheckedContinuation<Value?, Never>] in
            guard state.value == nil, !state.closed else { return [] }
            if let value { state.value = value } else { state.closed = true }
            defer { state.waiters = [:] }
            return Array(state.waiters.values)
        }
        for waiter in waiters { waiter.resume(returning: value) }
    }

    /// The value, or nil when `limit` passes (or the task is cancelled) first.
    func wait(within limit: Duration) async -> Value? {
        await withTaskGroup(of: Value?.self) { race in
            race.addTask { await self.wait() }
            race.addTask {
                try? await Task.sleep(for: limit)
                return nil
            }
            defer { race.cancelAll() }
            return await race.next() ?? nil
        }
    }

    /// The value, once resolved; nil when the waiting task is cancelled first.
    func wait() async -> Value? {
        let id = state.withLock { state -> Int in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Value?, Never>) in
                let now = state.withLock { state -> Value?? in
                    if let value = state.value { return .some(value) }
                    if Task.isCancelled || state.closed { return .some(nil) }
                    state.waiters[id] = continuation
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
        } onCancel: {
            let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
            waiter?.resume(returning: nil)
        }
    }
}
