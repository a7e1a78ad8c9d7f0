// Where the CPU went during a phase: user and system time of the co-located processes
// (the broker, the database, the services, the load generator), read from /proc at the
// start and the end of the measured window. On a machine without /proc it reports nothing.
import Foundation

struct CPUSampler {
    /// Process names (`comm`) of interest, and how the report calls them.
    static let processes: [(comm: String, name: String)] = [
        ("postgres", "postgresql"), ("beam.smp", "rabbitmq"), ("call-control", "call-control"),
        ("token-service", "token-service"), ("push-notifier", "push-notifier"), ("ringing-bench", "ringing-bench"),
    ]

    /// CPU seconds so far of every process with a matching name, by process id.
    struct Snapshot {
        var processes: [Int: (name: String, seconds: Double)] = [:]
    }

    static func snapshot() -> Snapshot {
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        guard ticks > 0, let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return Snapshot() }
        var snapshot = Snapshot()
        for entry in entries where entry.first?.isNumber == true {
            guard let pid = Int(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")")
            else { continue }
            let comm = String(stat[stat.index(after: open)..<close])
            guard var name = processes.first(where: { $0.comm == comm })?.name else { continue }
            // The floor program is this executable too, in a process of its own.
            if name == "ringing-bench", entry != "\(getpid())" { name = "floor-program" }
            // After "(comm) ": state is field 3; utime and stime are fields 14 and 15.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 13, let user = Double(fields[11]), let system = Double(fields[12]) else { continue }
            snapshot.processes[pid] = (name, (user + system) / ticks)
        }
        return snapshot
    }

    /// CPU seconds used between two snapshots, by report name: each process that is alive at
    /// the end counts from its start (from zero when it started meanwhile). A process that
    /// ended meanwhile (a test's database connection closing beside the bench) drops out
    /// instead of taking its earlier CPU off the sum.
    static func usage(from start: Snapshot, to end: Snapshot, seconds: Double, requests: Int) -> [String: CPUUsage] {
        var used: [String: Double] = [:]
        for (pid, process) in end.processes {
            let before = start.processes[pid].flatMap { $0.name == process.name ? $0.seconds : nil } ?? 0
            used[process.name, default: 0] += max(0, process.seconds - before)
        }
        return usage(from: [:], to: used, seconds: seconds, requests: requests)
    }

    /// Per process: the share of the machine's cores used, and CPU milliseconds per request.
    static func usage(from start: [String: Double], to end: [String: Double], seconds: Double, requests: Int) -> [String:
        CPUUsage]
    {
        let cores = Double(ProcessInfo.processInfo.activeProcessorCount)
        var usage: [String: CPUUsage] = [:]
        for (name, after) in end {
            // A process that started meanwhile (a new backend) counts from zero.
            let used = max(0, after - (start[name] ?? 0))
            usage[name] = CPUUsage(
                shareOfMachine: (used / seconds / cores * 1000).rounded() / 1000,
                millisecondsPerRequest: requests > 0 ? (used / Double(requests) * 1000 * 1000).rounded() / 1000 : 0)
        }
        return usage
    }
}

public struct CPUUsage: Codable, Sendable {
    /// CPU time used / (wall time × cores).
    public var shareOfMachine: Double
    public var millisecondsPerRequest: Double

    enum CodingKeys: String, CodingKey {
        case shareOfMachine = "share_of_machine"
        case millisecondsPerRequest = "cpu_ms_per_request"
    }
}
