// The client library: the seed's calls (initiateCall, acceptCall, rejectCall, endCall,
// getActiveCall, clearActiveCall, generateToken, history) and callbacks, over the Ringing
// contract on RabbitMQ.
public import AMQPClient
public import CallRules
public import Foundation
public import Logging
public import RingingContract
import Synchronization

/// A call as the client sees it (the contract's Call object).
public typealias Call = WireCall

/// An error of a request: the server's code and message, or the client's own
/// (`unavailable` when no reply came in time).
public struct RingingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: CallError.Code
    public var message: String
    public var field: String?
    /// The call's status, for `invalid_state`.
    public var status: CallStatus?

    public init(_ error: CallError) {
        code = error.code
        message = error.message
        field = error.field
        status = error.status
    }

    public var description: String {
        var text = "\(code.rawValue): \(message)"
        if let field { text += " (field \(field))" }
        return text
    }
}

public enum RejectStatus: String, Sendable, CaseIterable {
    case rejected, cancelled, busy
}

/// No reply came in time for one attempt (the request is then sent again).
struct NoReply: Error, CustomStringConvertible {
    let timeout: Duration
    var description: String { "no reply within \(timeout)" }
}

/// A signed call token for `startSession`.
public struct CallToken: Sendable, Hashable {
    public let token: String
    public let expiresAt: Date
}

public struct CallHistoryPage: Sendable, Hashable {
    public let calls: [Call]
    /// Pass as `before` for the next page; nil on the last page.
    public let next: String?
}

/// The seed's callbacks. Every method has an empty default, so a delegate implements the ones
/// it cares about. Called once per notification, duplicates and stale ones removed.
public protocol RingingClientDelegate: AnyObject, Sendable {
    func onIncomingCallReceived(_ call: Call)
    /// The callee's phone shows the ring (the call's first ring receipt): "Ringing…" rather
    /// than "Calling…". `deviceID` is the device that rang first.
    func onOutgoingCallRinging(_ call: Call, deviceID: String?)
    func onOutgoingCallAccepted(_ call: Call)
    /// Rejected, busy or unanswered: `call.status` says which.
    func onOutgoingCallRejected(_ call: Call)
    /// Cancelled by the caller, or unanswered.
    func onIncomingCallCanceled(_ call: Call)
    func onCallEndedMessageReceived(_ call: Call)
    /// Another device of this user answered: stop ringing here. `deviceID` is the one that did.
    func onCallAnsweredElsewhere(_ call: Call, deviceID: String?)
    func onCallRejectedElsewhere(_ call: Call, deviceID: String?)
    func onParticipantJoined(_ call: Call, uid: String?)
    func onParticipantLeft(_ call: Call, uid: String?)
}

extension RingingClientDelegate {
    public func onIncomingCallReceived(_ call: Call) {}
    public func onOutgoingCallRinging(_ call: Call, deviceID: String?) {}
    public func onOutgoingCallAccepted(_ call: Call) {}
    public func onOutgoingCallRejected(_ call: Call) {}
    public func onIncomingCallCanceled(_ call: Call) {}
    public func onCallEndedMessageReceived(_ call: Call) {}
    public func onCallAnsweredElsewhere(_ call: Call, deviceID: String?) {}
    public func onCallRejectedElsewhere(_ call: Call, deviceID: String?) {}
    public func onParticipantJoined(_ call: Call, uid: String?) {}
    public func onParticipantLeft(_ call: Call, uid: String?) {}
}

/// One notification, for those who prefer an `AsyncSequence` to a delegate.
public struct RingingNotification: Sendable, Hashable {
    public let name: NotificationName
    public let call: Call
    /// The user whose request caused it (nil for the ring timer).
    public let actor: String?
    public let deviceID: String?
    public let eventID: UUID
    public let sequence: Int
}

public struct RingingClientConfiguration: Sendable {
    public var amqp: AMQPURL
    /// The user's auth token (HS256 JWT from the deployment's identity service).
    public var authToken: String
    /// This device, sent with accept/reject/end so the user's other devices learn who answered.
    public var deviceID: String?
    /// How long one request waits for its reply before it is sent again (same message_id).
    public var replyTimeout: Duration = .seconds(10)
    /// How often a request is sent before it fails with `unavailable`.
    public var attempts = 3
    /// Whether the client sends the ring receipt (`call.ringing`) when it hands an incoming
    /// call to the app. Turn it off when the app sends it itself, once the ring shows.
    public var sendsRingReceipts = true
    /// How often the client sends `call.heartbeat` while its user is in an ongoing call
    /// (DESIGN §10: a participant silent for 90 s is taken out of the call).
    public var heartbeatInterval: Duration = .seconds(30)

    public init(amqp: AMQPURL = AMQPURL(), authToken: String, deviceID: String? = nil) {
        self.amqp = amqp
        self.authToken = authToken
        self.deviceID = deviceID
    }
}

/// A Ringing client for one user. Call `run()` (or use `withClient`), then the seed's calls.
public final class RingingClient: Sendable {
    public let configuration: RingingClientConfiguration
    /// The user, read from the auth token's `sub`.
    public let uid: String
    public let notifications: AsyncStream<RingingNotification>
    let amqp: AMQPConnection
    let logger: Logger
    private let notificationInput: AsyncStream<RingingNotification>.Continuation
    private let state = Mutex(State())
    private let ready = Mutex<(result: Result<Void, RingingError>?, waiters: [CheckedContinuation<Void, any Error>])>((nil, []))

    struct State {
        var delegate: (any RingingClientDelegate)?
        var waiting: [String: CheckedContinuation<WireReply, any Error>] = [:]
        var arrived: [String: WireReply] = [:]
        var seenEvents: [String] = []
        var seenEventSet: Set<String> = []
        var lastSequence: [UUID: Int] = [:]
        var activeCall: Call?
    }

    public init(configuration: RingingClientConfiguration, logger: Logger = Logger(label: "ringing.client")) throws(RingingError)
    {
        guard let uid = Self.subject(of: configuration.authToken) else {
            throw RingingError(CallError(.unauthenticated, "the auth token is not a JWT with a 'sub' claim"))
        }
        self.configuration = configuration
        self.uid = uid
        self.logger = logger
        var amqpConfiguration = AMQPConfiguration(url: configuration.amqp, connectionName: "ringing-client \(uid)")
        amqpConfiguration.operationTimeout = configuration.replyTimeout
        amqp = AMQPConnection(configuration: amqpConfiguration, logger: logger)
        (notifications, notificationInput) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1000))
    }

    /// The delegate that receives the callbacks (held strongly until replaced).
    public func setDelegate(_ delegate: (any RingingClientDelegate)?) {
        state.withLock { $0.delegate = delegate }
    }

    /// Runs the client until cancelled: keeps the connection (reconnecting by itself), listens
    /// on `user.<uid>.#` and takes replies by direct reply-to.
    public func run() async throws {
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await self.amqp.run() }
                defer { group.cancelAll() }
                let replies = try await amqp.consumeDirectReplies()
                let queue = "ringing.client.\(uid).\(UUID().uuidString.prefix(8).lowercased())"
                try await amqp.declare(
                    AMQPTopology(
                        exchanges: [AMQPExchange(Topology.notificationsExchange, kind: .topic)],
                        queues: [AMQPQueue(queue, durable: false, exclusive: true, autoDelete: true)],
                        bindings: [
                            AMQPBinding(
                                queue: queue, exchange: Topology.notificationsExchange,
                                routingKey: RoutingKey.allNotifications(for: uid))
                        ]))
                let incoming = try await amqp.consume(queue: queue, prefetch: 200)
                group.addTask {
                    for try await delivery in replies { self.receiveReply(delivery) }
                }
                group.addTask {
                    for try await delivery in incoming {
                        delivery.ack()
                        self.receiveNotification(delivery)
                    }
                }
                group.addTask { await self.sendHeartbeats() }
                markReady(.success(()))
                try await group.next()
            }
        } catch {
            markReady(
                .failure(RingingError(CallError(.unavailable, "cannot reach the broker at \(configuration.amqp): \(error)"))))
            notificationInput.finish()
            throw error
        }
        notificationInput.finish()
    }

    /// Runs `body` with a running client.
    public static func withClient<T: Sendable>(
        configuration: RingingClientConfiguration, logger: Logger = Logger(label: "ringing.client"),
        _ body: @Sendable (RingingClient) async throws -> T
    ) async throws -> T {
        let client = try RingingClient(configuration: configuration, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await client.run() }
            defer { group.cancelAll() }
            try await client.waitUntilReady()
            return try await body(client)
        }
    }

    /// Waits until the client listens for notifications; throws when it could not start.
    public func waitUntilReady() async throws(RingingError) {
        do {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let result = ready.withLock { state -> Result<Void, RingingError>? in
                    if state.result == nil { state.waiters.append(continuation) }
                    return state.result
                }
                if let result { continuation.resume(with: result) }
            }
        } catch let error as RingingError {
            throw error
        } catch {
            throw RingingError(CallError(.unavailable, "\(error)"))
        }
    }

    private func markReady(_ result: Result<Void, RingingError>) {
        let waiters = ready.withLock { state -> [CheckedContinuation<Void, any Error>] in
            guard state.result == nil else { return [] }
            state.result = result
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(with: result) }
    }

    /// Waits until the connection to the broker is up (after a broker restart, for example);
    /// notifications published while it was down are not delivered.
    public func waitUntilConnected() async throws {
        try await amqp.waitUntilConnected()
    }

    // MARK: - The seed's calls

    public func initiateCall(
        receiverID: String, receiverType: ReceiverType = .user, callType: CallType = .audio, timeout: Int = 45,
        metadata: JSONObject = [:]
    ) async throws(RingingError) -> Call {
        var fields: JSONObject = [
            "receiver_id": .string(receiverID), "receiver_type": .string(receiverType.rawValue),
            "call_type": .string(callType.rawValue),
            "timeout_s": .int(Int64(timeout)),
        ]
        if !metadata.isEmpty { fields["metadata"] = .object(metadata) }
        return track(try await call(.initiate, fields, device: true))
    }

    public func acceptCall(sessionID: UUID) async throws(RingingError) -> Call {
        track(try await call(.accept, ["session_id": .string(sessionID.uuidString)], device: true))
    }

    public func rejectCall(sessionID: UUID, status: RejectStatus) async throws(RingingError) -> Call {
        track(
            try await call(
                .reject, ["session_id": .string(sessionID.uuidString), "status": .string(status.rawValue)], device: true))
    }

    public func endCall(sessionID: UUID) async throws(RingingError) -> Call {
        track(try await call(.end, ["session_id": .string(sessionID.uuidString)], device: true))
    }

    public func getCall(sessionID: UUID) async throws(RingingError) -> Call {
        try await call(.get, ["session_id": .string(sessionID.uuidString)])
    }

    /// The user's active call on the server (seed `getActiveCall`).
    public func getActiveCall() async throws(RingingError) -> Call? {
        let reply = try await send(.active, [:])
        return reply.call.map { trackNotification($0) }
    }

    /// Forgets the call this client tracks as active (seed `clearActiveCall`), without telling
    /// the server: after `endCall`, or when the media session ended on its own.
    public func clearActiveCall() {
        state.withLock { $0.activeCall = nil }
    }

    /// The call this client last saw as active (initiated by this user, or ongoing), if any.
    public var activeCall: Call? { state.withLock { $0.activeCall } }

    public func generateToken(sessionID: UUID) async throws(RingingError) -> CallToken {
        let reply = try await send(.generateToken, ["session_id": .string(sessionID.uuidString)])
        guard let token = reply.token, let expiresAt = reply.expiresAt else {
            throw RingingError(CallError(.unavailable, "the token reply had no token"))
        }
        return CallToken(token: token, expiresAt: expiresAt)
    }

    public func callHistory(
        limit: Int = 20, before: String? = nil, status: CallStatus? = nil, callType: CallType? = nil,
        direction: HistoryDirection? = nil
    ) async throws(RingingError) -> CallHistoryPage {
        var fields: JSONObject = ["limit": .int(Int64(limit))]
        if let before { fields["before"] = .string(before) }
        if let status { fields["status"] = .string(status.rawValue) }
        if let callType { fields["call_type"] = .string(callType.rawValue) }
        if let direction { fields["direction"] = .string(direction.rawValue) }
        let reply = try await send(.history, fields)
        return CallHistoryPage(calls: reply.calls ?? [], next: reply.next)
    }

    /// `group.set_members` (needs a token with the service role).
    public func setGroupMembers(groupID: String, members: [String]) async throws(RingingError) {
        _ = try await send(.setGroupMembers, ["group_id": .string(groupID), "members": .array(members.map(JSONValue.string))])
    }

    /// The ring receipt (`call.ringing`): this device shows the ring of `sessionID`. Sent by
    /// the client itself when `sendsRingReceipts` is on.
    public func sendRingReceipt(sessionID: UUID) async throws(RingingError) {
        var fields: JSONObject = ["session_id": .string(sessionID.uuidString)]
        if let deviceID = configuration.deviceID { fields["device_id"] = .string(deviceID) }
        _ = try await send(.ringing, fields)
    }

    /// Keeps the user's ongoing call live (`call.heartbeat`); the client sends it by itself
    /// every `heartbeatInterval` while it tracks an ongoing call.
    public func sendHeartbeat(sessionID: UUID) async throws(RingingError) {
        var fields: JSONObject = ["session_id": .string(sessionID.uuidString)]
        if let deviceID = configuration.deviceID { fields["device_id"] = .string(deviceID) }
        _ = try await send(.heartbeat, fields)
    }

    private func sendHeartbeats() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            guard let call = activeCall, call.status == .ongoing else { continue }
            do { try await sendHeartbeat(sessionID: call.sessionID) } catch {
                logger.debug("heartbeat refused", metadata: ["session_id": "\(call.sessionID)", "error": "\(error)"])
                // The call is over or we are no longer in it: stop tracking it.
                if error.code == .invalidState || error.code == .forbidden || error.code == .notFound {
                    state.withLock { state in
                        if state.activeCall?.sessionID == call.sessionID { state.activeCall = nil }
                    }
                }
            }
        }
    }

    /// The token service's public keys (`token.jwks`).
    public func jwks() async throws(RingingError) -> [JSONObject] {
        try await send(.jwks, [:], authenticated: false).keys ?? []
    }

    // MARK: - Requests

    private func call(_ type: RequestType, _ fields: JSONObject, device: Bool = false) async throws(RingingError) -> Call {
        var fields = fields
        if device, let deviceID = configuration.deviceID { fields["device_id"] = .string(deviceID) }
        guard let call = try await send(type, fields).call else {
            throw RingingError(CallError(.unavailable, "the reply to \(type.rawValue) had no call"))
        }
        return call
    }

    /// Sends a request with a fresh message_id and waits for its reply; a lost reply (timeout,
    /// reconnect) sends it again with the same message_id, which the server answers with the
    /// original reply. Error replies throw `RingingError`.
    func send(_ type: RequestType, _ fields: JSONObject, authenticated: Bool = true) async throws(RingingError) -> WireReply {
        var body = fields
        if authenticated { body["auth_token"] = .string(configuration.authToken) }
        let data = (try? JSONEncoder().encode(body)) ?? Data()
        let messageID = UUID().uuidString
        var lastError = "no reply"
        for _ in 0..<max(1, configuration.attempts) {
            let correlation = UUID().uuidString
            let message = AMQPMessage(
                exchange: Topology.commandsExchange, routingKey: type.rawValue, body: data,
                properties: AMQPProperties(
                    contentType: "application/json", deliveryMode: .persistent, correlationID: correlation,
                    replyTo: AMQPConnection.directReplyTo, messageID: messageID))
            let reply: WireReply
            do {
                reply = try await exchange(message, correlation: correlation)
            } catch {
                lastError = "\(error)"
                logger.debug(
                    "no reply yet; sending again",
                    metadata: ["type": "\(type.rawValue)", "message_id": "\(messageID)", "error": "\(lastError)"])
                continue
            }
            if let error = reply.error { throw RingingError(error.callError) }
            return reply
        }
        throw RingingError(
            CallError(
                .unavailable, "no reply to \(type.rawValue) from \(configuration.amqp) (\(lastError)); is the stack running?"))
    }

    private func exchange(_ message: AMQPMessage, correlation: String) async throws -> WireReply {
        try await amqp.publish(message)
        return try await withThrowingTaskGroup(of: WireReply?.self) { group in
            group.addTask { try await self.awaitReply(correlation) }
            group.addTask {
                try await Task.sleep(for: self.configuration.replyTimeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let reply = try await group.next()! else { throw NoReply(timeout: configuration.replyTimeout) }
            return reply
        }
    }

    private func awaitReply(_ correlation: String) async throws -> WireReply {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let ready = state.withLock { state -> Result<WireReply, any Error>? in
                    if let reply = state.arrived.removeValue(forKey: correlation) { return .success(reply) }
                    if Task.isCancelled { return .failure(CancellationError()) }
                    state.waiting[correlation] = continuation
                    return nil
                }
                if let ready { continuation.resume(with: ready) }
            }
        } onCancel: {
            state.withLock { $0.waiting.removeValue(forKey: correlation) }?.resume(throwing: CancellationError())
        }
    }

    private func receiveReply(_ delivery: AMQPDelivery) {
        guard let correlation = delivery.properties.correlationID,
            let reply = try? WireTime.decoder.decode(WireReply.self, from: delivery.body)
        else { return }
        let waiter = state.withLock { state -> CheckedContinuation<WireReply, any Error>? in
            if let waiter = state.waiting.removeValue(forKey: correlation) { return waiter }
            // A reply that beat its waiter, or one for an attempt given up on: kept briefly.
            if state.arrived.count > 1000 { state.arrived.removeAll() }
            state.arrived[correlation] = reply
            return nil
        }
        waiter?.resume(returning: reply)
    }

    // MARK: - Notifications

    private func receiveNotification(_ delivery: AMQPDelivery) {
        // Only call-control makes a device ring (DESIGN §9): the broker vouches for user_id.
        guard delivery.properties.userID == Topology.publisherAccount else {
            logger.warning(
                "ignoring a notification not published by call-control",
                metadata: ["user_id": "\(delivery.properties.userID ?? "none")", "routing_key": "\(delivery.routingKey)"])
            return
        }
        guard let event = try? WireTime.decoder.decode(WireEvent.self, from: delivery.body),
            let name = NotificationName(rawValue: event.type)
        else {
            logger.warning("ignoring a notification that does not parse", metadata: ["routing_key": "\(delivery.routingKey)"])
            return
        }
        let (fresh, delegate) = state.withLock { state -> (Bool, (any RingingClientDelegate)?) in
            // Duplicates (republished by the outbox relay) and stale ones (older than what this
            // client has seen of the call) are dropped.
            let key = "\(event.eventID):\(name.rawValue)"
            guard state.seenEventSet.insert(key).inserted else { return (false, nil) }
            state.seenEvents.append(key)
            if state.seenEvents.count > 5000 {
                state.seenEventSet.subtract(state.seenEvents.prefix(2500))
                state.seenEvents.removeFirst(2500)
            }
            let last = state.lastSequence[event.call.sessionID] ?? 0
            guard event.sequence >= last else { return (false, nil) }
            state.lastSequence[event.call.sessionID] = event.sequence
            return (true, state.delegate)
        }
        guard fresh else { return }
        _ = trackNotification(event.call)
        let notification = RingingNotification(
            name: name, call: event.call, actor: event.actor, deviceID: event.deviceID, eventID: event.eventID,
            sequence: event.sequence)
        notificationInput.yield(notification)
        guard let delegate = delegate ?? state.withLock({ $0.delegate }) else {
            if name == .incomingCallReceived { receipt(for: event.call) }
            return
        }
        switch name {
        case .incomingCallReceived:
            delegate.onIncomingCallReceived(event.call)
            receipt(for: event.call)
        case .outgoingCallRinging: delegate.onOutgoingCallRinging(event.call, deviceID: event.deviceID)
        case .outgoingCallAccepted: delegate.onOutgoingCallAccepted(event.call)
        case .outgoingCallRejected: delegate.onOutgoingCallRejected(event.call)
        case .incomingCallCanceled: delegate.onIncomingCallCanceled(event.call)
        case .callEnded: delegate.onCallEndedMessageReceived(event.call)
        case .answeredElsewhere: delegate.onCallAnsweredElsewhere(event.call, deviceID: event.deviceID)
        case .rejectedElsewhere: delegate.onCallRejectedElsewhere(event.call, deviceID: event.deviceID)
        case .participantJoined: delegate.onParticipantJoined(event.call, uid: event.actor)
        case .participantLeft: delegate.onParticipantLeft(event.call, uid: event.actor)
        }
    }

    /// The ring was handed to the app: tell the caller (DESIGN §10), in the background.
    private func receipt(for call: Call) {
        guard configuration.sendsRingReceipts else { return }
        Task {
            do { try await self.sendRingReceipt(sessionID: call.sessionID) } catch {
                self.logger.debug(
                    "ring receipt refused", metadata: ["session_id": "\(call.sessionID)", "error": "\(error)"])
            }
        }
    }

    private func track(_ call: Call) -> Call {
        trackNotification(call)
    }

    /// Keeps `activeCall` current: set while this user is active in a call, cleared when it ends.
    @discardableResult
    private func trackNotification(_ call: Call) -> Call {
        let active =
            call.participant(uid).map { participant in
                participant.status == .accepted
                    && (call.status == .ongoing || (call.status == .initiated && participant.role == .initiator))
            } ?? false
        state.withLock { state in
            if active {
                state.activeCall = call
            } else if state.activeCall?.sessionID == call.sessionID {
                state.activeCall = nil
            }
        }
        return call
    }

    /// The `sub` claim of a JWT, read without verifying (the server verifies).
    static func subject(of token: String) -> String? {
        let parts = token.split(separator: ".")
        guard parts.count >= 2 else { return nil }
        var base64 = String(parts[1]).replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64),
            let claims = try? JSONDecoder().decode([String: JSONValue].self, from: data),
            case .string(let sub)? = claims["sub"]
        else { return nil }
        return sub
    }
}
