// LISTEN/NOTIFY on a connection of its own, delivered as an AsyncSequence.
import CLibPQ
import DedicatedThreads
import Foundation
public import Logging

/// What a listener reports.
public enum PostgresListenerEvent: Sendable, Hashable {
    /// The listener is (again) connected and listening. Notifications sent while it was away
    /// are lost, so whoever relies on them should look at the tables once more now.
    case listening
    case notification(PostgresNotification)
}

/// Listens on a fixed set of channels on a dedicated connection and thread. The connection is
/// re-established with backoff whenever it breaks; every (re)connect is reported as
/// `.listening`.
public final class PostgresListener: Sendable {
    public let events: AsyncStream<PostgresListenerEvent>
    private let continuation: AsyncStream<PostgresListenerEvent>.Continuation
    private let configuration: PostgresConfiguration
    private let channels: [String]
    private let logger: Logger
    private let inbox = Inbox<Bool>()

    public init(
        configuration: PostgresConfiguration, channels: [String], logger: Logger = Logger(label: "ringing.postgres.listen")
    ) {
        (events, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(10_000))
        self.configuration = configuration
        self.channels = channels
        self.logger = logger
    }

    /// Listens until the task is cancelled; then `events` finishes.
    public func run() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                let thread = Thread { [configuration, channels, logger, inbox, continuation] in
                    Self.loop(
                        configuration: configuration, channels: channels, logger: logger, inbox: inbox, events: continuation)
                    continuation.finish()
                    done.resume()
                }
                thread.name = "postgres-listen"
                thread.start()
            }
        } onCancel: {
            _ = inbox.send(true)
        }
    }

    private static func loop(
        configuration: PostgresConfiguration, channels: [String], logger: Logger, inbox: Inbox<Bool>,
        events: AsyncStream<PostgresListenerEvent>.Continuation
    ) {
        var connection: LibPQConnection?
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(5))
        var retryAt = ContinuousClock.now
        var everConnected = false
        while inbox.take().isEmpty {
            if connection == nil, ContinuousClock.now >= retryAt {
                do {
                    let fresh = try LibPQConnection(configuration: configuration)
                    for channel in channels { _ = try fresh.execute("LISTEN \(identifier: channel)") }
                    connection = fresh
                    backoff.reset()
                    if everConnected { logger.notice("PostgreSQL listener reconnected") }
                    everConnected = true
                    events.yield(.listening)
                } catch {
                    let delay = backoff.next()
                    retryAt = ContinuousClock.now + delay
                    logger.warning(
                        "PostgreSQL listener cannot connect; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                }
            }
            if let current = connection {
                do {
                    for notification in try current.notifications() { events.yield(.notification(notification)) }
                } catch {
                    connection = nil
                    let delay = backoff.next()
                    retryAt = ContinuousClock.now + delay
                    logger.warning("PostgreSQL listener lost its connection; reconnecting", metadata: ["error": "\(error)"])
                }
            }
            guard inbox.prepareToSleep() else { continue }
            var descriptors = [inbox.wakeup.fileDescriptor]
            if let connection { descriptors.append(connection.socket) }
            let timeout: Duration = connection == nil ? max(.milliseconds(1), retryAt - ContinuousClock.now) : .seconds(1)
            if waitReadable(descriptors, timeout: timeout).contains(inbox.wakeup.fileDescriptor) { inbox.wakeup.drain() }
        }
        _ = inbox.close()
        connection?.close()
    }
}
