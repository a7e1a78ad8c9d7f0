// No stuck calls (DESIGN §10), end to end: devices on the gateway's WebSocket answer calls
// and then vanish without `call.end`; the liveness sweep ends what they left, exactly once,
// while one of two call-control processes is killed with SIGKILL. The gateway keeps the
// users who stay connected live with its heartbeats.
//
// Runs alone (the suite name ends in CrashSafetyTests): the timeouts are shortened on every
// call-control instance that runs meanwhile, so no other test's calls may be ongoing.
import CallRules
import DeviceGateway
import Foundation
import RingingContract
import TestSupport
import Testing

@Suite(.serialized) struct LivenessCrashSafetyTests {
    static let heartbeatTimeout = 4
    static let maximumDuration = 14

    static func callControl(_ name: String) throws -> ServiceProcess {
        try ServiceProcess(
            executable: "call-control", name: name,
            environment: [
                "RINGING_CALL_CONTROL_WORKERS": "2", "RINGING_OUTBOX_GRACE_S": "2",
                "RINGING_HEARTBEAT_TIMEOUT_S": "\(heartbeatTimeout)", "RINGING_MAX_CALL_S": "\(maximumDuration)",
            ],
            readyLine: "call-control ready")
    }

    static func accept(_ device: TestDevice, _ session: String) async throws {
        let reply = try await device.request("call.accept", ["session_id": .string(session)])
        guard reply.at("call", "status") == "ongoing" else { throw TimedOut(what: "an ongoing call: \(reply)") }
    }

    /// The call's events, once each (consumers deduplicate on event_id), in sequence order.
    static func events(_ capture: Capture, _ session: String) -> [WireEvent] {
        var seen = Set<UUID>()
        return capture.events.filter { $0.call.sessionID.uuidString.lowercased() == session && seen.insert($0.eventID).inserted }
            .sorted { $0.sequence < $1.sequence }
    }

    static func final(_ capture: Capture, _ session: String, _ type: String = "call.ended") async throws -> WireEvent {
        try await capture.next("\(type) of \(session)", timeout: .seconds(90)) {
            $0.type == type && $0.call.sessionID.uuidString.lowercased() == session
        }
    }

    @Test(.timeLimit(.minutes(4)))
    func vanishedDevicesEndTheirCallsExactlyOnceAcrossAKilledInstance() async throws {
        let run = TestEnvironment.uniqueName("liveness")
        let instances = try (0..<2).map { try Self.callControl("\(run)-\($0)") }
        defer { for instance in instances where instance.isRunning { instance.terminate() } }
        for instance in instances { try await instance.waitUntilReady() }

        try await Gateway.run(["RINGING_GATEWAY_HEARTBEAT_S": "1"], callControl: false) { g in
            try await RingingTestClient.with { client in
                let capture = try await Capture.start(client.amqp, exchange: Topology.eventsExchange, keys: ["#"])

                // 1. Both sides of a 1:1 call vanish.
                let bothA = try await g.device("both-a")
                let bothB = try await g.device("both-b")
                let both = try await GatewayTests.initiate(bothA, to: bothB, timeout: 60)
                _ = try await bothB.frame { $0["name"] == "incoming_call.received" && $0.sessionID == both }
                // The callee's phone shows the ring and says so, twice (a retry): one change.
                for _ in 0..<2 { #expect(try await bothB.request("call.ringing", ["session_id": .string(both)])["ok"] == true) }
                let ringing = try await bothA.frame { $0["name"] == "outgoing_call.ringing" && $0.sessionID == both }
                #expect(ringing.at("notification", "device_id") != nil)
                try await Self.accept(bothB, both)

                // 2. One side of a 1:1 call vanishes; the caller keeps its socket.
                let oneA = try await g.device("one-a")
                let oneB = try await g.device("one-b")
                let one = try await GatewayTests.initiate(oneA, to: oneB, timeout: 60)
                _ = try await oneB.frame { $0["name"] == "incoming_call.received" && $0.sessionID == one }
                try await Self.accept(oneB, one)
                // A receipt after the answer changes nothing.
                #expect(try await oneB.request("call.ringing", ["session_id": .string(one)])["ok"] == true)

                // 3. A group call of three; one member vanishes and the other two go on.
                let members = [try await g.device("grp-a"), try await g.device("grp-b"), try await g.device("grp-c")]
                let groupID = TestEnvironment.uniqueName("grp")
                let serviceToken = try await g.auth.mint(uid: TestEnvironment.uniqueName("svc"), service: true)
                let set = try await client.request(
                    RequestType.setGroupMembers.rawValue, token: serviceToken,
                    ["group_id": .string(groupID), "members": .array(members.map { .string($0.uid) })])
                #expect(set.ok)
                let groupReply = try await members[0].request(
                    "call.initiate",
                    ["receiver_id": .string(groupID), "receiver_type": "group", "call_type": "audio", "timeout_s": 60])
                guard case .string(let group)? = groupReply.at("call", "session_id") else {
                    throw TimedOut(what: "a group call: \(groupReply)")
                }
                for member in members.dropFirst() {
                    _ = try await member.frame { $0["name"] == "incoming_call.received" && $0.sessionID == group }
                    try await Self.accept(member, group)
                }

                // 4. Both stay connected: the call ends at the maximum duration.
                let longA = try await g.device("long-a")
                let longB = try await g.device("long-b")
                let long = try await GatewayTests.initiate(longA, to: longB, timeout: 60)
                _ = try await longB.frame { $0["name"] == "incoming_call.received" && $0.sessionID == long }
                try await Self.accept(longB, long)
                _ = try await longA.frame { $0["name"] == "outgoing_call.accepted" && $0.sessionID == long }

                // Every call is ongoing; one instance dies, the other must do all the sweeping.
                instances[0].kill()
                await bothA.disconnect()
                await bothB.disconnect()
                await oneB.disconnect()
                await members[2].disconnect()

                // 1: ended, connection lost, nobody's request. Whoever fell silent first is the
                // one the sweep found gone (the other may have been heard a moment later): the
                // call ends with them, and the other leaves with it.
                let bothEnded = try await Self.final(capture, both)
                #expect(bothEnded.call.endReason == .connectionLost)
                #expect(bothEnded.call.endedBy == nil && bothEnded.actor == nil)
                #expect(bothEnded.call.participants.allSatisfy { $0.status == .left })
                #expect(bothEnded.call.participants.contains { $0.leftReason == .connectionLost })

                // Neither is busy any more: a new call between them rings.
                let bothA2 = try await g.device(of: bothA)
                let bothB2 = try await g.device(of: bothB)
                let again = try await GatewayTests.initiate(bothA2, to: bothB2, timeout: 60)
                _ = try await bothB2.frame { $0["name"] == "incoming_call.received" && $0.sessionID == again }
                let cancelled = try await bothA2.request(
                    "call.reject", ["session_id": .string(again), "status": "cancelled"])
                #expect(cancelled.at("call", "status") == "cancelled")

                // 2: the vanished callee lost the connection; the caller, kept live by the
                // gateway's heartbeats, was still there and hears that the call ended.
                let oneEnded = try await Self.final(capture, one)
                #expect(oneEnded.call.endReason == .connectionLost)
                #expect(oneEnded.call.participant(oneB.uid)?.leftReason == .connectionLost)
                #expect(oneEnded.call.participant(oneA.uid)?.status == .left)
                #expect(oneEnded.call.participant(oneA.uid)?.leftReason == nil)
                let told = try await oneA.frame { $0["name"] == "call.ended" && $0.sessionID == one }
                #expect(told.at("notification", "call", "end_reason") == "connection_lost")

                // 3: the group call goes on with two; they are told who left.
                let left = try await Self.final(capture, group, "call.left")
                #expect(left.call.status == .ongoing)
                #expect(left.call.participant(members[2].uid)?.leftReason == .connectionLost)
                #expect(left.call.participant(members[1].uid)?.status == .accepted)
                for member in members.prefix(2) {
                    _ = try await member.frame { $0["name"] == "call.participant_left" && $0.sessionID == group }
                }
                let groupNow = try await members[1].request("call.get", ["session_id": .string(group)])
                #expect(groupNow.at("call", "status") == "ongoing")
                let ended = try await members[0].request("call.end", ["session_id": .string(group)])
                #expect(ended.at("call", "status") == "ended")
                #expect(ended.at("call", "end_reason") == .null, "ended by a request: no end_reason")

                // 4: the call that outlived the maximum duration.
                let longEnded = try await Self.final(capture, long)
                #expect(longEnded.call.endReason == .maxDuration)
                #expect(longEnded.call.participants.allSatisfy { $0.status == .left && $0.leftReason == nil })
                #expect((longEnded.call.durationSeconds ?? 0) >= Self.maximumDuration)
                _ = try await longB.frame { $0["name"] == "call.ended" && $0.sessionID == long }

                // Exactly once each, in sequence, whatever the killed instance left behind.
                let expected: [(String, [String])] = [
                    (both, ["call.initiated", "call.ringing", "call.accepted", "call.ended"]),
                    (one, ["call.initiated", "call.accepted", "call.ended"]),
                    (group, ["call.initiated", "call.accepted", "call.joined", "call.left", "call.ended"]),
                    (long, ["call.initiated", "call.accepted", "call.ended"]),
                ]
                for (session, types) in expected {
                    let list = Self.events(capture, session)
                    #expect(list.map(\.type) == types, "\(session)")
                    #expect(list.map(\.sequence) == Array(1...types.count), "\(session)")
                }

                // The history shows why.
                let history = try await oneA.request("call.history", ["limit": 5])
                guard case .array(let calls)? = history["calls"],
                    let row = calls.first(where: { $0.objectValue?["session_id"] == .string(one) })?.objectValue
                else {
                    Issue.record("the call is not in the history: \(history)")
                    return
                }
                #expect(row["end_reason"] == "connection_lost")
                guard case .array(let participants)? = row["participants"] else { return }
                let reasons = participants.compactMap(\.objectValue).map { ($0["uid"], $0["left_reason"]) }
                #expect(reasons.contains { $0.0 == .string(oneB.uid) && $0.1 == "connection_lost" })
                #expect(reasons.contains { $0.0 == .string(oneA.uid) && $0.1 == .null })
            }
        }
        #expect(!instances[0].isRunning)
        #expect(instances[1].terminate() == 0, "the survivor stops cleanly")
    }
}

extension JSONValue {
    var objectValue: JSONObject? {
        if case .object(let object) = self { return object }
        return nil
    }
}
