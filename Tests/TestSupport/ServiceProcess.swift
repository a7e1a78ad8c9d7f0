// A service executable of this package, run as a child process the way it runs in production.
public import Foundation
import Synchronization

public final class ServiceProcess: Sendable {
    public let name: String
    private let process: Process
    private let readyLine: String
    private let shared = Shared()

    /// What the pipe reader and the waiting tasks share.
    private final class Shared: Sendable {
        let output = Mutex<String>("")
        let ready = Mutex<(seen: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
        /// Tasks waiting for more output.
        let more = Mutex<[CheckedContinuation<Void, Never>]>([])

        func wakeOutputWaiters() {
            for waiter in more.withLock({ waiters -> [CheckedContinuation<Void, Never>] in
                defer { waiters = [] }
                return waiters
            }) { waiter.resume() }
        }
    }

    /// The directory holding the test bundle also holds the package's executables.
    public static var binaries: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
    }

    /// Starts `executable` with the test environment plus `environment`; `readyLine` is the
    /// log line that says it is serving.
    public init(executable: String, name: String, environment: [String: String], readyLine: String) throws {
        self.name = name
        self.readyLine = readyLine
        let url = Self.binaries.appendingPathComponent(executable)
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw StackError(message: "\(url.path) is not built; run `swift build` first")
        }
        process = Process()
        process.executableURL = url
        var env = ProcessInfo.processInfo.environment
        env["RINGING_AMQP_URL"] = TestEnvironment.amqpURL(account: executable)
        env["RINGING_DATABASE_URL"] = TestEnvironment.databaseURL
        env["RINGING_INSTANCE"] = name
        env["RINGING_LOG_LEVEL"] = env["RINGING_LOG_LEVEL"] ?? "info"
        env["RINGING_HTTP_PORT"] = "0"  // several instances on one machine: no shared port unless asked
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = pipe
        pipe.fileHandleForReading.readabilityHandler = { [shared, readyLine] handle in
            let data = handle.availableData
            guard !data.isEmpty else {
                handle.readabilityHandler = nil
                return
            }
            let text = String(decoding: data, as: UTF8.self)
            let all = shared.output.withLock {
                $0 += text
                return $0
            }
            shared.wakeOutputWaiters()
            if all.contains(readyLine) {
                let waiters = shared.ready.withLock { state -> [CheckedContinuation<Void, Never>] in
                    state.seen = true
                    defer { state.waiters = [] }
                    return state.waiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
        try process.run()
    }

    /// Waits until the service logs its ready line (bounded by `timeout`).
    public func waitUntilReady(timeout: Duration = .seconds(60)) async throws {
        try await withDeadline(timeout, "\(name) to become ready") { [shared] in
            while !shared.ready.withLock({ $0.seen }) && !Task.isCancelled {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = shared.ready.withLock { state -> Bool in
                            if state.seen || Task.isCancelled { return true }
                            state.waiters.append(continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    for waiter in shared.ready.withLock({ state -> [CheckedContinuation<Void, Never>] in
                        defer { state.waiters = [] }
                        return state.waiters
                    }) { waiter.resume() }
                }
            }
            if !shared.ready.withLock({ $0.seen }) { throw CancellationError() }
        }
    }

    /// Waits until the process has printed `text` (bounded by `timeout`).
    public func waitForOutput(_ text: String, timeout: Duration = .seconds(60)) async throws {
        try await withDeadline(timeout, "\(name) to print '\(text)'") { [shared] in
            while !shared.output.withLock({ $0.contains(text) }) {
                try Task.checkCancellation()
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = shared.more.withLock { waiters -> Bool in
                            if Task.isCancelled || shared.output.withLock({ $0.contains(text) }) { return true }
                            waiters.append(continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    shared.wakeOutputWaiters()
                }
            }
        }
    }

    /// What the process printed so far.
    public var log: String { shared.output.withLock { $0 } }

    public var isRunning: Bool { process.isRunning }

    /// SIGKILL: no chance to finish anything.
    public func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Waits until the process exits by itself; returns the exit status.
    public func waitForExit() async -> Int32 {
        let process = self.process
        return await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                process.waitUntilExit()
                continuation.resume(returning: process.terminationStatus)
            }
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit status.
    @discardableResult
    public func terminate() -> Int32 {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
        return process.terminationStatus
    }
}

/// Runs one of the package's executables to completion; returns its exit status and what it
/// printed (stdout and stderr together).
public func runExecutable(_ name: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (
    status: Int32, output: String
) {
    let process = Process()
    process.executableURL = ServiceProcess.binaries.appendingPathComponent(name)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
