// Wakes a sleeping loop early: the ring timer sleeps until the next deadline, or until a new
// deadline is announced.
import Foundation
import Synchronization

final class Doorbell: Sendable {
    private struct State {
        var rung = false
        var cancelled = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    func ring() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.rung = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns when rung (also if rung since the last wait), after `timeout`, or on cancellation.
    func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.waitForRing() }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            group.cancelAll()
        }
        state.withLock { $0.cancelled = false }
    }

    private func waitForRing() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.rung || state.cancelled {
                        state.rung = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.cancelled = true
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}

/// Which announced ring deadlines need the sleeping ring timer sooner than it planned to wake
/// (issue 17). Every initiate announces its deadline; waking for each one cost a round of
/// queries, although a new call's deadline is nearly always later than one already waiting.
/// While the timer is awake (between reading the next deadline and going to sleep) every
/// announcement counts, since the round may have read the deadlines before it committed.
/// The wake-up is on this instance's clock and a deadline on the clock of the instance that
/// set it; a ring timeout is at least 5 s and the timer never sleeps longer than 5 s, so a
/// deadline the gate lets pass is due no earlier than the wake-up, give or take that skew.
struct DeadlineGate: Sendable {
    private var sleepsUntil: Date?

    /// The timer starts a round.
    mutating func awake() { sleepsUntil = nil }

    /// The timer goes to sleep, to wake at `wake`.
    mutating func willWake(at wake: Date) { sleepsUntil = wake }

    /// Whether an announced deadline (nil when the announcement could not be read) must wake
    /// the timer.
    func wakes(for deadline: Date?) -> Bool {
        guard let sleepsUntil, let deadline else { return true }
        return deadline < sleepsUntil
    }
}
