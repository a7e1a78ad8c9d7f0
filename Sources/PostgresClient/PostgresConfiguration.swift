// Connection settings, parsed from a postgres:// URL.
import Foundation

/// Where and how to connect. Durations are bounds: nothing waits longer.
public struct PostgresConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    public var port: Int = 5432
    public var user: String = "postgres"
    public var password: String?
    public var database: String = "postgres"
    /// Extra libpq connection parameters from the URL query (`sslmode`, …).
    public var parameters: [String: String] = [:]
    public var applicationName: String = "ringing"
    public var connectTimeout: Duration = .seconds(5)
    /// Server-side `statement_timeout`; the client gives up `clientGrace` later and drops
    /// the connection (a peer that went silent).
    public var statementTimeout: Duration = .seconds(30)
    public var clientGrace: Duration = .seconds(5)
    /// Whether each connection prepares the statements it runs and executes them by name
    /// afterwards (parsed and planned once). Turn off with `?prepared_statements=false` behind
    /// a pooler that cannot keep named statements (PgBouncer in transaction mode before 1.21).
    public var preparesStatements = true
    /// The session's `plan_cache_mode` (`?plan_cache_mode=`). PostgreSQL's default, `auto`,
    /// plans statements that look rows up by an array of keys afresh on every execution (a
    /// plan for an array of known length always looks cheaper than the generic one): about an
    /// eighth of the server's CPU under load. `force_generic_plan` saves that on a database
    /// with settled statistics, but a generic plan made while the tables were young (a new
    /// database, before its first autoanalyze) can be a sequential scan kept for minutes: it
    /// halved throughput in the benchmark (BENCHMARKS.md). Hence `auto` by default.
    public var planCacheMode: PlanCacheMode = .auto

    /// The session's `enable_seqscan` (`?enable_seqscan=on|off`); nil leaves the server's
    /// setting. Call-control turns it off unless the URL says otherwise: every statement it
    /// runs is an index lookup, and PostgreSQL's plan for deleting published rows from the
    /// outbox, made just after a vacuum had emptied that queue-like table, was a sequential
    /// scan, reused for every batch over all the pages the table grew to until the next vacuum
    /// (850 buffers per batch write, a third of the database's time, in the benchmark). Off
    /// only makes other plans preferred; a statement with no index to use still scans, at a
    /// cost so high that it would be JIT-compiled on every execution (170 ms each), so off
    /// also turns `jit` off, which short statements never profit from.
    public var sequentialScans: Bool?

    public enum PlanCacheMode: String, Sendable, CaseIterable {
        case auto
        case forceGenericPlan = "force_generic_plan"
        case forceCustomPlan = "force_custom_plan"
    }

    public init() {}

    /// Parses `postgres://user:password@host:port/database?param=value` (`postgresql://` too).
    public init(url string: String) throws(PostgresError) {
        self.init()
        guard let components = URLComponents(string: string), let scheme = components.scheme?.lowercased() else {
            throw PostgresError(.invalidURL, "'\(string)' is not a URL")
        }
        guard scheme == "postgres" || scheme == "postgresql" else {
            throw PostgresError(.invalidURL, "scheme '\(scheme)' is not supported; expected postgres://")
        }
        if let host = components.percentEncodedHost, !host.isEmpty {
            self.host = host.removingPercentEncoding ?? host
            if self.host.hasPrefix("["), self.host.hasSuffix("]") { self.host = String(self.host.dropFirst().dropLast()) }
        }
        if let port = components.port {
            guard (1...65535).contains(port) else { throw PostgresError(.invalidURL, "port \(port) is out of range 1...65535") }
            self.port = port
        }
        if let user = components.percentEncodedUser { self.user = user.removingPercentEncoding ?? user }
        if let password = components.percentEncodedPassword { self.password = password.removingPercentEncoding ?? password }
        let path = components.percentEncodedPath
        if path.count > 1 {
            database = String(path.dropFirst()).removingPercentEncoding ?? String(path.dropFirst())
        }
        for item in components.queryItems ?? [] {
            guard let value = item.value else { throw PostgresError(.invalidURL, "query parameter '\(item.name)' has no value") }
            switch item.name {
            case "application_name": applicationName = value
            case "connect_timeout":
                guard let seconds = Int(value), seconds > 0 else {
                    throw PostgresError(.invalidURL, "query parameter 'connect_timeout' must be a positive number of seconds")
                }
                connectTimeout = .seconds(seconds)
            case "prepared_statements":
                guard let flag = Bool(value) else {
                    throw PostgresError(
                        .invalidURL, "query parameter 'prepared_statements' must be true or false, not '\(value)'")
                }
                preparesStatements = flag
            case "plan_cache_mode":
                guard let mode = PlanCacheMode(rawValue: value) else {
                    let known = PlanCacheMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw PostgresError(
                        .invalidURL, "query parameter 'plan_cache_mode' must be one of \(known), not '\(value)'")
                }
                planCacheMode = mode
            case "enable_seqscan":
                switch value.lowercased() {
                case "on", "true": sequentialScans = true
                case "off", "false": sequentialScans = false
                default:
                    throw PostgresError(.invalidURL, "query parameter 'enable_seqscan' must be on or off, not '\(value)'")
                }
            default: parameters[item.name] = value
            }
        }
    }

    /// The URL without the password, for logs.
    public var redactedURL: String { "postgres://\(user)@\(host):\(port)/\(database)" }

    /// libpq keyword/value pairs. Keepalives notice a dead server even on an idle connection;
    /// the session runs in UTC with ISO dates so that timestamps parse the same everywhere.
    var libpqParameters: [(String, String)] {
        var result: [(String, String)] = [
            ("host", host), ("port", String(port)), ("user", user), ("dbname", database),
            ("application_name", applicationName),
            ("connect_timeout", String(max(1, connectTimeout.components.seconds))),
            ("keepalives", "1"), ("keepalives_idle", "5"), ("keepalives_interval", "2"), ("keepalives_count", "3"),
            (
                "options",
                "-c statement_timeout=\(statementTimeout.milliseconds) -c TimeZone=UTC -c DateStyle=ISO"
                    + " -c plan_cache_mode=\(planCacheMode.rawValue)"
                    + (sequentialScans.map { $0 ? " -c enable_seqscan=on" : " -c enable_seqscan=off -c jit=off" } ?? "")
            ),
        ]
        if let password { result.append(("password", password)) }
        if parameters["sslmode"] == nil { result.append(("sslmode", "prefer")) }
        result.append(contentsOf: parameters.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        return result
    }
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}
