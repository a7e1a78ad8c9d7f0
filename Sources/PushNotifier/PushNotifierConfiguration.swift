// Settings of the push notifier, read from the environment (DESIGN §8). A provider without
// credentials is off; credentials given in part, or that do not parse, stop the start with
// one line naming the variable.
public import AMQPClient
public import Foundation
import JWTKit
public import PostgresClient
import RingingAuth
public import RingingService

public struct APNsCredentials: Sendable {
    public var keyPEM: String
    public var keyID: String
    public var teamID: String

    public init(keyPEM: String, keyID: String, teamID: String) {
        self.keyPEM = keyPEM
        self.keyID = keyID
        self.teamID = teamID
    }
}

/// The parts of a Google service-account key the notifier uses.
public struct FCMCredentials: Sendable {
    public var projectID: String
    public var clientEmail: String
    public var privateKeyPEM: String
    public var privateKeyID: String?
    public var tokenURI: String

    public init(projectID: String, clientEmail: String, privateKeyPEM: String, privateKeyID: String?, tokenURI: String) {
        self.projectID = projectID
        self.clientEmail = clientEmail
        self.privateKeyPEM = privateKeyPEM
        self.privateKeyID = privateKeyID
        self.tokenURI = tokenURI
    }

    /// Reads a service-account JSON key; errors name the member at fault.
    public init(json: Data) throws(ConfigurationError) {
        let variable = "RINGING_FCM_CREDENTIALS"
        guard let object = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else {
            throw ConfigurationError(variable: variable, message: "is not a service-account JSON key (not a JSON object)")
        }
        func member(_ name: String) throws(ConfigurationError) -> String {
            guard let value = object[name] as? String, !value.isEmpty else {
                throw ConfigurationError(variable: variable, message: "the service-account key has no '\(name)'")
            }
            return value
        }
        projectID = try member("project_id")
        clientEmail = try member("client_email")
        privateKeyPEM = try member("private_key")
        privateKeyID = object["private_key_id"] as? String
        tokenURI = (object["token_uri"] as? String) ?? "https://oauth2.googleapis.com/token"
        guard let url = URL(string: tokenURI), url.scheme == "https", url.host != nil else {
            throw ConfigurationError(variable: variable, message: "token_uri '\(tokenURI)' is not an https URL")
        }
    }
}

public struct PushNotifierConfiguration: Sendable {
    public var amqp: AMQPURL
    public var database: PostgresConfiguration
    public var authSecret: String
    public var apns: APNsCredentials?
    public var apnsURL: String
    public var apnsSandboxURL: String
    public var fcm: FCMCredentials?
    public var fcmURL: String
    /// An extra trusted CA (PEM file), beside the system's.
    public var caFile: String?
    /// Notifications being pushed at once (the notification queue's prefetch).
    public var concurrency: Int
    /// How long pushes other than rings are retried after the change.
    public var retryWindow: TimeInterval
    /// How long one provider request may take.
    public var requestTimeout: Duration
    public var workers: Int
    public var instanceName: String
    public var httpHost: String
    public var httpPort: Int

    public init(environment: Environment = Environment()) throws {
        amqp = try environment.amqpURL(account: "push-notifier")
        let databaseText = environment.string(
            "RINGING_PUSH_DATABASE_URL", default: "postgres://ringing:ringing@127.0.0.1:5432/ringing")
        do { database = try PostgresConfiguration(url: databaseText) } catch {
            throw ConfigurationError(variable: "RINGING_PUSH_DATABASE_URL", message: error.message)
        }
        authSecret = environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret)
        apns = try Self.apnsCredentials(environment)
        apnsURL = try Self.url(environment, "RINGING_APNS_URL", default: "https://api.push.apple.com")
        apnsSandboxURL = try Self.url(environment, "RINGING_APNS_SANDBOX_URL", default: "https://api.sandbox.push.apple.com")
        fcm = try Self.fcmCredentials(environment)
        fcmURL = try Self.url(environment, "RINGING_FCM_URL", default: "https://fcm.googleapis.com")
        let ca = environment.string("RINGING_PUSH_CA_FILE", default: "")
        caFile = ca.isEmpty ? nil : ca
        if let caFile {
            guard let text = try? String(contentsOfFile: caFile, encoding: .utf8), text.contains("-----BEGIN CERTIFICATE-----")
            else {
                throw ConfigurationError(
                    variable: "RINGING_PUSH_CA_FILE", message: "'\(caFile)' is not a readable PEM certificate file")
            }
        }
        concurrency = try environment.integer("RINGING_PUSH_CONCURRENCY", default: 256, in: 1...10_000)
        retryWindow = TimeInterval(try environment.integer("RINGING_PUSH_RETRY_WINDOW_S", default: 60, in: 1...86_400))
        requestTimeout = .seconds(try environment.integer("RINGING_PUSH_REQUEST_TIMEOUT_S", default: 10, in: 1...120))
        workers = try environment.integer("RINGING_PUSH_WORKERS", default: 2, in: 1...64)
        instanceName = environment.string("RINGING_INSTANCE", default: "push-notifier-\(getpid())")
        database.applicationName = instanceName
        httpHost = environment.string("RINGING_HTTP_HOST", default: "127.0.0.1")
        httpPort = try environment.integer("RINGING_HTTP_PORT", default: 8084, in: 0...65535)
    }

    /// A variable's text, or the file it names (PEM and JSON keys are usually files).
    static func inlineOrFile(_ environment: Environment, _ name: String) throws -> String? {
        let value = environment.string(name, default: "")
        if value.isEmpty { return nil }
        let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.hasPrefix("-----BEGIN") || trimmed.hasPrefix("{") { return value }
        guard let text = try? String(contentsOfFile: trimmed, encoding: .utf8) else {
            throw ConfigurationError(
                variable: name, message: "is neither the key itself nor a readable file ('\(trimmed.prefix(100))')")
        }
        return text
    }

    static func apnsCredentials(_ environment: Environment) throws -> APNsCredentials? {
        let key = try inlineOrFile(environment, "RINGING_APNS_KEY")
        let keyID = environment.string("RINGING_APNS_KEY_ID", default: "")
        let teamID = environment.string("RINGING_APNS_TEAM_ID", default: "")
        if key == nil && keyID.isEmpty && teamID.isEmpty { return nil }
        guard let key else {
            throw ConfigurationError(variable: "RINGING_APNS_KEY", message: "is not set, but RINGING_APNS_KEY_ID or _TEAM_ID is")
        }
        guard !keyID.isEmpty else {
            throw ConfigurationError(variable: "RINGING_APNS_KEY_ID", message: "is not set: the key id of the .p8 key is needed")
        }
        guard !teamID.isEmpty else {
            throw ConfigurationError(
                variable: "RINGING_APNS_TEAM_ID", message: "is not set: the Apple developer team id is needed")
        }
        do { _ = try ES256PrivateKey(pem: key) } catch {
            throw ConfigurationError(variable: "RINGING_APNS_KEY", message: "is not a P-256 private key in PEM (.p8): \(error)")
        }
        return APNsCredentials(keyPEM: key, keyID: keyID, teamID: teamID)
    }

    static func fcmCredentials(_ environment: Environment) throws -> FCMCredentials? {
        guard let json = try inlineOrFile(environment, "RINGING_FCM_CREDENTIALS") else { return nil }
        let credentials = try FCMCredentials(json: Data(json.utf8))
        do { _ = try Insecure.RSA.PrivateKey(pem: credentials.privateKeyPEM) } catch {
            throw ConfigurationError(
                variable: "RINGING_FCM_CREDENTIALS", message: "private_key is not an RSA private key in PEM: \(error)")
        }
        return credentials
    }

    static func url(_ environment: Environment, _ name: String, default fallback: String) throws -> String {
        let text = environment.string(name, default: fallback)
        guard let url = URL(string: text), url.scheme == "https", url.host != nil else {
            throw ConfigurationError(
                variable: name, message: "'\(text)' is not an https URL (the providers speak HTTP/2 over TLS)")
        }
        return text.hasSuffix("/") ? String(text.dropLast()) : text
    }
}

#if canImport(Glibc)
    import Glibc
#endif
