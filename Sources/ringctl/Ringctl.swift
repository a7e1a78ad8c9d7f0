// ringctl: the development command line of Ringing — tokens, calls from a terminal, the seed's
// whole flow as a demo, history, groups and the JWKS.
import AMQPClient
import ArgumentParser
import CallRules
import Foundation
import Logging
import RingingAuth
import RingingClient
import RingingClientAMQP
import RingingContract

@main
struct Ringctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ringctl",
        abstract: "Talk to a running Ringing stack: mint tokens, place and answer calls, run the demo.",
        discussion:
            "Tokens are minted with RINGING_AUTH_SECRET (the local stack's development secret by default); the broker is RINGING_AMQP_URL.",
        subcommands: [Token.self, Listen.self, Place.self, Hangup.self, Demo.self, History.self, Groups.self, JWKS.self])
}

/// Options every command that talks to the stack takes.
struct StackOptions: ParsableArguments {
    @Option(
        name: .customLong("gateway"),
        help: "The device gateway, as a phone reaches it (default: RINGING_GATEWAY_URL or the local stack's).")
    var gatewayURL: String = ProcessInfo.processInfo.environment["RINGING_GATEWAY_URL"] ?? "http://127.0.0.1:8080"

    @Flag(help: "Talk to the broker instead of the gateway (needs the admin account to read notifications).")
    var amqp = false

    @Option(
        name: .customLong("amqp-url"),
        help: "The broker, with --amqp (default: RINGING_AMQP_URL or the local stack's admin account); implies --amqp.")
    var amqpURL: String?

    @Option(
        name: .customLong("auth-secret"),
        help: "The secret tokens are minted with (default: RINGING_AUTH_SECRET or the development secret).")
    var authSecret: String = ProcessInfo.processInfo.environment["RINGING_AUTH_SECRET"] ?? AuthTokens.developmentSecret

    @Flag(help: "Print JSON lines instead of text.")
    var json = false

    /// Whether the broker path was asked for.
    var usesAMQP: Bool { amqp || amqpURL != nil }

    func url() throws -> AMQPURL {
        let text = amqpURL ?? ProcessInfo.processInfo.environment["RINGING_AMQP_URL"] ?? "amqp://admin:admin@127.0.0.1:5672/"
        do { return try AMQPURL(text) } catch { throw ValidationError("--amqp-url: \(error.message)") }
    }

    func gateway() throws -> URL {
        guard let url = URL(string: gatewayURL), let scheme = url.scheme?.lowercased(),
            ["http", "https", "ws", "wss"].contains(scheme), url.host != nil
        else {
            throw ValidationError("--gateway: '\(gatewayURL)' is not an http(s):// or ws(s):// URL of the device gateway")
        }
        return url
    }

    func tokens() async throws -> AuthTokens {
        do { return try await AuthTokens(secret: authSecret) } catch { throw ValidationError("--auth-secret: \(error)") }
    }

    /// Runs `body` with a client for `uid`, turning failures into one clear line.
    func withClient<T: Sendable>(
        as uid: String, device: String? = nil, service: Bool = false, _ body: @Sendable (RingingClient) async throws -> T
    ) async throws -> T {
        try validate(uid: uid)
        var configuration = RingingClientConfiguration(
            gateway: try gateway(), authToken: try await tokens().mint(uid: uid, service: service), deviceID: device)
        configuration.replyTimeout = .seconds(5)
        configuration.attempts = 2
        var logger = Logger(label: "ringctl")
        logger.logLevel = .critical
        do {
            let client =
                usesAMQP
                ? try RingingClient(amqp: try url(), configuration: configuration, logger: logger)
                : try RingingClient(configuration: configuration, logger: logger)
            return try await RingingClient.withClient(client, body)
        } catch let error as RingingError {
            throw CleanExit.message("ringctl: \(error)")
        }
    }

    func validate(uid: String) throws {
        guard Identifier.isValid(uid) else { throw ValidationError("'\(uid)' is not a user id: use 1 to 64 of A-Z a-z 0-9 _ -") }
    }

    /// Writes one line straight to stdout (no stdio buffer: `listen` reads stdin on another
    /// thread, and flushing stdio would wait for that thread's lock).
    func show(_ text: String, _ object: [String: String] = [:]) {
        let line: String
        if json {
            let data =
                (try? JSONSerialization.data(
                    withJSONObject: object.merging(["message": text]) { a, _ in a }, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        } else {
            line = text
        }
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }
}

/// Ends the command with a message on stderr and exit status 1.
enum CleanExit: Error, CustomStringConvertible {
    case message(String)
    var description: String {
        switch self {
        case .message(let text): text
        }
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Mint a development auth token for a user.")

    @Argument(help: "The user id (sub).") var uid: String
    @Flag(help: "Give the token the service role (group management).") var service = false
    @Option(help: "Lifetime in hours.") var hours: Int = 24
    @OptionGroup var stack: StackOptions

    func run() async throws {
        try stack.validate(uid: uid)
        guard hours > 0 else { throw ValidationError("--hours must be positive") }
        print(try await stack.tokens().mint(uid: uid, lifetime: .seconds(hours * 3600), service: service))
    }
}

struct Hangup: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "End (or, while it rings, cancel) a user's active call.")
    @Argument(help: "The user whose call to end.") var uid: String
    @OptionGroup var stack: StackOptions

    func run() async throws {
        let result = try await stack.withClient(as: uid, device: "ringctl-hangup") { client -> Call? in
            guard let call = try await client.getActiveCall() else { return nil }
            if call.status == .ongoing { return try await client.endCall(sessionID: call.sessionID) }
            return try await client.rejectCall(sessionID: call.sessionID, status: .cancelled)
        }
        guard let result else {
            stack.show("\(uid) has no active call", ["uid": uid])
            return
        }
        stack.show(
            "\(uid)'s call is \(result.status.rawValue)",
            ["session_id": result.sessionID.uuidString.lowercased(), "status": result.status.rawValue])
    }
}

struct JWKS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the token service's public keys (token.jwks).")
    @OptionGroup var stack: StackOptions

    func run() async throws {
        let keys = try await stack.withClient(as: "ringctl") { client in try await client.jwks() }
        let data = try JSONEncoder().encode(["keys": keys])
        print(String(decoding: data, as: UTF8.self))
    }
}

struct History: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a user's call history, newest first.")
    @Argument(help: "The user id.") var uid: String
    @Option(help: "How many calls (1…100).") var limit: Int = 20
    @Option(help: "Only calls with this status.") var status: String?
    @OptionGroup var stack: StackOptions

    func run() async throws {
        let statusFilter = try status.map { text -> CallStatus in
            guard let value = CallStatus(rawValue: text) else {
                throw ValidationError("--status must be one of \(CallStatus.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            return value
        }
        let page = try await stack.withClient(as: uid) { client in
            try await client.callHistory(limit: limit, status: statusFilter)
        }
        if page.calls.isEmpty { stack.show("no calls", ["uid": uid]) }
        for call in page.calls {
            let other = call.initiator == uid ? "to \(call.receiverID)" : "from \(call.initiator)"
            let talk = call.durationSeconds.map { ", talked \($0) s" } ?? ""
            // Why the server ended it, and who lost the connection (DESIGN §10).
            let why = call.endReason.map { " (\($0.rawValue.replacingOccurrences(of: "_", with: " ")))" } ?? ""
            let lost = call.participants.filter { $0.leftReason == .connectionLost }.map(\.uid)
            let lostText = lost.isEmpty ? "" : "; lost the connection: \(lost.joined(separator: ", "))"
            var fields = ["session_id": call.sessionID.uuidString.lowercased(), "status": call.status.rawValue]
            if let reason = call.endReason { fields["end_reason"] = reason.rawValue }
            stack.show(
                "\(WireTime.format(call.initiatedAt))  \(call.callType.rawValue) call \(other): \(call.status.rawValue)\(why)\(talk)\(lostText)",
                fields)
        }
    }
}

struct Groups: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage groups (with a service-role token).", subcommands: [Set.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Replace a group's members.")
        @Argument(help: "The group id.") var group: String
        @Argument(help: "The members' user ids.") var members: [String]
        @OptionGroup var stack: StackOptions

        func run() async throws {
            guard Identifier.isValid(group) else { throw ValidationError("'\(group)' is not a group id") }
            for member in members { try stack.validate(uid: member) }
            try await stack.withClient(as: "ringctl-service", service: true) { client in
                try await client.setGroupMembers(groupID: group, members: members)
            }
            stack.show("group \(group): \(members.joined(separator: ", "))", ["group_id": group])
        }
    }
}
