// The WebSocket protocol of DESIGN §7: client frames parsed with errors that say what was wrong,
// server frames encoded. Pure: no I/O.
public import CallRules
public import Foundation
public import RingingContract

/// A frame a device sends.
public enum ClientFrame: Sendable, Equatable {
    case hello(authToken: String, deviceID: String?)
    case request(id: String, type: String, body: JSONObject)
    case auth(authToken: String)
}

/// Why a client frame was refused, and how: a close code for the socket, or a reply for one
/// request (the socket stays open).
public enum FrameError: Error, Sendable, Equatable {
    /// Close the socket with `code`, telling `reason`.
    case close(code: UInt16, reason: String)
    /// Answer request `id` with this error.
    case reply(id: String, CallError)
}

public enum CloseCode {
    public static let normal: UInt16 = 1000
    public static let goingAway: UInt16 = 1001
    public static let tooSlow: UInt16 = 1008
    public static let tooBig: UInt16 = 1009
    public static let tryAgainLater: UInt16 = 1013
    public static let unauthenticated: UInt16 = 4001
    public static let protocolError: UInt16 = 4002
}

public enum GatewayRequests {
    /// What a socket may ask for: every request of §2 and §8 except `group.set_members`
    /// (service role, HTTP only).
    public static let forwardable: Set<String> = Set(
        RequestType.allCases.filter { $0 != .setGroupMembers }.map(\.rawValue))

    /// Types whose body takes the socket's `device_id`.
    public static let takesDeviceID: Set<String> = [
        RequestType.initiate.rawValue, RequestType.accept.rawValue, RequestType.reject.rawValue, RequestType.end.rawValue,
        "call.ringing", "call.heartbeat", "device.register", "device.unregister",
    ]

    /// The body forwarded to the broker: the device's body plus its auth token and, where the
    /// type takes one, its device id. A body carrying its own `auth_token` is refused.
    public static func forwardedBody(type: String, body: JSONObject, authToken: String, deviceID: String) throws(CallError)
        -> Data
    {
        if body["auth_token"] != nil {
            throw CallError.invalid(
                "auth_token", "the body must not carry auth_token: the gateway adds the socket's (or the Bearer) token")
        }
        var forwarded = body
        forwarded["auth_token"] = .string(authToken)
        if takesDeviceID.contains(type) { forwarded["device_id"] = .string(deviceID) }
        return (try? JSONEncoder().encode(forwarded)) ?? Data("{}".utf8)
    }
}

public enum FrameParser {
    static let maximumIDLength = 128

    /// Parses one text frame.
    public static func parse(_ text: String) throws(FrameError) -> ClientFrame {
        let value: JSONValue
        do { value = try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) } catch {
            throw .close(code: CloseCode.protocolError, reason: "the frame is not JSON")
        }
        guard case .object(let object) = value else {
            throw .close(code: CloseCode.protocolError, reason: "a frame must be a JSON object, not \(value.typeName)")
        }
        guard case .string(let type)? = object["type"] else {
            throw .close(code: CloseCode.protocolError, reason: "the frame has no string 'type'")
        }
        if let key = DuplicateKeys.first(in: Data(text.utf8)) {
            // A request is answered (its body would otherwise lose one of the values
            // silently); any other frame is a protocol error.
            if type == "request", case .string(let id)? = object["id"], (1...maximumIDLength).contains(id.count) {
                throw .reply(id: id, DuplicateKeys.refusal(key, in: "frame"))
            }
            throw .close(code: CloseCode.protocolError, reason: "the frame has the key '\(key.prefix(40))' more than once")
        }
        switch type {
        case "hello":
            guard case .string(let token)? = object["auth_token"], !token.isEmpty else {
                throw .close(code: CloseCode.unauthenticated, reason: "hello needs auth_token")
            }
            var deviceID: String?
            switch object["device_id"] {
            case nil, .null?: deviceID = nil
            case .string(let id)? where (1...ContractLimits.maximumDeviceIDLength).contains(id.count): deviceID = id
            default:
                throw .close(
                    code: CloseCode.protocolError,
                    reason: "device_id must be a string of 1 to \(ContractLimits.maximumDeviceIDLength) characters")
            }
            return .hello(authToken: token, deviceID: deviceID)
        case "auth":
            guard case .string(let token)? = object["auth_token"], !token.isEmpty else {
                throw .close(code: CloseCode.unauthenticated, reason: "auth needs auth_token")
            }
            return .auth(authToken: token)
        case "request":
            guard case .string(let id)? = object["id"], (1...maximumIDLength).contains(id.count) else {
                throw .close(
                    code: CloseCode.protocolError, reason: "a request frame needs an id of 1 to \(maximumIDLength) characters")
            }
            guard case .string(let request)? = object["request"] else {
                throw .reply(id: id, .invalid("request", "request must name the request type, e.g. call.initiate"))
            }
            guard GatewayRequests.forwardable.contains(request) else {
                throw .reply(
                    id: id,
                    .invalid(
                        "request",
                        "unknown request '\(request.prefix(80))'; expected one of \(GatewayRequests.forwardable.sorted().joined(separator: ", "))"
                    ))
            }
            switch object["body"] {
            case nil, .null?: return .request(id: id, type: request, body: [:])
            case .object(let body)?: return .request(id: id, type: request, body: body)
            case let other?: throw .reply(id: id, .invalid("body", "body must be a JSON object, not \(other.typeName)"))
            }
        default:
            throw .close(
                code: CloseCode.protocolError, reason: "unknown frame type '\(type.prefix(40))'; expected hello, request or auth")
        }
    }
}

/// Frames the gateway sends, as JSON text. Bodies that came from call-control are spliced in
/// as they are, not decoded and encoded again.
public enum ServerFrame {
    public static func welcome(uid: String, deviceID: String, callsJSON: String) -> String {
        #"{"type":"welcome","uid":\#(quoted(uid)),"device_id":\#(quoted(deviceID)),"calls":\#(callsJSON)}"#
    }

    public static func notification(name: String, bodyJSON: String) -> String {
        #"{"type":"notification","name":\#(quoted(name)),"notification":\#(bodyJSON)}"#
    }

    public static func reply(id: String, replyJSON: String) -> String {
        #"{"type":"reply","id":\#(quoted(id)),"reply":\#(replyJSON)}"#
    }

    public static func reply(id: String, error: CallError) -> String {
        reply(id: id, replyJSON: String(decoding: WireReply.error(error).encoded(), as: UTF8.self))
    }

    static func quoted(_ text: String) -> String {
        String(decoding: (try? JSONEncoder().encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}
