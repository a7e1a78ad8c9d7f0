// A decision's call is encoded once and spliced into its event, notifications and reply
// (issue 17): the spliced JSON reads back exactly as the encoder's own.
import CallRules
import Foundation
import RingingContract
import Testing

@Suite struct EncodedCallTests {
    @Test func splicedEventsAndRepliesReadBackAsTheEncodersOwn() throws {
        let decision = CallRules.initiate(
            CallRules.Initiate(receiverID: "bob", receiverType: .user, callType: .video, timeoutSeconds: 30, deviceID: "phone"),
            by: "alice", at: Date(timeIntervalSince1970: 1_800_000_000.25), context: .init(sessionID: UUID()))
        let event = try #require(decision.events.first)
        let notification = try #require(decision.notifications.first)
        let callJSON = try WireJSON.call(decision.call)

        let spliced = try WireEvent.encoded(
            notification.event, type: notification.name.rawValue, recipient: notification.recipient,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", callJSON: callJSON)
        let whole = WireEvent(
            notification.event, type: notification.name.rawValue, recipient: notification.recipient,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        #expect(try JSONDecoder().decode(JSONValue.self, from: spliced) == JSONValue(encoding: whole))
        #expect(try WireTime.decoder.decode(WireEvent.self, from: spliced) == whole)

        let plain = try WireEvent.encoded(event, type: event.type.rawValue, callJSON: callJSON)
        let unspliced = WireEvent(event, type: event.type.rawValue)
        #expect(try JSONDecoder().decode(JSONValue.self, from: plain) == JSONValue(encoding: unspliced))

        let reply = WireReply.call(json: callJSON)
        #expect(try JSONDecoder().decode(JSONValue.self, from: reply) == JSONValue(encoding: WireReply.call(decision.call)))
    }
}

extension JSONValue {
    /// What `value` encodes to, read back as a JSON value.
    init(encoding value: some Encodable) throws {
        self = try JSONDecoder().decode(JSONValue.self, from: WireTime.encoder.encode(value))
    }
}
