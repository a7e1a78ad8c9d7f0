// The client library: the seed's calls (initiateCall, acceptCall, rejectCall, endCall,
// getActiveCall, clearActiveCall, generateToken, history) and callbacks, over the Ringing
// contract. By default it talks to the device gateway's WebSocket (GatewayTransport), which
// is what an iOS or Android app uses; server-side users can take the broker instead
// (AMQPTransport, in the module RingingClientAMQP). This module does not use rabbitmq-c.
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
    /// The connection changed: show it (connecting, connected, reconnecting in N s).
    func onConnectionStateChanged(_ state: ConnectionState)
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
    public func onConnectionStateChanged(_ state: ConnectionState) {}
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
    /// The device gateway: its base URL (`http://127.0.0.1:8080`, the local stack) or its
    /// WebSocket URL (`ws://…/v1/ws`).
    public var gateway: URL
    /// The user's auth token (HS256 JWT from the deployment's identity service).
    public var authToken: String
    /// This device. Through the gateway it is the socket's device id (one is made up when nil);
    /// the user's other devices see it in answered/rejected elsewhere.
    public var deviceID: String?
    /// How long one request waits for its reply before it is sent again (same message_id).
    public var replyTimeout: Duration = .seconds(10)
    /// How often a request is sent before it fails with `unavailable`.
    public var attempts = 3
    /// Whether the client sends the ring receipt (`call.ringing`) when it hands an incoming
    /// call to the app. Turn it off when the app sends it itself, once the ring shows.
    public var sendsRingReceipts = true
    /// How often the client sends `call.heartbeat` while its user is in an ongoing call, when
    /// the transport does not keep calls live by itself (over AMQP; the gateway does).
    public var heartbeatInterval: Duration = .seconds(30)
    /// The first and the longest wait between reconnect attempts (doubling, with jitter).
    public var reconnectBackoff: (initial: Duration, maximum: Duration) = (.milliseconds(500), .seconds(10))

    public init(
        gateway: URL = URL(string: "http://127.0.0.1:8080")!, authToken: String, deviceID: String? = nil
    ) {
        self.gateway = gateway
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
    public let transport: any RingingTransport
    let logger: Logger
    private let notificationInput: AsyncStream<RingingNotification>.Continuation
    private let state = Mutex(State())
    private let ready = Mutex<(result: Result<Void, RingingError>?, waiters: [CheckedContinuation<Void, any Error>])>((nil, []))

    struct State {
        var delegate: (any RingingClientDelegate)?
        var seenEvents: [String] = []
        var seenEventSet: Set<String> = []
        var lastSequence: [UUID: Int] = [:]
        var activeCall: Call?
        /// Incoming calls handed to the app as ringing and not yet over for this device.
        var ringing: [UUID: Call] = [:]
        var connection: ConnectionState = .connecting
        /// The device id the gateway knows this device by (the configured one, or its own).
        var deviceID: String?
    }

    /// A client through the device gateway (`configuration.gateway`), or through `transport`.
    public init(
        configuration: RingingClientConfiguration, transport: (any RingingTransport)? = nil,
        logger: Logger = Logger(label: "ringing.client")
    ) throws(RingingError) {
        guard let uid = Self.subject(of: configuration.authToken) else {
            throw RingingError(CallError(.unauthenticated, "the auth token is not a JWT with a 'sub' claim"))
        }
        self.configuration = configuration
        self.uid = uid
        self.logger = logger
        self.transport =
            transport
            ?? GatewayTransport(
                gateway: configuration.gateway, authToken: configuration.authToken, deviceID: configuration.deviceID,
                reconnect: configuration.reconnectBackoff, logger: logger)
        (notifications, notificationInput) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1000))
        state.withLock { $0.deviceID = configuration.deviceID }
    }

    /// The delegate that receives the callbacks (held strongly until replaced).
    public func setDelegate(_ delegate: (any RingingClientDelegate)?) {
        state.withLock { $0.delegate = delegate }
    }

    /// Runs the client until cancelled: keeps the connection (reconnecting by itself), listens
    /// for the user's notifications and, when the transport does not, keeps ongoing calls live.
    public func run() async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.transport.run { event in self.handle(event) } }
            if !transport.keepsCallsLive { group.addTask { await self.sendHeartbeats() } }
            await group.next()
            group.cancelAll()
        }
        markReady(.failure(RingingError(CallError(.unavailable, "the client stopped"))))
        notificationInput.finish()
        if Task.isCancelled { throw CancellationError() }
    }

    /// Where the connection stands now.
    public var connectionState: ConnectionState { state.withLock { $0.connection } }

    /// The device id the server knows this device by.
    public var deviceID: String? { state.withLock { $0.deviceID } }

    private func handle(_ event: TransportEvent) {
        switch event {
        case .state(let connection):
            let delegate = state.withLock { state in
                state.connection = connection
                return state.delegate
            }
            delegate?.onConnectionStateChanged(connection)
        case .unreachable(let why):
            markReady(.failure(RingingError(CallError(.unavailable, why))))
        case .listening(let snapshot, let deviceID):
            if let deviceID { state.withLock { $0.deviceID = deviceID } }
            markReady(.success(()))
            if let snapshot { apply(snapshot) }
        case .notification(let event):
            receive(event)
        }
    }

    /// Runs `body` with a running client through the gateway of `configuration`.
    public static func withClient<T: Sendable>(
        configuration: RingingClientConfiguration, logger: Logger = Logger(label: "ringing.client"),
        _ body: @Sendable (RingingClient) async throws -> T
    ) async throws -> T {
        try await withClient(try RingingClient(configuration: configuration, logger: logger), body)
    }

    /// Runs `client`, then `body` once it listens; stops the client afterwards.
    public static func withClient<T: Sendable>(_ client: RingingClient, _ body: @Sendable (RingingClient) async throws -> T)
        async throws -> T
    {
        try await withThrowingTaskGroup(of: Void.self) { group in
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

    /// Waits until the client listens again (after a reconnect, for example).
    public func waitUntilConnected() async throws {
        while connectionState != .connected {
            try Task.checkCancellation()
            try await Task.sleep(for: .milliseconds(50))
        }
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
        if let deviceID = self.deviceID { fields["device_id"] = .string(deviceID) }
        _ = try await send(.ringing, fields)
    }

    /// Keeps the user's ongoing call live (`call.heartbeat`); the client sends it by itself
    /// every `heartbeatInterval` while it tracks an ongoing call.
    public func sendHeartbeat(sessionID: UUID) async throws(RingingError) {
        var fields: JSONObject = ["session_id": .string(sessionID.uuidString)]
        if let deviceID = self.deviceID { fields["device_id"] = .string(deviceID) }
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
        try await send(.jwks, [:]).keys ?? []
    }

    // MARK: - Requests

    private func call(_ type: RequestType, _ fields: JSONObject, device: Bool = false) async throws(RingingError) -> Call {
        var fields = fields
        if device, let deviceID = self.deviceID { fields["device_id"] = .string(deviceID) }
        guard let call = try await send(type, fields).call else {
            throw RingingError(CallError(.unavailable, "the reply to \(type.rawValue) had no call"))
        }
        return call
    }

    /// Sends a request with a fresh message_id and waits for its reply; a lost reply (timeout,
    /// reconnect) sends it again with the same message_id, which the server answers with the
    /// original reply. Error replies throw `RingingError`.
    func send(_ type: RequestType, _ fields: JSONObject) async throws(RingingError) -> WireReply {
        let messageID = UUID().uuidString.lowercased()
        var lastError = "no reply"
        for _ in 0..<max(1, configuration.attempts) {
            let reply: WireReply
            do {
                reply = try await transport.request(type, fields, id: messageID, timeout: configuration.replyTimeout)
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
                .unavailable, "no reply to \(type.rawValue) from \(transport.endpoint) (\(lastError)); is the stack running?"))
    }

    // MARK: - Notifications

    /// One notification from the transport: deduplicated, checked for staleness, tracked, and
    /// handed to the stream and the delegate.
    private func receive(_ event: WireEvent) {
        guard let name = NotificationName(rawValue: event.type) else {
            logger.warning("ignoring a notification of an unknown kind", metadata: ["type": "\(event.type)"])
            return
        }
        let session = event.call.sessionID
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
            let last = state.lastSequence[session] ?? 0
            guard event.sequence >= last else { return (false, nil) }
            state.lastSequence[session] = event.sequence
            switch name {
            case .incomingCallReceived:
                // Already ringing here (from a welcome's snapshot): not twice.
                guard state.ringing[session] == nil else { return (false, nil) }
                state.ringing[session] = event.call
            case .answeredElsewhere, .rejectedElsewhere:
                state.ringing[session] = nil
                // This device's own answer or decline: it knows already.
                if let own = state.deviceID, event.deviceID == own { return (false, nil) }
            case .incomingCallCanceled:
                state.ringing[session] = nil
            default:
                break
            }
            return (true, state.delegate)
        }
        guard fresh else { return }
        _ = trackNotification(event.call)
        let notification = RingingNotification(
            name: name, call: event.call, actor: event.actor, deviceID: event.deviceID, eventID: event.eventID,
            sequence: event.sequence)
        notificationInput.yield(notification)
        if name == .incomingCallReceived { receipt(for: event.call) }
        delegate.map { Self.dispatch(name, event.call, actor: event.actor, deviceID: event.deviceID, to: $0) }
    }

    private static func dispatch(
        _ name: NotificationName, _ call: Call, actor: String?, deviceID: String?, to delegate: any RingingClientDelegate
    ) {
        switch name {
        case .incomingCallReceived: delegate.onIncomingCallReceived(call)
        case .outgoingCallRinging: delegate.onOutgoingCallRinging(call, deviceID: deviceID)
        case .outgoingCallAccepted: delegate.onOutgoingCallAccepted(call)
        case .outgoingCallRejected: delegate.onOutgoingCallRejected(call)
        case .incomingCallCanceled: delegate.onIncomingCallCanceled(call)
        case .callEnded: delegate.onCallEndedMessageReceived(call)
        case .answeredElsewhere: delegate.onCallAnsweredElsewhere(call, deviceID: deviceID)
        case .rejectedElsewhere: delegate.onCallRejectedElsewhere(call, deviceID: deviceID)
        case .participantJoined: delegate.onParticipantJoined(call, uid: actor)
        case .participantLeft: delegate.onParticipantLeft(call, uid: actor)
        }
    }

    /// A welcome's snapshot: the user's calls that ring or are live now. Calls that ring now
    /// ring here (if they do not already); calls that rang here but are gone from it ended
    /// while this device was away, and calls the app was in likewise: each is read once and
    /// told to the app as the notification it missed.
    private func apply(_ snapshot: [WireCall]) {
        let live = Dictionary(snapshot.map { ($0.sessionID, $0) }) { a, _ in a }
        let (newlyRinging, vanished, delegate) = state.withLock { state -> ([Call], [Call], (any RingingClientDelegate)?) in
            for call in snapshot {
                state.lastSequence[call.sessionID] = max(state.lastSequence[call.sessionID] ?? 0, call.sequence)
            }
            var newlyRinging: [Call] = []
            for call in snapshot where call.participant(uid)?.status == .ringing && state.ringing[call.sessionID] == nil {
                state.ringing[call.sessionID] = call
                newlyRinging.append(call)
            }
            var vanished = state.ringing.values.filter { live[$0.sessionID] == nil }
            for call in vanished { state.ringing[call.sessionID] = nil }
            if let active = state.activeCall {
                if let now = live[active.sessionID] { state.activeCall = now } else { vanished.append(active) }
            }
            return (newlyRinging, vanished, state.delegate)
        }
        for call in snapshot where call.participant(uid)?.status == .accepted { trackNotification(call) }
        for call in newlyRinging {
            notificationInput.yield(
                RingingNotification(
                    name: .incomingCallReceived, call: call, actor: call.initiator, deviceID: nil, eventID: call.sessionID,
                    sequence: call.sequence))
            delegate?.onIncomingCallReceived(call)
            receipt(for: call)
        }
        guard !vanished.isEmpty else { return }
        Task {
            for missed in vanished {
                guard let call = try? await self.getCall(sessionID: missed.sessionID) else { continue }
                self.catchUp(missed: missed, now: call)
            }
        }
    }

    /// Tells the app how a call it knew ended while this device was away.
    private func catchUp(missed: Call, now call: Call) {
        let me = call.participant(uid)
        let name: NotificationName?
        if missed.participant(uid)?.status == .ringing {
            switch me?.status {
            case .accepted?, .left?: name = .answeredElsewhere
            case .rejected?, .busy?: name = .rejectedElsewhere
            default: name = .incomingCallCanceled
            }
        } else if call.status == .ended {
            name = .callEnded
        } else if call.status.isTerminal {
            name = me?.role == .initiator ? .outgoingCallRejected : .incomingCallCanceled
        } else {
            name = nil
        }
        trackNotification(call)
        guard let name else { return }
        let fresh = state.withLock { state -> Bool in
            guard call.sequence >= (state.lastSequence[call.sessionID] ?? 0) else { return false }
            state.lastSequence[call.sessionID] = call.sequence
            return true
        }
        guard fresh else { return }
        notificationInput.yield(
            RingingNotification(
                name: name, call: call, actor: call.endedBy, deviceID: nil, eventID: call.sessionID, sequence: call.sequence))
        if let delegate = state.withLock({ $0.delegate }) {
            Self.dispatch(name, call, actor: call.endedBy, deviceID: nil, to: delegate)
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
    public static func subject(of token: String) -> String? {
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
