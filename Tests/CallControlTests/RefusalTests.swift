// Requests that must be refused: each gets its error code, nothing changes, and the consumer
// keeps serving. Malformed ones also land in calls.dead-letter.
import AMQPClient
import CallRules
import Foundation
import PostgresClient
import RingingAuth
import RingingContract
import TestSupport
import Testing

@Suite struct RefusalTests {
    /// Tokens that are not valid: expired, unsigned (`alg: none`), signed with another secret,
    /// malformed.
    static func badTokens(for uid: String) async throws -> [(String, String)] {
        let expired = try await AuthTokens(secret: AuthTokens.developmentSecret).mint(
            uid: uid, lifetime: .seconds(60), now: Date(timeIntervalSinceNow: -3600))
        let forged = try await AuthTokens(secret: "not-the-deployment-secret-but-long-enough").mint(uid: uid)
        func base64url(_ text: String) -> String {
            Data(text.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-")
                .replacingOccurrences(of: "/", with: "_")
        }
        let unsigned = base64url(#"{"alg":"none","typ":"JWT"}"#) + "." + base64url(#"{"sub":"\#(uid)","exp":4102444800}"#) + "."
        let early = try await AuthTokens(secret: AuthTokens.developmentSecret).mint(
            uid: uid, notBefore: Date(timeIntervalSinceNow: 3600))
        return [
            ("expired", expired), ("forged", forged), ("alg none", unsigned), ("malformed", "not.a.jwt"),
            ("not valid yet (nbf an hour ahead)", early),
        ]
    }

    @Test func badTokensAreUnauthenticatedAndChangeNothing() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            for (kind, token) in try await Self.badTokens(for: alice.uid) {
                let reply = try await s.client.request(
                    RequestType.initiate.rawValue, token: token,
                    [
                        "receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio",
                    ])
                #expect(reply.error?.code == .unauthenticated, "\(kind) token")
            }
            let missing = try await s.client.request(
                RequestType.initiate.rawValue, token: nil,
                [
                    "receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio",
                ])
            #expect(missing.error?.code == .unauthenticated)
            #expect(try await s.request(.history, as: alice).calls?.isEmpty == true, "no call was created")
            // The consumer still serves.
            #expect(try await s.call(alice, bob).status == .initiated)
        }
    }

    @Test func strangersAndWrongSidesAreForbidden() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let mallory = try await s.party("mallory")
            let call = try await s.call(alice, bob)
            #expect(try await s.act(.accept, mallory, call.sessionID).error?.code == .forbidden)
            #expect(try await s.act(.get, mallory, call.sessionID).error?.code == .forbidden)
            #expect(
                try await s.act(.reject, bob, call.sessionID, ["status": "cancelled"]).error?.code == .forbidden,
                "cancel by the receiver")
            _ = try Scenario.call(try await s.act(.accept, bob, call.sessionID))
            #expect(try await s.act(.end, mallory, call.sessionID).error?.code == .forbidden)
            let unchanged = try Scenario.call(try await s.act(.get, alice, call.sessionID))
            #expect(unchanged.status == .ongoing && unchanged.sequence == 2)
            #expect(try await s.act(.get, alice, UUID()).error?.code == .notFound)
        }
    }

    @Test func acceptAfterCancelIsInvalidState() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob)
            _ = try Scenario.call(try await s.act(.reject, alice, call.sessionID, ["status": "cancelled"]))
            let late = try await s.act(.accept, bob, call.sessionID)
            #expect(late.error?.code == .invalidState)
            #expect(late.error?.status == .cancelled)
        }
    }

    @Test(arguments: [
        ("call.initiate", #"{"receiver_id": "bob", "receiver_type": "user", "call_type": "audio""#, "body"),  // malformed JSON
        ("call.initiate", #"["not", "an", "object"]"#, "body"),
        ("call.initiate", #"{"receiver_type": "user", "call_type": "audio"}"#, "receiver_id"),  // missing
        ("call.initiate", #"{"receiver_id": 42, "receiver_type": "user", "call_type": "audio"}"#, "receiver_id"),  // wrong type
        // a bad UID
        ("call.initiate", #"{"receiver_id": "bob smith", "receiver_type": "user", "call_type": "audio"}"#, "receiver_id"),
        ("call.initiate", #"{"receiver_id": "bob", "receiver_type": "user", "call_type": "hologram"}"#, "call_type"),
        ("call.initiate", #"{"receiver_id": "bob", "receiver_type": "user", "call_type": "audio", "timeout_s": 2}"#, "timeout_s"),
        ("call.initiate", #"{"receiver_id": "bob", "receiver_type": "user", "call_type": "audio", "reciever": 1}"#, "reciever"),
        ("call.accept", #"{"session_id": "not-a-uuid"}"#, "session_id"),
        ("call.reject", #"{"session_id": "6f1b1c52-8e3a-4c55-9d0e-1f5a3f8f6a10", "status": "maybe"}"#, "status"),
        ("call.dance", #"{}"#, "type"),
        // A key twice: parsers disagree on which value wins, so the request says neither.
        (
            "call.initiate", #"{"receiver_id": "bob", "receiver_id": "eve", "receiver_type": "user", "call_type": "audio"}"#,
            "receiver_id"
        ),
    ])
    func malformedRequestsAreAnsweredAndDeadLettered(type: String, body: String, field: String) async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let deadLetters = try await Capture.start(s.client.amqp, exchange: Topology.deadLetterExchange, keys: [""])
            // The routing key picks the queue: unknown call.* types still reach call-control.
            var text = body
            if text.hasPrefix("{"), text.count > 2 { text = "{\"auth_token\": \"\(alice.token)\", " + text.dropFirst() }
            let messageID = UUID().uuidString
            let reply = try await s.client.send(type, body: Data(text.utf8), messageID: messageID)
            #expect(reply.ok == false)
            #expect(reply.error?.code == .invalidRequest)
            #expect(reply.error?.field == field, "\(reply.error?.message ?? "")")
            let dead = try await deadLetters.nextDelivery("the dead-lettered request") { $0.properties.messageID == messageID }
            #expect(String(decoding: dead.body, as: UTF8.self) == text, "the original message, unchanged")
            #expect(try await s.request(.history, as: alice).calls?.isEmpty == true)
            deadLetters.stop()
        }
    }

    /// A stored value this version cannot read (here metadata that is not an object) is an
    /// error naming the table and column, answered `unavailable`, never a default.
    @Test func aRowThatDoesNotReadBackIsAnsweredUnavailableNamingTheColumn() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let session = UUID()
            let pool = PostgresPool(configuration: try PostgresConfiguration(url: TestEnvironment.databaseURL), size: 1)
            try await pool.withConnection { db in
                try await db.withTransaction { db in
                    try db.query(
                        """
                        INSERT INTO calls (session_id, initiator, receiver_id, receiver_type, call_type, status, initiated_at,
                                           expires_at, ended_at, metadata, sequence, ring_pending)
                        VALUES (\(session), \(alice.uid), \(bob.uid), 'user', 'audio', 'cancelled', now(), now(), now(),
                                '[1, 2]'::jsonb, 2, false)
                        """)
                    try db.query(
                        """
                        INSERT INTO call_participants (session_id, uid, role, status, active, initiated_at)
                        VALUES (\(session), \(alice.uid), 'initiator', 'accepted', false, now()),
                               (\(session), \(bob.uid), 'receiver', 'missed', false, now())
                        """)
                }
            }
            await pool.close()
            let reply = try await s.act(.get, alice, session)
            #expect(reply.error?.code == .unavailable)
            #expect(reply.error?.message.contains("calls.metadata") == true, "\(reply.error?.message ?? "")")
            // The instance keeps serving.
            let call = try await s.call(alice, bob)
            #expect(call.status == .initiated)
        }
    }

    @Test func oversizedMetadataIsRefusedNamingTheField() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let reply = try await s.request(
                .initiate, as: alice,
                [
                    "receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio",
                    "metadata": .object(["blob": .string(String(repeating: "x", count: 5000))]),
                ])
            #expect(reply.error?.code == .invalidRequest)
            #expect(reply.error?.field == "metadata")
            let fine = try await s.request(
                .initiate, as: alice,
                [
                    "receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio",
                    "metadata": .object(["topic": "standup"]),
                ])
            #expect(fine.call?.metadata == ["topic": "standup"])
        }
    }

    @Test func aRequestWithoutMessageIDIsRefused() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let reply = try await s.client.send(
                RequestType.active.rawValue, body: Data(#"{"auth_token":"\#(alice.token)"}"#.utf8), messageID: nil)
            #expect(reply.error?.field == "message_id")
        }
    }

    @Test func aRepeatedMessageIDGetsTheSameReplyAndChangesNothing() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let id = UUID().uuidString
            let fields: JSONObject = ["receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "audio"]
            let first = try await s.request(.initiate, as: alice, fields, messageID: id)
            let second = try await s.request(.initiate, as: alice, fields, messageID: id)
            #expect(first == second)
            let call = try Scenario.call(first)
            let acceptID = UUID().uuidString
            let accepted = try await s.act(.accept, bob, call.sessionID)
            _ = accepted
            let endOnce = try await s.request(
                .end, as: bob, ["session_id": .string(call.sessionID.uuidString)], messageID: acceptID)
            let endTwice = try await s.request(
                .end, as: bob, ["session_id": .string(call.sessionID.uuidString)], messageID: acceptID)
            #expect(endOnce == endTwice)
            #expect(endOnce.call?.status == .ended)
            try await s.expectEvent(.ended, call.sessionID)
            let barrier = try await s.call(alice, bob)
            try await s.expectEvent(.initiated, barrier.sessionID)
            try await bob.expect(.incomingCallReceived, barrier.sessionID)
            #expect(s.eventTypes(call.sessionID) == ["call.initiated", "call.accepted", "call.ended"])
            // At least once: a republish under load carries the same event_id, so count those.
            #expect(Set(bob.received(.incomingCallReceived, call.sessionID).map(\.eventID)).count == 1, "rung once")
            // The key is (sub, message_id): another user's request with the same message_id
            // is a request of its own, not a repeat of alice's.
            let carol = try await s.party("carol")
            let own = try await s.request(
                .initiate, as: carol, ["receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "video"],
                messageID: id)
            let carolsCall = try Scenario.call(own)
            #expect(carolsCall.initiator == carol.uid)
            #expect(carolsCall.sessionID != call.sessionID)
            try await bob.expect(.incomingCallReceived, carolsCall.sessionID)
            // The same user reusing a message_id for another kind of request is refused.
            let reused = try await s.request(.end, as: alice, ["session_id": .string(call.sessionID.uuidString)], messageID: id)
            #expect(reused.error?.field == "message_id")
        }
    }
}
