// A logger whose messages a test can await: what a service says while it waits (for the
// broker, say) is the event that test waits for.
public import Logging
import Synchronization

/// The messages logged through `logger`, in order, as a stream a test reads.
public final class LogLines: Sendable {
    public let logger: Logger
    private let stream: Mutex<AsyncStream<String>?>

    public init(label: String, level: Logger.Level = .info) {
        let (stream, continuation) = AsyncStream<String>.makeStream()
        self.stream = Mutex(stream)
        logger = Logger(label: label) { _ in Handler(continuation: continuation, logLevel: level) }
    }

    /// Waits for the first message containing `text` (logged since the last call); nil when the
    /// task was cancelled first, or when another call is waiting (one reader at a time).
    @discardableResult
    public func first(containing text: String) async -> String? {
        guard let stream = stream.withLock({ $0.take() }) else { return nil }
        defer { self.stream.withLock { $0 = stream } }
        for await line in stream where line.contains(text) { return line }
        return nil
    }

    private struct Handler: LogHandler {
        let continuation: AsyncStream<String>.Continuation
        var logLevel: Logger.Level
        var metadata: Logger.Metadata = [:]

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(
            level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?, source: String, file: String,
            function: String, line: UInt
        ) {
            continuation.yield("\(message)")
        }
    }
}
