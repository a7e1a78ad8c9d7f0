// The sockets of one gateway instance and everything that happens to them: the hello, the
// binding of the user's routing key before the snapshot, requests and replies, token
// refresh, delivery of notifications, and closing with the codes of DESIGN §7.
import AMQPClient
import CallRules
import DedicatedThreads
import Foundation
import HummingbirdWebSocket
import Logging
import Metrics
import NIOCore
import NIOWebSocket
import RingingAuth
import RingingContract
import Synchronization

public final class GatewayHub: Sendable {
    let configuration: GatewayConfiguration
    let forwarder: CommandForwarder
    /// The connection that owns this instance's queue: bindings are taken on it.
    let feed: AMQPConnection
    let auth: AuthTokens
    let logger: Logger

    private struct State {
        var registry: SocketRegistry
        var sockets: [Int: DeviceSocket] = [:]
        var nextID = 1
        var closing = false
        var participations = LiveParticipations()
    }

    private let state: Mutex<State>
    private let socketGauge = Gauge(label: "ringing_gateway_sockets")
    private let framesIn = Counter(label: "ringing_gateway_frames_total", dimensions: [("direction", "in")])
    private let framesOut = Counter(label: "ringing_gateway_frames_total", dimensions: [("direction", "out")])
    private let deliveryLatency = Metrics.Timer(label: "ringing_gateway_notification_delivery_seconds")

    init(configuration: GatewayConfiguration, forwarder: CommandForwarder, feed: AMQPConnection, auth: AuthTokens, logger: Logger)
    {
        self.configuration = configuration
        self.forwarder = forwarder
        self.feed = feed
        self.auth = auth
        self.logger = logger
        state = Mutex(
            State(
                registry: SocketRegistry(
                    limits: .init(socketsPerUser: configuration.socketsPerUser, awaitingHello: configuration.awaitingHello))))
    }

    // MARK: - Notifications

    /// Hands a notification from the broker to every socket of its user, and notes whether
    /// the user is now live in its call (`live`), for the heartbeats.
    func deliver(uid: String, notification: PendingNotification, live: Bool?) {
        let targets = state.withLock { state in
            let targets = state.registry.sockets(of: uid).compactMap { state.sockets[$0] }
            if !targets.isEmpty, let live, let session = notification.sessionID, let sequence = notification.sequence {
                state.participations.observe(uid: uid, sessionID: session, sequence: sequence, live: live)
            }
            return targets
        }
        for socket in targets { socket.offer(notification) }
    }

    /// Every `heartbeatInterval`, one `call.heartbeat` per connected user and ongoing call
    /// they are in, with the token and device of one of their sockets (DESIGN §10). A refused
    /// heartbeat (the call is over, or the user left it) stops them for that call.
    func sendHeartbeats() async {
        // A round does not wait for the previous one's replies: one slow reply must not
        // hold back everybody's next heartbeat.
        await withDiscardingTaskGroup { group in
            while !Task.isCancelled {
                try? await Task.sleep(for: configuration.heartbeatInterval)
                for (uid, session, identity) in heartbeatsDue() {
                    group.addTask { await self.heartbeat(uid: uid, session: session, identity: identity) }
                }
            }
        }
    }

    private func heartbeatsDue() -> [(String, UUID, DeviceSocket.Identity)] {
        state.withLock { state in
            var due: [(String, UUID, DeviceSocket.Identity)] = []
            for (uid, session) in state.participations.due {
                let sockets = state.registry.sockets(of: uid).compactMap { state.sockets[$0] }
                if let identity = sockets.compactMap(\.current).first { due.append((uid, session, identity)) }
            }
            return due
        }
    }

    private func heartbeat(uid: String, session: UUID, identity: DeviceSocket.Identity) async {
        let body =
            (try? GatewayRequests.forwardedBody(
                type: RequestType.heartbeat.rawValue, body: ["session_id": .string(session.uuidString.lowercased())],
                authToken: identity.token, deviceID: identity.deviceID)) ?? Data()
        let reply = await forwarder.request(
            type: RequestType.heartbeat.rawValue, body: body, messageID: "heartbeat-\(UUID().uuidString.lowercased())")
        let code = (try? JSONDecoder().decode(WireReply.self, from: reply))?.error?.code
        Counter(label: "ringing_gateway_heartbeats_total", dimensions: [("outcome", code?.rawValue ?? "ok")]).increment()
        if code == .invalidState || code == .forbidden || code == .notFound {
            state.withLock { $0.participations.over(uid: uid, sessionID: session) }
        }
    }

    /// After the broker came back: the queue and its bindings are new, so every socket gets
    /// a fresh snapshot (a `welcome` again) and nothing published meanwhile is missed.
    func resnapshotAll() async {
        let sockets = state.withLock { Array($0.sockets.values) }.filter { $0.current != nil }
        logger.notice(
            "broker connection is back: sending every socket a fresh snapshot", metadata: ["sockets": "\(sockets.count)"])
        await withDiscardingTaskGroup { group in
            for socket in sockets { group.addTask { await self.sendSnapshot(socket) } }
        }
    }

    /// Asks every socket to close (graceful shutdown: 1001, clients reconnect elsewhere) and
    /// waits until they are gone or `limit` passed.
    func closeAll(code: UInt16, reason: String, within limit: Duration) async {
        let sockets = state.withLock { state in
            state.closing = true
            return Array(state.sockets.values)
        }
        for socket in sockets { socket.close(code, reason) }
        let deadline = ContinuousClock.now + limit
        while state.withLock({ !$0.sockets.isEmpty }) && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    // MARK: - One socket

    /// Runs one WebSocket from upgrade to close.
    func serve(inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter, channel: any Channel) async {
        let admission: (SocketRegistry.Admission, DeviceSocket?) = state.withLock { state in
            guard !state.closing else {
                return (.refused(code: CloseCode.goingAway, reason: "the gateway is shutting down; reconnect"), nil)
            }
            let admission = state.registry.accept()
            guard admission == .admitted else { return (admission, nil) }
            let socket = DeviceSocket(id: state.nextID, configuration: configuration)
            state.nextID += 1
            state.sockets[socket.id] = socket
            return (admission, socket)
        }
        guard let socket = admission.1 else {
            if case .refused(let code, let reason) = admission.0 {
                count(close: code)
                try? await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason)
            }
            return
        }
        defer {
            let uid = socket.current?.uid
            let helloPending = socket.lifecycle.withLock { $0.helloPending }
            state.withLock { state in
                if helloPending { state.registry.helloEnded() }
                if let uid {
                    state.registry.close(socket.id, uid: uid)
                    if state.registry.sockets(of: uid).isEmpty { state.participations.forget(uid: uid) }
                }
                state.sockets[socket.id] = nil
                socketGauge.record(state.registry.socketCount)
            }
        }

        await withTaskGroup(of: Void.self) { group in
            // Writer: frames in queue order.
            group.addTask {
                while let frame = await socket.queue.next() {
                    do { try await outbound.write(.text(frame.text)) } catch { break }
                    self.framesOut.increment()
                    if let received = frame.receivedAt { self.deliveryLatency.record(duration: .now - received) }
                }
            }
            // Reader: hello first, then requests and token refreshes.
            group.addTask {
                await self.read(inbound, socket: socket)
                socket.close(CloseCode.normal, "")
            }
            // Timers: the hello deadline, then the token's expiry.
            group.addTask {
                let greeted = await socket.greeted.wait(within: self.configuration.helloTimeout) != nil
                guard !Task.isCancelled else { return }
                if !greeted && socket.current == nil {
                    socket.close(CloseCode.protocolError, "no hello within \(self.configuration.helloTimeout)")
                    return
                }
                while !Task.isCancelled, let identity = socket.current, let expiry = identity.expiresAt {
                    let left = expiry.timeIntervalSinceNow
                    if left <= 0 {
                        socket.close(CloseCode.unauthenticated, "the auth token expired; reconnect with a fresh one")
                        return
                    }
                    try? await Task.sleep(for: .milliseconds(Int64(min(left, 60) * 1000) + 1))
                }
            }
            let (code, reason) = await socket.closing.wait() ?? (CloseCode.goingAway, "")
            socket.queue.finish()
            if code != CloseCode.normal || !reason.isEmpty {
                count(close: code)
                logger.debug(
                    "closing a socket",
                    metadata: ["code": "\(code)", "reason": "\(reason)", "uid": "\(socket.current?.uid ?? "-")"])
                // A device too slow to read may never take the close frame: give it a
                // moment, then drop the connection.
                await withTaskGroup(of: Void.self) { closer in
                    closer.addTask { try? await outbound.close(WebSocketErrorCode(codeNumber: Int(code)), reason: reason) }
                    closer.addTask {
                        try? await Task.sleep(for: .seconds(2))
                        if !Task.isCancelled { _ = try? await channel.close() }
                    }
                    await closer.next()
                    closer.cancelAll()
                }
                if code == CloseCode.tooSlow { _ = try? await channel.close() }
            } else {
                count(close: CloseCode.normal)
            }
            group.cancelAll()
        }
        if let bound = socket.lifecycle.withLock({ $0.binding }) {
            do { try await feed.unbind(bound) } catch {
                logger.warning("could not unbind a user's notifications", metadata: ["error": "\(error)"])
            }
        }
    }

    /// A request the gateway answered itself with an error (the socket stays open).
    private func refused(_ error: CallError) {
        Counter(label: "ringing_gateway_requests_refused_total", dimensions: [("code", error.code.rawValue)]).increment()
    }

    private func count(close code: UInt16) {
        Counter(label: "ringing_gateway_socket_closes_total", dimensions: [("code", "\(code)")]).increment()
    }

    private func read(_ inbound: WebSocketInboundStream, socket: DeviceSocket) async {
        await withDiscardingTaskGroup { requests in
            do {
                for try await message in inbound.messages(maxSize: configuration.maximumClientFrameBytes) {
                    framesIn.increment()
                    guard case .text(let text) = message else {
                        return socket.close(CloseCode.protocolError, "frames are JSON text, not binary")
                    }
                    // One unfragmented frame is only bounded by the listener's frame size
                    // (the larger server limit), so the client limit is checked here.
                    guard text.utf8.count <= configuration.maximumClientFrameBytes else {
                        return socket.close(
                            CloseCode.tooBig, "a frame is larger than \(configuration.maximumClientFrameBytes) bytes")
                    }
                    let frame: ClientFrame
                    do throws(FrameError) { frame = try FrameParser.parse(text) } catch {
                        switch error {
                        case .close(let code, let reason): return socket.close(code, reason)
                        case .reply(let id, let callError):
                            refused(callError)
                            socket.send(QueuedFrame(text: ServerFrame.reply(id: id, error: callError)))
                            continue
                        }
                    }
                    switch frame {
                    case .hello(let token, let deviceID):
                        guard socket.current == nil else {
                            return socket.close(CloseCode.protocolError, "hello was already sent on this socket")
                        }
                        socket.lifecycle.withLock { $0.helloPending = false }
                        state.withLock { $0.registry.helloEnded() }
                        guard let binding = await hello(socket, token: token, deviceID: deviceID) else { return }
                        socket.lifecycle.withLock { $0.binding = binding }
                    case .auth(let token):
                        guard let identity = socket.current else {
                            return socket.close(CloseCode.protocolError, "the first frame must be hello")
                        }
                        do throws(CallError) {
                            let user = try await auth.verify(token)
                            guard user.uid == identity.uid else {
                                return socket.close(
                                    CloseCode.unauthenticated,
                                    "auth carries a token for '\(user.uid)', but this socket is '\(identity.uid)'")
                            }
                            socket.replaceToken(token, expiresAt: user.expiresAt)
                        } catch {
                            return socket.close(CloseCode.unauthenticated, error.message)
                        }
                    case .request(let id, let type, let body):
                        guard let identity = socket.current else {
                            return socket.close(CloseCode.protocolError, "the first frame must be hello")
                        }
                        guard socket.allowRequest() else {
                            refused(CallError(.rateLimited, ""))
                            socket.send(
                                QueuedFrame(
                                    text: ServerFrame.reply(
                                        id: id,
                                        error: CallError(
                                            .rateLimited,
                                            "more than \(configuration.requestsPerSecond) requests/s (bursts of \(configuration.requestBurst)) on this socket; retry later"
                                        ))))
                            continue
                        }
                        requests.addTask {
                            await self.forward(id: id, type: type, body: body, identity: identity, socket: socket)
                        }
                    }
                }
            } catch {
                let text = "\(error)"
                if text.contains("messageTooLarge") || text.contains("invalidFrameLength") {
                    socket.close(CloseCode.tooBig, "a frame is larger than \(configuration.maximumClientFrameBytes) bytes")
                } else if !Task.isCancelled {
                    socket.close(CloseCode.protocolError, "the WebSocket stream failed: \(text.prefix(120))")
                }
            }
        }
    }

    /// Authenticates, registers, binds the user's routing key, then sends the snapshot.
    /// Returns the binding held, or nil when the socket is being closed.
    private func hello(_ socket: DeviceSocket, token: String, deviceID: String?) async -> AMQPBinding? {
        let user: AuthenticatedUser
        do { user = try await auth.verify(token) } catch {
            socket.close(CloseCode.unauthenticated, error.message)
            return nil
        }
        let device = deviceID ?? "ws-\(UUID().uuidString.lowercased().prefix(12))"
        let admission = state.withLock { state -> SocketRegistry.Admission in
            let admission = state.registry.open(socket.id, uid: user.uid)
            socketGauge.record(state.registry.socketCount)
            return admission
        }
        if case .refused(let code, let reason) = admission {
            socket.close(code, reason)
            return nil
        }
        socket.authenticated(.init(uid: user.uid, deviceID: device, token: token, expiresAt: user.expiresAt))
        socket.greeted.resolve(())
        // Bind before the snapshot: a ring during the connect is in the snapshot, in a later
        // notification, or both, never in neither.
        let binding = AMQPBinding(
            queue: configuration.queueName, exchange: Topology.notificationsExchange,
            routingKey: RoutingKey.allNotifications(for: user.uid))
        do { try await feed.bind(binding) } catch {
            logger.warning("could not bind a user's notifications", metadata: ["uid": "\(user.uid)", "error": "\(error)"])
            socket.close(CloseCode.tryAgainLater, "the broker is not reachable; reconnect shortly")
            return nil
        }
        await sendSnapshot(socket)
        return binding
    }

    func sendSnapshot(_ socket: DeviceSocket) async {
        socket.snapshotRequested()
        guard let identity = socket.current else { return }
        let body =
            (try? GatewayRequests.forwardedBody(
                type: RequestType.live.rawValue, body: [:], authToken: identity.token, deviceID: identity.deviceID)) ?? Data()
        // A transient failure (the broker between connections, no consumer bound yet) is
        // retried a few times before the device is told to come back later.
        var backoff = Backoff(initial: .milliseconds(200), maximum: .seconds(2))
        for attempt in 1...4 {
            let reply = await forwarder.request(
                type: RequestType.live.rawValue, body: body, messageID: "live-\(UUID().uuidString.lowercased())")
            switch Snapshot.parse(reply, uid: identity.uid) {
            case .success(let snapshot):
                state.withLock { state in
                    for (session, sequence) in snapshot.sequences {
                        state.participations.observe(
                            uid: identity.uid, sessionID: session, sequence: sequence, live: snapshot.live.contains(session))
                    }
                }
                socket.welcome(
                    ServerFrame.welcome(uid: identity.uid, deviceID: identity.deviceID, callsJSON: snapshot.callsJSON),
                    snapshot: snapshot.sequences)
                return
            case .failure(let error) where error.code == .unauthenticated:
                socket.close(CloseCode.unauthenticated, error.message)
                return
            case .failure(let error):
                logger.warning(
                    "no snapshot for a socket",
                    metadata: ["uid": "\(identity.uid)", "attempt": "\(attempt)", "error": "\(error.message)"])
                guard attempt < 4, !Task.isCancelled else {
                    socket.close(CloseCode.tryAgainLater, "no snapshot: \(error.message); reconnect shortly")
                    return
                }
                try? await Task.sleep(for: backoff.next())
            }
        }
    }

    private func forward(id: String, type: String, body: JSONObject, identity: DeviceSocket.Identity, socket: DeviceSocket) async
    {
        let started = ContinuousClock.now
        let token = socket.current?.token ?? identity.token
        let reply: String
        do {
            let forwarded = try GatewayRequests.forwardedBody(
                type: type, body: body, authToken: token, deviceID: identity.deviceID)
            let data = await forwarder.request(type: type, body: forwarded, messageID: id)
            reply = fitted(
                ServerFrame.reply(id: id, replyJSON: String(decoding: data, as: UTF8.self)), id: id, type: type, data: data)
        } catch {
            refused(error)
            reply = ServerFrame.reply(id: id, error: error)
        }
        Metrics.Timer(label: "ringing_gateway_request_duration_seconds", dimensions: [("type", type)]).record(
            duration: .now - started)
        socket.send(QueuedFrame(text: reply))
    }

    /// A reply frame within the server frame limit: a history page that would be larger
    /// returns fewer calls with `next` set; anything else that large is `unavailable`.
    private func fitted(_ frame: String, id: String, type: String, data: Data) -> String {
        guard frame.utf8.count > configuration.maximumServerFrameBytes else { return frame }
        if type == RequestType.history.rawValue, let page = try? JSONDecoder().decode(WireReply.self, from: data),
            var calls = page.calls
        {
            while !calls.isEmpty {
                calls.removeLast()
                guard let last = calls.last else { break }
                var trimmed = page
                trimmed.calls = calls
                trimmed.next = HistoryCursor(initiatedAt: last.initiatedAt, sessionID: last.sessionID).encoded
                let text = ServerFrame.reply(id: id, replyJSON: String(decoding: trimmed.encoded(), as: UTF8.self))
                if text.utf8.count <= configuration.maximumServerFrameBytes { return text }
            }
        }
        return ServerFrame.reply(
            id: id,
            error: CallError(.unavailable, "the reply is larger than \(configuration.maximumServerFrameBytes) bytes"))
    }
}
