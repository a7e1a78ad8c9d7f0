// Micro benchmark: publish-with-confirms and consume+ack through the Swift AMQP layer, next to
// the same work done by raw rabbitmq-c calls in the same run, so the layer's cost is a ratio.
//
//   swift run -c release AMQPBenchmark [--messages 20000] [--window 100] [--prefetch 100] [--rounds 3]
import AMQPClient
import CRabbitMQ
import Foundation
import Logging

struct Options {
    var messages = 20_000
    var window = 100
    var prefetch: UInt16 = 100
    var rounds = 3
    var bodySize = 256
    var url = ProcessInfo.processInfo.environment["RINGING_AMQP_URL"] ?? "amqp://admin:admin@127.0.0.1:5672/"

    init() {}

    init(_ arguments: [String]) throws {
        var iterator = arguments.makeIterator()
        while let flag = iterator.next() {
            func value() throws -> String {
                guard let v = iterator.next() else { throw BenchmarkError("\(flag) needs a value") }
                return v
            }
            func number() throws -> Int {
                let text = try value()
                guard let n = Int(text), n > 0 else {
                    throw BenchmarkError("\(flag) needs a positive whole number, got '\(text)'")
                }
                return n
            }
            switch flag {
            case "--messages": messages = try number()
            case "--window": window = try number()
            case "--prefetch": prefetch = UInt16(clamping: try number())
            case "--rounds": rounds = try number()
            case "--body-size": bodySize = try number()
            case "--url": url = try value()
            case "--help", "-h":
                print(
                    "usage: AMQPBenchmark [--messages N] [--window N] [--prefetch N] [--rounds N] [--body-size BYTES] [--url amqp://…]"
                )
                exit(0)
            default: throw BenchmarkError("unknown option '\(flag)' (try --help)")
            }
        }
    }
}

struct BenchmarkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: - Raw rabbitmq-c, the floor

/// The same work with nothing but rabbitmq-c calls on the calling thread.
final class RawClient {
    let connection: amqp_connection_state_t

    init(url: AMQPURL) throws {
        connection = amqp_new_connection()
        let socket = amqp_tcp_socket_new(connection)
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        guard amqp_socket_open_noblock(socket, url.host, Int32(url.port), &timeout) == AMQP_STATUS_OK.rawValue else {
            throw BenchmarkError("raw: cannot reach \(url)")
        }
        var properties = amqp_table_t(num_entries: 0, entries: nil)
        let reply = ringing_amqp_login_plain(connection, url.virtualHost, 0, 131_072, 10, &properties, url.user, url.password)
        guard reply.reply_type == AMQP_RESPONSE_NORMAL else { throw BenchmarkError("raw: login failed") }
        amqp_channel_open(connection, 1)
        try check("channel.open")
    }

    deinit {
        amqp_connection_close(connection, AMQP_REPLY_SUCCESS)
        amqp_destroy_connection(connection)
    }

    func check(_ what: String) throws {
        guard amqp_get_rpc_reply(connection).reply_type == AMQP_RESPONSE_NORMAL else {
            throw BenchmarkError("raw: \(what) failed")
        }
    }

    func publish(queue: String, count: Int, window: Int, body: Data) throws {
        amqp_confirm_select(connection, 1)
        try check("confirm.select")
        var properties = amqp_basic_properties_t()
        properties._flags = ringing_flag_delivery_mode
        properties.delivery_mode = 2
        var sent = 0
        var confirmed = 0
        var confirmedUpTo: UInt64 = 0
        var singles = Set<UInt64>()
        var frame = amqp_frame_t()
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        try body.withUnsafeBytes { raw in
            let bytes = amqp_bytes_t(len: raw.count, bytes: UnsafeMutableRawPointer(mutating: raw.baseAddress))
            while confirmed < count {
                while sent < count, sent - confirmed < window {
                    let rc = amqp_basic_publish(
                        connection, 1, amqp_empty_bytes, amqp_cstring_bytes(queue), 1, 0, &properties, bytes)
                    guard rc == AMQP_STATUS_OK.rawValue else { throw BenchmarkError("raw: publish failed") }
                    sent += 1
                }
                guard amqp_simple_wait_frame_noblock(connection, &frame, &timeout) == AMQP_STATUS_OK.rawValue else {
                    throw BenchmarkError("raw: no confirm within 10 s")
                }
                guard frame.frame_type == AMQP_FRAME_METHOD, frame.payload.method.id == ringing_basic_ack else { continue }
                let ack = frame.payload.method.decoded.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
                if ack.multiple != 0 {
                    confirmedUpTo = max(confirmedUpTo, ack.delivery_tag)
                } else {
                    singles.insert(ack.delivery_tag)
                }
                while singles.remove(confirmedUpTo + 1) != nil { confirmedUpTo += 1 }
                confirmed = Int(confirmedUpTo) + singles.count
                amqp_maybe_release_buffers(connection)
            }
        }
    }

    func consume(queue: String, count: Int, prefetch: UInt16) throws {
        amqp_basic_qos(connection, 1, 0, prefetch, 0)
        try check("basic.qos")
        amqp_basic_consume(connection, 1, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table)
        try check("basic.consume")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        for _ in 0..<count {
            var envelope = amqp_envelope_t()
            amqp_maybe_release_buffers(connection)
            let reply = amqp_consume_message(connection, &envelope, &timeout, 0)
            guard reply.reply_type == AMQP_RESPONSE_NORMAL else { throw BenchmarkError("raw: consume failed") }
            amqp_basic_ack(connection, 1, envelope.delivery_tag, 0)
            amqp_destroy_envelope(&envelope)
        }
    }
}

// MARK: - Running

/// The Swift layer's side of a round, off the main actor as a service's tasks would be.
nonisolated func swiftLayerRound(_ amqp: AMQPConnection, queue: String, body: Data) async throws -> (Duration, Duration) {
    let count = options.messages
    let window = options.window
    let publish = try await measure("swift publish") {
        // A sliding window of `window` publishes in flight, as a service would keep.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<count {
                if index >= window { try await group.next() }
                group.addTask {
                    try await amqp.publish(
                        AMQPMessage(
                            exchange: "", routingKey: queue, body: body,
                            properties: AMQPProperties(deliveryMode: .persistent)))
                }
            }
            try await group.waitForAll()
        }
    }
    let consume = try await measure("swift consume") {
        let consumer = try await amqp.consume(queue: queue, prefetch: options.prefetch)
        var received = 0
        for try await delivery in consumer {
            delivery.ack()
            received += 1
            if received == count { break }
        }
        consumer.cancel()
    }
    return (publish, consume)
}

/// Client CPU time (all threads of this process), in microseconds.
func cpuMicroseconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec)
}

nonisolated(unsafe) var cpuPerMessage: [String: [Double]] = [:]

func measure(_ name: String, isolation: isolated (any Actor)? = #isolation, _ body: () async throws -> Void) async rethrows
    -> Duration
{
    let cpu = cpuMicroseconds()
    let start = ContinuousClock.now
    try await body()
    let elapsed = ContinuousClock.now - start
    cpuPerMessage[name, default: []].append((cpuMicroseconds() - cpu) / Double(options.messages))
    return elapsed
}

func rate(_ count: Int, _ duration: Duration) -> Double {
    Double(count) / (Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

nonisolated(unsafe) var options = Options()
do { options = try Options(Array(CommandLine.arguments.dropFirst())) } catch {
    FileHandle.standardError.write(Data("AMQPBenchmark: \(error)\n".utf8))
    exit(2)
}
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = .warning
    return handler
}

let url = try AMQPURL(options.url)
let body = Data(repeating: UInt8(ascii: "x"), count: options.bodySize)
let count = options.messages
print(
    "AMQP layer benchmark: \(count) persistent \(options.bodySize)-byte messages per round through a quorum queue, confirm window \(options.window), prefetch \(options.prefetch), \(options.rounds) rounds, broker \(url)"
)

var results: [String: [Double]] = [:]
var configuration = AMQPConfiguration(url: url, connectionName: "amqp-benchmark")
configuration.confirmWindow = options.window

try await AMQPConnection.withConnection(configuration: configuration) { amqp in
    for round in 1...options.rounds {
        for side in ["raw", "swift"] {
            let queue = "bench_\(side)_\(round)_\(UUID().uuidString.prefix(6))"
            try await amqp.declare(AMQPTopology(queues: [.quorum(queue)]), remember: false)
            if side == "raw" {
                let raw = try RawClient(url: url)
                let publish = try await measure("raw publish") {
                    try raw.publish(queue: queue, count: count, window: options.window, body: body)
                }
                let consumer = try RawClient(url: url)
                let consume = try await measure("raw consume") {
                    try consumer.consume(queue: queue, count: count, prefetch: options.prefetch)
                }
                results["raw publish", default: []].append(rate(count, publish))
                results["raw consume", default: []].append(rate(count, consume))
            } else {
                let (publish, consume) = try await swiftLayerRound(amqp, queue: queue, body: body)
                results["swift publish", default: []].append(rate(count, publish))
                results["swift consume", default: []].append(rate(count, consume))
            }
            _ = try await amqp.deleteQueue(queue)
        }
        print(
            "round \(round): raw publish \(Int(results["raw publish"]!.last!))/s, swift publish \(Int(results["swift publish"]!.last!))/s, raw consume \(Int(results["raw consume"]!.last!))/s, swift consume \(Int(results["swift consume"]!.last!))/s"
        )
    }
}

let publishRatio = median(results["swift publish"]!) / median(results["raw publish"]!)
let consumeRatio = median(results["swift consume"]!) / median(results["raw consume"]!)
print("")
print("median msgs/s        raw rabbitmq-c   Swift layer   ratio   client CPU µs/msg (raw / Swift)")
for (label, key, ratio) in [("publish + confirm", "publish", publishRatio), ("consume + ack", "consume", consumeRatio)] {
    print(
        String(
            format: "%@ %14.0f %13.0f   %5.1f%%   %5.1f / %5.1f", label.padding(toLength: 20, withPad: " ", startingAt: 0),
            median(results["raw \(key)"]!), median(results["swift \(key)"]!), ratio * 100,
            median(cpuPerMessage["raw \(key)"]!), median(cpuPerMessage["swift \(key)"]!)))
}
