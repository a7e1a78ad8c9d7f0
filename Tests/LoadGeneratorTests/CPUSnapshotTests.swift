// A process that ends during a phase must neither take its earlier CPU off the phase's figure
// nor lose what it used in the window: CPU is counted per process id, and PostgreSQL's ended
// backends through the postmaster's children time.
import Foundation
import Testing

@testable import LoadGenerator

@Suite struct CPUSnapshotTests {
    typealias Process = CPUSampler.Snapshot.Process

    @Test func endedProcessesCountThroughTheirParentOrDropOut() {
        let start = CPUSampler.Snapshot(processes: [
            100: Process(name: "postgresql", seconds: 1, children: 100), 101: Process(name: "postgresql", seconds: 10),
            102: Process(name: "postgresql", seconds: 40), 201: Process(name: "rabbitmq", seconds: 5),
            202: Process(name: "rabbitmq", seconds: 3), 301: Process(name: "call-control", seconds: 1),
        ])
        // 102 used one more second and ended; the postmaster (100) waited for it. 103 started.
        // 202 ended without a parent that counts it. 301's id now belongs to another process.
        let end = CPUSampler.Snapshot(processes: [
            100: Process(name: "postgresql", seconds: 1.5, children: 141), 101: Process(name: "postgresql", seconds: 12),
            103: Process(name: "postgresql", seconds: 0.5), 201: Process(name: "rabbitmq", seconds: 6),
            301: Process(name: "token-service", seconds: 0.25),
        ])
        let usage = CPUSampler.usage(from: start, to: end, seconds: 10, requests: 1000)
        // 0.5 (postmaster) + 2 (101) + 0.5 (103) + 1 (102, through the postmaster)
        #expect(usage["postgresql"]?.millisecondsPerRequest == 4)
        #expect(usage["rabbitmq"]?.millisecondsPerRequest == 1)
        #expect(usage["token-service"]?.millisecondsPerRequest == 0.25)
        #expect(usage["call-control"] == nil)
    }
}
