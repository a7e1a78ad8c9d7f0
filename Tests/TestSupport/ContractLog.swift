// Writes every message the tests see (requests, replies, events, notifications) to the file
// named by RINGING_CONTRACT_LOG, for scripts/check-contract to validate against schemas/.
public import Foundation
import Synchronization

public enum ContractLog {
    private static let file: Mutex<FileHandle?> = {
        guard let path = ProcessInfo.processInfo.environment["RINGING_CONTRACT_LOG"], !path.isEmpty else { return Mutex(nil) }
        // Appends: the restart tests run in a second process after the others.
        if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
        let handle = FileHandle(forWritingAtPath: path)
        _ = try? handle?.seekToEnd()
        return Mutex(handle)
    }()

    /// Records one HTTP exchange of the gateway (for the OpenAPI check).
    public static func recordHTTP(method: String, path: String, status: Int, body: Data) {
        write([
            "kind": "http", "method": method, "path": path, "status": "\(status)", "body": String(decoding: body, as: UTF8.self),
        ])
    }

    private static func write(_ line: [String: String]) {
        file.withLock { handle in
            guard let handle else { return }
            guard let data = try? JSONSerialization.data(withJSONObject: line, options: [.sortedKeys]) else { return }
            handle.write(data + Data("\n".utf8))
        }
    }

    /// Records one message; does nothing unless RINGING_CONTRACT_LOG is set.
    public static func record(_ kind: String, routingKey: String, messageID: String?, correlationID: String? = nil, body: Data) {
        var line: [String: String] = ["kind": kind, "routing_key": routingKey, "body": String(decoding: body, as: UTF8.self)]
        if let messageID { line["message_id"] = messageID }
        if let correlationID { line["correlation_id"] = correlationID }
        write(line)
    }
}
