// The web softphone: static HTML, CSS and JavaScript from the gateway's resources, served at
// `GET /` and `GET /app/<file>` on the public port (no build step, nothing from a CDN); and,
// only while the gateway runs with the development secret, `POST /v1/dev/token`, which signs
// a user in by UID. With a real secret that route does not exist and the page asks for a token.
import CallRules
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import RingingAuth
import RingingContract

enum Softphone {
    struct Asset: Sendable {
        var contentType: String
        var bytes: Data
    }

    static let contentTypes = [
        "html": "text/html; charset=utf-8", "js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
        "svg": "image/svg+xml", "png": "image/png", "ico": "image/x-icon", "json": "application/json",
    ]

    /// Nothing from elsewhere: scripts, styles, sockets and requests only to this gateway.
    static let contentSecurityPolicy =
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"

    /// Where the files are: `RINGING_GATEWAY_WEB_ROOT` when set (to work on the page without
    /// rebuilding), otherwise the gateway's resources (`Ringing_DeviceGateway.resources` next
    /// to the executable, where SwiftPM puts them and the image copies them). Looked up by
    /// hand rather than with `Bundle.module`, which stops the process when they are missing.
    static func folder(override: String?) -> URL? {
        if let override { return URL(fileURLWithPath: override, isDirectory: true) }
        let folder = Bundle.main.bundleURL.appendingPathComponent("Ringing_DeviceGateway.resources/Softphone", isDirectory: true)
        return FileManager.default.fileExists(atPath: folder.path) ? folder : nil
    }

    /// Reads the assets: once at start from the bundle, on every request from an override
    /// folder (so that edits show on reload).
    static func load(_ folder: URL) -> [String: Asset] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        var assets: [String: Asset] = [:]
        for name in names {
            let ext = (name as NSString).pathExtension.lowercased()
            guard let type = contentTypes[ext],
                let bytes = FileManager.default.contents(atPath: folder.appendingPathComponent(name).path)
            else { continue }
            assets[name] = Asset(contentType: type, bytes: bytes)
        }
        return assets
    }

    static func install(on router: Router<GatewayRequestContext>, configuration: GatewayConfiguration, auth: AuthTokens) {
        let folder = folder(override: configuration.webRoot)
        let bundled = configuration.webRoot == nil ? folder.map(load) ?? [:] : [:]
        let live = configuration.webRoot != nil
        @Sendable func asset(_ name: String) -> Response {
            let assets = live ? folder.map(load) ?? [:] : bundled
            guard let asset = assets[name] else {
                let why =
                    folder == nil
                    ? "the softphone's files are not installed (Ringing_DeviceGateway.resources next to the executable)"
                    : "no such file: \(name)"
                return Response(
                    status: .notFound, headers: [.contentType: "text/plain; charset=utf-8"],
                    body: ResponseBody(byteBuffer: ByteBuffer(string: why + "\n")))
            }
            return Response(
                status: .ok,
                headers: [
                    .contentType: asset.contentType, .cacheControl: "no-cache",
                    HTTPField.Name("Content-Security-Policy")!: contentSecurityPolicy,
                    HTTPField.Name("X-Content-Type-Options")!: "nosniff",
                ],
                body: ResponseBody(byteBuffer: ByteBuffer(data: asset.bytes)))
        }
        router.get("/") { _, _ in asset("index.html") }
        router.get("/app/:file") { _, context in asset(context.parameters.get("file") ?? "") }

        guard configuration.usesDevelopmentSecret else { return }
        router.post("/v1/dev/token") { request, _ -> Response in
            var request = request
            let buffer = try? await request.collectBody(upTo: 4096)
            guard let buffer, case .object(let body)? = try? JSONDecoder().decode(JSONValue.self, from: Data(buffer: buffer)),
                case .string(let uid)? = body["uid"]
            else {
                return HTTPAPI.error(.invalid("uid", "send {\"uid\": \"<user id>\"}"))
            }
            guard Identifier.isValid(uid) else {
                return HTTPAPI.error(.invalid("uid", "uid '\(uid.prefix(80))' must match ^[A-Za-z0-9_-]{1,64}$"))
            }
            let lifetime = 12 * 3600
            guard let token = try? await auth.mint(uid: uid, lifetime: .seconds(lifetime)) else {
                return HTTPAPI.error(CallError(.unavailable, "could not sign a token"))
            }
            let reply: JSONObject = [
                "ok": true, "uid": .string(uid), "auth_token": .string(token),
                "expires_at": .string(WireTime.format(Date().addingTimeInterval(TimeInterval(lifetime)))),
            ]
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(data: (try? JSONEncoder().encode(reply)) ?? Data())))
        }
    }
}
