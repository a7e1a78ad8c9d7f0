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
        struct Process {
            var name: String
            /// Its own user and system time.
            var seconds: Double
            /// The user and system time of its children that ended and were waited for.
            var children: Double = 0
        }

        var processes: [Int: Process] = [:]
    }

    /// The kinds whose processes end under a parent of the same kind that waits for them:
    /// PostgreSQL's backends and autovacuum workers, reaped by the postmaster.
    static let reapedByTheirKind: Set<String> = ["postgresql"]

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
            // After "(comm) ": state is field 3; utime, stime, cutime and cstime are 14 to 17.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 14, let user = Double(fields[11]), let system = Double(fields[12]),
                let childrenUser = Double(fields[13]), let childrenSystem = Double(fields[14])
            else { continue }
            snapshot.processes[pid] = Snapshot.Process(
                name: name, seconds: (user + system) / ticks, children: (childrenUser + childrenSystem) / ticks)
        }
        return snapshot
    }

    /// CPU seconds used between two snapshots, by report name. Each process alive at the end
    /// counts from its start (from zero when it started meanwhile). A process that ended
    /// meanwhile counts only for the kinds whose parent waits for it (`reapedByTheirKind`):
    /// its whole time then shows in the parent's children time, less what it had used before
    /// the window. Others drop out rather than take their earlier CPU off their kind's sum.
    static func usage(from start: Snapshot, to end: Snapshot, seconds: Double, requests: Int) -> [String: CPUUsage] {
        var used: [String: Double] = [:]
        for (pid, process) in end.processes {
            let before = start.processes[pid].flatMap { $0.name == process.name ? $0 : nil }
            used[process.name, default: 0] += max(0, process.seconds - (before?.seconds ?? 0))
            if reapedByTheirKind.contains(process.name) {
                used[process.name, default: 0] += max(0, process.children - (before?.children ?? 0))
            }
        }
        for (pid, process) in start.processes
        where reapedByTheirKind.contains(process.name) && end.processes[pid]?.name != process.name {
            used[process.name, default: 0] -= process.seconds
        }
        return usage(from: [:], to: used.mapValues { max(0, $0) }, seconds: seconds, requests: requests)
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
