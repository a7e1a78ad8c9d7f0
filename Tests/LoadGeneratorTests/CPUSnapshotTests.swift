// A process that ends during a phase (a database connection closing beside the bench) must not
// take its earlier CPU off the phase's figure: CPU is counted per process id.
import Foundation
import Testing

@testable import LoadGenerator

@Suite struct CPUSnapshotTests {
    @Test func aProcessThatEndsMeanwhileDropsOutInsteadOfCancellingTheOthers() {
        let start = CPUSampler.Snapshot(processes: [
            101: ("postgresql", 10), 102: ("postgresql", 40), 201: ("rabbitmq", 5), 301: ("call-control", 1),
        ])
        // 102 ended; 103 started; 301's id now belongs to another kind of process.
        let end = CPUSampler.Snapshot(processes: [
            101: ("postgresql", 12), 103: ("postgresql", 0.5), 201: ("rabbitmq", 6), 301: ("token-service", 0.25),
        ])
        let usage = CPUSampler.usage(from: start, to: end, seconds: 10, requests: 1000)
        #expect(usage["postgresql"]?.millisecondsPerRequest == 2.5)
        #expect(usage["rabbitmq"]?.millisecondsPerRequest == 1)
        #expect(usage["token-service"]?.millisecondsPerRequest == 0.25)
        #expect(usage["call-control"] == nil)
    }
}
