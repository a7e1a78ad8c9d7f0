// call-control reports its round trips to the database in /metrics, where the benchmark
// reads them (round trips per request, issue 17).
import Foundation
import LoadGenerator
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite struct RoundTripMetricTests {
    @Test func metricsCountTheRoundTripsOfACall() async throws {
        let port = Int.random(in: 20_000...29_999)
        try await Scenario.run(httpPort: port) { s in
            func roundTrips() async throws -> Int? {
                RoundTripReading.value(in: try await OperationsTests.get(port, "metrics").body)
            }
            let before = try #require(try await roundTrips(), "ringing_database_round_trips_total is missing from /metrics")
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            _ = try await s.call(alice, bob, timeout: 5)
            let after = try #require(try await roundTrips())
            #expect(after > before, "a call took no round trip to the database")
        }
    }
}
