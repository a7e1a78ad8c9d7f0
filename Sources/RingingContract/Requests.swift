// Requests (DESIGN §2): the routing key names the type; the JSON body carries auth_token and
// the type's fields. Parsing checks every field and names the first one at fault.
public import CallRules
public import Foundation

public enum RequestType: String, Sendable, Hashable, CaseIterable {
    case initiate = "call.initiate"
    case accept = "call.accept"
    case reject = "call.reject"
    case end = "call.end"
    case get = "call.get"
    case active = "call.active"
    case history = "call.history"
    case live = "call.live"
    /// The ring receipt of DESIGN §10.
    case ringing = "call.ringing"
    /// Keeps an accepted participation live (DESIGN §10).
    case heartbeat = "call.heartbeat"
    case setGroupMembers = "group.set_members"
    case generateToken = "token.generate"
    case jwks = "token.jwks"
    /// The push notifier's device registry (DESIGN §8).
    case registerDevice = "device.register"
    case unregisterDevice = "device.unregister"
    case listDevices = "device.list"

    /// Whether the request needs an `auth_token`.
    public var needsAuthentication: Bool { self != .jwks }

    /// Whether the request can change state (and so is recorded for idempotency). A
    /// heartbeat only refreshes a time and is not recorded (DESIGN §10).
    public var isMutation: Bool {
        switch self {
        case .initiate, .accept, .reject, .end, .ringing, .setGroupMembers, .registerDevice, .unregisterDevice: true
        case .get, .active, .history, .live, .heartbeat, .generateToken, .jwks, .listDevices: false
        }
    }
}

public enum HistoryDirection: String, Sendable, Hashable, CaseIterable {
    case incoming, outgoing
}

/// Where a history page starts: strictly before this call, in (initiated_at, session_id) order.
public struct HistoryCursor: Sendable, Hashable {
    public var initiatedAt: Date
    public var sessionID: UUID

    public init(initiatedAt: Date, sessionID: UUID) {
        self.initiatedAt = initiatedAt
        self.sessionID = sessionID
    }

    /// Opaque to clients: base64url of "microseconds:session".
    public var encoded: String {
        let micros = Int64((initiatedAt.timeIntervalSince1970 * 1_000_000).rounded())
        return Data("\(micros):\(sessionID.uuidString.lowercased())".utf8).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(
                of: "=", with: "")
    }

    public init?(encoded: String) {
        var base64 = encoded.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), let text = String(data: data, encoding: .utf8) else { return nil }
        let parts = text.split(separator: ":")
        guard parts.count == 2, let micros = Int64(parts[0]), let id = UUID(uuidString: String(parts[1])) else { return nil }
        initiatedAt = Date(timeIntervalSince1970: Double(micros) / 1_000_000)
        sessionID = id
    }
}

public struct HistoryQuery: Sendable, Hashable {
    public var limit: Int
    public var before: HistoryCursor?
    public var status: CallStatus?
    public var callType: CallType?
    public var direction: HistoryDirection?

    public init(
        limit: Int = ContractLimits.defaultHistoryLimit, before: HistoryCursor? = nil, status: CallStatus? = nil,
        callType: CallType? = nil, direction: HistoryDirection? = nil
    ) {
        self.limit = limit
        self.before = before
        self.status = status
        self.callType = callType
        self.direction = direction
    }
}

public enum Command: Sendable, Hashable {
    case initiate(CallRules.Initiate)
    case accept(sessionID: UUID, deviceID: String?)
    case reject(sessionID: UUID, status: CallRules.RejectStatus, deviceID: String?)
    case end(sessionID: UUID, deviceID: String?)
    case get(sessionID: UUID)
    case active
    case history(HistoryQuery)
    case live
    case ringing(sessionID: UUID, deviceID: String?)
    case heartbeat(sessionID: UUID, deviceID: String?)
    case setGroupMembers(groupID: String, members: [String])
    case generateToken(sessionID: UUID)
    case jwks
    case registerDevice(DeviceRegistration)
    case unregisterDevice(deviceID: String)
    case listDevices

    /// The call the command is about, if it names one.
    public var sessionID: UUID? {
        switch self {
        case .accept(let id, _), .reject(let id, _, _), .end(let id, _), .get(let id), .ringing(let id, _), .heartbeat(let id, _),
            .generateToken(let id):
            id
        default: nil
        }
    }
}

/// A parsed request body.
public struct Request: Sendable, Hashable {
    public var type: RequestType
    public var authToken: String?
    public var command: Command
}

public enum RequestParser {
    /// Parses a request of the type named by `routingKey`. Errors are `invalid_request`
    /// naming the field (or `unauthenticated` for a missing `auth_token`).
    public static func parse(routingKey: String, body: Data) throws(CallError) -> Request {
        guard let type = RequestType(rawValue: routingKey) else {
            throw CallError(
                .invalidRequest,
                "unknown request type '\(routingKey)'; expected one of \(RequestType.allCases.map(\.rawValue).joined(separator: ", "))",
                field: "type")
        }
        guard body.count <= ContractLimits.maximumBodyBytes else {
            throw CallError(
                .invalidRequest, "the body is \(body.count) bytes; at most \(ContractLimits.maximumBodyBytes) are accepted",
                field: "body")
        }
        let json: JSONValue
        let duplicateKey: String?
        do {
            (json, duplicateKey) = try JSONReader.read(body)
        } catch {
            throw CallError(.invalidRequest, "the body is not JSON: \(error)", field: "body")
        }
        guard case .object(let object) = json else {
            throw CallError(.invalidRequest, "the body must be a JSON object, not \(json.typeName)", field: "body")
        }
        if let duplicateKey {
            throw DuplicateKeys.refusal(duplicateKey)
        }
        var fields = Fields(object)
        let authToken = try fields.optionalString("auth_token")
        if type.needsAuthentication && authToken == nil {
            throw CallError(.unauthenticated, "auth_token is missing")
        }
        let command = try parseCommand(type, &fields)
        try fields.rejectUnknown()
        return Request(type: type, authToken: authToken, command: command)
    }

    private static func parseCommand(_ type: RequestType, _ f: inout Fields) throws(CallError) -> Command {
        switch type {
        case .initiate:
            let receiverID = try f.identifier("receiver_id")
            let receiverType = try f.enumeration("receiver_type", ReceiverType.self)
            let callType = try f.enumeration("call_type", CallType.self)
            let timeout =
                try f.optionalInteger("timeout_s", in: ContractLimits.timeoutSeconds) ?? ContractLimits.defaultTimeoutSeconds
            let metadata = try f.optionalObject("metadata", maximumBytes: ContractLimits.maximumMetadataBytes) ?? [:]
            let deviceID = try f.deviceID()
            return .initiate(
                CallRules.Initiate(
                    receiverID: receiverID, receiverType: receiverType, callType: callType,
                    timeoutSeconds: timeout, metadata: metadata, deviceID: deviceID))
        case .accept:
            return .accept(sessionID: try f.uuid("session_id"), deviceID: try f.deviceID())
        case .reject:
            return .reject(
                sessionID: try f.uuid("session_id"), status: try f.enumeration("status", CallRules.RejectStatus.self),
                deviceID: try f.deviceID())
        case .end:
            return .end(sessionID: try f.uuid("session_id"), deviceID: try f.deviceID())
        case .get:
            return .get(sessionID: try f.uuid("session_id"))
        case .active:
            return .active
        case .live:
            return .live
        case .ringing:
            return .ringing(sessionID: try f.uuid("session_id"), deviceID: try f.deviceID())
        case .heartbeat:
            return .heartbeat(sessionID: try f.uuid("session_id"), deviceID: try f.deviceID())
        case .history:
            var query = HistoryQuery()
            query.limit = try f.optionalInteger("limit", in: ContractLimits.historyLimit) ?? ContractLimits.defaultHistoryLimit
            if let cursor = try f.optionalString("before") {
                guard let parsed = HistoryCursor(encoded: cursor) else {
                    throw CallError.invalid("before", "before must be the 'next' cursor of an earlier history reply")
                }
                query.before = parsed
            }
            query.status = try f.optionalEnumeration("status", CallStatus.self)
            query.callType = try f.optionalEnumeration("call_type", CallType.self)
            query.direction = try f.optionalEnumeration("direction", HistoryDirection.self)
            return .history(query)
        case .setGroupMembers:
            let group = try f.identifier("group_id")
            let members = try f.identifierArray("members", maximumCount: ContractLimits.maximumGroupMembers)
            return .setGroupMembers(groupID: group, members: members)
        case .generateToken:
            return .generateToken(sessionID: try f.uuid("session_id"))
        case .registerDevice:
            let registration = DeviceRegistration(
                deviceID: try f.requiredDeviceID(), platform: try f.enumeration("platform", DevicePlatform.self),
                kind: try f.enumeration("kind", PushKind.self), pushToken: try f.string("push_token"),
                appID: try f.string("app_id"), environment: try f.enumeration("environment", PushEnvironment.self))
            return .registerDevice(try registration.validated())
        case .unregisterDevice:
            return .unregisterDevice(deviceID: try f.requiredDeviceID())
        case .listDevices:
            return .listDevices
        case .jwks:
            return .jwks
        }
    }
}

/// The fields of a JSON object, taken one by one; what is left over is unknown.
struct Fields {
    private var remaining: JSONObject

    init(_ object: JSONObject) { remaining = object }

    mutating func take(_ name: String) -> JSONValue? {
        guard let value = remaining.removeValue(forKey: name), value != .null else { return nil }
        return value
    }

    func rejectUnknown() throws(CallError) {
        if let name = remaining.keys.sorted().first {
            throw CallError.invalid(name, "unknown field '\(name)'")
        }
    }

    mutating func optionalString(_ name: String) throws(CallError) -> String? {
        guard let value = take(name) else { return nil }
        guard case .string(let text) = value else {
            throw CallError.invalid(name, "\(name) must be a string, not \(value.typeName)")
        }
        return text
    }

    mutating func string(_ name: String) throws(CallError) -> String {
        guard let text = try optionalString(name) else { throw CallError.invalid(name, "\(name) is required") }
        return text
    }

    mutating func identifier(_ name: String) throws(CallError) -> String {
        let text = try string(name)
        guard Identifier.isValid(text) else {
            throw CallError.invalid(name, "\(name) '\(text.prefix(80))' must match ^[A-Za-z0-9_-]{1,64}$")
        }
        return text
    }

    mutating func identifierArray(_ name: String, maximumCount: Int) throws(CallError) -> [String] {
        guard let value = take(name) else { throw CallError.invalid(name, "\(name) is required") }
        guard case .array(let items) = value else {
            throw CallError.invalid(name, "\(name) must be an array of user ids, not \(value.typeName)")
        }
        guard items.count <= maximumCount else {
            throw CallError.invalid(name, "\(name) has \(items.count) entries; at most \(maximumCount)")
        }
        var result: [String] = []
        for (index, item) in items.enumerated() {
            guard case .string(let text) = item, Identifier.isValid(text) else {
                throw CallError.invalid("\(name)[\(index)]", "\(name)[\(index)] must be a user id matching ^[A-Za-z0-9_-]{1,64}$")
            }
            if !result.contains(text) { result.append(text) }
        }
        return result
    }

    mutating func uuid(_ name: String) throws(CallError) -> UUID {
        let text = try string(name)
        guard let id = UUID(uuidString: text) else { throw CallError.invalid(name, "\(name) '\(text.prefix(80))' is not a UUID") }
        return id
    }

    mutating func optionalEnumeration<E: RawRepresentable & CaseIterable>(_ name: String, _ type: E.Type) throws(CallError) -> E?
    where E.RawValue == String {
        guard let text = try optionalString(name) else { return nil }
        guard let value = E(rawValue: text) else {
            throw CallError.invalid(
                name, "\(name) '\(text.prefix(80))' must be one of \(E.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return value
    }

    mutating func enumeration<E: RawRepresentable & CaseIterable>(_ name: String, _ type: E.Type) throws(CallError) -> E
    where E.RawValue == String {
        guard let value = try optionalEnumeration(name, type) else {
            throw CallError.invalid(name, "\(name) is required (one of \(E.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return value
    }

    mutating func optionalInteger(_ name: String, in range: ClosedRange<Int>) throws(CallError) -> Int? {
        guard let value = take(name) else { return nil }
        let number: Int
        switch value {
        case .int(let n): number = Int(n)
        case .double(let d) where d == d.rounded() && abs(d) < 1e15: number = Int(d)
        default: throw CallError.invalid(name, "\(name) must be a whole number, not \(value.typeName)")
        }
        guard range.contains(number) else {
            throw CallError.invalid(name, "\(name) is \(number); it must be from \(range.lowerBound) to \(range.upperBound)")
        }
        return number
    }

    mutating func optionalObject(_ name: String, maximumBytes: Int) throws(CallError) -> JSONObject? {
        guard let value = take(name) else { return nil }
        guard case .object(let object) = value else {
            throw CallError.invalid(name, "\(name) must be a JSON object, not \(value.typeName)")
        }
        let size = (try? JSONEncoder().encode(object).count) ?? 0
        guard size <= maximumBytes else {
            throw CallError.invalid(name, "\(name) is \(size) bytes as JSON; at most \(maximumBytes) are accepted")
        }
        return object
    }

    mutating func requiredDeviceID() throws(CallError) -> String {
        guard let id = try deviceID() else { throw CallError.invalid("device_id", "device_id is required") }
        return id
    }

    mutating func deviceID() throws(CallError) -> String? {
        guard let text = try optionalString("device_id") else { return nil }
        guard (1...ContractLimits.maximumDeviceIDLength).contains(text.count) else {
            throw CallError.invalid("device_id", "device_id must have 1 to \(ContractLimits.maximumDeviceIDLength) characters")
        }
        return text
    }
}
