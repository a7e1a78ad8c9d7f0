// Round trips the services made to PostgreSQL, read from their /metrics at the start and the
// end of a phase's window. Statements per request stopped being round trips per request when
// call-control began to send several statements at once (pipelines, BEGIN with the next one).
import Foundation
import Logging
import PostgresClient

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Sums `ringing_database_round_trips_total` over the services' /metrics endpoints. A service
/// that does not report it (a build from before it existed) or cannot be reached makes the
/// count nil, logged once per reading.
final class RoundTripCounter: Sendable {
    let endpoints: [URL]
    private let logger: Logger

    init(endpoints: [URL], logger: Logger) {
        self.endpoints = endpoints
        self.logger = logger
    }

    /// Round trips made so far by the services together.
    func count() async -> Int? {
        var total = 0
        for endpoint in endpoints {
            do {
                var request = URLRequest(url: endpoint)
                request.timeoutInterval = 5
                let (body, response) = try await URLSession.shared.data(for: request)
                guard (response as? HTTPURLResponse)?.statusCode == 200 else {
                    throw RoundTripCounterError.status((response as? HTTPURLResponse)?.statusCode ?? 0)
                }
                guard let value = RoundTripReading.value(in: String(decoding: body, as: UTF8.self)) else {
                    logger.notice(
                        "round trips per request not measured: a service does not report \(RoundTripReading.metric) (a build from before it)",
                        metadata: ["endpoint": "\(endpoint)"])
                    return nil
                }
                total += value
            } catch {
                logger.notice(
                    "round trips per request not measured: a service's metrics cannot be read",
                    metadata: ["endpoint": "\(endpoint)", "error": "\(error)"])
                return nil
            }
        }
        return total
    }

}

/// Reads the services' round-trip counter from their /metrics text.
public enum RoundTripReading {
    public static let metric = DatabaseRoundTrips.metricName

    /// The counter's value in Prometheus text, or nil when it is not there.
    public static func value(in text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(metric + " ") {
            return Int(line.dropFirst(metric.count + 1).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

enum RoundTripCounterError: Error, CustomStringConvertible {
    case status(Int)
    var description: String {
        switch self {
        case .status(let code): "the endpoint answered HTTP \(code)"
        }
    }
}
