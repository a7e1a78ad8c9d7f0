// The call and event JSON written directly (issue 17) against Foundation's JSONEncoder, which
// wrote them before: the same members and values for every shape a call takes (the encoder's
// member order follows its hashing, the writer's is fixed, in the declared order), the same
// bytes for every character that needs an escape and for times at every fraction of a
// millisecond.
import CallRules
import Foundation
import Testing

@testable import RingingContract

@Suite struct JSONWritingTests {
    @Test func timesAreTheFormatStylesToTheMillisecond() {
        var generator = SystemRandomNumberGenerator()
        var dates = [
            Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1_800_000_000.25),
            Date(timeIntervalSince1970: 1_800_000_000.9999), Date(timeIntervalSince1970: 1_800_000_000.0005),
            Date(timeIntervalSince1970: 951_782_400),  // 2000-02-29
            Date(timeIntervalSince1970: 4_107_542_399.999),  // 2100-02-28T23:59:59.999
            Date(timeIntervalSince1970: -0.001), Date(timeIntervalSince1970: -86_400.5),
            // The first and last instants of years 1600 and 9999, and beyond them (left to Foundation).
            Date(timeIntervalSince1970: -11_676_096_000), Date(timeIntervalSince1970: 253_402_300_799.999),
            Date(timeIntervalSince1970: -11_676_096_000.001), Date(timeIntervalSince1970: 253_402_300_800),
            Date(timeIntervalSince1970: -62_135_596_800),
        ]
        for _ in 0..<20_000 {
            dates.append(Date(timeIntervalSince1970: Double.random(in: -1_000_000_000...4_000_000_000, using: &generator)))
        }
        for _ in 0..<2_000 {
            // Times as PostgreSQL returns them: whole microseconds.
            let micros = Int64.random(in: 1_700_000_000_000_000...1_900_000_000_000_000, using: &generator)
            dates.append(Date(timeIntervalSince1970: Double(micros) / 1_000_000))
        }
        var mismatches: [String] = []
        for date in dates {
            var bytes: [UInt8] = []
            WireTime.append(date, to: &bytes)
            let written = String(decoding: bytes, as: UTF8.self)
            let foundation = date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
            if written != foundation || WireTime.format(date) != foundation {
                mismatches.append("\(date.timeIntervalSince1970): \(written) ≠ \(foundation)")
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) of \(dates.count), first: \(mismatches.prefix(5))")
    }

    @Test func stringsAreEscapedAsTheEncoderDoes() throws {
        var strings = (0..<0x80).map { String(UnicodeScalar(UInt8($0))) }
        strings += ["", "plain", "a/b", #"quote " and \ backslash"#, "é ü ß", "漢字", "👩‍👩‍👧", "line\nbreak\ttab\u{7F}"]
        for string in strings {
            var json = JSONWriter()
            json.string(string)
            #expect(json.bytes == Array(try WireTime.encoder.encode(string)), "\(Array(string.utf8))")
        }
    }

    @Test func callsAreTheEncodersValuesInTheDeclaredOrder() throws {
        for call in Self.calls() {
            let written = try WireJSON.call(call)
            #expect(try JSONDecoder().decode(JSONValue.self, from: written) == JSONValue(encoding: WireCall(call)))
            #expect(
                Self.order(
                    of: [
                        "session_id", "initiator", "receiver_id", "receiver_type", "call_type", "status", "initiated_at",
                        "expires_at", "answered_at", "ended_at", "duration_s", "ended_by", "end_reason", "metadata",
                        "participants", "uid", "role", "status", "joined_at", "left_at", "rang_at", "left_reason", "sequence",
                    ], in: written))
        }
    }

    @Test func eventsAreTheEncodersValuesWithTheCallLast() throws {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let calls = Self.calls()
        var event = try #require(
            CallRules.initiate(
                CallRules.Initiate(receiverID: "bob", receiverType: .user, callType: .audio), by: "alice",
                at: calls[0].initiatedAt, context: .init(sessionID: UUID())
            ).events.first)
        for call in calls {
            for actor in [nil, "alice"] as [String?] {
                for deviceID in [nil, "phone \"1\""] as [String?] {
                    event.call = call
                    event.sequence = call.sequence
                    event.occurredAt = call.endedAt ?? call.initiatedAt
                    event.actor = actor
                    event.deviceID = deviceID
                    for (recipient, trace) in [(nil, nil), ("bob", traceparent)] as [(String?, String?)] {
                        let written = try WireEvent.encoded(
                            event, type: "call.incoming", recipient: recipient, traceparent: trace,
                            callJSON: try WireJSON.call(call))
                        let whole = WireEvent(event, type: "call.incoming", recipient: recipient, traceparent: trace)
                        #expect(try JSONDecoder().decode(JSONValue.self, from: written) == JSONValue(encoding: whole))
                        let members =
                            ["event_id", "type", "occurred_at", "sequence"] + (actor == nil ? [] : ["actor"])
                            + (deviceID == nil ? [] : ["device_id"]) + (recipient == nil ? [] : ["recipient", "traceparent"])
                            + ["call", "session_id"]
                        #expect(Self.order(of: members, in: written), "\(String(decoding: written, as: UTF8.self))")
                    }
                }
            }
        }
    }

    /// Whether each `"name":` first appears after the one before it.
    private static func order(of names: [String], in json: Data) -> Bool {
        let text = String(decoding: json, as: UTF8.self)
        var from = text.startIndex
        for name in names {
            guard let found = text.range(of: "\"\(name)\":", range: from..<text.endIndex) else { return false }
            from = found.upperBound
        }
        return true
    }

    /// Calls in every status, 1:1 and group, with and without metadata, through the rules.
    static func calls() -> [CallSession] {
        let start = Date(timeIntervalSince1970: 1_800_000_000.123456)
        let metadata: JSONObject = [
            "subject": "lunch \"now\"\n", "count": 3, "ratio": .double(0.1), "flag": true, "none": nil,
            "nested": .object(["list": .array([1, "two", .double(3.5), .object([:])])]), "path": "a/b",
        ]
        var calls: [CallSession] = []
        for (receiverType, receiver, members) in [(ReceiverType.user, "bob", nil), (.group, "team", ["alice", "bob", "carol"])]
            as [(ReceiverType, String, [String]?)]
        {
            for meta in [[:], metadata] as [JSONObject] {
                let initiated = CallRules.initiate(
                    CallRules.Initiate(
                        receiverID: receiver, receiverType: receiverType, callType: .video, timeoutSeconds: 30,
                        metadata: meta, deviceID: "phone"),
                    by: "alice", at: start, context: .init(sessionID: UUID(), groupMembers: members)
                ).call
                let rang = CallRules.ringReceipt(initiated, by: "bob", deviceID: "tablet", at: start + 0.5).call
                let accepted = CallRules.accept(rang, by: "bob", deviceID: "tablet", at: start + 1.25).call
                let ended = CallRules.end(accepted, by: "alice", deviceID: nil, at: start + 61.789).call
                let rejected = CallRules.reject(initiated, status: .rejected, by: "bob", deviceID: nil, at: start + 2).call
                let expired = CallRules.expireIfDue(initiated, at: start + 31).call
                let swept = CallRules.sweepIfDue(accepted, at: start + 5 * 3600, limits: .init()).call
                calls += [initiated, rang, accepted, ended, rejected, expired, swept]
            }
        }
        var busy = calls[0]
        busy.status = .busy
        busy.endReason = .unanswered
        busy.endedBy = "bob\u{1}"
        calls.append(busy)
        return calls
    }
}
