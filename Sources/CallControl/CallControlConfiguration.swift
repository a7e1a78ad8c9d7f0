public import AMQPClient
public import CallRules
// Settings of the call-control service, read from the environment (DESIGN §6, §10).
import Foundation
public import PostgresClient
import RingingAuth
public import RingingService

public struct CallControlConfiguration: Sendable {
    public var amqp: AMQPURL
    public var database: PostgresConfiguration
    public var authSecret: String
    /// Consumers per instance, each with its own channel and database connection. One by
    /// default: while its batch is in the database the next requests gather, so batches grow
    /// with the load and a request costs less the busier the instance is. Several workers
    /// split the load into more, smaller batches, each costing nearly as much as a full one
    /// (issue 17: on the benchmark's 2-core machine one worker gave 1.25× the requests/s at
    /// 0.73× the CPU per request, and half the time to ring at 1,000 requests/s). More only
    /// help where round trips to a distant database, not CPU, limit an instance. With one,
    /// a batch being retried (the database away, a deadlock) holds up the instance's intake
    /// until it commits or its deliveries go back to the broker; other instances go on.
    public var workers: Int
    /// Unacknowledged deliveries per worker.
    public var prefetch: Int
    /// Requests applied in one transaction at most.
    public var batchSize: Int
    /// How long an outbox message may wait for its own publisher before any instance
    /// republishes it.
    public var outboxGrace: Duration
    /// Shown in logs and in the broker's connection list.
    public var instanceName: String
    /// Where /healthz, /readyz and /metrics are served; port 0 turns them off.
    public var httpHost: String
    public var httpPort: Int
    /// DESIGN §10: a participant silent this long leaves (`RINGING_HEARTBEAT_TIMEOUT_S`,
    /// default 90 s); a call ends this long after it was answered (`RINGING_MAX_CALL_S`,
    /// default 4 h). Every instance must run with the same values.
    public var liveness: CallRules.Liveness

    public init(environment: Environment = Environment()) throws {
        amqp = try environment.amqpURL(account: "call-control")
        database = try environment.database()
        authSecret = environment.string("RINGING_AUTH_SECRET", default: AuthTokens.developmentSecret)
        workers = try environment.integer("RINGING_CALL_CONTROL_WORKERS", default: 1, in: 1...64)
        prefetch = try environment.integer("RINGING_PREFETCH", default: 64, in: 1...10_000)
        batchSize = try environment.integer("RINGING_BATCH_SIZE", default: 32, in: 1...1_000)
        outboxGrace = .seconds(try environment.integer("RINGING_OUTBOX_GRACE_S", default: 5, in: 1...3600))
        instanceName = environment.string("RINGING_INSTANCE", default: "call-control-\(ProcessID.current)")
        database.applicationName = instanceName
        // Index lookups only, unless the URL says otherwise (PostgresConfiguration.sequentialScans).
        database.sequentialScans = database.sequentialScans ?? false
        httpHost = environment.string("RINGING_HTTP_HOST", default: "127.0.0.1")
        httpPort = try environment.integer("RINGING_HTTP_PORT", default: 8081, in: 0...65535)
        liveness = CallRules.Liveness(
            heartbeatTimeout: TimeInterval(try environment.integer("RINGING_HEARTBEAT_TIMEOUT_S", default: 90, in: 1...86_400)),
            maximumDuration: TimeInterval(try environment.integer("RINGING_MAX_CALL_S", default: 4 * 3600, in: 1...2_592_000)))
    }

    public var usesDevelopmentSecret: Bool { authSecret == AuthTokens.developmentSecret }
}

enum ProcessID {
    static var current: Int32 { getpid() }
}

#if canImport(Glibc)
    import Glibc
#endif
