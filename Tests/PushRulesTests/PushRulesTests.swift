// Unit tests of what the push notifier sends (DESIGN §8): the plan for each notification, the
// provider requests, how answers are read, retry timing, provider-token renewal, and the
// device registration checks.
import CallRules
import Foundation
import PushRules
import RingingContract
import Testing

let t0 = Date(timeIntervalSince1970: 1_764_000_000)

func ringingCall(to receiver: String = "bob", type: ReceiverType = .user, timeout: Int = 45) -> CallSession {
    let decision = CallRules.initiate(
        CallRules.Initiate(receiverID: receiver, receiverType: type, callType: .video, timeoutSeconds: timeout, metadata: [:]),
        by: "alice", at: t0,
        context: CallRules.InitiateContext(sessionID: UUID(), groupMembers: type == .group ? ["alice", "bob", "carol"] : nil))
    precondition(decision.error == nil, "\(String(describing: decision.error))")
    return decision.call
}

func notification(
    _ name: NotificationName, _ call: CallSession, status: CallStatus? = nil, deviceID: String? = nil, at occurred: Date = t0
) throws -> WireEvent {
    var callJSON = try JSONSerialization.jsonObject(with: WireTime.encoder.encode(WireCall(call))) as! [String: Any]
    if let status { callJSON["status"] = status.rawValue }
    var object: [String: Any] = [
        "event_id": UUID().uuidString.lowercased(), "type": name.rawValue, "occurred_at": WireTime.format(occurred),
        "sequence": call.sequence, "call": callJSON, "recipient": "bob",
    ]
    if let deviceID { object["device_id"] = deviceID }
    return try WireTime.decoder.decode(WireEvent.self, from: JSONSerialization.data(withJSONObject: object))
}

let apnsToken = String(repeating: "ab", count: 32)
let devices = [
    PushDevice(
        uid: "bob", deviceID: "iphone", kind: .voip, pushToken: apnsToken, appID: "com.example.app", environment: .production),
    PushDevice(
        uid: "bob", deviceID: "pixel", kind: .fcm, pushToken: "fcm-token-0123456789-abcdefghijklmnop:xyz",
        appID: "com.example.app", environment: .production),
    PushDevice(
        uid: "bob", deviceID: "iphone-alerts", kind: .apns, pushToken: String(repeating: "cd", count: 32),
        appID: "com.example.app", environment: .sandbox),
]

func json(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

@Suite struct PushPlanTests {
    @Test func aRingMakesOneVoIPPushAndOneDataMessageAndNoAlert() throws {
        let call = ringingCall()
        let pushes = PushPlanner.plan(
            name: .incomingCallReceived, notification: try notification(.incomingCallReceived, call), devices: devices,
            now: t0.addingTimeInterval(1), retryWindow: 60)
        #expect(pushes.count == 2)
        guard case .apns(let voip)? = pushes.first(where: { $0.device.deviceID == "iphone" })?.request else {
            Issue.record("no VoIP push")
            return
        }
        #expect(voip.path == "/3/device/\(apnsToken)")
        let headers = Dictionary(uniqueKeysWithValues: voip.headers)
        #expect(headers["apns-push-type"] == "voip")
        #expect(headers["apns-topic"] == "com.example.app.voip")
        #expect(headers["apns-priority"] == "10")
        #expect(headers["apns-expiration"] == String(Int(call.expiresAt.timeIntervalSince1970.rounded(.up))))
        #expect(headers["apns-collapse-id"] == call.sessionID.uuidString.lowercased())
        let ringing = json(voip.payload)["ringing"] as? [String: String] ?? [:]
        #expect(ringing["session_id"] == call.sessionID.uuidString.lowercased())
        #expect(ringing["initiator"] == "alice")
        #expect(ringing["receiver_type"] == "user")
        #expect(ringing["call_type"] == "video")
        #expect(ringing["expires_at"] == WireTime.format(call.expiresAt))
        #expect(ringing["group_id"] == nil)
        #expect(json(voip.payload)["aps"] == nil)
        let ring = pushes.first { $0.device.deviceID == "iphone" }
        #expect(ring?.retryUntil == call.expiresAt)
        guard case .fcm(let data)? = pushes.first(where: { $0.device.deviceID == "pixel" })?.request else {
            Issue.record("no FCM message")
            return
        }
        #expect(data.ttlSeconds == 44)
        #expect(data.data["type"] == "incoming_call.received")
        #expect(data.data["session_id"] == call.sessionID.uuidString.lowercased())
        let message = json(data.body)["message"] as? [String: Any] ?? [:]
        #expect((message["android"] as? [String: String])?["priority"] == "HIGH")
        #expect((message["android"] as? [String: String])?["ttl"] == "44s")
        #expect(message["notification"] == nil)
        #expect(message["token"] as? String == devices[1].pushToken)
    }

    @Test func aGroupRingCarriesTheGroup() throws {
        let call = ringingCall(to: "team", type: .group)
        let pushes = PushPlanner.plan(
            name: .incomingCallReceived, notification: try notification(.incomingCallReceived, call), devices: [devices[0]],
            now: t0, retryWindow: 60)
        guard case .apns(let voip)? = pushes.first?.request else {
            Issue.record("no VoIP push")
            return
        }
        #expect((json(voip.payload)["ringing"] as? [String: String])?["group_id"] == "team")
    }

    @Test func anExpiredRingMakesNothing() throws {
        let call = ringingCall(timeout: 5)
        let event = try notification(.incomingCallReceived, call)
        #expect(
            PushPlanner.plan(
                name: .incomingCallReceived, notification: event, devices: devices, now: call.expiresAt, retryWindow: 60
            ).isEmpty)
        #expect(
            !PushPlanner.plan(
                name: .incomingCallReceived, notification: event, devices: devices, now: t0.addingTimeInterval(4.9),
                retryWindow: 60
            ).isEmpty)
    }

    @Test func aCancelGoesToAndroidOnlyAndAnUnansweredCallAlsoAlertsAsMissed() throws {
        let call = ringingCall()
        let cancelled = PushPlanner.plan(
            name: .incomingCallCanceled, notification: try notification(.incomingCallCanceled, call, status: .cancelled),
            devices: devices, now: t0, retryWindow: 60)
        #expect(cancelled.map(\.device.deviceID) == ["pixel"])
        let unanswered = PushPlanner.plan(
            name: .incomingCallCanceled,
            notification: try notification(.incomingCallCanceled, call, status: .unanswered, at: call.expiresAt),
            devices: devices, now: call.expiresAt, retryWindow: 60)
        #expect(Set(unanswered.map(\.device.deviceID)) == ["pixel", "iphone-alerts"])
        guard case .apns(let alert)? = unanswered.first(where: { $0.device.deviceID == "iphone-alerts" })?.request else {
            Issue.record("no missed-call alert")
            return
        }
        let headers = Dictionary(uniqueKeysWithValues: alert.headers)
        #expect(headers["apns-push-type"] == "alert")
        #expect(headers["apns-topic"] == "com.example.app")
        #expect(alert.environment == .sandbox)
        let aps = json(alert.payload)["aps"] as? [String: Any]
        #expect((aps?["alert"] as? [String: String])?["body"] == "Missed call from alice")
        #expect(unanswered.allSatisfy { $0.retryUntil == call.expiresAt.addingTimeInterval(60) })
        guard case .fcm(let data)? = unanswered.first(where: { $0.device.deviceID == "pixel" })?.request else { return }
        #expect(data.data["status"] == "unanswered")
        #expect(data.data["type"] == "incoming_call.canceled")
    }

    @Test func answeredElsewhereTellsAndroidWhichDeviceAnswered() throws {
        let call = ringingCall()
        for name in [NotificationName.answeredElsewhere, .rejectedElsewhere] {
            let pushes = PushPlanner.plan(
                name: name, notification: try notification(name, call, deviceID: "bobs-tablet"), devices: devices, now: t0,
                retryWindow: 60)
            #expect(pushes.map(\.device.deviceID) == ["pixel"])
            guard case .fcm(let data)? = pushes.first?.request else { continue }
            #expect(data.data["device_id"] == "bobs-tablet")
            #expect(data.data["type"] == name.rawValue)
        }
    }

    @Test func otherNotificationsMakeNoPush() throws {
        let call = ringingCall()
        for name in NotificationName.allCases where !PushPlanner.notifications.contains(name) {
            #expect(
                PushPlanner.plan(
                    name: name, notification: try notification(name, call), devices: devices, now: t0, retryWindow: 60
                ).isEmpty)
        }
    }

    @Test func eachPushHasItsOwnKey() throws {
        let call = ringingCall()
        let pushes = PushPlanner.plan(
            name: .incomingCallReceived, notification: try notification(.incomingCallReceived, call), devices: devices, now: t0,
            retryWindow: 60)
        #expect(Set(pushes.map(\.key)).count == pushes.count)
        #expect(pushes.allSatisfy { $0.key.sessionID == call.sessionID && $0.key.notification == "incoming_call.received" })
    }
}

@Suite struct ProviderAnswerTests {
    func body(_ object: [String: Any]) -> Data { try! JSONSerialization.data(withJSONObject: object) }

    @Test func apnsAnswers() {
        #expect(ProviderAnswers.apns(status: 200, body: Data()) == .accepted)
        #expect(
            ProviderAnswers.apns(status: 410, body: body(["reason": "Unregistered"])) == .unregistered(reason: "Unregistered"))
        #expect(
            ProviderAnswers.apns(status: 400, body: body(["reason": "BadDeviceToken"])) == .unregistered(reason: "BadDeviceToken")
        )
        #expect(
            ProviderAnswers.apns(status: 400, body: body(["reason": "DeviceTokenNotForTopic"]))
                == .rejected(reason: "DeviceTokenNotForTopic"))
        #expect(
            ProviderAnswers.apns(status: 403, body: body(["reason": "ExpiredProviderToken"]))
                == .refreshCredentials(reason: "ExpiredProviderToken"))
        #expect(
            ProviderAnswers.apns(status: 429, body: body(["reason": "TooManyRequests"]), retryAfter: "3")
                == .retry(reason: "TooManyRequests", after: 3))
        #expect(ProviderAnswers.apns(status: 503, body: Data()) == .retry(reason: "HTTP 503", after: nil))
    }

    @Test func fcmAnswers() {
        let unregistered = body([
            "error": ["code": 404, "status": "NOT_FOUND", "details": [["errorCode": "UNREGISTERED"]]] as [String: Any]
        ])
        #expect(ProviderAnswers.fcm(status: 200, body: body(["name": "x"])) == .accepted)
        #expect(ProviderAnswers.fcm(status: 404, body: unregistered) == .unregistered(reason: "UNREGISTERED"))
        #expect(ProviderAnswers.fcm(status: 401, body: Data()) == .refreshCredentials(reason: "HTTP 401"))
        #expect(
            ProviderAnswers.fcm(status: 429, body: body(["error": ["status": "RESOURCE_EXHAUSTED"]]))
                == .retry(reason: "RESOURCE_EXHAUSTED", after: nil))
        #expect(ProviderAnswers.fcm(status: 503, body: Data(), retryAfter: "2") == .retry(reason: "HTTP 503", after: 2))
        #expect(
            ProviderAnswers.fcm(status: 400, body: body(["error": ["status": "INVALID_ARGUMENT"]]))
                == .rejected(reason: "INVALID_ARGUMENT"))
    }

    @Test func retriesBackOffAndNeverPassTheDeadline() {
        let policy = PushRetryPolicy(initial: 0.2, maximum: 5)
        let until = t0.addingTimeInterval(10)
        #expect(policy.nextAttempt(after: 0, providerDelay: nil, now: t0, until: until) == t0.addingTimeInterval(0.2))
        #expect(policy.nextAttempt(after: 3, providerDelay: nil, now: t0, until: until) == t0.addingTimeInterval(1.6))
        #expect(policy.nextAttempt(after: 10, providerDelay: nil, now: t0, until: until) == t0.addingTimeInterval(5))
        #expect(policy.nextAttempt(after: 0, providerDelay: 3, now: t0, until: until) == t0.addingTimeInterval(3))
        #expect(policy.nextAttempt(after: 10, providerDelay: nil, now: t0.addingTimeInterval(5), until: until) == nil)
        #expect(policy.nextAttempt(after: 0, providerDelay: nil, now: until, until: until) == nil)
    }

    @Test func providerTokensAreRenewedInTime() {
        #expect(ProviderTokenPolicy.apnsNeedsNew(issuedAt: nil, now: t0))
        #expect(!ProviderTokenPolicy.apnsNeedsNew(issuedAt: t0, now: t0.addingTimeInterval(20 * 60)))
        #expect(!ProviderTokenPolicy.apnsNeedsNew(issuedAt: t0, now: t0.addingTimeInterval(39 * 60)))
        #expect(ProviderTokenPolicy.apnsNeedsNew(issuedAt: t0, now: t0.addingTimeInterval(40 * 60)))
        #expect(ProviderTokenPolicy.apnsLifetime >= 20 * 60 && ProviderTokenPolicy.apnsLifetime <= 50 * 60)
        #expect(!ProviderTokenPolicy.oauthNeedsNew(expiresAt: t0.addingTimeInterval(3600), now: t0))
        #expect(ProviderTokenPolicy.oauthNeedsNew(expiresAt: t0.addingTimeInterval(3600), now: t0.addingTimeInterval(3300)))
    }
}

@Suite struct DeviceRegistrationTests {
    func register(_ fields: [String: String]) throws(CallError) -> Request {
        var object: [String: String] = [
            "auth_token": "t", "device_id": "bobs-phone", "platform": "ios", "kind": "voip", "push_token": apnsToken,
            "app_id": "com.example.app", "environment": "production",
        ]
        object.merge(fields) { $1 }
        return try RequestParser.parse(
            routingKey: "device.register", body: try! JSONSerialization.data(withJSONObject: object.filter { !$0.value.isEmpty }))
    }

    func field(_ fields: [String: String]) -> String? {
        do {
            _ = try register(fields)
            return nil
        } catch {
            return error.field
        }
    }

    @Test func aGoodRegistrationParses() throws {
        guard case .registerDevice(let r) = try register([:]).command else {
            Issue.record("not a registration")
            return
        }
        #expect(r.deviceID == "bobs-phone" && r.kind == .voip && r.environment == .production)
        #expect(throws: Never.self) {
            try register(["platform": "android", "kind": "fcm", "push_token": "fcm-token-0123456789-abcdefghijklmnop:xyz"])
        }
    }

    @Test func eachBadFieldIsNamed() {
        #expect(field(["push_token": "not-hex-at-all"]) == "push_token")
        #expect(field(["push_token": "abcd"]) == "push_token")
        #expect(field(["platform": "android", "kind": "fcm", "push_token": "short"]) == "push_token")
        #expect(field(["platform": "windows"]) == "platform")
        #expect(field(["kind": "sms"]) == "kind")
        #expect(field(["platform": "android"]) == "kind")
        #expect(field(["app_id": "app"]) == "app_id")
        #expect(field(["app_id": "com..example"]) == "app_id")
        #expect(field(["app_id": "com.exa mple"]) == "app_id")
        #expect(field(["environment": "staging"]) == "environment")
        #expect(field(["device_id": ""]) == "device_id")
        #expect(field(["extra": "x"]) == "extra")
    }

    @Test func theListShowsOnlyTheTokensEnd() throws {
        let device = WireDevice(
            deviceID: "d", platform: .ios, kind: .voip, appID: "com.example.app", environment: .production, pushToken: apnsToken,
            registeredAt: t0)
        let text = String(decoding: try WireTime.encoder.encode(device), as: UTF8.self)
        #expect(device.tokenSuffix == String(apnsToken.suffix(8)))
        #expect(!text.contains(apnsToken))
    }
}
