// The benchmark's report: the machine, the settings, every phase's figures with the floor
// beside them, and the targets; as JSON and as text.
public import Foundation

public struct MachineInfo: Codable, Sendable {
    public var cpu: String
    public var cores: Int
    public var memoryGiB: Double
    public var os: String
    public var kernel: String
    public var rabbitmq: String
    public var postgresql: String

    enum CodingKeys: String, CodingKey {
        case cpu, cores
        case memoryGiB = "memory_gib"
        case os, kernel, rabbitmq, postgresql
    }

    static func current() -> MachineInfo {
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let cpu =
            cpuinfo.split(separator: "\n").first { $0.hasPrefix("model name") }?.split(separator: ":", maxSplits: 1).last?
            .trimmingCharacters(in: .whitespaces) ?? "unknown"
        let release = (try? String(contentsOfFile: "/etc/os-release", encoding: .utf8)) ?? ""
        let os =
            release.split(separator: "\n").first { $0.hasPrefix("PRETTY_NAME=") }.map {
                $0.dropFirst("PRETTY_NAME=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            } ?? "unknown"
        let kernel =
            (try? String(contentsOfFile: "/proc/sys/kernel/osrelease", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines) ?? "unknown"
        return MachineInfo(
            cpu: cpu, cores: ProcessInfo.processInfo.activeProcessorCount,
            memoryGiB: (Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824 * 10).rounded() / 10, os: os,
            kernel: kernel, rabbitmq: packageVersion("rabbitmq-server"), postgresql: packageVersion("postgresql"))
    }

    private static func packageVersion(_ package: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg-query")
        process.arguments = ["-W", "-f=${Version}", package]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return "unknown" }
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        return process.terminationStatus == 0 && !text.isEmpty ? text : "unknown"
    }
}

public struct TargetCheck: Codable, Sendable {
    public var name: String
    public var target: String
    public var value: String
    public var met: Bool
}

public struct BenchReport: Codable, Sendable {
    public var generatedAt: Date = Date()
    public var command: String
    public var machine: MachineInfo
    public var configuration: BenchConfiguration
    public var floor: PhaseResult?
    /// The physical floor: the same messages, the minimum set-based writes (PhysicalFloor).
    public var physicalFloor: PhaseResult?
    public var phases: [PhaseResult]
    public var ringingToFloorRatio: Double?
    public var ringingToPhysicalFloorRatio: Double?
    public var targets: [TargetCheck] = []

    enum CodingKeys: String, CodingKey {
        case generatedAt = "generated_at"
        case command, machine, configuration, floor, phases
        case physicalFloor = "physical_floor"
        case ringingToFloorRatio = "ringing_to_floor_ratio"
        case ringingToPhysicalFloorRatio = "ringing_to_physical_floor_ratio"
        case targets
    }

    init(
        command: String, machine: MachineInfo, configuration: BenchConfiguration, floor: PhaseResult?,
        physicalFloor: PhaseResult? = nil, phases: [PhaseResult]
    ) {
        self.command = command
        self.machine = machine
        self.configuration = configuration
        self.floor = floor
        self.physicalFloor = physicalFloor
        self.phases = phases
        let max = phases.first { $0.load == "max" }
        // The latency targets are set at 1000 req/s offered; else the highest rate run.
        let rated =
            phases.first { $0.load == "rate" && $0.offeredRequestsPerSecond == 1000 }
            ?? phases.filter { $0.load == "rate" }.max { ($0.offeredRequestsPerSecond ?? 0) < ($1.offeredRequestsPerSecond ?? 0) }
        if let floor, let max, floor.figures.requestsPerSecond > 0 {
            ringingToFloorRatio = (max.figures.requestsPerSecond / floor.figures.requestsPerSecond * 1000).rounded() / 1000
        }
        if let physicalFloor, let max, physicalFloor.figures.requestsPerSecond > 0 {
            ringingToPhysicalFloorRatio =
                (max.figures.requestsPerSecond / physicalFloor.figures.requestsPerSecond * 1000).rounded() / 1000
        }
        // Against the physical floor when it ran (issue 17's targets); a report without it (an
        // older one, or `--phases max,rate`) is judged by the earlier ones.
        if let physicalFloor {
            if let max, let ratio = ringingToPhysicalFloorRatio {
                targets.append(Self.share(max, of: physicalFloor, "the physical floor's", ratio: ratio, atLeast: 0.6))
            }
            if let max, !max.figures.cpu.isEmpty {
                let cpu = max.figures.cpu.values.reduce(0) { $0 + $1.millisecondsPerRequest }
                targets.append(
                    TargetCheck(
                        name: "CPU per request across the machine (\(max.name))", target: "≤ 1.1 ms",
                        value: String(format: "%.2f ms", cpu), met: cpu <= 1.1))
            }
            if let rated { targets += Self.timeToRing(rated, p50: 10, p99: 40) }
        } else {
            if let floor, let max, let ratio = ringingToFloorRatio {
                targets.append(Self.share(max, of: floor, "the floor's", ratio: ratio, atLeast: 0.5))
            }
            if let max {
                let rps = max.figures.requestsPerSecond
                let failed = max.figures.errors.values.reduce(0, +)
                targets.append(
                    TargetCheck(
                        name: "Ringing requests/s sustained (\(max.name))", target: "≥ 3000, no errors",
                        value: String(format: "%.0f, %d errors", rps, failed), met: rps >= 3000 && failed == 0))
            }
            if let rated { targets += Self.timeToRing(rated, p50: 5, p99: 20) }
        }
        let lateness = phases.compactMap { phase in
            phase.figures.latency[Measure.timeoutLateness.rawValue].map { (phase.name, $0) }
        }
        if let worst = lateness.max(by: { $0.1.p99 < $1.1.p99 }) {
            targets.append(
                TargetCheck(
                    name: "Timeout lateness p99 (worst phase: \(worst.0))", target: "≤ 250 ms",
                    value: String(format: "%.1f ms over %d timeouts", worst.1.p99, worst.1.count), met: worst.1.p99 <= 250))
        }
    }

    private static func share(_ ringing: PhaseResult, of floor: PhaseResult, _ label: String, ratio: Double, atLeast: Double)
        -> TargetCheck
    {
        TargetCheck(
            name: "Ringing requests/s as a share of \(label)", target: "≥ \(Int(atLeast * 100))%",
            value: String(
                format: "%.0f%% (%.0f of %.0f)", ratio * 100, ringing.figures.requestsPerSecond, floor.figures.requestsPerSecond),
            met: ratio >= atLeast)
    }

    private static func timeToRing(_ rated: PhaseResult, p50: Double, p99: Double) -> [TargetCheck] {
        let ring = rated.figures.latency[Measure.timeToRing.rawValue]
        let rate = Int(rated.offeredRequestsPerSecond ?? 0)
        return [
            TargetCheck(
                name: "Time-to-ring p50 at \(rate) req/s offered", target: "≤ \(Int(p50)) ms",
                value: ring.map { String(format: "%.2f ms", $0.p50) } ?? "not measured", met: (ring?.p50 ?? .infinity) <= p50),
            TargetCheck(
                name: "Time-to-ring p99 at \(rate) req/s offered", target: "≤ \(Int(p99)) ms",
                value: ring.map { String(format: "%.2f ms", $0.p99) } ?? "not measured", met: (ring?.p99 ?? .infinity) <= p99),
        ]
    }

    public var json: Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        return (try? encoder.encode(self)) ?? Data()
    }

    public var text: String {
        var lines: [String] = []
        lines.append("Ringing benchmark, \(ISO8601DateFormatter().string(from: generatedAt))")
        lines.append(
            "machine: \(machine.cpu), \(machine.cores) cores, \(machine.memoryGiB) GiB, \(machine.os), kernel \(machine.kernel)")
        lines.append("servers: RabbitMQ \(machine.rabbitmq), PostgreSQL \(machine.postgresql), all on this machine")
        lines.append(
            "settings: \(configuration.durationSeconds) s per phase after \(configuration.warmupSeconds) s warm-up; mix \(configuration.mix); "
                + "unanswered calls time out after \(configuration.ringTimeoutSeconds) s")
        lines.append("command: \(command)")
        lines.append("")
        let all = (floor.map { [$0] } ?? []) + (physicalFloor.map { [$0] } ?? []) + phases
        lines.append(
            pad("phase", 16) + pad("load", 20) + lpad("req/s", 9) + lpad("flows/s", 9) + lpad("of floor", 10)
                + lpad("of physical", 13) + lpad("stmts/req", 11) + lpad("trips/req", 11) + "  errors")
        func share(_ phase: PhaseResult, of floor: PhaseResult?) -> String {
            guard let floor, floor.figures.requestsPerSecond > 0 else { return "-" }
            return String(format: "%.0f%%", phase.figures.requestsPerSecond / floor.figures.requestsPerSecond * 100)
        }
        for phase in all {
            let load =
                phase.load == "rate"
                ? "\(Int(phase.offeredRequestsPerSecond ?? 0)) req/s offered" : "max, \(phase.concurrency ?? 0) in flight"
            let errors =
                phase.figures.errors.isEmpty
                ? "none" : phase.figures.errors.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            lines.append(
                pad(phase.name, 16) + pad(load, 20) + lpad(String(format: "%.0f", phase.figures.requestsPerSecond), 9)
                    + lpad(String(format: "%.1f", phase.figures.flowsPerSecond), 9) + lpad(share(phase, of: floor), 10)
                    + lpad(share(phase, of: physicalFloor), 13)
                    + lpad(phase.figures.statementsPerRequest.map { String(format: "%.2f", $0) } ?? "-", 11)
                    + lpad(phase.figures.roundTripsPerRequest.map { String(format: "%.2f", $0) } ?? "-", 11) + "  " + errors)
        }
        lines.append("")
        lines.append(
            pad("latency (ms)", 36) + lpad("count", 8) + lpad("p50", 8) + lpad("p90", 8) + lpad("p99", 8) + lpad("p99.9", 8)
                + lpad("max", 9))
        for phase in all {
            var rows: [(String, LatencySummary)] = Measure.allCases.compactMap { measure in
                phase.figures.latency[measure.rawValue].map { (measure.rawValue, $0) }
            }
            rows += phase.figures.requestReplyByType.sorted { $0.key < $1.key }.map { ("  reply to \($0.key)", $0.value) }
            for (label, summary) in rows {
                lines.append(
                    pad("\(phase.name) \(label)", 36) + lpad("\(summary.count)", 8) + lpad(number(summary.p50), 8)
                        + lpad(number(summary.p90), 8) + lpad(number(summary.p99), 8) + lpad(number(summary.p999), 8)
                        + lpad(number(summary.max), 9))
            }
        }
        if all.contains(where: { !$0.figures.cpu.isEmpty }) {
            lines.append("")
            lines.append("CPU in the window, share of all cores and milliseconds per request:")
            for phase in all where !phase.figures.cpu.isEmpty {
                let parts = phase.figures.cpu.sorted { $0.value.shareOfMachine > $1.value.shareOfMachine }.map {
                    "\($0.key) "
                        + String(format: "%.0f%% (%.2f ms)", $0.value.shareOfMachine * 100, $0.value.millisecondsPerRequest)
                }
                lines.append("  " + pad(phase.name, 14) + parts.joined(separator: ", "))
            }
        }
        if !targets.isEmpty {
            lines.append("")
            lines.append("targets:")
            for target in targets {
                lines.append("  [\(target.met ? "met" : "MISSED")] \(target.name): \(target.value) (target \(target.target))")
            }
        }
        return lines.joined(separator: "\n")
    }

}

/// A latency or other figure in a column: whole numbers from 100 up.
func number(_ value: Double) -> String {
    value >= 100 ? String(format: "%.0f", value) : String(format: "%.2f", value)
}

/// `text` left-aligned in `width` columns (at least one space after it).
func pad(_ text: String, _ width: Int) -> String {
    text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
}

/// `text` right-aligned in `width` columns (at least one space before it).
func lpad(_ text: String, _ width: Int) -> String {
    text.count >= width ? " " + text : String(repeating: " ", count: width - text.count) + text
}
