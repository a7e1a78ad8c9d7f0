// The thread that owns one rabbitmq-c connection: every C call on that connection happens here.
import CRabbitMQ
import DedicatedThreads
import Foundation
import Logging

/// Owns one `amqp_connection_state_t` and runs on the connection's thread only. It sleeps in
/// `poll` on the socket and the inbox's eventfd, so a command or a frame wakes it at once, and
/// never longer than `pollInterval` so that heartbeats go out and a silent peer is noticed.
///
/// What to do is decided by `ConnectionState`; this class makes the C calls the actions ask
/// for and reports what happened (frames, replies, failures) back to it.
final class ConnectionLoop {
    typealias State = ConnectionState<PublishWaiter, DeliveryBuffer, ConnectionCommand>
    private static let publishChannel = State.publishChannel
    private static let declareChannel = State.declareChannel

    private let configuration: AMQPConfiguration
    private let logger: Logger
    private let inbox: Inbox<ConnectionCommand>
    private let status: ConnectionStatus
    private let clock = ContinuousClock()
    private let pollInterval: Duration
    private let arena = CArena()

    private var connection: amqp_connection_state_t?
    private var state: State
    /// Content frames being assembled, per channel.
    private var incoming: [UInt16: IncomingContent] = [:]
    /// Why the last consumer could not be started, for its caller.
    private var consumerFailure: AMQPError?

    init(configuration: AMQPConfiguration, logger: Logger, inbox: Inbox<ConnectionCommand>, status: ConnectionStatus) {
        self.configuration = configuration
        self.logger = logger
        self.inbox = inbox
        self.status = status
        self.state = State(
            confirmWindow: configuration.confirmWindow, backoff: configuration.reconnectBackoff,
            requestTimeout: configuration.operationTimeout, now: clock.now)
        self.pollInterval =
            min(configuration.heartbeat / 4, .seconds(1)) > .zero ? min(configuration.heartbeat / 4, .seconds(1)) : .seconds(1)
    }

    // MARK: - Loop

    func run() {
        var socketReady = true
        while true {
            for command in inbox.take() { handle(command) }
            perform(state.flushAcks())
            if state.stopping { break }
            if state.shouldConnect(at: clock.now) { connect() }
            if let connection,
                socketReady || amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0
            {
                readFrames()
            }
            sendWaitingPublishes()
            perform(state.expire(at: clock.now, notConnected: notConnected()))
            if let connection, amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0 {
                continue
            }
            socketReady = false
            guard inbox.prepareToSleep() else { continue }
            var descriptors = [inbox.wakeup.fileDescriptor]
            var timeout = pollInterval
            if let connection {
                descriptors.append(amqp_get_sockfd(connection))
            } else if let retryAt = state.retryAt {
                timeout = min(max(.zero, retryAt - clock.now), pollInterval)
            }
            let ready = waitReadable(descriptors, timeout: timeout)
            if ready.contains(inbox.wakeup.fileDescriptor) { inbox.wakeup.drain() }
            // Read when the socket has data, and after a quiet interval too: rabbitmq-c sends
            // and checks heartbeats only inside its read call.
            socketReady = ready.isEmpty || ready.contains(where: { $0 != inbox.wakeup.fileDescriptor })
        }
        shutDown()
    }

    private func handle(_ command: ConnectionCommand) {
        switch command {
        case .publish(let message, let timeout, let continuation):
            state.publish(message, .one(continuation), deadline: clock.now + (timeout ?? configuration.publishTimeout))
        case .publishAll(let messages, let timeout, let continuation):
            let group = PublishWaiter.Group(count: messages.count, continuation)
            let deadline = clock.now + (timeout ?? configuration.publishTimeout)
            for message in messages { state.publish(message, .member(group), deadline: deadline) }
        case .unbind(let binding, let continuation):
            do {
                if state.release(binding) { try unbind(binding) }
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .consume(let spec, let stream, let continuation):
            guard state.isConnected else { return perform(state.request(command, at: clock.now)) }
            perform(state.addConsumer(spec, stream))
            if state.consumers[spec.id] != nil {
                continuation.resume()
            } else {
                continuation.resume(
                    throwing: consumerFailure ?? AMQPError(.connectionLost, "could not consume from '\(spec.queue)'"))
            }
        case .declare, .bind, .deleteQueue, .purgeQueue, .whenConnected, .restoreTopology:
            perform(state.request(command, at: clock.now))
        case .cancelConsumer(let id):
            perform(state.cancelConsumer(id))
        case .settle(let generation, let channel, let tag, let kind):
            perform(state.settle(generation: generation, channel: channel, tag: tag, kind: kind))
        case .shutdown:
            state.beginShutdown()
        }
    }

    // MARK: - Actions

    /// Performs actions in order. A failure that drops the connection ends the list: what
    /// remains belonged to the connection that is gone.
    private func perform(_ actions: [State.Action]) {
        let generation = state.generation
        for action in actions {
            // Actions on a connection that was lost meanwhile are moot: the next setup redoes
            // what matters.
            if action.usesConnection && (connection == nil || state.generation != generation) { continue }
            perform(action)
        }
        mirrorStatus()
    }

    private func perform(_ action: State.Action) {
        switch action {
        case .resolve(let outcomes):
            for (waiter, outcome) in outcomes { waiter.resolve(outcome) }
        case .openPublishChannel:
            do { try openPublishChannel() } catch { lose(error) }
        case .openChannel(let channel):
            do { try openChannel(channel) } catch { lose(error) }
        case .declare(let topology):
            do { try declare(topology) } catch { lose(error) }
        case .bind(let binding):
            do { try bind(binding) } catch { lose(error) }
        case .startConsumer(let id, let spec, let channel):
            do {
                let tag = try startConsumer(spec, on: channel)
                state.consumerStarted(id, channel: channel, tag: tag)
            } catch {
                // While setting up, any failure drops the connection (tried again with it);
                // on a live connection only this consumer fails.
                consumerFailure = error
                if state.isSettingUp { lose(error) } else { perform(state.consumerFailed(id, error)) }
            }
        case .cancelConsumer(let channel, let tag):
            arena.reset()
            amqp_basic_cancel(connection, channel, arena.bytes(tag))
            try? checkReply(channel: channel)
        case .finish(let stream, let error):
            stream.finish(throwing: error)
        case .settle(let channel, let tag, let kind):
            settle(channel: channel, tag: tag, kind: kind)
        case .perform(let request):
            perform(request)
        case .fail(let request, let error):
            WaitingRequest(command: request).fail(error)
        case .log(let level, let message):
            logger.log(level: level, "\(message)", metadata: ["url": "\(configuration.url)"])
        case .connected(let reconnected):
            configuration.onConnected?(reconnected)
        }
    }

    /// The status other threads read: connected, blocked, the generation of deliveries.
    private func mirrorStatus() {
        status.generation.store(state.generation, ordering: .relaxed)
        status.connected.store(state.isConnected, ordering: .relaxed)
        status.blocked.store(state.isBlocked, ordering: .relaxed)
        status.reconnects.store(state.reconnects, ordering: .relaxed)
    }

    // MARK: - Connecting

    private func connect() {
        let url = configuration.url
        guard let handle = amqp_new_connection() else {
            return perform(state.connectFailed(AMQPError(.library, "out of memory"), at: clock.now))
        }
        guard let socket = amqp_tcp_socket_new(handle) else {
            amqp_destroy_connection(handle)
            return perform(state.connectFailed(AMQPError(.library, "could not create a socket"), at: clock.now))
        }
        var connectTimeout = timeval(configuration.connectTimeout)
        let opened = amqp_socket_open_noblock(socket, url.host, Int32(url.port), &connectTimeout)
        guard opened == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(handle)
            return perform(
                state.connectFailed(AMQPError(.connectionFailed, "cannot reach \(url): \(errorText(opened))"), at: clock.now))
        }
        var handshakeTimeout = timeval(configuration.connectTimeout)
        var rpcTimeout = timeval(configuration.rpcTimeout)
        amqp_set_handshake_timeout(handle, &handshakeTimeout)
        amqp_set_rpc_timeout(handle, &rpcTimeout)

        arena.reset()
        // Capabilities let the broker tell us of cancelled consumers and of flow control.
        let capabilities: AMQPTable = [
            "consumer_cancel_notify": true, "connection.blocked": true, "publisher_confirms": true,
            "basic.nack": true, "authentication_failure_close": true,
        ]
        var properties = arena.table([
            "connection_name": .string(configuration.connectionName), "product": "Ringing",
            "capabilities": .table(capabilities),
        ])
        let heartbeat = Int32(configuration.heartbeat.components.seconds)
        let login = ringing_amqp_login_plain(handle, url.virtualHost, 0, 131_072, heartbeat, &properties, url.user, url.password)
        if let error = replyError(login, channel: 0, state: handle) {
            amqp_destroy_connection(handle)
            return perform(
                state.connectFailed(AMQPError(.connectionFailed, "login to \(url) failed: \(error.message)"), at: clock.now))
        }
        connection = handle
        perform(state.loggedIn())
        guard connection != nil else { return }  // the setup failed and dropped it
        perform(state.setUpFinished())
    }

    private func openChannel(_ channel: UInt16) throws(AMQPError) {
        guard let connection else { throw AMQPError(.connectionLost, "not connected") }
        amqp_channel_open(connection, channel)
        try checkReply(channel: channel)
    }

    private func openPublishChannel() throws(AMQPError) {
        try openChannel(Self.publishChannel)
        amqp_confirm_select(connection, Self.publishChannel)
        try checkReply(channel: Self.publishChannel)
        perform(state.publishChannelOpened(failing: AMQPError(.channelClosed, "the publishing channel was opened again")))
    }

    /// Drops the connection after `error` (see `ConnectionState.connectionLost`).
    private func lose(_ error: AMQPError) {
        guard let handle = connection else { return }
        connection = nil
        amqp_destroy_connection(handle)
        incoming.removeAll()
        perform(state.connectionLost(error, at: clock.now))
    }

    // MARK: - Requests

    private func perform(_ request: ConnectionCommand) {
        // An earlier request of the same batch lost the connection: this one waits for the next.
        guard connection != nil else { return perform(state.request(request, at: clock.now)) }
        switch request {
        case .declare(let topology, let remember, let continuation):
            do {
                try declare(topology)
                if remember { state.remember(topology) }
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .bind(let binding, let continuation):
            do {
                if state.hold(binding) {
                    do { try bind(binding) } catch {
                        state.holdFailed(binding)
                        throw error
                    }
                }
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .deleteQueue(let name, let continuation):
            let ok = amqp_queue_delete(connection, Self.declareChannel, amqp_cstring_bytes(name), 0, 0)
            do {
                try checkReply(channel: Self.declareChannel)
                continuation.resume(returning: ok?.pointee.message_count ?? 0)
            } catch { continuation.resume(throwing: error) }
        case .purgeQueue(let name, let continuation):
            let ok = amqp_queue_purge(connection, Self.declareChannel, amqp_cstring_bytes(name))
            do {
                try checkReply(channel: Self.declareChannel)
                continuation.resume(returning: ok?.pointee.message_count ?? 0)
            } catch { continuation.resume(throwing: error) }
        case .consume:
            handle(request)
        case .whenConnected(let continuation):
            continuation.resume()
        case .restoreTopology(let continuation):
            do {
                for topology in state.remembered { try declare(topology) }
                for binding in state.bindingHolds.keys { try bind(binding) }
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .publish, .publishAll, .unbind, .cancelConsumer, .settle, .shutdown:
            preconditionFailure("not a waiting request")
        }
    }

    private func declare(_ topology: AMQPTopology) throws(AMQPError) {
        let channel = Self.declareChannel
        for exchange in topology.exchanges {
            arena.reset()
            amqp_exchange_declare(
                connection, channel, arena.bytes(exchange.name), arena.bytes(exchange.kind.rawValue), topology.passive ? 1 : 0,
                exchange.durable ? 1 : 0, exchange.autoDelete ? 1 : 0, 0, arena.table(exchange.arguments))
            try checkReply(channel: channel, context: "declaring exchange '\(exchange.name)'")
        }
        for queue in topology.queues {
            arena.reset()
            amqp_queue_declare(
                connection, channel, arena.bytes(queue.name), topology.passive ? 1 : 0, queue.durable ? 1 : 0,
                queue.exclusive ? 1 : 0, queue.autoDelete ? 1 : 0, arena.table(queue.arguments))
            try checkReply(channel: channel, context: "declaring queue '\(queue.name)'")
        }
        for binding in topology.bindings where !topology.passive { try bind(binding) }
    }

    private func bind(_ binding: AMQPBinding) throws(AMQPError) {
        arena.reset()
        amqp_queue_bind(
            connection, Self.declareChannel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
            arena.bytes(binding.routingKey), arena.table(binding.arguments))
        try checkReply(channel: Self.declareChannel, context: "binding queue '\(binding.queue)' to '\(binding.exchange)'")
    }

    private func unbind(_ binding: AMQPBinding) throws(AMQPError) {
        arena.reset()
        amqp_queue_unbind(
            connection, Self.declareChannel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
            arena.bytes(binding.routingKey), arena.table(binding.arguments))
        try checkReply(channel: Self.declareChannel, context: "unbinding queue '\(binding.queue)' from '\(binding.exchange)'")
    }

    private func notConnected() -> AMQPError {
        AMQPError(.timeout, "no connection to \(configuration.url) within \(configuration.operationTimeout)")
    }

    // MARK: - Publishing

    /// Writes what waits, as far as the confirm window allows. Several publishes go out as
    /// one TCP segment: the socket is corked while they are written (rabbitmq-c writes each
    /// publish's frames with `MSG_MORE` but pushes its body alone), which spares the kernel a
    /// loopback transmission and the broker a read per message.
    private func sendWaitingPublishes() {
        guard let handle = connection, state.writablePublishes > 0 else { return }
        let corked = state.writablePublishes > 1 && setCork(handle, true)
        defer { if corked, let connection { _ = setCork(connection, false) } }
        while let handle = connection, let publish = state.nextToWrite() {
            let message = publish.message
            arena.reset()
            var properties = arena.properties(message.properties)
            let exchange = arena.bytes(message.exchange)
            let routingKey = arena.bytes(message.routingKey)
            let result = message.body.withUnsafeBytes { body in
                amqp_basic_publish(
                    handle, Self.publishChannel, exchange, routingKey, message.mandatory ? 1 : 0, 0, &properties,
                    amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
            }
            if result != AMQP_STATUS_OK.rawValue {
                lose(AMQPError(.connectionLost, "publish failed: \(errorText(result))"))
            }
        }
    }

    /// Sets `TCP_CORK` on the connection's socket; uncorking sends what was held at once.
    private func setCork(_ connection: amqp_connection_state_t, _ on: Bool) -> Bool {
        var value: Int32 = on ? 1 : 0
        return setsockopt(
            amqp_get_sockfd(connection), Int32(IPPROTO_TCP), TCP_CORK, &value, socklen_t(MemoryLayout<Int32>.size)) == 0
    }

    // MARK: - Consuming

    /// `basic.qos` and `basic.consume` on `channel` (opened first unless it is the publishing
    /// channel); returns the consumer tag.
    private func startConsumer(_ spec: ConsumerSpec, on channel: UInt16) throws(AMQPError) -> String {
        guard let connection else { throw AMQPError(.connectionLost, "not connected") }
        if channel != Self.publishChannel { try openChannel(channel) }
        if !spec.noAck {
            amqp_basic_qos(connection, channel, 0, spec.prefetch, 0)
            try checkReply(channel: channel, context: "setting prefetch on '\(spec.queue)'")
        }
        arena.reset()
        let ok = amqp_basic_consume(
            connection, channel, arena.bytes(spec.queue), amqp_empty_bytes, 0, spec.noAck ? 1 : 0, spec.exclusive ? 1 : 0,
            arena.table(spec.arguments))
        try checkReply(channel: channel, context: "consuming from '\(spec.queue)'")
        return ok.map { String(amqp: $0.pointee.consumer_tag) } ?? ""
    }

    private func settle(channel: UInt16, tag: UInt64, kind: Settlement.Kind) {
        guard let connection else { return }
        let result: Int32
        switch kind {
        case .ack(let multiple): result = amqp_basic_ack(connection, channel, tag, multiple ? 1 : 0)
        case .nack(let requeue): result = amqp_basic_nack(connection, channel, tag, 0, requeue ? 1 : 0)
        case .reject(let requeue): result = amqp_basic_reject(connection, channel, tag, requeue ? 1 : 0)
        }
        if result != AMQP_STATUS_OK.rawValue {
            lose(AMQPError(.connectionLost, "settling a delivery failed: \(errorText(result))"))
        }
    }

    private func deliver(_ content: IncomingContent, channel: UInt16) {
        guard case .delivery(let tag, let redelivered, let exchange, let routingKey, let consumerTag) = content.kind,
            let stream = state.consumer(on: channel)
        else { return }
        let settlement = Settlement(
            inbox: inbox, status: status, generation: state.generation, channel: channel, deliveryTag: tag)
        stream.yield(
            AMQPDelivery(
                body: content.body, properties: content.properties, exchange: exchange, routingKey: routingKey,
                deliveryTag: tag, redelivered: redelivered, consumerTag: consumerTag, settlement: settlement))
    }

    // MARK: - Frames

    private func readFrames() {
        var frame = amqp_frame_t()
        var zero = timeval(tv_sec: 0, tv_usec: 0)
        var count = 0
        // Bounded so that commands (acks, publishes) are not starved by a busy stream.
        while let state = connection, count < 512 {
            // After the first frame, read only what is already buffered: poll tells when the
            // socket has more, which saves a failing recv per batch.
            if count > 0 && amqp_frames_enqueued(state) == 0 && amqp_data_in_buffer(state) == 0 { break }
            let result = amqp_simple_wait_frame_noblock(state, &frame, &zero)
            if result == AMQP_STATUS_TIMEOUT.rawValue { break }
            guard result == AMQP_STATUS_OK.rawValue else {
                lose(AMQPError(.connectionLost, errorText(result)))
                return
            }
            handle(frame)
            count += 1
        }
        if let state = connection { amqp_maybe_release_buffers(state) }
    }

    private func handle(_ frame: amqp_frame_t) {
        let channel = frame.channel
        switch Int32(frame.frame_type) {
        case AMQP_FRAME_METHOD:
            handleMethod(frame.payload.method, channel: channel)
        case AMQP_FRAME_HEADER:
            guard var content = incoming[channel] else { return }
            content.bodySize = Int(frame.payload.properties.body_size)
            content.properties = AMQPProperties(
                amqp: frame.payload.properties.decoded.assumingMemoryBound(to: amqp_basic_properties_t.self).pointee)
            content.body.reserveCapacity(content.bodySize)
            incoming[channel] = content
            if content.bodySize == 0 { complete(channel) }
        case AMQP_FRAME_BODY:
            guard incoming[channel] != nil else { return }
            let fragment = frame.payload.body_fragment
            if fragment.len > 0, let bytes = fragment.bytes {
                incoming[channel]!.body.append(bytes.assumingMemoryBound(to: UInt8.self), count: fragment.len)
            }
            if incoming[channel]!.body.count >= incoming[channel]!.bodySize { complete(channel) }
        default:
            break
        }
    }

    private func complete(_ channel: UInt16) {
        guard let content = incoming.removeValue(forKey: channel) else { return }
        switch content.kind {
        case .delivery: deliver(content, channel: channel)
        case .returned(let replyText, let exchange, let routingKey):
            // A return comes before the confirm of the same message.
            state.returned(
                exchange: exchange, routingKey: routingKey, messageID: content.properties.messageID, replyText: replyText)
        }
    }

    private func handleMethod(_ method: amqp_method_t, channel: UInt16) {
        let decoded = method.decoded
        switch method.id {
        case ringing_basic_deliver:
            let d = decoded!.assumingMemoryBound(to: amqp_basic_deliver_t.self).pointee
            incoming[channel] = IncomingContent(
                kind: .delivery(
                    tag: d.delivery_tag, redelivered: d.redelivered != 0, exchange: String(amqp: d.exchange),
                    routingKey: String(amqp: d.routing_key), consumerTag: String(amqp: d.consumer_tag)))
        case ringing_basic_return:
            let r = decoded!.assumingMemoryBound(to: amqp_basic_return_t.self).pointee
            incoming[channel] = IncomingContent(
                kind: .returned(
                    replyText: "\(r.reply_code) \(String(amqp: r.reply_text))", exchange: String(amqp: r.exchange),
                    routingKey: String(amqp: r.routing_key)))
        case ringing_basic_ack where channel == Self.publishChannel:
            let a = decoded!.assumingMemoryBound(to: amqp_basic_ack_t.self).pointee
            perform(state.confirmed(a.delivery_tag, multiple: a.multiple != 0, ack: true))
        case ringing_basic_nack where channel == Self.publishChannel:
            let n = decoded!.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            perform(state.confirmed(n.delivery_tag, multiple: n.multiple != 0, ack: false))
        case ringing_basic_cancel:
            // The broker cancelled a consumer (its queue was deleted): end its sequence.
            perform(state.brokerCancelled(channel: channel))
        case ringing_channel_close:
            let c = decoded!.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let error = AMQPError(.channelClosed, String(amqp: c.reply_text), replyCode: c.reply_code)
            channelClosedByBroker(channel, error)
        case ringing_connection_close:
            let c = decoded!.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t(dummy: 0)
            if let connection { amqp_send_method(connection, 0, ringing_connection_close_ok, &ok) }
            lose(AMQPError(.connectionLost, "broker closed the connection: \(c.reply_code) \(String(amqp: c.reply_text))"))
        case ringing_connection_blocked:
            perform(state.setBlocked(true))
        case ringing_connection_unblocked:
            perform(state.setBlocked(false))
        default:
            break
        }
    }

    /// The broker closed one channel: acknowledge, then recover what used it.
    private func channelClosedByBroker(_ channel: UInt16, _ error: AMQPError) {
        var ok = amqp_channel_close_ok_t(dummy: 0)
        if let connection { amqp_send_method(connection, channel, ringing_channel_close_ok, &ok) }
        incoming[channel] = nil
        perform(state.channelClosed(channel, error))
    }

    // MARK: - Replies and errors

    /// Turns the last RPC reply into an error. A channel closed by the broker is acknowledged
    /// and reopened so that one bad declaration does not poison the next; a closed or broken
    /// connection is dropped and reconnected.
    private func checkReply(channel: UInt16, context: String? = nil) throws(AMQPError) {
        guard let state = connection else { throw AMQPError(.connectionLost, "not connected") }
        guard var error = replyError(amqp_get_rpc_reply(state), channel: channel, state: state) else { return }
        if let context { error.message = "\(context): \(error.message)" }
        if State.reopensChannel(after: error, on: channel) {
            do { try openChannel(channel) } catch { lose(error) }
        } else {
            lose(error)
        }
        throw error
    }

    private func replyError(_ reply: amqp_rpc_reply_t, channel: UInt16, state: amqp_connection_state_t) -> AMQPError? {
        switch reply.reply_type {
        case AMQP_RESPONSE_NORMAL:
            return nil
        case AMQP_RESPONSE_SERVER_EXCEPTION:
            if reply.reply.id == ringing_channel_close {
                let c = reply.reply.decoded.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
                var ok = amqp_channel_close_ok_t(dummy: 0)
                amqp_send_method(state, channel, ringing_channel_close_ok, &ok)
                return AMQPError(.channelClosed, String(amqp: c.reply_text), replyCode: c.reply_code)
            }
            if reply.reply.id == ringing_connection_close {
                let c = reply.reply.decoded.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
                var ok = amqp_connection_close_ok_t(dummy: 0)
                amqp_send_method(state, 0, ringing_connection_close_ok, &ok)
                return AMQPError(
                    .connectionLost, "broker closed the connection: \(c.reply_code) \(String(amqp: c.reply_text))",
                    replyCode: c.reply_code)
            }
            return AMQPError(.library, "unexpected reply method \(reply.reply.id)")
        case AMQP_RESPONSE_LIBRARY_EXCEPTION:
            return AMQPError(.connectionLost, errorText(reply.library_error))
        default:
            return AMQPError(.library, "no reply")
        }
    }

    private func errorText(_ status: Int32) -> String {
        String(cString: amqp_error_string2(status))
    }

    // MARK: - Shutdown

    private func shutDown() {
        // Give outstanding confirms a moment, so a graceful stop loses nothing it could keep.
        let deadline = clock.now + .seconds(5)
        while connection != nil, state.isConnected, !state.publishing.isIdle, clock.now < deadline {
            sendWaitingPublishes()
            readFrames()
            if let connection, !state.publishing.unconfirmed.isEmpty {
                _ = waitReadable([amqp_get_sockfd(connection)], timeout: .milliseconds(50))
            }
        }
        let closed = AMQPError(.shutdown, "the connection has been shut down")
        if let handle = connection {
            amqp_connection_close(handle, AMQP_REPLY_SUCCESS)
            lose(closed)
        }
        perform(state.finishShutdown(closed))
        for command in inbox.close() { WaitingRequest(command: command).fail(closed) }
        logger.debug("AMQP connection shut down")
    }
}

// MARK: - Bookkeeping types

extension ConnectionAction {
    /// Whether the action makes calls on the connection (moot once it is lost).
    var usesConnection: Bool {
        switch self {
        case .openPublishChannel, .openChannel, .declare, .bind, .startConsumer, .cancelConsumer, .settle: true
        case .resolve, .finish, .perform, .fail, .log, .connected: false
        }
    }
}

/// A command whose caller waits for an answer, failed without being carried out.
struct WaitingRequest {
    let command: ConnectionCommand

    func fail(_ error: AMQPError) {
        switch command {
        case .publish(_, _, let c), .publishAll(_, _, let c), .declare(_, _, let c), .whenConnected(let c),
            .bind(_, let c), .unbind(_, let c), .restoreTopology(let c):
            c.resume(throwing: error)
        case .deleteQueue(_, let c), .purgeQueue(_, let c): c.resume(throwing: error)
        case .consume(_, let stream, let c):
            stream.finish(throwing: error)
            c.resume(throwing: error)
        case .cancelConsumer, .settle, .shutdown: break
        }
    }
}

struct IncomingContent {
    enum Kind {
        case delivery(tag: UInt64, redelivered: Bool, exchange: String, routingKey: String, consumerTag: String)
        case returned(replyText: String, exchange: String, routingKey: String)
    }

    let kind: Kind
    var properties = AMQPProperties()
    var bodySize = 0
    var body = Data()
}

/// The settled delivery tags of one channel: every tag up to `upTo`, and some above it.
struct SettledTags {
    private(set) var upTo: UInt64 = 0
    private(set) var above: Set<UInt64> = []

    func contains(_ tag: UInt64) -> Bool { tag <= upTo || above.contains(tag) }

    mutating func settle(_ tag: UInt64) {
        if tag == upTo + 1 {
            upTo = tag
            while above.remove(upTo + 1) != nil { upTo += 1 }
        } else if tag > upTo {
            above.insert(tag)
        }
    }

    mutating func settle(upTo tag: UInt64) {
        guard tag > upTo else { return }
        upTo = tag
        above = above.filter { $0 > tag }
        while above.remove(upTo + 1) != nil { upTo += 1 }
    }

    /// How to ack `tags` (sorted, unsettled) in as few frames as possible: one `multiple` ack
    /// up to the last tag that extends the settled prefix, and single acks for the rest.
    /// A `multiple` ack must name an unsettled tag, which the chosen one is.
    func plan(acking tags: [UInt64]) -> (multiple: UInt64?, single: [UInt64]) {
        var prefix = upTo
        var multiple: UInt64?
        var index = 0
        while true {
            let next = prefix + 1
            if index < tags.count && tags[index] == next {
                multiple = next
                index += 1
            } else if !above.contains(next) {
                break
            }
            prefix = next
        }
        return (multiple, Array(tags[index...]))
    }
}

/// A first-in first-out queue with amortised O(1) removal from the front.
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    mutating func append(_ element: Element) { storage.append(element) }

    mutating func removeFirst() -> Element {
        let element = storage[head]
        head += 1
        if head > 64 && head * 2 > storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }
}

extension timeval {
    init(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        self.init(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    }
}
