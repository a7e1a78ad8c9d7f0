// Call-control's sessions plan index lookups only, unless the database URL says otherwise
// (issue 17: a sequential scan of the outbox, planned while a vacuum had just emptied it).
import CallControl
import RingingService
import Testing

@Suite struct CallControlDatabaseSettingsTests {
    private func configuration(_ url: String) throws -> CallControlConfiguration {
        try CallControlConfiguration(environment: Environment(["RINGING_DATABASE_URL": url]))
    }

    @Test func sequentialScansAreOffUnlessTheURLTurnsThemOn() throws {
        #expect(try configuration("postgres://u@h/ringing").database.sequentialScans == false)
        #expect(try configuration("postgres://u@h/ringing?enable_seqscan=on").database.sequentialScans == true)
    }
}
