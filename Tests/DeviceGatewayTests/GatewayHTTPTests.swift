// The gateway's HTTP API and the broker's refusals of the outside `app` account (DESIGN §7, §9).
import AMQPClient
import CallRules
import DeviceGateway
import Foundation
import RingingContract
import RingingService
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

struct HTTPReply: Sendable {
    var status: Int
    var headers: [String: String]
    var body: JSONObject
    var text: String
}

extension Gateway {
    func http(
        _ method: String, _ path: String, token: String? = nil, idempotencyKey: String? = nil, body: JSONObject? = nil
    ) async throws -> HTTPReply {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let idempotencyKey { request.setValue(idempotencyKey, forHTTPHeaderField: "Idempotency-Key") }
        if let body {
            request.httpBody = try JSONEncoder().encode(body)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as! HTTPURLResponse
        let pathOnly = path.split(separator: "?", maxSplits: 1).first.map(String.init) ?? path
        ContractLog.recordHTTP(method: method, path: pathOnly, status: http.statusCode, body: data)
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields { headers["\(key)".lowercased()] = "\(value)" }
        let object = (try? JSONDecoder().decode(JSONObject.self, from: data)) ?? [:]
        return HTTPReply(status: http.statusCode, headers: headers, body: object, text: String(decoding: data, as: UTF8.self))
    }
}

@Suite struct GatewayHTTPTests {
    @Test func theSeedFlowOverHTTPWithItsStatuses() async throws {
        try await Gateway.run { g in
            let alice = try await g.user("alice")
            let bob = try await g.user("bob")
            let bobsPhone = try await g.device(of: TestDevice.placeholderDevice(uid: bob.uid), deviceID: "bobs-phone")
            let noKey = try await g.http("POST", "/v1/calls", token: alice.token, body: ["receiver_id": .string(bob.uid)])
            #expect(noKey.status == 400)
            #expect(noKey.body.at("error", "field") == "Idempotency-Key")
            let noAuth = try await g.http("GET", "/v1/calls/active")
            #expect(noAuth.status == 401)
            let key = UUID().uuidString
            let fields: JSONObject = ["receiver_id": .string(bob.uid), "receiver_type": "user", "call_type": "video"]
            let created = try await g.http("POST", "/v1/calls", token: alice.token, idempotencyKey: key, body: fields)
            #expect(created.status == 200)
            guard case .string(let session)? = created.body.at("call", "session_id") else {
                Issue.record("no call: \(created.body)")
                return
            }
            let again = try await g.http("POST", "/v1/calls", token: alice.token, idempotencyKey: key, body: fields)
            #expect(again.body.at("call", "session_id") == .string(session), "the Idempotency-Key is the message_id")
            _ = try await bobsPhone.frame { $0["name"] == "incoming_call.received" && $0.sessionID == session }
            // An app that rang by push sends its receipt over HTTP: the caller hears "Ringing…".
            let receipt = try await g.http(
                "POST", "/v1/calls/\(session)/ringing", token: bob.token, idempotencyKey: UUID().uuidString,
                body: ["device_id": "bobs-ipad"])
            #expect(receipt.status == 200)
            #expect(receipt.body == ["ok": true])
            let live = try await g.http("GET", "/v1/calls/live", token: bob.token)
            #expect(live.status == 200)
            #expect(live.body["next"] == nil)
            let accepted = try await g.http(
                "POST", "/v1/calls/\(session)/accept", token: bob.token, idempotencyKey: UUID().uuidString)
            #expect(accepted.status == 200)
            #expect(accepted.body.at("call", "status") == "ongoing")
            #expect(accepted.body.at("call", "participants") != nil)
            // Apps without a socket keep the call live themselves.
            let heartbeat = try await g.http(
                "POST", "/v1/calls/\(session)/heartbeat", token: bob.token, idempotencyKey: UUID().uuidString)
            #expect(heartbeat.status == 200)
            #expect(heartbeat.body == ["ok": true])
            let twice = try await g.http(
                "POST", "/v1/calls/\(session)/reject", token: bob.token, idempotencyKey: UUID().uuidString,
                body: ["status": "rejected"])
            #expect(twice.status == 409)
            #expect(twice.body.at("error", "status") == "ongoing")
            let stranger = try await g.user("eve")
            let forbidden = try await g.http("GET", "/v1/calls/\(session)", token: stranger.token)
            #expect(forbidden.status == 403)
            let missing = try await g.http("GET", "/v1/calls/\(UUID().uuidString.lowercased())", token: bob.token)
            #expect(missing.status == 404)
            let active = try await g.http("GET", "/v1/calls/active", token: alice.token)
            #expect(active.body.at("call", "session_id") == .string(session))
            let ended = try await g.http(
                "POST", "/v1/calls/\(session)/end", token: alice.token, idempotencyKey: UUID().uuidString)
            #expect(ended.body.at("call", "status") == "ended")
            let over = try await g.http(
                "POST", "/v1/calls/\(session)/heartbeat", token: bob.token, idempotencyKey: UUID().uuidString)
            #expect(over.status == 409, "no heartbeat for an ended call")
            let history = try await g.http("GET", "/v1/calls?limit=1&direction=incoming", token: bob.token)
            #expect(history.status == 200)
            guard case .array(let calls)? = history.body["calls"] else {
                Issue.record("history: \(history.body)")
                return
            }
            #expect(calls.count == 1)
            let badLimit = try await g.http("GET", "/v1/calls?limit=many", token: bob.token)
            #expect(badLimit.status == 400)
            #expect(badLimit.body.at("error", "field") == "limit")
            let service = try await g.auth.mint(uid: "backend", service: true)
            let group = TestEnvironment.uniqueName("grp")
            let members = try await g.http(
                "PUT", "/v1/groups/\(group)/members", token: service, idempotencyKey: UUID().uuidString,
                body: ["members": .array([.string(alice.uid), .string(bob.uid)])])
            #expect(members.status == 200)
            let notService = try await g.http(
                "PUT", "/v1/groups/\(group)/members", token: alice.token, idempotencyKey: UUID().uuidString,
                body: ["members": .array([.string(alice.uid)])])
            #expect(notService.status == 403)
            let health = try await g.http("GET", "/healthz")
            #expect(health.status == 200)
            let openapi = try await g.http("GET", "/v1/openapi.json")
            #expect(openapi.status == 200)
            #expect(openapi.body["openapi"] == "3.1.0")
        }
    }

    /// The softphone's page and files, served with a policy that allows only this origin; the
    /// development sign-in, which exists only with the development secret.
    @Test func theSoftphoneIsServedAndSignsInOnlyInDevelopment() async throws {
        try await Gateway.run { g in
            let page = try await g.http("GET", "/")
            #expect(page.status == 200)
            #expect(page.headers["content-type"]?.hasPrefix("text/html") == true)
            #expect(page.text.contains("/app/softphone.js"))
            #expect(page.headers["content-security-policy"]?.contains("default-src 'self'") == true)
            for (file, type) in [("softphone.js", "text/javascript"), ("softphone.css", "text/css")] {
                let asset = try await g.http("GET", "/app/\(file)")
                #expect(asset.status == 200, "\(file)")
                #expect(asset.headers["content-type"]?.hasPrefix(type) == true, "\(file)")
                #expect(!asset.text.isEmpty)
            }
            let missing = try await g.http("GET", "/app/nothing.js")
            #expect(missing.status == 404)

            let uid = TestEnvironment.uniqueName("web")
            let signedIn = try await g.http("POST", "/v1/dev/token", body: ["uid": .string(uid)])
            #expect(signedIn.status == 200)
            #expect(signedIn.body["uid"] == .string(uid))
            guard case .string(let token)? = signedIn.body["auth_token"] else {
                Issue.record("no token: \(signedIn.body)")
                return
            }
            // The token works on the socket.
            let device = try await TestDevice.connect(g.wsURL, uid: uid)
            try await device.hello(token: token)
            let bad = try await g.http("POST", "/v1/dev/token", body: ["uid": "not a uid"])
            #expect(bad.status == 400)
            #expect(bad.body.at("error", "field") == "uid")
        }
        try await Gateway.run(["RINGING_AUTH_SECRET": String(repeating: "s", count: 40)]) { g in
            let signIn = try await g.http("POST", "/v1/dev/token", body: ["uid": "alice"])
            #expect(signIn.status == 404, "no development sign-in with a real secret")
            #expect(try await g.http("GET", "/").status == 200, "the page itself is served (it asks for a token)")
        }
    }

    /// DESIGN §9: the outside `app` account can send requests, but cannot listen to
    /// notifications, forge events or notifications, or take call-control's commands.
    @Test func theAppAccountIsRefusedWhatIsNotItsOwn() async throws {
        // The topology must exist for the refusals to be about permissions (on a fresh broker
        // this test may run before any call-control has declared it).
        var admin = AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: "topology")
        admin.operationTimeout = .seconds(20)
        try await AMQPConnection.withConnection(configuration: admin) { connection in
            try await connection.declare(RingingTopology.declaration, remember: false)
        }
        var configuration = AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL(account: "app")), connectionName: "app")
        configuration.operationTimeout = .seconds(20)
        try await AMQPConnection.withConnection(configuration: configuration) { app in
            func refused(_ what: String, _ body: () async throws -> Void) async {
                do {
                    try await body()
                    Issue.record("\(what) was allowed to the app account")
                } catch {
                    #expect("\(error)".contains("ACCESS_REFUSED") || "\(error)".contains("403"), "\(what): \(error)")
                }
            }
            // Binding needs write on the queue, which the app account has on no queue.
            let queue = "amq.gen-\(UUID().uuidString.lowercased())"
            await refused("binding calls.notifications") {
                try await app.bind(AMQPBinding(queue: queue, exchange: Topology.notificationsExchange, routingKey: "user.#"))
            }
            await refused("consuming call-control.commands") {
                _ = try await app.consume(queue: Topology.callControlQueue)
            }
            for exchange in [Topology.notificationsExchange, Topology.eventsExchange] {
                await refused("publishing to \(exchange)") {
                    try await app.publish(
                        AMQPMessage(
                            exchange: exchange, routingKey: "user.bob.incoming_call.received", body: Data("{}".utf8),
                            mandatory: false))
                }
            }
            await refused("publishing a routing key outside call/group/token/device") {
                try await app.publish(
                    AMQPMessage(
                        exchange: Topology.commandsExchange, routingKey: "user.bob.x", body: Data("{}".utf8), mandatory: false))
            }
            // What it may do: publish a request.
            try await app.publish(
                AMQPMessage(
                    exchange: Topology.commandsExchange, routingKey: "call.active", body: Data("{}".utf8),
                    properties: AMQPProperties(contentType: "application/json", messageID: UUID().uuidString), mandatory: false))
        }
    }
}

extension TestDevice {
    static func placeholderDevice(uid: String) -> TestDevice.Named { Named(uid: uid) }
    struct Named: Sendable { let uid: String }
}

extension Gateway {
    func device(of named: TestDevice.Named, deviceID: String? = nil) async throws -> TestDevice {
        let device = try await TestDevice.connect(wsURL, uid: named.uid)
        try await device.hello(token: try await auth.mint(uid: named.uid), deviceID: deviceID)
        return device
    }
}
