// The command queue of a dedicated I/O thread.
import Synchronization

/// Commands for a dedicated thread that sleeps in `poll`. Any task may `send`; only the owning
/// thread takes. The eventfd is written only when the thread is actually asleep, so a busy
/// thread is not woken once per command.
public final class Inbox<Command: Sendable>: Sendable {
    private struct State {
        var commands: [Command] = []
        var sleeping = false
        var closed = false
    }

    private let state = Mutex(State())
    public let wakeup = Wakeup()

    public init() {}

    deinit { wakeup.close() }

    /// Queues a command; false when the thread has closed the inbox (the command was not
    /// queued and the caller must answer it itself).
    public func send(_ command: Command) -> Bool {
        let (accepted, wake) = state.withLock { state -> (Bool, Bool) in
            guard !state.closed else { return (false, false) }
            state.commands.append(command)
            defer { state.sleeping = false }
            return (true, state.sleeping)
        }
        if wake { wakeup.signal() }
        return accepted
    }

    /// Takes every queued command (owning thread only).
    public func take() -> [Command] {
        state.withLock { state in
            state.sleeping = false
            var taken: [Command] = []
            swap(&taken, &state.commands)
            return taken
        }
    }

    /// Marks the thread as about to sleep; false when commands arrived meanwhile, in which
    /// case the thread must not sleep.
    public func prepareToSleep() -> Bool {
        state.withLock { state in
            guard state.commands.isEmpty else { return false }
            state.sleeping = true
            return true
        }
    }

    /// Refuses every later command and returns those still queued (owning thread, on exit).
    public func close() -> [Command] {
        state.withLock { state in
            state.closed = true
            var taken: [Command] = []
            swap(&taken, &state.commands)
            return taken
        }
    }
}
