// A self-pipe that wakes a thread sleeping in poll(2).
import Glibc

/// A non-blocking pipe used to wake a dedicated thread that waits in `poll` on a socket.
/// Owned by whoever created it; `close()` releases both ends.
public struct Wakeup: Sendable {
    /// The end to poll for readability.
    public let fileDescriptor: Int32
    private let writeEnd: Int32

    public init() {
        var ends: [Int32] = [-1, -1]
        let result = pipe(&ends)
        precondition(result == 0, "pipe failed: errno \(errno)")
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        fileDescriptor = ends[0]
        writeEnd = ends[1]
    }

    /// Makes the next (or current) `poll` on `fileDescriptor` return. A full pipe already
    /// wakes the reader, so a failed write needs no retry.
    public func signal() {
        var one: UInt8 = 1
        _ = write(writeEnd, &one, 1)
    }

    /// Empties the pipe after a wake-up.
    public func drain() {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(fileDescriptor, &buffer, buffer.count) > 0 {}
    }

    public func close() {
        _ = Glibc.close(fileDescriptor)
        _ = Glibc.close(writeEnd)
    }
}

/// Waits until one of `descriptors` is readable or `timeout` passes (never longer: every wait
/// of a dedicated thread is bounded). Returns the readable descriptors.
public func waitReadable(_ descriptors: [Int32], timeout: Duration) -> Set<Int32> {
    var fds = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    let milliseconds = max(
        0, Int32(clamping: timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000))
    let count = fds.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), milliseconds) }
    guard count > 0 else { return [] }
    return Set(fds.filter { $0.revents != 0 }.map(\.fd))
}
