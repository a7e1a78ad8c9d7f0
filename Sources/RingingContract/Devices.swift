// Push devices (DESIGN §8): what `device.register` carries and how `device.list` shows a device.
// The checks name the field at fault, so an app developer sees which value the provider would
// have refused before any push is tried.
public import CallRules
public import Foundation

public enum DevicePlatform: String, Sendable, Hashable, CaseIterable, Codable {
    case ios, android
}

/// How a device is pushed: `voip` (PushKit, rings), `apns` (alert pushes), `fcm` (Android).
public enum PushKind: String, Sendable, Hashable, CaseIterable, Codable {
    case voip, apns, fcm

    /// The provider that delivers this kind.
    public var provider: PushProvider { self == .fcm ? .fcm : .apns }

    /// The platform the kind belongs to.
    public var platform: DevicePlatform { self == .fcm ? .android : .ios }
}

public enum PushProvider: String, Sendable, Hashable, CaseIterable, Codable {
    case apns, fcm
}

public enum PushEnvironment: String, Sendable, Hashable, CaseIterable, Codable {
    case production, sandbox
}

/// A `device.register` request, checked.
public struct DeviceRegistration: Sendable, Hashable {
    public var deviceID: String
    public var platform: DevicePlatform
    public var kind: PushKind
    public var pushToken: String
    public var appID: String
    public var environment: PushEnvironment

    public init(
        deviceID: String, platform: DevicePlatform, kind: PushKind, pushToken: String, appID: String,
        environment: PushEnvironment
    ) {
        self.deviceID = deviceID
        self.platform = platform
        self.kind = kind
        self.pushToken = pushToken
        self.appID = appID
        self.environment = environment
    }

    /// Checks what the parser cannot check field by field: the kind against the platform, the
    /// token's shape for its provider, the app id's shape.
    public func validated() throws(CallError) -> DeviceRegistration {
        guard kind.platform == platform else {
            let allowed = PushKind.allCases.filter { $0.platform == platform }.map(\.rawValue).joined(separator: " or ")
            throw CallError.invalid("kind", "kind \(kind.rawValue) is not for platform \(platform.rawValue); use \(allowed)")
        }
        try Self.checkToken(pushToken, kind: kind)
        try Self.checkAppID(appID)
        return self
    }

    /// APNs device tokens are hex (32 bytes today; Apple says the length may grow). FCM
    /// registration tokens are URL-safe text of about 160 characters.
    static func checkToken(_ token: String, kind: PushKind) throws(CallError) {
        switch kind.provider {
        case .apns:
            guard (64...200).contains(token.count), token.count % 2 == 0,
                token.unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit })
            else {
                throw CallError.invalid(
                    "push_token",
                    "push_token for kind \(kind.rawValue) must be the APNs device token as hex (64 to 200 hex digits), not \(token.count) characters of '\(token.prefix(12))…'"
                )
            }
        case .fcm:
            let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:-")
            guard (32...4096).contains(token.count), token.unicodeScalars.allSatisfy(allowed.contains) else {
                throw CallError.invalid(
                    "push_token",
                    "push_token for kind fcm must be the FCM registration token (32 to 4096 characters of A-Z a-z 0-9 _ : -)")
            }
        }
    }

    /// An iOS bundle id or Android package name: two or more dot-separated parts.
    static func checkAppID(_ appID: String) throws(CallError) {
        let part = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
        let parts = appID.split(separator: ".", omittingEmptySubsequences: false)
        guard appID.count <= 255, parts.count >= 2,
            parts.allSatisfy({ !$0.isEmpty && $0.unicodeScalars.allSatisfy(part.contains) })
        else {
            throw CallError.invalid(
                "app_id",
                "app_id '\(appID.prefix(80))' is not a bundle id or package name (like com.example.app: two or more dot-separated parts of letters, digits, _ and -)"
            )
        }
    }
}

/// A device as `device.list` shows it: never the whole token.
public struct WireDevice: Codable, Sendable, Hashable {
    public var deviceID: String
    public var platform: DevicePlatform
    public var kind: PushKind
    public var appID: String
    public var environment: PushEnvironment
    public var tokenSuffix: String
    public var registeredAt: Date

    enum CodingKeys: String, CodingKey {
        case platform, kind, environment
        case deviceID = "device_id"
        case appID = "app_id"
        case tokenSuffix = "token_suffix"
        case registeredAt = "registered_at"
    }

    public init(
        deviceID: String, platform: DevicePlatform, kind: PushKind, appID: String, environment: PushEnvironment,
        pushToken: String, registeredAt: Date
    ) {
        self.deviceID = deviceID
        self.platform = platform
        self.kind = kind
        self.appID = appID
        self.environment = environment
        tokenSuffix = String(pushToken.suffix(8))
        self.registeredAt = registeredAt
    }
}
