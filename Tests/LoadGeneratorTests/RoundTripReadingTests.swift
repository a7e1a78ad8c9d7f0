// The benchmark reads the services' round trips to the database from their /metrics text.
import LoadGenerator
import Testing

@Suite struct RoundTripReadingTests {
    @Test func theCounterIsReadFromPrometheusText() {
        let text = """
            # HELP ringing_database_round_trips_total Round trips to PostgreSQL.
            # TYPE ringing_database_round_trips_total counter
            ringing_database_round_trips_total_other 9
            ringing_database_round_trips_total 1234

            """
        #expect(RoundTripReading.value(in: text) == 1234)
        #expect(RoundTripReading.value(in: "ringing_requests_total 5\n") == nil, "a build that does not report it")
    }
}
