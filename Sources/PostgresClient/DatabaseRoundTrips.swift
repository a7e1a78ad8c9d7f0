// Round trips to PostgreSQL made by this process: what statements per request cannot show
// once several statements share one (pipelines, BEGIN sent with the next statement).
import Synchronization

/// Counts this process's round trips to the server, every connection together: a statement
/// sent and answered alone is one, a pipeline is one (statements deferred with `queryLater`
/// go with the next), and so is a script, a statement prepared, or a plan dropped. The
/// services report the total in /metrics as `ringing_database_round_trips_total`.
public enum DatabaseRoundTrips {
    /// The name of the count in the services' /metrics, where the benchmark reads it.
    public static let metricName = "ringing_database_round_trips_total"

    private static let counter = Atomic<Int>(0)

    /// Round trips made so far by this process.
    public static var total: Int { counter.load(ordering: .relaxed) }

    static func count() { counter.wrappingAdd(1, ordering: .relaxed) }
}
