// One consumer per instance unless configured otherwise: batches then grow with the load
// (issue 17); the variables still set any number within their range.
import CallControl
import RingingService
import Testing
import TokenService

@Suite struct WorkerDefaultsTests {
    @Test func callControlRunsOneWorkerUnlessConfigured() throws {
        #expect(try CallControlConfiguration(environment: Environment([:])).workers == 1)
        let four = try CallControlConfiguration(environment: Environment(["RINGING_CALL_CONTROL_WORKERS": "4"]))
        #expect(four.workers == 4)
        #expect(throws: (any Error).self) {
            try CallControlConfiguration(environment: Environment(["RINGING_CALL_CONTROL_WORKERS": "0"]))
        }
    }

    @Test func theTokenServiceRunsOneWorkerUnlessConfigured() throws {
        #expect(try TokenServiceConfiguration(environment: Environment([:])).workers == 1)
        #expect(try TokenServiceConfiguration(environment: Environment(["RINGING_TOKEN_WORKERS": "3"])).workers == 3)
    }
}
