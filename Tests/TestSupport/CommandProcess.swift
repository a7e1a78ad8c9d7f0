// A command-line program a test drives as a person would: what it prints can be awaited, keys
// typed into its standard input.
import Foundation
import Synchronization

public final class CommandProcess: Sendable {
    public let name: String
    private let process: Process
    private let input: Pipe
    private let shared = Shared()

    /// What the pipe reader, the exit handler and the waiting tasks share.
    private final class Shared: Sendable {
        let output = Mutex<(text: String, waiters: [CheckedContinuation<Void, Never>])>(("", []))

        func wake() {
            for waiter in output.withLock({ state -> [CheckedContinuation<Void, Never>] in
                defer { state.waiters = [] }
                return state.waiters
            }) { waiter.resume() }
        }
    }

    /// Starts one of the package's executables (or, given a path, any program) with `arguments`.
    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        name = ([executable] + arguments).joined(separator: " ")
        process = Process()
        process.executableURL =
            executable.hasPrefix("/")
            ? URL(fileURLWithPath: executable) : ServiceProcess.binaries.appendingPathComponent(executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        input = Pipe()
        process.standardInput = input
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        pipe.fileHandleForReading.readabilityHandler = { [shared] handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
            } else {
                shared.output.withLock { $0.text += String(decoding: data, as: UTF8.self) }
            }
            shared.wake()
        }
        process.terminationHandler = { [shared] _ in shared.wake() }
        try process.run()
    }

    /// Everything printed so far (stdout and stderr).
    public var text: String { shared.output.withLock { $0.text } }

    /// Waits until the output contains `expected`; the error shows what was printed.
    public func waitFor(_ expected: String, timeout: Duration = .seconds(30)) async throws {
        do {
            try await waitUntil(timeout, "'\(expected)' from \(name)") { $0.contains(expected) }
        } catch {
            throw StackError(message: "\(error); it printed:\n\(text)")
        }
        guard text.contains(expected) else {
            throw StackError(
                message: "\(name) exited (\(process.terminationStatus)) before printing '\(expected)'; it printed:\n\(text)")
        }
    }

    /// Waits (bounded) until `done` holds for the output or the program exited.
    private func waitUntil(_ timeout: Duration, _ what: String, _ done: @escaping @Sendable (String) -> Bool) async throws {
        try await withDeadline(timeout, what) {
            while !done(self.text) && self.process.isRunning {
                try Task.checkCancellation()
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = self.shared.output.withLock { state -> Bool in
                            if done(state.text) || Task.isCancelled || !self.process.isRunning { return true }
                            state.waiters.append(continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    self.shared.wake()
                }
            }
        }
    }

    /// Types `keys` into the program's standard input.
    public func type(_ keys: String) {
        input.fileHandleForWriting.write(Data(keys.utf8))
    }

    /// Waits for the exit (bounded); returns the exit status.
    public func exitStatus(timeout: Duration = .seconds(30)) async throws -> Int32 {
        try await waitUntil(timeout, "\(name) to exit") { _ in false }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Stops it if it still runs.
    public func stop() {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
    }
}
