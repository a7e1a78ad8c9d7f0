// The push notifier's tables (DESIGN §8) in their own PostgreSQL schema `push`, with their own
// migration history: the device registry and the push log that keeps an accepted push from
// being sent again.
import CallRules
public import Foundation
public import PostgresClient
public import PushRules
public import RingingContract

public enum DeviceStore {
    /// Every notifier instance takes this lock while migrating ("PUSH").
    static let advisoryLock = 0x5055_5348

    static let migrations: [SchemaMigration] = [
        (
            1, "devices and push log",
            """
            CREATE TABLE push.devices (
                uid           text NOT NULL,
                device_id     text NOT NULL,
                platform      text NOT NULL CHECK (platform IN ('ios', 'android')),
                kind          text NOT NULL CHECK (kind IN ('voip', 'apns', 'fcm')),
                push_token    text NOT NULL,
                app_id        text NOT NULL,
                environment   text NOT NULL CHECK (environment IN ('production', 'sandbox')),
                registered_at timestamptz NOT NULL,
                PRIMARY KEY (uid, device_id)
            );
            -- A push token belongs to one user (and one of their devices) at a time.
            CREATE UNIQUE INDEX devices_push_token ON push.devices (push_token);

            -- Pushes a provider accepted: a redelivered or replayed notification is not pushed again.
            CREATE TABLE push.push_log (
                session_id   uuid NOT NULL,
                uid          text NOT NULL,
                device_id    text NOT NULL,
                notification text NOT NULL,
                provider     text NOT NULL,
                accepted_at  timestamptz NOT NULL,
                PRIMARY KEY (session_id, uid, device_id, notification)
            );
            CREATE INDEX push_log_age ON push.push_log (accepted_at);
            """
        )
    ]

    /// Creates the schema and applies what is missing, once, under the advisory lock.
    @discardableResult
    public static func migrate(_ database: isolated PostgresConnection) throws -> [Int] {
        try database.applyMigrations(migrations, schema: "push", lock: advisoryLock)
    }

    public static let maximumDevicesPerUser = 20

    /// Registers or replaces (`uid`, `device_id`). A token held by another user moves only with
    /// the same `device_id` (a phone that changed user); one held by another device of the same
    /// user moves to this one.
    public static func register(_ db: isolated PostgresConnection, uid: String, _ r: DeviceRegistration, now: Date) throws {
        try db.withTransaction { db in
            // One registration per user at a time, so that the count below holds.
            try db.query("SELECT pg_advisory_xact_lock(hashtext('push.devices'), hashtext(\(uid)))")
            let holders = try db.query(
                "SELECT uid, device_id FROM push.devices WHERE push_token = \(r.pushToken) FOR UPDATE"
            ).map { try $0.decodeColumns((String, String).self) }
            for (holderUID, holderDevice) in holders where (holderUID, holderDevice) != (uid, r.deviceID) {
                if holderUID != uid && holderDevice != r.deviceID {
                    throw CallError(
                        .forbidden,
                        "this push_token is registered to another user's device; it moves only with the same device_id",
                        field: "push_token")
                }
                try db.query("DELETE FROM push.devices WHERE uid = \(holderUID) AND device_id = \(holderDevice)")
            }
            let others =
                try db.query(
                    "SELECT count(*) FROM push.devices WHERE uid = \(uid) AND device_id <> \(r.deviceID)"
                ).first.map { try $0.decode(Int.self, at: 0) } ?? 0
            guard others < maximumDevicesPerUser else {
                throw CallError.invalid(
                    "device_id",
                    "the user already has \(maximumDevicesPerUser) devices, the most allowed; unregister one first")
            }
            try db.query(
                """
                INSERT INTO push.devices (uid, device_id, platform, kind, push_token, app_id, environment, registered_at)
                VALUES (\(uid), \(r.deviceID), \(r.platform.rawValue), \(r.kind.rawValue), \(r.pushToken), \(r.appID),
                        \(r.environment.rawValue), \(now))
                ON CONFLICT (uid, device_id) DO UPDATE SET
                    platform = EXCLUDED.platform, kind = EXCLUDED.kind, push_token = EXCLUDED.push_token,
                    app_id = EXCLUDED.app_id, environment = EXCLUDED.environment, registered_at = EXCLUDED.registered_at
                """)
        }
    }

    /// Removes a device; true when it existed.
    @discardableResult
    public static func unregister(_ db: isolated PostgresConnection, uid: String, deviceID: String) throws -> Bool {
        !(try db.query("DELETE FROM push.devices WHERE uid = \(uid) AND device_id = \(deviceID) RETURNING 1")).isEmpty
    }

    /// The user's devices with their tokens (for pushing).
    public static func devices(_ db: isolated PostgresConnection, uid: String) throws -> [PushDevice] {
        try rows(db, uid: uid).map(\.device)
    }

    /// The user's devices as `device.list` shows them.
    public static func list(_ db: isolated PostgresConnection, uid: String) throws -> [WireDevice] {
        try rows(db, uid: uid).map(\.wire)
    }

    private static func rows(_ db: isolated PostgresConnection, uid: String) throws -> [(device: PushDevice, wire: WireDevice)] {
        try db.query(
            """
            SELECT device_id, platform, kind, push_token, app_id, environment, registered_at
            FROM push.devices WHERE uid = \(uid) ORDER BY device_id
            """
        ).map { row in
            let (deviceID, platformText, kindText, token, appID, environmentText, registeredAt) = try row.decodeColumns(
                (String, String, String, String, String, String, Date).self)
            guard let platform = DevicePlatform(rawValue: platformText), let kind = PushKind(rawValue: kindText),
                let environment = PushEnvironment(rawValue: environmentText)
            else {
                throw StoredDeviceError(uid: uid, deviceID: deviceID, value: "\(platformText)/\(kindText)/\(environmentText)")
            }
            return (
                PushDevice(uid: uid, deviceID: deviceID, kind: kind, pushToken: token, appID: appID, environment: environment),
                WireDevice(
                    deviceID: deviceID, platform: platform, kind: kind, appID: appID, environment: environment, pushToken: token,
                    registeredAt: registeredAt)
            )
        }
    }

    /// Deletes a device whose token the provider called dead, unless it was registered again
    /// with another token meanwhile.
    @discardableResult
    public static func prune(_ db: isolated PostgresConnection, _ device: PushDevice) throws -> Bool {
        !(try db.query(
            """
            DELETE FROM push.devices
            WHERE uid = \(device.uid) AND device_id = \(device.deviceID) AND push_token = \(device.pushToken) RETURNING 1
            """)).isEmpty
    }

    /// The (device, notification) pairs of this call already accepted for `uid`.
    public static func accepted(_ db: isolated PostgresConnection, sessionID: UUID, uid: String) throws -> Set<PushKey> {
        Set(
            try db.query(
                "SELECT device_id, notification FROM push.push_log WHERE session_id = \(sessionID) AND uid = \(uid)"
            ).map { row in
                let (device, notification) = try row.decodeColumns((String, String).self)
                return PushKey(sessionID: sessionID, uid: uid, deviceID: device, notification: notification)
            })
    }

    /// Records that the provider accepted a push.
    public static func recordAccepted(_ db: isolated PostgresConnection, _ key: PushKey, provider: PushProvider, at: Date) throws
    {
        try db.query(
            """
            INSERT INTO push.push_log (session_id, uid, device_id, notification, provider, accepted_at)
            VALUES (\(key.sessionID), \(key.uid), \(key.deviceID), \(key.notification), \(provider.rawValue), \(at))
            ON CONFLICT DO NOTHING
            """)
    }

    /// Forgets accepted pushes older than `age`: no notification is redelivered that late.
    @discardableResult
    public static func forgetPushes(_ db: isolated PostgresConnection, olderThan cutoff: Date) throws -> Int {
        try db.query("DELETE FROM push.push_log WHERE accepted_at < \(cutoff) RETURNING 1").count
    }
}

/// A device row this version cannot read (written by a newer or broken writer): named, never
/// read as a default.
public struct StoredDeviceError: Error, CustomStringConvertible {
    public let uid: String
    public let deviceID: String
    public let value: String
    public var description: String {
        "push.devices (\(uid), \(deviceID)) holds platform/kind/environment '\(value)', which this version cannot read"
    }
}
