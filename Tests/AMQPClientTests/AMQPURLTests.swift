import CRabbitMQ
import DedicatedThreads
import Testing

// Unit tests: URL parsing and conversions between Swift values and rabbitmq-c structs.
@testable import AMQPClient

@Suite struct AMQPURLTests {
    @Test func parsesEveryPart() throws {
        let url = try AMQPURL("amqp://alice:s%40cret@broker.example:5673/calls?heartbeat=7&connection_timeout=2500")
        #expect(url.host == "broker.example")
        #expect(url.port == 5673)
        #expect(url.user == "alice")
        #expect(url.password == "s@cret")
        #expect(url.virtualHost == "calls")
        #expect(url.heartbeat == .seconds(7))
        #expect(url.connectTimeout == .milliseconds(2500))
    }

    @Test func defaultsMatchTheLocalStack() throws {
        let url = try AMQPURL("amqp://127.0.0.1")
        #expect(url == AMQPURL())
        #expect(url.virtualHost == "/")
        #expect(try AMQPURL("amqp://h/%2f").virtualHost == "/")
        #expect(try AMQPURL("amqp://h/").virtualHost == "/")
        #expect(try AMQPURL("amqp://[::1]:5672").host == "::1")
    }

    @Test(arguments: [
        ("http://host", "scheme 'http'"),
        ("amqps://host", "scheme 'amqps'"),
        ("amqp://host:70000", "port 70000"),
        ("amqp://host/a/b", "contains '/'"),
        ("amqp://host?heartbeat=soon", "'heartbeat'"),
        ("no scheme here", "no scheme"),
    ])
    func rejectsBadURLsNamingThePart(input: String, expected: String) {
        #expect {
            try AMQPURL(input)
        } throws: { error in
            guard let error = error as? AMQPError else { return false }
            return error.code == .invalidURL && error.message.contains(expected)
        }
    }

    @Test func descriptionHidesThePassword() throws {
        let url = try AMQPURL("amqp://bob:hunter2@h:1/v")
        #expect(url.description == "amqp://bob@h:1/v")
    }
}

@Suite struct CConversionTests {
    @Test func fieldTablesRoundTripThroughC() {
        let table: AMQPTable = [
            "bool": .bool(true), "i8": .int8(-8), "u8": .uint8(8), "i16": .int16(-16), "u16": .uint16(16),
            "i32": .int32(-32), "u32": .uint32(32), "i64": .int64(-64), "u64": .uint64(64),
            "f32": .float(1.5), "f64": .double(-2.25), "decimal": .decimal(scale: 2, value: 1234),
            "string": "héllo", "bytes": .bytes([0, 1, 255]), "timestamp": .timestamp(1_764_000_000),
            "void": .void, "array": .array([1, "two", .array([])]),
            "nested": .table(["x-death": .array([.table(["count": 1])])]),
        ]
        let arena = CArena()
        let c = arena.table(table)
        #expect(c.num_entries == Int32(table.count))
        #expect(AMQPTable(amqp: c) == table)
    }

    @Test func propertiesRoundTripThroughC() {
        var properties = AMQPProperties(
            contentType: "application/json", headers: ["traceparent": "00-abc-def-01"], deliveryMode: .persistent,
            correlationID: "corr", replyTo: "amq.rabbitmq.reply-to", messageID: "m-1", type: "call.initiate")
        properties.contentEncoding = "identity"
        properties.priority = 3
        properties.expiration = "60000"
        properties.timestamp = 1_764_000_000
        properties.userID = "guest"
        properties.appID = "ringing"
        let arena = CArena()
        let c = arena.properties(properties)
        #expect(AMQPProperties(amqp: c) == properties)
        #expect(AMQPProperties(amqp: arena.properties(AMQPProperties())) == AMQPProperties())
    }

    @Test func literalsPickTheWireTypesRabbitMQReads() {
        let limit: AMQPFieldValue = 5
        #expect(limit == .int64(5))
        #expect(limit.intValue == 5)
        #expect(AMQPFieldValue.bytes(Array("x".utf8)).stringValue == "x")
        #expect(
            AMQPQueue.quorum("q", arguments: ["x-delivery-limit": 3]).arguments == [
                "x-queue-type": "quorum", "x-delivery-limit": 3,
            ])
    }

    @Test func backoffGrowsToItsMaximumAndResets() {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        let first = backoff.next()
        #expect(first >= .milliseconds(100) && first <= .milliseconds(120))
        for _ in 0..<10 { _ = backoff.next() }
        #expect(backoff.next() == .seconds(1))
        backoff.reset()
        #expect(backoff.next() <= .milliseconds(120))
    }
}

@Suite struct AckCoalescingTests {
    @Test func aContiguousRunBecomesOneMultipleAck() {
        let settled = SettledTags()
        let plan = settled.plan(acking: [1, 2, 3, 5])
        #expect(plan.multiple == 3)
        #expect(plan.single == [5])
    }

    @Test func tagsSettledEarlierExtendTheRunButAreNotNamed() {
        var settled = SettledTags()
        settled.settle(2)  // nacked earlier, alone
        #expect(settled.upTo == 0 && settled.contains(2))
        let plan = settled.plan(acking: [1, 3])
        #expect(plan.multiple == 3, "1, then 2 (settled), then 3: one multiple ack naming 3")
        #expect(plan.single.isEmpty)
        settled.settle(upTo: 3)
        #expect(settled.upTo == 3 && settled.above.isEmpty)
    }

    @Test func aGapMeansSingleAcks() {
        var settled = SettledTags()
        settled.settle(upTo: 10)
        let plan = settled.plan(acking: [12, 13])
        #expect(plan.multiple == nil)
        #expect(plan.single == [12, 13])
        settled.settle(12)
        settled.settle(13)
        settled.settle(11)
        #expect(settled.upTo == 13 && settled.above.isEmpty)
    }
}
