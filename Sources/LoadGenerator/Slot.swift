// A one-shot rendezvous between whoever produces a value (a reply, a notification, a
// timeout) and the flow waiting for it. The value may arrive before anybody waits.
import Synchronization

/// Why a wait ended without its value.
public struct WaitFailure: Error, Sendable, CustomStringConvertible {
    /// A short code for the report's error table (`timeout`, `publish_failed`, ...).
    public let code: String
    public let detail: String
    public var description: String { "\(code): \(detail)" }
}

final class Slot<Value: Sendable>: Sendable {
    private enum State {
        case pending(CheckedContinuation<Value, any Error>?)
        case done(Result<Value, any Error>)
    }

    private let state = Mutex<State>(.pending(nil))

    /// Completes the slot; the first completion wins. Returns whether this one did.
    @discardableResult
    func complete(_ result: Result<Value, any Error>) -> Bool {
        let waiter: CheckedContinuation<Value, any Error>?? = state.withLock { state in
            guard case .pending(let waiter) = state else { return .none }
            state = .done(result)
            return .some(waiter)
        }
        guard case .some(let continuation) = waiter else { return false }
        continuation?.resume(with: result)
        return true
    }

    var isDone: Bool {
        state.withLock { if case .done = $0 { true } else { false } }
    }

    /// Waits for the value (completion also comes from the owner's deadline sweep, so this
    /// never waits forever).
    func value() async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<Value, any Error>? = state.withLock { state in
                switch state {
                case .done(let result): return result
                case .pending:
                    state = .pending(continuation)
                    return nil
                }
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}
