// The operations surface of a service: /healthz (alive), /readyz (broker and database
// connected, migrations done) and /metrics (Prometheus text), on a port of its own.
import Foundation
import Hummingbird
public import Logging
import Metrics
import PostgresClient
public import Prometheus
public import ServiceLifecycle

/// What /readyz reports: ready, and a line per dependency.
public struct Readiness: Sendable {
    public var ready: Bool
    public var checks: [(name: String, ok: Bool)]

    public init(checks: [(name: String, ok: Bool)]) {
        self.checks = checks
        ready = checks.allSatisfy(\.ok)
    }
}

public enum RingingMetrics {
    /// The process's Prometheus registry. The first use bootstraps swift-metrics with it, so
    /// touch it before creating any metric (the executables do so first thing).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [
            .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
            .seconds(5),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// The process's round trips to PostgreSQL (`DatabaseRoundTrips`), as Prometheus text: a
    /// counter kept by the database client itself, so it is read at each scrape.
    static func databaseRoundTrips() -> [UInt8] {
        Array(
            """
            # HELP \(DatabaseRoundTrips.metricName) Round trips to PostgreSQL: one per statement answered alone, per pipeline, per script.
            # TYPE \(DatabaseRoundTrips.metricName) counter
            \(DatabaseRoundTrips.metricName) \(DatabaseRoundTrips.total)

            """.utf8)
    }
}

/// Serves the operations endpoints until cancelled or gracefully shut down.
public struct OperationsServer: Service {
    public let host: String
    public let port: Int
    let readiness: @Sendable () async -> Readiness
    let logger: Logger

    public init(host: String, port: Int, logger: Logger, readiness: @escaping @Sendable () async -> Readiness) {
        self.host = host
        self.port = port
        self.logger = logger
        self.readiness = readiness
    }

    public func run() async throws {
        let router = Router()
        router.get("healthz") { _, _ -> String in "ok\n" }
        router.get("readyz") { [readiness] _, _ -> Response in
            let report = await readiness()
            let text = report.checks.map { "\($0.name): \($0.ok ? "ok" : "not ready")" }.joined(separator: "\n") + "\n"
            return Response(
                status: report.ready ? .ok : .serviceUnavailable, headers: [.contentType: "text/plain; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("metrics") { _, _ -> Response in
            var text = RingingMetrics.registry.emitToBuffer()
            text += RingingMetrics.databaseRoundTrips()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: text)))
        }
        let app = Application(router: router, configuration: .init(address: .hostname(host, port: port)), logger: logger)
        try await app.run()
    }

    /// Runs the server; a failure (the port is taken) is logged and the service goes on
    /// without its endpoints rather than stopping.
    public func runLoggingFailure() async {
        do { try await run() } catch {
            logger.error("the operations endpoints are down", metadata: ["address": "\(host):\(port)", "error": "\(error)"])
        }
    }
}
