// The ring timer wakes for an announced deadline only when it is earlier than the wake-up the
// timer planned, or while the timer is awake (issue 17).
import Foundation
import RingingContract
import Testing

@testable import CallControl

@Suite struct DeadlineGateTests {
    @Test func anAnnouncementWakesTheSleepingTimerOnlyForAnEarlierDeadline() {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var gate = DeadlineGate()
        #expect(gate.wakes(for: now + 60), "a timer that has not slept yet is awake")
        gate.willWake(at: now + 5)
        #expect(gate.wakes(for: now + 1))
        #expect(gate.wakes(for: now + 4.999))
        #expect(!gate.wakes(for: now + 5))
        #expect(!gate.wakes(for: now + 45))
        #expect(gate.wakes(for: nil), "an announcement that cannot be read wakes the timer")
        gate.awake()
        #expect(gate.wakes(for: now + 45), "the round may have read the deadlines before this one committed")
    }

    @Test func theTriggersPayloadReadsToTheMicrosecond() throws {
        // notify_ring_deadline(): to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        let deadline = try #require(WireTime.parse("2027-01-15T13:00:00.123456Z"))
        #expect(abs(deadline.timeIntervalSince1970 - 1_800_018_000.123456) < 0.000_01)
        var gate = DeadlineGate()
        gate.willWake(at: Date(timeIntervalSince1970: 1_800_018_000.123457))
        #expect(gate.wakes(for: deadline))
    }
}
