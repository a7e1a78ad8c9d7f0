// How a provider's answer is read (DESIGN §8), and when to try again: pure, so the rules that
// decide whether a device is deleted or a ring retried are unit-tested without a network.
public import Foundation

/// What the notifier does with one answer of APNs or FCM.
public enum ProviderAnswer: Sendable, Hashable {
    /// Accepted: record it in the push log and never send it again.
    case accepted
    /// The token is dead (APNs 410, `Unregistered`, `BadDeviceToken`; FCM `UNREGISTERED`):
    /// delete the device.
    case unregistered(reason: String)
    /// Throttled or a provider fault (429, 5xx): try again later, `after` seconds at the
    /// earliest when the provider said so.
    case retry(reason: String, after: TimeInterval?)
    /// The provider token was refused as expired or invalid: get a new one and try again.
    case refreshCredentials(reason: String)
    /// Refused for good (a malformed request, a topic the token is not for): logged, not retried.
    case rejected(reason: String)
}

public enum ProviderAnswers {
    /// APNs: `:status` and the JSON `{"reason": …}` body of a refusal.
    public static func apns(status: Int, body: Data, retryAfter: String? = nil) -> ProviderAnswer {
        let reason = (jsonObject(body)?["reason"] as? String) ?? "HTTP \(status)"
        switch status {
        case 200: return .accepted
        case 410: return .unregistered(reason: reason)
        case 400 where reason == "BadDeviceToken": return .unregistered(reason: reason)
        case 403 where reason == "ExpiredProviderToken" || reason == "InvalidProviderToken":
            return .refreshCredentials(reason: reason)
        case 429, 500...599: return .retry(reason: reason, after: retryAfter.flatMap(TimeInterval.init))
        default: return .rejected(reason: reason)
        }
    }

    /// FCM HTTP v1: the status and the `{"error":{"status":…,"details":[{"errorCode":…}]}}` body.
    public static func fcm(status: Int, body: Data, retryAfter: String? = nil) -> ProviderAnswer {
        let error = jsonObject(body)?["error"] as? [String: Any]
        let details = (error?["details"] as? [[String: Any]]) ?? []
        let errorCode = details.compactMap { $0["errorCode"] as? String }.first
        let reason = errorCode ?? (error?["status"] as? String) ?? "HTTP \(status)"
        if status == 200 { return .accepted }
        if errorCode == "UNREGISTERED" { return .unregistered(reason: reason) }
        switch status {
        case 401: return .refreshCredentials(reason: reason)
        case 429, 500...599: return .retry(reason: reason, after: retryAfter.flatMap(TimeInterval.init))
        default: return .rejected(reason: reason)
        }
    }

    static func jsonObject(_ body: Data) -> [String: Any]? {
        guard !body.isEmpty else { return nil }
        return (try? JSONSerialization.jsonObject(with: body)) as? [String: Any]
    }
}

/// Exponential backoff that never schedules an attempt past the push's deadline.
public struct PushRetryPolicy: Sendable, Hashable {
    public var initial: TimeInterval
    public var maximum: TimeInterval

    public init(initial: TimeInterval = 0.2, maximum: TimeInterval = 5) {
        self.initial = initial
        self.maximum = maximum
    }

    /// When to make attempt `attempt + 1` after attempt `attempt` (0-based) failed at `now`,
    /// or nil when that would be at or past `until`: the push is given up.
    public func nextAttempt(after attempt: Int, providerDelay: TimeInterval?, now: Date, until: Date) -> Date? {
        let backoff = min(maximum, initial * pow(2, Double(min(attempt, 30))))
        let delay = max(backoff, providerDelay ?? 0)
        let next = now.addingTimeInterval(delay)
        return next < until ? next : nil
    }
}

/// When a provider token is made again.
public enum ProviderTokenPolicy {
    /// Apple refuses provider tokens older than an hour and new ones more often than every
    /// 20 minutes; DESIGN §8 says every 20 to 50 minutes. We take 40.
    public static let apnsLifetime: TimeInterval = 40 * 60
    /// An OAuth access token is renewed this long before it expires.
    public static let oauthMargin: TimeInterval = 5 * 60

    public static func apnsNeedsNew(issuedAt: Date?, now: Date) -> Bool {
        guard let issuedAt else { return true }
        return now.timeIntervalSince(issuedAt) >= apnsLifetime || now < issuedAt
    }

    public static func oauthNeedsNew(expiresAt: Date?, now: Date) -> Bool {
        guard let expiresAt else { return true }
        return now >= expiresAt.addingTimeInterval(-oauthMargin)
    }
}
