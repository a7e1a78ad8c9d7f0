// Exponential backoff with jitter for reconnect loops.

/// How long to wait before the next reconnect attempt: doubles from `initial` up to `maximum`,
/// with up to 20% random jitter so that many instances do not reconnect in lockstep.
public struct Backoff: Sendable, Hashable {
    public var initial: Duration
    public var maximum: Duration
    private var attempt = 0

    public init(initial: Duration = .milliseconds(100), maximum: Duration = .seconds(5)) {
        precondition(initial > .zero && maximum >= initial, "Backoff needs 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before the next attempt; each call lengthens the following one.
    public mutating func next() -> Duration {
        let factor = 1 << min(attempt, 30)
        attempt += 1
        let base = min(initial * factor, maximum)
        let jitter = base * Double.random(in: 0...0.2)
        return min(base + jitter, maximum)
    }

    /// Called after a success: the next failure starts again from `initial`.
    public mutating func reset() { attempt = 0 }
}
