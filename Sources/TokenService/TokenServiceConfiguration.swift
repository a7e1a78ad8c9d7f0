// Settings of the token service, read from the environment (DESIGN §5–6).
public import AMQPClient
public import CallTokens
import Foundation
public import PostgresClient
import RingingAuth
public import RingingService

public struct TokenServiceConfiguration: Sendable {
    /// Used when `RINGING_TOKEN_KEY` is not set, so that the local stack works; every
    /// checkout has it, so it must never sign production tokens.
    public static let developmentKey = "dev-1:cmluZ2luZy1kZXZlbG9wbWVudC1rZXktZG8tbm90LXU"

    public var amqp: AMQPURL
    public var database: PostgresConfiguration
    public var authSecret: String
    public var signingKey: CallTokenKey
    public var previousKeys: [CallTokenKey]
    public var lifetime: Duration
    public var issuer: String
    public var audience: String
    /// Consumers per instance; one by default, for the reason call-control's are.
    public var workers: Int
    public var prefetch: Int
    public var instanceName: String
    /// Where /healthz, /readyz and /metrics are served; port 0 turns them off.
    public var httpHost: String
    public var httpPort: Int

    public init(environment: Environment = Environment()) throws {
        amqp = try environment.amqpURL(account: "token-service")
        // A read-only role: the token service never writes.
        let databaseText = environment.string(
            "RINGING_TOKEN_DATABASE_URL", default: "postgres://ringing_reader:ringing_reader@127.0.0.1:5432/ringing")
        do { database = try PostgresConfiguration(url: databaseText) } catch {
            throw ConfigurationError(variable: "RINGING_TOKEN_DATABASE_URL", message: error.message)
        }
        authSecret = environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret)
        do {
            signingKey = try CallTokenKey(environment.string("RINGING_TOKEN_KEY", default: Self.developmentKey), private: true)
        } catch {
            throw ConfigurationError(variable: "RINGING_TOKEN_KEY", message: error.description)
        }
        do {
            previousKeys = try environment.string("RINGING_TOKEN_PREVIOUS_KEYS", default: "").split(separator: ",")
                .map { try CallTokenKey($0.trimmingCharacters(in: .whitespaces), private: false) }
        } catch let error as CallTokenKey.ParseError {
            throw ConfigurationError(variable: "RINGING_TOKEN_PREVIOUS_KEYS", message: error.description)
        }
        lifetime = .seconds(try environment.integer("RINGING_TOKEN_TTL_S", default: 600, in: 30...86_400))
        issuer = environment.string("RINGING_TOKEN_ISSUER", default: "ringing")
        audience = environment.string("RINGING_TOKEN_AUDIENCE", default: "ringing-media")
        workers = try environment.integer("RINGING_TOKEN_WORKERS", default: 1, in: 1...64)
        prefetch = try environment.integer("RINGING_PREFETCH", default: 64, in: 1...10_000)
        instanceName = environment.string("RINGING_INSTANCE", default: "token-service-\(getpid())")
        database.applicationName = instanceName
        httpHost = environment.string("RINGING_HTTP_HOST", default: "127.0.0.1")
        httpPort = try environment.integer("RINGING_HTTP_PORT", default: 8082, in: 0...65535)
    }

    public var usesDevelopmentKey: Bool { signingKey.kid == "dev-1" }
}

#if canImport(Glibc)
    import Glibc
#endif
