// Two bench runs side by side (`scripts/bench --compare REV`): the same phases against an
// earlier revision's services and against this tree's, with throughput, the CPU each process
// spent per request, and the latencies that have targets.
public import Foundation

public struct BenchComparison: Sendable {
    public var baselineLabel: String
    public var baseline: BenchReport
    public var candidateLabel: String
    public var candidate: BenchReport

    public init(baselineLabel: String, baseline: BenchReport, candidateLabel: String, candidate: BenchReport) {
        self.baselineLabel = baselineLabel
        self.baseline = baseline
        self.candidateLabel = candidateLabel
        self.candidate = candidate
    }

    /// Reads a report written with `--json`.
    public static func report(at url: URL) throws -> BenchReport {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(BenchReport.self, from: Data(contentsOf: url))
    }

    /// Phases of both runs, by name, in the candidate's order (the floors first).
    var phases: [(name: String, baseline: PhaseResult, candidate: PhaseResult)] {
        func all(_ report: BenchReport) -> [PhaseResult] {
            (report.floor.map { [$0] } ?? []) + (report.physicalFloor.map { [$0] } ?? []) + report.phases
        }
        let before = Dictionary(all(baseline).map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        return all(candidate).compactMap { phase in before[phase.name].map { (phase.name, $0, phase) } }
    }

    /// CPU per request across the machine (every measured process), in ms.
    static func totalCPU(_ phase: PhaseResult) -> Double {
        phase.figures.cpu.values.reduce(0) { $0 + $1.millisecondsPerRequest }
    }

    public var text: String {
        var lines = ["\(baselineLabel) → \(candidateLabel), same machine, one run after the other", ""]
        lines.append(
            pad("phase", 16) + lpad("req/s", 18) + lpad("change", 9) + lpad("flows/s", 18) + lpad("CPU ms/req", 16)
                + lpad("stmts/req", 16) + lpad("trips/req", 16) + "  errors")
        for (name, before, after) in phases {
            let ratio =
                before.figures.requestsPerSecond > 0 ? after.figures.requestsPerSecond / before.figures.requestsPerSecond : 0
            let errors = before.figures.errors.values.reduce(0, +) + after.figures.errors.values.reduce(0, +)
            let statements = [before, after].map { phase in
                phase.figures.statementsPerRequest.map { String(format: "%.2f", $0) } ?? "-"
            }
            let roundTrips = [before, after].map { phase in
                phase.figures.roundTripsPerRequest.map { String(format: "%.2f", $0) } ?? "-"
            }
            lines.append(
                pad(name, 16)
                    + lpad(String(format: "%.0f → %.0f", before.figures.requestsPerSecond, after.figures.requestsPerSecond), 18)
                    + lpad(String(format: "%.2f×", ratio), 9)
                    + lpad(String(format: "%.1f → %.1f", before.figures.flowsPerSecond, after.figures.flowsPerSecond), 18)
                    + lpad(String(format: "%.2f → %.2f", Self.totalCPU(before), Self.totalCPU(after)), 16)
                    + lpad("\(statements[0]) → \(statements[1])", 16) + lpad("\(roundTrips[0]) → \(roundTrips[1])", 16) + "  "
                    + (errors == 0 ? "none" : "\(errors)"))
        }
        lines.append("")
        lines.append("CPU per request by process, ms (\(baselineLabel) → \(candidateLabel)):")
        for (name, before, after) in phases where !after.figures.cpu.isEmpty {
            let processes = Set(before.figures.cpu.keys).union(after.figures.cpu.keys).sorted {
                (after.figures.cpu[$0]?.millisecondsPerRequest ?? 0) > (after.figures.cpu[$1]?.millisecondsPerRequest ?? 0)
            }
            let parts = processes.map { process in
                let old = before.figures.cpu[process].map { String(format: "%.2f", $0.millisecondsPerRequest) } ?? "-"
                let new = after.figures.cpu[process].map { String(format: "%.2f", $0.millisecondsPerRequest) } ?? "-"
                return "\(process) \(old) → \(new)"
            }
            lines.append("  " + pad(name, 16) + parts.joined(separator: ", "))
        }
        lines.append("")
        lines.append(pad("latency p50 / p99 (ms)", 36) + lpad(baselineLabel, 20) + lpad(candidateLabel, 20))
        for (name, before, after) in phases {
            for measure in [Measure.timeToRing, .timeoutLateness] {
                guard let old = before.figures.latency[measure.rawValue], let new = after.figures.latency[measure.rawValue]
                else { continue }
                lines.append(
                    pad("\(name) \(measure.rawValue)", 36) + lpad("\(number(old.p50)) / \(number(old.p99))", 20)
                        + lpad("\(number(new.p50)) / \(number(new.p99))", 20))
            }
        }
        return lines.joined(separator: "\n")
    }
}
