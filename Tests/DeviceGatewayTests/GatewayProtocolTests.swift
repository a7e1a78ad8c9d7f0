// The gateway's pure logic: frame parsing, the socket registry's limits, the snapshot filter's
// order guarantee and the request rate, without a socket or a broker.
import CallRules
import DeviceGateway
import Foundation
import RingingContract
import Testing

@Suite struct GatewayProtocolTests {
    func closeCode(_ text: String) -> UInt16? {
        do {
            _ = try FrameParser.parse(text)
            return nil
        } catch {
            if case .close(let code, _) = error { return code }
            return nil
        }
    }

    @Test func framesParseAndBadOnesSayWhatIsWrong() throws {
        #expect(
            try FrameParser.parse(#"{"type":"hello","auth_token":"t","device_id":"d1"}"#)
                == .hello(authToken: "t", deviceID: "d1"))
        #expect(try FrameParser.parse(#"{"type":"hello","auth_token":"t"}"#) == .hello(authToken: "t", deviceID: nil))
        #expect(try FrameParser.parse(#"{"type":"auth","auth_token":"u"}"#) == .auth(authToken: "u"))
        #expect(
            try FrameParser.parse(#"{"type":"request","id":"1","request":"call.active"}"#)
                == .request(id: "1", type: "call.active", body: [:]))
        #expect(closeCode("not json") == 4002)
        #expect(closeCode("[1]") == 4002)
        #expect(closeCode(#"{"type":"bye"}"#) == 4002)
        #expect(closeCode(#"{"type":"hello"}"#) == 4001)
        #expect(closeCode(#"{"type":"hello","auth_token":"t","device_id":""}"#) == 4002)
        #expect(closeCode(#"{"type":"request","request":"call.active"}"#) == 4002, "no id: nothing to reply to")
        do {
            _ = try FrameParser.parse(#"{"type":"request","id":"9","request":"group.set_members","body":{}}"#)
            Issue.record("group.set_members is HTTP only")
        } catch {
            guard case .reply(let id, let callError) = error else {
                Issue.record("expected a reply")
                return
            }
            #expect(id == "9")
            #expect(callError.field == "request")
        }
        do {
            _ = try FrameParser.parse(#"{"type":"request","id":"9","request":"call.active","body":[]}"#)
            Issue.record("a body that is not an object is refused")
        } catch {
            guard case .reply(_, let callError) = error else {
                Issue.record("expected a reply")
                return
            }
            #expect(callError.field == "body")
        }
    }

    @Test func duplicateKeysAreFoundAtAnyDepthAndOnlyInOneObject() {
        #expect(DuplicateKeys.first(in: Data(#"{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}"#.utf8)) == nil)
        #expect(DuplicateKeys.first(in: Data(#"{"a":1,"b":2,"a":3}"#.utf8)) == "a")
        #expect(DuplicateKeys.first(in: Data(#"{"m":{"x":"{"x":1}","x":2}}"#.utf8)) == "x", "nested, with quotes in values")
        #expect(DuplicateKeys.first(in: Data(#"{"a":1,"a":2}"#.utf8)) == "a", "an escape spells the same key")
        #expect(DuplicateKeys.first(in: Data(#"["a","a"]"#.utf8)) == nil, "array values are not keys")
        do {
            _ = try FrameParser.parse(#"{"type":"request","id":"7","request":"call.active","body":{"x":1,"x":2}}"#)
            Issue.record("a duplicate key in a request body is refused")
        } catch {
            guard case .reply(let id, let callError) = error else {
                Issue.record("expected a reply")
                return
            }
            #expect(id == "7")
            #expect(callError.field == "x")
        }
        #expect(closeCode(#"{"type":"hello","auth_token":"a","auth_token":"b"}"#) == 4002)
    }

    @Test func theForwardedBodyCarriesTheSocketsTokenAndDevice() throws {
        let body = try GatewayRequests.forwardedBody(
            type: "call.accept", body: ["session_id": "x"], authToken: "tok", deviceID: "phone")
        let object = try JSONDecoder().decode(JSONObject.self, from: body)
        #expect(object["auth_token"] == "tok")
        #expect(object["device_id"] == "phone")
        let get = try JSONDecoder().decode(
            JSONObject.self,
            from: try GatewayRequests.forwardedBody(
                type: "call.get", body: ["session_id": "x"], authToken: "tok", deviceID: "phone"))
        #expect(get["device_id"] == nil, "call.get takes no device_id")
        #expect(throws: CallError.self) {
            try GatewayRequests.forwardedBody(type: "call.get", body: ["auth_token": "mine"], authToken: "tok", deviceID: "d")
        }
    }

    @Test func theRegistryLimitsSocketsPerUserAndSocketsWaitingForHello() {
        var registry = SocketRegistry(limits: .init(socketsPerUser: 2, awaitingHello: 2))
        #expect(registry.accept() == .admitted)
        #expect(registry.accept() == .admitted)
        guard case .refused(let code, _) = registry.accept() else {
            Issue.record("a third waiting socket")
            return
        }
        #expect(code == 1013)
        registry.helloEnded()
        #expect(registry.accept() == .admitted)
        #expect(registry.open(1, uid: "a") == .admitted)
        #expect(registry.open(2, uid: "a") == .admitted)
        guard case .refused(let tooMany, let reason) = registry.open(3, uid: "a") else {
            Issue.record("a third socket")
            return
        }
        #expect(tooMany == 1013)
        #expect(reason.contains("'a'"))
        #expect(registry.open(3, uid: "b") == .admitted)
        #expect(registry.sockets(of: "a") == [1, 2])
        registry.close(1, uid: "a")
        registry.close(1, uid: "a")
        #expect(registry.sockets(of: "a") == [2])
        #expect(registry.socketCount == 2)
        registry.close(2, uid: "a")
        #expect(registry.sockets(of: "a").isEmpty)
        #expect(registry.userCount == 1)
    }

    @Test func heartbeatsGoToTheCallsAUserIsLiveInAsLastSeen() {
        let (call, other) = (UUID(), UUID())
        var live = LiveParticipations()
        live.observe(uid: "bob", sessionID: call, sequence: 2, live: true)
        live.observe(uid: "bob", sessionID: other, sequence: 1, live: false)
        #expect(live.due.map(\.sessionID) == [call])
        live.observe(uid: "bob", sessionID: call, sequence: 1, live: false)
        #expect(live.due.map(\.sessionID) == [call], "older news does not undo newer")
        live.observe(uid: "bob", sessionID: call, sequence: 3, live: false)
        #expect(live.due.isEmpty, "the call ended")
        live.observe(uid: "bob", sessionID: call, sequence: 2, live: true)
        #expect(live.due.isEmpty, "a stale notification does not bring it back")
        live.observe(uid: "carol", sessionID: other, sequence: 4, live: true)
        live.over(uid: "carol", sessionID: other)
        #expect(live.due.isEmpty, "a refused heartbeat stops them")
        live.observe(uid: "dave", sessionID: other, sequence: 4, live: true)
        live.forget(uid: "dave")
        #expect(live.due.isEmpty, "the user's last socket closed")
    }

    @Test func notificationsWaitForTheWelcomeAndOlderOnesAreDropped() {
        let call = UUID()
        let other = UUID()
        func note(_ session: UUID?, _ sequence: Int?, _ tag: String) -> PendingNotification {
            PendingNotification(frame: tag, sessionID: session, sequence: sequence, receivedAt: .now)
        }
        var filter = SnapshotFilter()
        #expect(filter.offer(note(call, 1, "early-old")) == nil, "held until the welcome")
        #expect(filter.offer(note(call, 2, "early-same")) == nil)
        #expect(filter.offer(note(other, 1, "early-other")) == nil)
        let released = filter.welcomed(snapshot: [call: 2]).map(\.frame)
        #expect(released == ["early-same", "early-other"], "lower than the snapshot: dropped; equal or other calls: kept")
        #expect(filter.offer(note(call, 1, "late-old")) == nil)
        #expect(filter.offer(note(call, 3, "newer"))?.frame == "newer")
        #expect(filter.offer(note(nil, nil, "no-call"))?.frame == "no-call")
        filter.snapshotRequested()
        #expect(!filter.isLive)
        #expect(filter.offer(note(call, 4, "during-resnapshot")) == nil)
        #expect(filter.welcomed(snapshot: [call: 5]).isEmpty)
    }

    @Test func theRateIsTwentyPerSecondWithBurstsOfForty() {
        let start = ContinuousClock.now
        var bucket = TokenBucket(rate: 20, burst: 40, now: start)
        let burst = (0..<60).filter { _ in bucket.take(now: start) }.count
        #expect(burst == 40)
        let oneBack = bucket.take(now: start + .milliseconds(50))
        #expect(oneBack, "one token back after 50 ms")
        let noSecond = bucket.take(now: start + .milliseconds(50))
        #expect(!noSecond)
        let later = (0..<60).filter { _ in bucket.take(now: start + .seconds(10)) }.count
        #expect(later == 40, "never more than the burst")
    }
}
