// The push notifier against local APNs and FCM servers (DESIGN §8): devices registered through
// the gateway, exactly one correct push per phone for a ring, cancels to Android only, missed
// calls as alerts in the sandbox, dead tokens deleted, throttling retried up to the deadline,
// and the notifications it must not push.
import AMQPClient
import CallRules
import Foundation
import PushProviderStubs
import RingingContract
import RingingService
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite(.serialized) struct PushNotifierTests {
    @Test func aRingPushesEachPhoneOnceAndACancelReachesAndroidOnly() async throws {
        let metricsPort = try freePort()
        try await PushFixture.run(["RINGING_HTTP_PORT": "\(metricsPort)"]) { f in
            let g = f.gateway
            let alice = try await g.user("alice")
            let bob = try await g.user("bob")
            let (iphone, pixel, ipad) = (PushFixture.apnsToken(), PushFixture.fcmToken(), PushFixture.apnsToken())
            #expect(try await f.register(bob, "bobs-iphone", kind: "voip", token: iphone).status == 200)
            #expect(try await f.register(bob, "bobs-pixel", kind: "fcm", token: pixel).status == 200)
            #expect(try await f.register(bob, "bobs-ipad", kind: "apns", token: ipad, environment: "sandbox").status == 200)
            let listed = try await f.devices(bob)
            #expect(listed.map { $0["device_id"] } == ["bobs-ipad", "bobs-iphone", "bobs-pixel"])
            #expect(listed.first { $0["device_id"] == "bobs-iphone" }?["token_suffix"] == .string(String(iphone.suffix(8))))
            let listText = try await g.http("GET", "/v1/devices", token: bob.token).text
            #expect(!listText.contains(iphone) && !listText.contains(pixel))

            let (session, deadline) = try await f.call(alice, bob.uid)
            let rung = await f.production.wait { pushes in
                pushes.contains { $0.token == iphone && $0.sessionID == session && $0.answeredAt != nil }
                    && pushes.contains { $0.token == pixel && $0.sessionID == session && $0.answeredAt != nil }
            }
            #expect(rung, "a VoIP push and an FCM message for the ring")
            let voip = f.production.pushes.filter { $0.token == iphone }
            #expect(voip.count == 1)
            if let push = voip.first {
                #expect(push.status == 200)
                #expect(push.headers["apns-push-type"] == "voip")
                #expect(push.headers["apns-topic"] == "com.example.ringing.voip")
                #expect(push.headers["apns-priority"] == "10")
                #expect(push.headers["apns-expiration"] == String(Int(deadline.timeIntervalSince1970.rounded(.up))))
                #expect(push.headers["apns-collapse-id"] == session)
                #expect(push.ringing["initiator"] as? String == alice.uid)
                #expect(push.ringing["expires_at"] as? String == WireTime.format(deadline))
            }
            let data = f.production.pushes.filter { $0.token == pixel }
            #expect(data.count == 1)
            #expect(data.first?.data["type"] == "incoming_call.received")
            #expect(data.first?.data["initiator"] == alice.uid)

            let cancel = try await g.http(
                "POST", "/v1/calls/\(session)/reject", token: alice.token, idempotencyKey: UUID().uuidString,
                body: ["status": "cancelled"])
            #expect(cancel.status == 200)
            let stopped = await f.production.wait { pushes in
                pushes.contains { $0.token == pixel && $0.data["type"] == "incoming_call.canceled" && $0.answeredAt != nil }
            }
            #expect(stopped, "Android is told to stop ringing")
            #expect(f.production.pushes.filter { $0.token == pixel }.last?.data["status"] == "cancelled")
            // No VoIP push for anything but a ring, and no missed-call alert for a cancelled call.
            #expect(f.production.pushes.filter { $0.provider == .apns }.count == 1)
            #expect(f.sandbox.pushes.isEmpty)
            // One provider JWT and one OAuth access token serve every push.
            #expect(f.production.providerTokens == 1)
            #expect(f.production.tokenGrants == 1)
            let (metrics, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(metricsPort)/metrics")!)
            let lines = String(decoding: metrics, as: UTF8.self).split(separator: "\n")
            func has(_ parts: String...) -> Bool { lines.contains { line in parts.allSatisfy { line.contains($0) } } }
            #expect(has("ringing_push_sent_total", #"provider="apns""#, #"outcome="accepted""#))
            #expect(has("ringing_push_sent_total", #"provider="fcm""#, #"outcome="accepted""#))
            #expect(has("ringing_push_latency_seconds_count", #"provider="apns""#))
            #expect(has("ringing_push_provider_token_refreshes_total", #"provider="fcm""#))
        }
    }

    @Test func credentialsInPartOrUnreadableStopTheStartNamingTheVariable() async throws {
        let key = try TestPushCredentials().apnsKeyPEM
        let cases: [([String: String], String)] = [
            (["RINGING_APNS_KEY_ID": "K", "RINGING_APNS_TEAM_ID": "T"], "RINGING_APNS_KEY:"),
            (["RINGING_APNS_KEY": key, "RINGING_APNS_TEAM_ID": "T"], "RINGING_APNS_KEY_ID:"),
            (["RINGING_APNS_KEY": key, "RINGING_APNS_KEY_ID": "K"], "RINGING_APNS_TEAM_ID:"),
            (
                [
                    "RINGING_APNS_KEY": "-----BEGIN PRIVATE KEY-----\nbm9wZQ==\n-----END PRIVATE KEY-----",
                    "RINGING_APNS_KEY_ID": "K", "RINGING_APNS_TEAM_ID": "T",
                ],
                "RINGING_APNS_KEY:"
            ),
            (["RINGING_FCM_CREDENTIALS": #"{"type":"service_account"}"#], "RINGING_FCM_CREDENTIALS:"),
            (["RINGING_FCM_CREDENTIALS": "/nonexistent/service-account.json"], "RINGING_FCM_CREDENTIALS:"),
            (["RINGING_PUSH_CA_FILE": "/nonexistent/ca.pem"], "RINGING_PUSH_CA_FILE:"),
            (["RINGING_APNS_URL": "http://api.push.apple.com"], "RINGING_APNS_URL:"),
        ]
        for (environment, variable) in cases {
            let process = try ServiceProcess(
                executable: "push-notifier", name: TestEnvironment.uniqueName("push-bad"), environment: environment,
                readyLine: "push-notifier ready")
            try await process.waitForOutput("push-notifier stopped: \(variable)")
            let status = try await withDeadline(.seconds(30), "push-notifier to exit") { await process.waitForExit() }
            #expect(status == 1, "\(variable)")
            #expect(process.log.split(separator: "\n").filter { $0.contains(" critical ") }.count == 1)
        }
        // No credentials at all: both providers off, one line each, and the notifier serves.
        let bare = try ServiceProcess(
            executable: "push-notifier", name: TestEnvironment.uniqueName("push-bare"), environment: [:],
            readyLine: "push-notifier ready")
        try await bare.waitUntilReady()
        #expect(bare.log.components(separatedBy: "APNs is off").count == 2)
        #expect(bare.log.components(separatedBy: "FCM is off").count == 2)
        #expect(bare.terminate() == 0)
    }

    @Test func anUnansweredCallBecomesAMissedCallAlertInTheSandbox() async throws {
        try await PushFixture.run { f in
            let alice = try await f.gateway.user("alice")
            let bob = try await f.gateway.user("bob")
            let (ipad, pixel) = (PushFixture.apnsToken(), PushFixture.fcmToken())
            try await f.register(bob, "bobs-ipad", kind: "apns", token: ipad, environment: "sandbox")
            try await f.register(bob, "bobs-pixel", kind: "fcm", token: pixel)
            let (session, _) = try await f.call(alice, bob.uid, timeout: 5)
            #expect(await f.sandbox.wait { $0.contains { $0.token == ipad && $0.answeredAt != nil } }, "the missed-call alert")
            let alert = f.sandbox.pushes.first { $0.token == ipad }
            #expect(alert?.headers["apns-push-type"] == "alert")
            #expect(alert?.headers["apns-topic"] == "com.example.ringing")
            let aps = alert?.json["aps"] as? [String: Any]
            #expect((aps?["alert"] as? [String: Any])?["body"] as? String == "Missed call from \(alice.uid)")
            #expect(alert?.ringing["status"] as? String == "unanswered")
            #expect(alert?.sessionID == session)
            let ended = await f.production.wait { pushes in
                pushes.contains { $0.token == pixel && $0.data["type"] == "incoming_call.canceled" && $0.answeredAt != nil }
            }
            #expect(ended, "Android stops ringing at the deadline")
            #expect(f.production.pushes.first { $0.data["type"] == "incoming_call.canceled" }?.data["status"] == "unanswered")
            // The alert-kind device never rings, and nothing of it goes to the production host.
            #expect(f.production.pushes.allSatisfy { $0.token != ipad })
            #expect(f.sandbox.pushes.count == 1)
        }
    }

    @Test func deadTokensDeleteTheirDevices() async throws {
        try await PushFixture.run { f in
            let alice = try await f.gateway.user("alice")
            let bob = try await f.gateway.user("bob")
            let (gone, bad, live, android) = (
                PushFixture.apnsToken(), PushFixture.apnsToken(), PushFixture.apnsToken(), PushFixture.fcmToken()
            )
            f.production.setAnswers([.unregistered], for: gone)
            f.production.setAnswers([.badDeviceToken], for: bad)
            f.production.setAnswers([.unregistered], for: android)
            try await f.register(bob, "gone-phone", kind: "voip", token: gone)
            try await f.register(bob, "bad-phone", kind: "voip", token: bad)
            try await f.register(bob, "live-phone", kind: "voip", token: live)
            try await f.register(bob, "old-android", kind: "fcm", token: android)
            _ = try await f.call(alice, bob.uid)
            for device in ["gone-phone", "bad-phone", "old-android"] {
                try await f.notifier.waitForOutput("deleted device \(device):")
            }
            #expect(try await f.devices(bob).map { $0["device_id"] } == ["live-phone"])
            #expect(f.production.accepted.map(\.token) == [live])
        }
    }

    @Test func throttledPushesAreRetriedButNeverPastTheRingDeadline() async throws {
        try await PushFixture.run { f in
            let alice = try await f.gateway.user("alice")
            let bob = try await f.gateway.user("bob")
            let (busy, flaky) = (PushFixture.apnsToken(), PushFixture.fcmToken())
            f.production.setAnswers([.throttle], for: busy)
            f.production.setAnswers([.throttle, .unavailable, .accept], for: flaky)
            try await f.register(bob, "busy-phone", kind: "voip", token: busy)
            try await f.register(bob, "flaky-android", kind: "fcm", token: flaky)
            let (session, deadline) = try await f.call(alice, bob.uid, timeout: 5)
            #expect(await f.production.wait { $0.contains { $0.token == flaky && $0.status == 200 } })
            #expect(
                f.production.pushes.filter { $0.token == flaky && $0.data["type"] == "incoming_call.received" }.map(\.status) == [
                    429, 503, 200,
                ])
            try await f.notifier.waitForOutput("push given up")
            let attempts = f.production.pushes.filter { $0.token == busy && $0.sessionID == session }
            #expect(attempts.count >= 3, "429 is retried")
            #expect(attempts.allSatisfy { $0.status == 429 })
            #expect(attempts.allSatisfy { $0.receivedAt < deadline }, "never past the ring deadline")
        }
    }

    @Test func registrationsAreCheckedAndTokensMoveOnlyWithTheirDevice() async throws {
        try await PushFixture.run { f in
            let g = f.gateway
            let bob = try await g.user("bob")
            let carol = try await g.user("carol")
            func refusal(_ reply: HTTPReply) -> String? {
                if case .string(let s)? = reply.body.at("error", "field") { s } else { nil }
            }
            let badToken = try await f.register(bob, "p", kind: "voip", token: "not-a-token")
            #expect(badToken.status == 400 && refusal(badToken) == "push_token")
            let badKind = try await g.http(
                "PUT", "/v1/devices/p", token: bob.token, idempotencyKey: UUID().uuidString,
                body: [
                    "platform": "android", "kind": "voip", "push_token": .string(PushFixture.apnsToken()),
                    "app_id": "com.example.ringing", "environment": "production",
                ])
            #expect(badKind.status == 400 && refusal(badKind) == "kind")
            let badPlatform = try await g.http(
                "PUT", "/v1/devices/p", token: bob.token, idempotencyKey: UUID().uuidString,
                body: [
                    "platform": "symbian", "kind": "voip", "push_token": .string(PushFixture.apnsToken()),
                    "app_id": "com.example.ringing", "environment": "production",
                ])
            #expect(badPlatform.status == 400 && refusal(badPlatform) == "platform")
            let badApp = try await f.register(bob, "p", kind: "voip", token: PushFixture.apnsToken(), appID: "ringing")
            #expect(badApp.status == 400 && refusal(badApp) == "app_id")
            for index in 1...20 {
                #expect(try await f.register(bob, "phone-\(index)", kind: "voip", token: PushFixture.apnsToken()).status == 200)
            }
            let oneTooMany = try await f.register(bob, "phone-21", kind: "voip", token: PushFixture.apnsToken())
            #expect(oneTooMany.status == 400 && refusal(oneTooMany) == "device_id")
            // Replacing one of the 20 is not a 21st.
            let shared = PushFixture.apnsToken()
            #expect(try await f.register(bob, "phone-1", kind: "voip", token: shared).status == 200)
            // Another user may not take the token under another device id…
            let taken = try await f.register(carol, "carols-phone", kind: "voip", token: shared)
            #expect(taken.status == 403 && refusal(taken) == "push_token")
            // …but the same phone signed in as carol takes it along.
            #expect(try await f.register(carol, "phone-1", kind: "voip", token: shared).status == 200)
            #expect(try await f.devices(bob).count == 19)
            #expect(try await f.devices(carol).map { $0["device_id"] } == ["phone-1"])
            let removed = try await g.http("DELETE", "/v1/devices/phone-1", token: carol.token, idempotencyKey: UUID().uuidString)
            #expect(removed.status == 200)
            #expect(try await f.devices(carol).isEmpty)
        }
    }

    @Test func expiredForgedAndUnreadableNotificationsPushNothing() async throws {
        try await PushFixture.run { f in
            let bob = try await f.gateway.user("bob")
            let phone = PushFixture.apnsToken()
            try await f.register(bob, "bobs-iphone", kind: "voip", token: phone)
            try await RingingTestClient.with { client in
                let deadLetters = try await Capture.start(client.amqp, exchange: Topology.deadLetterExchange, keys: [""])
                let callControl = AMQPConnection(
                    configuration: AMQPConfiguration(
                        url: try AMQPURL(TestEnvironment.amqpURL(account: "call-control")), connectionName: "push-test"))
                let running = Task { await callControl.run() }
                defer { running.cancel() }
                try await callControl.waitUntilConnected()
                let expired = UUID()
                func ring(_ id: UUID, expiresAt: Date) -> Data {
                    let stamp = WireTime.format(expiresAt.addingTimeInterval(-45))
                    return Data(
                        """
                        {"event_id":"\(UUID().uuidString.lowercased())","type":"incoming_call.received","occurred_at":"\(stamp)",
                        "sequence":1,"recipient":"\(bob.uid)","call":{"session_id":"\(id.uuidString.lowercased())","initiator":"alice",
                        "receiver_id":"\(bob.uid)","receiver_type":"user","call_type":"audio","status":"initiated",
                        "initiated_at":"\(stamp)","expires_at":"\(WireTime.format(expiresAt))","answered_at":null,"ended_at":null,
                        "duration_s":null,"ended_by":null,"end_reason":null,"metadata":{},"participants":[],"sequence":1}}
                        """.utf8)
                }
                func notification(_ body: Data, from connection: AMQPConnection, as account: String?) async throws {
                    var properties = AMQPProperties(contentType: "application/json", messageID: UUID().uuidString)
                    properties.userID = account
                    try await connection.publish(
                        AMQPMessage(
                            exchange: Topology.notificationsExchange, routingKey: "user.\(bob.uid).incoming_call.received",
                            body: body,
                            properties: properties))
                }
                try await notification(
                    ring(expired, expiresAt: Date().addingTimeInterval(-1)), from: callControl, as: "call-control")
                try await f.notifier.waitForOutput("session_id=\(expired.uuidString)")
                let unreadable = Data(#"{"type":"incoming_call.received","call":"#.utf8)
                try await notification(unreadable, from: callControl, as: "call-control")
                _ = try await deadLetters.nextDelivery("the unreadable notification", timeout: .seconds(30)) {
                    $0.body == unreadable
                }
                let forged = UUID()
                try await notification(ring(forged, expiresAt: Date().addingTimeInterval(60)), from: client.amqp, as: nil)
                try await f.notifier.waitForOutput("dropped a notification not published by call-control")
                #expect(f.production.pushes.isEmpty, "no push for an expired ring, an unreadable or a forged notification")
            }
        }
    }
}
