// The gateway's HTTP API (DESIGN §7): the same requests as the socket, for app backends and
// for apps that prefer request/response. Bodies and replies are those of §2; error codes map
// to HTTP statuses.
import CallRules
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import RingingContract
import Synchronization

/// The request context of the public listener: Hummingbird's, plus the channel, so that a
/// socket too slow to take its close frame can be dropped.
struct GatewayRequestContext: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        webSocket = .init()
        channel = source.channel
    }
}

/// One HTTP route: which request it is, and which path parameters go into the body.
struct HTTPRoute: Sendable {
    var method: HTTPRequest.Method
    var path: String
    var request: String
    var pathFields: [String] = []
    var authenticated = true
    /// Fixed body fields (the reject route has none: its `status` comes from the body).
    var queryFields: [String] = []

    var isMutation: Bool { method == .post || method == .put || method == .delete }
}

enum HTTPAPI {
    static let routes: [HTTPRoute] = [
        HTTPRoute(method: .post, path: "/v1/calls", request: "call.initiate"),
        HTTPRoute(method: .get, path: "/v1/calls/active", request: "call.active"),
        HTTPRoute(method: .get, path: "/v1/calls/live", request: "call.live"),
        HTTPRoute(
            method: .get, path: "/v1/calls", request: "call.history",
            queryFields: ["limit", "before", "status", "call_type", "direction"]),
        HTTPRoute(method: .get, path: "/v1/calls/:session_id", request: "call.get", pathFields: ["session_id"]),
        HTTPRoute(method: .post, path: "/v1/calls/:session_id/accept", request: "call.accept", pathFields: ["session_id"]),
        HTTPRoute(method: .post, path: "/v1/calls/:session_id/reject", request: "call.reject", pathFields: ["session_id"]),
        HTTPRoute(method: .post, path: "/v1/calls/:session_id/end", request: "call.end", pathFields: ["session_id"]),
        HTTPRoute(method: .post, path: "/v1/calls/:session_id/ringing", request: "call.ringing", pathFields: ["session_id"]),
        HTTPRoute(
            method: .post, path: "/v1/calls/:session_id/heartbeat", request: "call.heartbeat", pathFields: ["session_id"]),
        HTTPRoute(method: .post, path: "/v1/calls/:session_id/token", request: "token.generate", pathFields: ["session_id"]),
        HTTPRoute(method: .put, path: "/v1/groups/:group_id/members", request: "group.set_members", pathFields: ["group_id"]),
        HTTPRoute(method: .put, path: "/v1/devices/:device_id", request: "device.register", pathFields: ["device_id"]),
        HTTPRoute(method: .delete, path: "/v1/devices/:device_id", request: "device.unregister", pathFields: ["device_id"]),
        HTTPRoute(method: .get, path: "/v1/devices", request: "device.list"),
    ]

    /// The HTTP status of a §2 reply.
    static func status(of reply: Data) -> (HTTPResponse.Status, String?) {
        guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: reply),
            case .object(let error)? = object["error"], case .string(let code)? = error["code"]
        else { return (.ok, nil) }
        switch CallError.Code(rawValue: code) {
        case .invalidRequest?: return (.badRequest, code)
        case .unauthenticated?: return (.unauthorized, code)
        case .forbidden?: return (.forbidden, code)
        case .notFound?: return (.notFound, code)
        case .invalidState?, .callerBusy?: return (.conflict, code)
        case .rateLimited?: return (.tooManyRequests, code)
        case .unavailable?, nil: return (.serviceUnavailable, code)
        }
    }

    static func response(_ reply: Data) -> Response {
        let (status, _) = status(of: reply)
        var headers: HTTPFields = [.contentType: "application/json"]
        if status == .serviceUnavailable || status == .tooManyRequests { headers[.retryAfter] = "1" }
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(data: reply)))
    }

    static func error(_ error: CallError) -> Response {
        response(WireReply.error(error).encoded())
    }

    /// Adds the API routes, the JWKS, the OpenAPI document and /healthz to `router`.
    static func install(on router: Router<GatewayRequestContext>, forwarder: CommandForwarder, jwksCache: Duration) {
        router.get("/healthz") { _, _ -> String in "ok\n" }
        router.get("/v1/openapi.json") { _, _ -> Response in
            Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        let jwks = JWKSCache(lifetime: jwksCache)
        router.get("/.well-known/jwks.json") { _, _ -> Response in
            if let cached = jwks.current() { return response(cached) }
            let reply = await forwarder.request(
                type: RequestType.jwks.rawValue, body: Data("{}".utf8), messageID: "jwks-\(UUID().uuidString.lowercased())")
            if status(of: reply).0 == .ok { jwks.store(reply) }
            return response(reply)
        }
        for route in routes {
            router.on(RouterPath(route.path), method: route.method) { request, context -> Response in
                var request = request
                return await handle(route, &request, context, forwarder)
            }
        }
    }

    private static func handle(
        _ route: HTTPRoute, _ request: inout Request, _ context: GatewayRequestContext, _ forwarder: CommandForwarder
    ) async -> Response {
        let started = ContinuousClock.now
        defer {
            Metrics.Timer(label: "ringing_gateway_request_duration_seconds", dimensions: [("type", route.request)]).record(
                duration: .now - started)
        }
        guard let authorization = request.headers[.authorization], authorization.hasPrefix("Bearer "),
            case let token = String(authorization.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces),
            !token.isEmpty
        else {
            return error(CallError(.unauthenticated, "the Authorization header must be 'Bearer <auth token>'"))
        }
        var messageID = "http-\(UUID().uuidString.lowercased())"
        if route.isMutation {
            guard let key = request.headers[HTTPField.Name("Idempotency-Key")!], (1...128).contains(key.count) else {
                return error(
                    .invalid(
                        "Idempotency-Key",
                        "the Idempotency-Key header (1 to 128 characters) is required on \(route.method.rawValue): it makes a retry safe"
                    ))
            }
            messageID = key
        }
        var body: JSONObject = [:]
        if route.method != .get {
            let buffer: ByteBuffer
            do { buffer = try await request.collectBody(upTo: ContractLimits.maximumBodyBytes) } catch {
                return Self.error(
                    .invalid("body", "the body is larger than \(ContractLimits.maximumBodyBytes) bytes"))
            }
            if buffer.readableBytes > 0 {
                guard case .object(let object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: buffer)) else {
                    return error(.invalid("body", "the body must be a JSON object"))
                }
                if let key = DuplicateKeys.first(in: Data(buffer: buffer)) {
                    return error(DuplicateKeys.refusal(key))
                }
                body = object
            }
        }
        for field in route.pathFields {
            guard let value = context.parameters.get(field) else { continue }
            if body[field] != nil, body[field] != .string(value) {
                return error(.invalid(field, "\(field) is in the path; leave it out of the body or make it the same"))
            }
            body[field] = .string(value)
        }
        for field in route.queryFields {
            guard let text = request.uri.queryParameters[Substring(field)].map(String.init) else { continue }
            body[field] = field == "limit" ? (Int64(text).map(JSONValue.int) ?? .string(text)) : .string(text)
        }
        if body["auth_token"] != nil {
            return error(.invalid("auth_token", "send the auth token in the Authorization header, not in the body"))
        }
        body["auth_token"] = .string(token)
        let traceparent = request.headers[HTTPField.Name("traceparent")!]
        let forwarded = (try? JSONEncoder().encode(body)) ?? Data("{}".utf8)
        let reply = await forwarder.request(type: route.request, body: forwarded, messageID: messageID, traceparent: traceparent)
        return response(reply)
    }
}

/// The JWKS reply, kept for a while: media servers may fetch it often.
final class JWKSCache: Sendable {
    let lifetime: Duration
    private let state = Mutex<(reply: Data, until: ContinuousClock.Instant)?>(nil)

    init(lifetime: Duration) { self.lifetime = lifetime }

    func current() -> Data? {
        state.withLock { cached in
            guard let cached, cached.until > .now else { return nil }
            return cached.reply
        }
    }

    func store(_ reply: Data) {
        state.withLock { $0 = (reply, .now + lifetime) }
    }
}
