// Which pushes a notification makes (DESIGN §8), as pure logic: the notifier feeds it the
// notification and the user's devices and carries out the requests it returns.
public import CallRules
public import Foundation
public import RingingContract

/// A registered device of one user, as the notifier reads it from `push.devices`.
public struct PushDevice: Sendable, Hashable {
    public var uid: String
    public var deviceID: String
    public var kind: PushKind
    public var pushToken: String
    public var appID: String
    public var environment: PushEnvironment

    public init(uid: String, deviceID: String, kind: PushKind, pushToken: String, appID: String, environment: PushEnvironment) {
        self.uid = uid
        self.deviceID = deviceID
        self.kind = kind
        self.pushToken = pushToken
        self.appID = appID
        self.environment = environment
    }
}

/// What is pushed at most once after the provider accepted it: one notification of one call
/// to one device of one user (the key of `push.push_log`).
public struct PushKey: Sendable, Hashable, CustomStringConvertible {
    public var sessionID: UUID
    public var uid: String
    public var deviceID: String
    public var notification: String

    public init(sessionID: UUID, uid: String, deviceID: String, notification: String) {
        self.sessionID = sessionID
        self.uid = uid
        self.deviceID = deviceID
        self.notification = notification
    }

    public var description: String { "\(sessionID.uuidString.lowercased())/\(uid)/\(deviceID)/\(notification)" }
}

/// An APNs request (HTTP/2 `POST /3/device/<token>`), without the provider token.
public struct APNsPush: Sendable, Hashable {
    public enum PushType: String, Sendable, Hashable { case voip, alert }

    public var token: String
    public var environment: PushEnvironment
    public var pushType: PushType
    public var topic: String
    public var expiration: Int
    public var collapseID: String
    public var payload: Data

    public var path: String { "/3/device/\(token)" }

    /// The headers APNs reads, in order (the `authorization` header is the client's).
    public var headers: [(String, String)] {
        [
            ("apns-push-type", pushType.rawValue), ("apns-topic", topic), ("apns-priority", "10"),
            ("apns-expiration", String(expiration)), ("apns-collapse-id", collapseID),
        ]
    }

    public static func == (a: APNsPush, b: APNsPush) -> Bool {
        a.token == b.token && a.environment == b.environment && a.pushType == b.pushType && a.topic == b.topic
            && a.expiration == b.expiration && a.collapseID == b.collapseID && a.payload == b.payload
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(token)
        hasher.combine(collapseID)
        hasher.combine(pushType)
    }
}

/// An FCM HTTP v1 message (`POST /v1/projects/<project>/messages:send`): data only, high priority.
public struct FCMPush: Sendable, Hashable {
    public var token: String
    public var data: [String: String]
    public var ttlSeconds: Int
    public var collapseKey: String

    /// `{"message":{…}}` as FCM HTTP v1 takes it.
    public var body: Data {
        let message: [String: Any] = [
            "message": [
                "token": token, "data": data,
                "android": ["priority": "HIGH", "ttl": "\(ttlSeconds)s", "collapse_key": collapseKey],
            ]
        ]
        return (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys])) ?? Data()
    }
}

public enum PushRequest: Sendable, Hashable {
    case apns(APNsPush)
    case fcm(FCMPush)

    public var provider: PushProvider {
        switch self {
        case .apns: .apns
        case .fcm: .fcm
        }
    }
}

/// One push to make: until the provider accepts it, or `retryUntil` passes.
public struct PlannedPush: Sendable, Hashable {
    public var key: PushKey
    public var device: PushDevice
    public var request: PushRequest
    public var retryUntil: Date
    /// When the change happened (the latency metric starts here).
    public var occurredAt: Date
}

public enum PushPlanner {
    /// The notifications the push notifier binds; nothing else makes a push.
    public static let notifications: [NotificationName] = [
        .incomingCallReceived, .incomingCallCanceled, .answeredElsewhere, .rejectedElsewhere,
    ]

    /// APNs refuses VoIP payloads over 5 KiB.
    public static let maximumAPNsPayloadBytes = 5120

    /// The pushes for `notification` (named `name`) to `devices`, all of its recipient's:
    /// - a ring: one VoIP push per `voip` device and one FCM data message per `fcm` device,
    ///   nothing once the deadline has passed;
    /// - a cancel, answered or rejected elsewhere: an FCM data message per `fcm` device (never a
    ///   VoIP push: Apple's rule) and, for an unanswered call, a "Missed call" alert to each
    ///   `apns` device.
    /// Pushes other than rings are retried for `retryWindow` after the change.
    public static func plan(
        name: NotificationName, notification: WireEvent, devices: [PushDevice], now: Date, retryWindow: TimeInterval
    ) -> [PlannedPush] {
        let call = notification.call
        let deadline = call.expiresAt
        var pushes: [PlannedPush] = []
        func add(_ device: PushDevice, _ request: PushRequest, until: Date) {
            let key = PushKey(sessionID: call.sessionID, uid: device.uid, deviceID: device.deviceID, notification: name.rawValue)
            pushes.append(
                PlannedPush(key: key, device: device, request: request, retryUntil: until, occurredAt: notification.occurredAt))
        }
        switch name {
        case .incomingCallReceived:
            guard now < deadline else { return [] }
            let ttl = max(1, Int((deadline.timeIntervalSince(now)).rounded(.up)))
            for device in devices {
                switch device.kind {
                case .voip:
                    add(device, .apns(ringPush(device, notification)), until: deadline)
                case .fcm:
                    add(device, .fcm(dataMessage(device, name, notification, ttl: ttl)), until: deadline)
                case .apns:
                    continue
                }
            }
        case .incomingCallCanceled, .answeredElsewhere, .rejectedElsewhere:
            let until = notification.occurredAt.addingTimeInterval(retryWindow)
            let ttl = max(1, Int(retryWindow))
            for device in devices {
                switch device.kind {
                case .fcm:
                    add(device, .fcm(dataMessage(device, name, notification, ttl: ttl)), until: until)
                case .apns where name == .incomingCallCanceled && call.status == .unanswered:
                    add(device, .apns(missedCallAlert(device, notification)), until: until)
                case .apns, .voip:
                    continue
                }
            }
        default:
            return []
        }
        return pushes
    }

    /// The fields every push carries about the call (DESIGN §8).
    static func ringFields(_ notification: WireEvent) -> [String: String] {
        let call = notification.call
        var fields = [
            "session_id": call.sessionID.uuidString.lowercased(), "initiator": call.initiator,
            "receiver_type": call.receiverType.rawValue, "call_type": call.callType.rawValue,
            "expires_at": WireTime.format(call.expiresAt),
        ]
        if call.receiverType == .group { fields["group_id"] = call.receiverID }
        return fields
    }

    static func ringPush(_ device: PushDevice, _ notification: WireEvent) -> APNsPush {
        let payload = ["ringing": ringFields(notification)]
        return APNsPush(
            token: device.pushToken, environment: device.environment, pushType: .voip, topic: "\(device.appID).voip",
            expiration: Int(notification.call.expiresAt.timeIntervalSince1970.rounded(.up)),
            collapseID: notification.call.sessionID.uuidString.lowercased(), payload: json(payload))
    }

    static func missedCallAlert(_ device: PushDevice, _ notification: WireEvent) -> APNsPush {
        var ringing: [String: Any] = ringFields(notification)
        ringing["status"] = notification.call.status.rawValue
        let payload: [String: Any] = [
            "aps": [
                "alert": ["title": "Missed call", "body": "Missed call from \(notification.call.initiator)"],
                "sound": "default",
            ],
            "ringing": ringing,
        ]
        return APNsPush(
            token: device.pushToken, environment: device.environment, pushType: .alert, topic: device.appID,
            expiration: Int(notification.occurredAt.addingTimeInterval(86_400).timeIntervalSince1970),
            collapseID: notification.call.sessionID.uuidString.lowercased(), payload: json(payload))
    }

    static func dataMessage(_ device: PushDevice, _ name: NotificationName, _ notification: WireEvent, ttl: Int) -> FCMPush {
        var data = ringFields(notification)
        data["type"] = name.rawValue
        data["status"] = notification.call.status.rawValue
        data["sequence"] = String(notification.sequence)
        data["event_id"] = notification.eventID.uuidString.lowercased()
        if name == .answeredElsewhere || name == .rejectedElsewhere, let acting = notification.deviceID {
            data["device_id"] = acting
        }
        return FCMPush(
            token: device.pushToken, data: data, ttlSeconds: ttl,
            collapseKey: notification.call.sessionID.uuidString.lowercased())
    }

    static func json(_ value: Any) -> Data {
        (try? JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }
}
