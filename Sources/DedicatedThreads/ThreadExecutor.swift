// A serial executor backed by one dedicated OS thread, for actors that make blocking C calls.
import Foundation
import Synchronization

/// Runs the jobs of the actors that choose it on one thread of its own.
///
/// An actor whose `unownedExecutor` is a `ThreadExecutor` may block in C calls (libpq) without
/// starving Swift's cooperative pool: only this thread waits. The thread ends once the executor
/// is released and its queue is empty.
public final class ThreadExecutor: SerialExecutor, Sendable {
    /// What the executor and its thread share; the thread holds only this, so releasing the
    /// executor stops the thread.
    private final class Queue: Sendable {
        struct State {
            var jobs: [UnownedJob] = []
            var stopping = false
        }

        let state = Mutex(State())
        let signal = DispatchSemaphore(value: 0)

        func run(on executor: UnownedSerialExecutor) {
            while true {
                signal.wait()
                let (jobs, stopping) = state.withLock { state -> ([UnownedJob], Bool) in
                    var taken: [UnownedJob] = []
                    swap(&taken, &state.jobs)
                    return (taken, state.stopping)
                }
                for job in jobs {
                    job.runSynchronously(on: executor)
                }
                if stopping && jobs.isEmpty { return }
            }
        }
    }

    private let queue = Queue()

    public init(name: String) {
        // Jobs exist only while actors that keep this executor alive exist, so the unowned
        // reference is never used after `deinit`.
        let executor = UnownedSerialExecutor(ordinary: self)
        let thread = Thread { [queue] in queue.run(on: executor) }
        thread.name = name
        thread.start()
    }

    deinit {
        queue.state.withLock { $0.stopping = true }
        queue.signal.signal()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        queue.state.withLock { $0.jobs.append(unowned) }
        queue.signal.signal()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }
}
