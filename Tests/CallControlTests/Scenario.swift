// A running call-control instance (in this process) and clients that talk to it over AMQP,
// as the seed's apps would.
import AMQPClient
import CallControl
import CallRules
import Foundation
import Logging
import RingingAuth
import RingingContract
import RingingOperations
import RingingService
import RingingTracing
import ServiceLifecycle
import TestSupport
import TokenService

/// One user of a test: a unique uid, an auth token, and a queue that receives the user's
/// notifications (every device of the user binds `user.<uid>.#`).
struct Party: Sendable {
    let uid: String
    let token: String
    let notifications: Capture

    /// Waits for the notification `name` about `session`.
    @discardableResult
    func expect(_ name: NotificationName, _ session: UUID, timeout: Duration = .seconds(30)) async throws -> WireEvent {
        try await notifications.next("\(uid) to get \(name.rawValue)", timeout: timeout) {
            $0.type == name.rawValue && $0.call.sessionID == session
        }
    }

    func received(_ name: NotificationName, _ session: UUID) -> [WireEvent] {
        notifications.events.filter { $0.type == name.rawValue && $0.call.sessionID == session }
    }
}

struct Scenario: Sendable {
    let client: RingingTestClient
    let auth: AuthTokens
    let events: Capture

    static func quietLogger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = .warning
        return logger
    }

    /// Several instances run in one test process: no operations port unless a test asks.
    static func configuration(workers: Int = 2, httpPort: Int = 0) throws -> CallControlConfiguration {
        try CallControlConfiguration(
            environment: Environment([
                "RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "call-control"),
                "RINGING_DATABASE_URL": TestEnvironment.databaseURL,
                "RINGING_CALL_CONTROL_WORKERS": "\(workers)", "RINGING_INSTANCE": TestEnvironment.uniqueName("cc-test"),
                "RINGING_HTTP_PORT": "\(httpPort)",
            ]))
    }

    /// Runs `body` against a fresh call-control instance (one of possibly several sharing the
    /// queue, as in production) and a fresh client.
    static func run(
        tokens: Bool = false, httpPort: Int = 0, _ body: @escaping @Sendable (Scenario) async throws -> Void
    ) async throws {
        _ = RingingMetrics.registry
        _ = RingingTracing.bootstrap
        let service = try await CallControlService(
            configuration: try configuration(httpPort: httpPort), logger: quietLogger("call-control-test"))
        let tokenService: TokenService? =
            tokens ? try await TokenService(configuration: try tokenConfiguration(), logger: quietLogger("token-test")) : nil
        try await withDeadline(.seconds(100), "the scenario") {
            // The services run in a ServiceGroup, as in production, and stop with a graceful
            // shutdown: what an instance committed is published before it goes, so that no test
            // waits for the outbox relay of another test's instance.
            var services = service.serviceGroupEntries
            if let tokenService { services += tokenService.serviceGroupEntries }
            let serviceGroup = ServiceGroup(
                configuration: ServiceGroupConfiguration(services: services, logger: quietLogger("scenario")))
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await serviceGroup.run() }
                defer { group.cancelAll() }
                await service.waitUntilReady()
                try await RingingTestClient.with { client in
                    let events = try await Capture.start(client.amqp, exchange: Topology.eventsExchange, keys: ["#"])
                    // Every request anyone sends meanwhile (the client library, ringctl), for the contract check.
                    let requests = try await Capture.start(client.amqp, exchange: Topology.commandsExchange, keys: ["#"])
                    // And the dead letters: the malformed requests, which the contract check leaves out.
                    let deadLetters = try await Capture.start(client.amqp, exchange: Topology.deadLetterExchange, keys: [""])
                    let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
                    try await withThrowingTaskGroup(of: Void.self) { drain in
                        drain.addTask { try await requests.drain() }
                        drain.addTask { try await deadLetters.drain() }
                        defer { drain.cancelAll() }
                        try await body(Scenario(client: client, auth: auth, events: events))
                    }
                }
                await serviceGroup.triggerGracefulShutdown()
                try await group.waitForAll()
            }
        }
    }

    static func tokenConfiguration(_ extra: [String: String] = [:]) throws -> TokenServiceConfiguration {
        try TokenServiceConfiguration(
            environment: Environment(
                [
                    "RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "token-service"),
                    "RINGING_TOKEN_DATABASE_URL": TestEnvironment.readerDatabaseURL,
                    "RINGING_INSTANCE": TestEnvironment.uniqueName("token-test"), "RINGING_HTTP_PORT": "0",
                ].merging(extra) { $1 }))
    }

    func party(_ name: String) async throws -> Party {
        let uid = TestEnvironment.uniqueName(name)
        let notifications = try await Capture.start(
            client.amqp, exchange: Topology.notificationsExchange, keys: [RoutingKey.allNotifications(for: uid)])
        return Party(uid: uid, token: try await auth.mint(uid: uid), notifications: notifications)
    }

    func request(_ type: RequestType, as party: Party?, _ fields: JSONObject = [:], messageID: String = UUID().uuidString)
        async throws -> WireReply
    {
        try await client.request(type.rawValue, token: party?.token, fields, messageID: messageID)
    }

    /// `call.initiate` that must succeed; returns the call.
    func call(_ caller: Party, _ callee: Party, type: CallType = .audio, timeout: Int? = nil, device: String? = nil) async throws
        -> WireCall
    {
        var fields: JSONObject = [
            "receiver_id": .string(callee.uid), "receiver_type": "user", "call_type": .string(type.rawValue),
        ]
        if let timeout { fields["timeout_s"] = .int(Int64(timeout)) }
        if let device { fields["device_id"] = .string(device) }
        return try Self.call(try await request(.initiate, as: caller, fields))
    }

    func act(_ type: RequestType, _ party: Party, _ session: UUID, _ extra: JSONObject = [:]) async throws -> WireReply {
        var fields = extra
        fields["session_id"] = .string(session.uuidString)
        return try await request(type, as: party, fields)
    }

    static func call(_ reply: WireReply) throws -> WireCall {
        guard reply.ok, let call = reply.call else {
            throw ScenarioError("expected a call, got \(reply.error.map { "\($0.code.rawValue): \($0.message)" } ?? "nothing")")
        }
        return call
    }

    /// Every event of `session` seen so far, once each (consumers deduplicate on event_id).
    func eventTypes(_ session: UUID) -> [String] {
        var seen = Set<UUID>()
        return events.events.filter { $0.call.sessionID == session && seen.insert($0.eventID).inserted }
            .sorted { $0.sequence < $1.sequence }.map(\.type)
    }

    /// Waits until the event `type` of `session` has been published.
    @discardableResult
    func expectEvent(_ type: CallEventType, _ session: UUID, timeout: Duration = .seconds(30)) async throws -> WireEvent {
        try await events.next("event \(type.rawValue)", timeout: timeout) {
            $0.type == type.rawValue && $0.call.sessionID == session
        }
    }
}

struct ScenarioError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
