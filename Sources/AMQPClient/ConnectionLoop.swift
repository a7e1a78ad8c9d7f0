// The thread that owns one rabbitmq-c connection: every C call on that connection happens here.
import CRabbitMQ
import DedicatedThreads
import Foundation
import Logging

/// Owns one `amqp_connection_state_t` and runs on the connection's thread only. It sleeps in
/// `poll` on the socket and the inbox's eventfd, so a command or a frame wakes it at once, and
/// never longer than `pollInterval` so that heartbeats go out and a silent peer is noticed.
final class ConnectionLoop {
    private static let publishChannel: UInt16 = 1
    private static let declareChannel: UInt16 = 2
    private static let firstConsumerChannel: UInt16 = 3

    private let configuration: AMQPConfiguration
    private let logger: Logger
    private let inbox: Inbox<ConnectionCommand>
    private let status: ConnectionStatus
    private let clock = ContinuousClock()
    private let pollInterval: Duration
    private let arena = CArena()

    private var connection: amqp_connection_state_t?
    private var generation: UInt64 = 0
    private var backoff: Backoff
    private var retryAt: ContinuousClock.Instant
    private var everConnected = false
    private var shuttingDown = false

    // Publishing (channel 1, confirm mode).
    private var publishing: PublisherState<CheckedContinuation<Void, any Error>>

    // Declarations and other requests that wait for a connection.
    private var remembered: [AMQPTopology] = []
    /// Bindings held by `bind` calls, with how many holds each has: bound while at least one
    /// hold remains, and bound again after every reconnect.
    private var bindingHolds: [AMQPBinding: Int] = [:]
    private var waitingRequests: [WaitingRequest] = []

    // Consumers.
    private var consumers: [Int: ConsumerRecord] = [:]
    private var consumerByChannel: [UInt16: Int] = [:]
    private var nextChannel = ConnectionLoop.firstConsumerChannel
    private var incoming: [UInt16: IncomingContent] = [:]
    /// Which delivery tags are settled, per open consumer channel (a cancelled consumer's
    /// channel stays open so that its deliveries can still be settled).
    private var settlements: [UInt16: SettledTags] = [:]
    private var pendingAcks: [UInt16: [UInt64]] = [:]

    init(configuration: AMQPConfiguration, logger: Logger, inbox: Inbox<ConnectionCommand>, status: ConnectionStatus) {
        self.configuration = configuration
        self.logger = logger
        self.inbox = inbox
        self.status = status
        self.backoff = configuration.reconnectBackoff
        self.publishing = PublisherState(window: configuration.confirmWindow)
        self.retryAt = clock.now
        self.pollInterval =
            min(configuration.heartbeat / 4, .seconds(1)) > .zero ? min(configuration.heartbeat / 4, .seconds(1)) : .seconds(1)
    }

    // MARK: - Loop

    func run() {
        var socketReady = true
        while true {
            for command in inbox.take() { handle(command) }
            flushAcks()
            if shuttingDown { break }
            if connection == nil && clock.now >= retryAt { connect() }
            if let state = connection,
                socketReady || amqp_frames_enqueued(state) != 0 || amqp_data_in_buffer(state) != 0
            {
                readFrames()
            }
            if connection != nil {
                sendWaitingPublishes()
                expirePublishes()
            } else {
                expireWaiting()
            }
            if let connection, amqp_frames_enqueued(connection) != 0 || amqp_data_in_buffer(connection) != 0 {
                continue
            }
            socketReady = false
            guard inbox.prepareToSleep() else { continue }
            var descriptors = [inbox.wakeup.fileDescriptor]
            let timeout: Duration
            if let connection {
                descriptors.append(amqp_get_sockfd(connection))
                timeout = pollInterval
            } else {
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
            publishing.enqueue(message, continuation, deadline: clock.now + (timeout ?? configuration.publishTimeout))
        case .unbind(let binding, let continuation):
            do {
                try release(binding)
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .declare, .bind, .deleteQueue, .purgeQueue, .consume, .whenConnected:
            let request = WaitingRequest(command: command, deadline: clock.now + configuration.operationTimeout)
            if connection != nil { perform(request) } else { waitingRequests.append(request) }
        case .cancelConsumer(let id):
            cancelConsumer(id)
        case .settle(let generation, let channel, let tag, let kind):
            // A delivery from an earlier connection is already back in its queue, and one from
            // a channel the broker closed can no longer be settled.
            guard connection != nil, generation == self.generation, settlements[channel] != nil else { return }
            if case .ack(multiple: false) = kind {
                pendingAcks[channel, default: []].append(tag)
            } else if settlements[channel]!.contains(tag) {
                logger.warning("AMQP delivery settled twice; ignored", metadata: ["delivery_tag": "\(tag)"])
            } else {
                flushAcks()
                settle(channel: channel, tag: tag, kind: kind)
            }
        case .shutdown:
            shuttingDown = true
        }
    }

    // MARK: - Connecting

    private func connect() {
        let url = configuration.url
        guard let state = amqp_new_connection() else { return scheduleRetry(AMQPError(.library, "out of memory")) }
        guard let socket = amqp_tcp_socket_new(state) else {
            amqp_destroy_connection(state)
            return scheduleRetry(AMQPError(.library, "could not create a socket"))
        }
        var connectTimeout = timeval(configuration.connectTimeout)
        let opened = amqp_socket_open_noblock(socket, url.host, Int32(url.port), &connectTimeout)
        guard opened == AMQP_STATUS_OK.rawValue else {
            amqp_destroy_connection(state)
            return scheduleRetry(AMQPError(.connectionFailed, "cannot reach \(url): \(errorText(opened))"))
        }
        var handshakeTimeout = timeval(configuration.connectTimeout)
        var rpcTimeout = timeval(configuration.rpcTimeout)
        amqp_set_handshake_timeout(state, &handshakeTimeout)
        amqp_set_rpc_timeout(state, &rpcTimeout)

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
        let login = ringing_amqp_login_plain(state, url.virtualHost, 0, 131_072, heartbeat, &properties, url.user, url.password)
        if let error = replyError(login, channel: 0, state: state) {
            amqp_destroy_connection(state)
            return scheduleRetry(AMQPError(.connectionFailed, "login to \(url) failed: \(error.message)"))
        }
        connection = state
        do {
            try openPublishChannel()
            try openChannel(Self.declareChannel)
            for topology in remembered { try declare(topology) }
            for binding in bindingHolds.keys { try bind(binding) }
            for id in consumers.keys.sorted() { try startConsumer(id) }
        } catch {
            dropConnection(error, destroy: true)
            return
        }
        generation += 1
        status.generation.store(generation, ordering: .relaxed)
        status.connected.store(true, ordering: .relaxed)
        if everConnected {
            status.reconnects.add(1, ordering: .relaxed)
            logger.notice("AMQP connection re-established", metadata: ["url": "\(url)"])
        } else {
            logger.info("AMQP connected", metadata: ["url": "\(url)"])
        }
        everConnected = true
        backoff.reset()
        let requests = waitingRequests
        waitingRequests.removeAll()
        for request in requests { perform(request) }
        configuration.onConnected?(status.reconnects.load(ordering: .relaxed) > 0)
    }

    private func scheduleRetry(_ error: AMQPError) {
        let delay = backoff.next()
        retryAt = clock.now + delay
        logger.warning("AMQP connect failed; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
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
        resolve(
            publishing.channelOpened(
                failing: AMQPError(.channelClosed, "the publishing channel was opened again"), connectionIsNew: false))
    }

    /// Forgets the connection: in-flight publishes fail (their outcome is unknown), consumers
    /// wait to be resumed on the next connection, and a reconnect is scheduled.
    private func dropConnection(_ error: AMQPError, destroy: Bool) {
        guard let state = connection else { return }
        connection = nil
        // Deliveries from this connection are stale from now on, not only after a reconnect.
        generation += 1
        status.generation.store(generation, ordering: .relaxed)
        status.connected.store(false, ordering: .relaxed)
        status.blocked.store(false, ordering: .relaxed)
        if destroy { amqp_destroy_connection(state) }
        resolve(
            publishing.connectionLost(AMQPError(.connectionLost, "connection lost before the broker confirmed: \(error.message)"))
        )
        incoming.removeAll()
        consumerByChannel.removeAll()
        settlements.removeAll()
        pendingAcks.removeAll()
        nextChannel = Self.firstConsumerChannel
        if !shuttingDown {
            let delay = backoff.next()
            retryAt = clock.now + delay
            logger.warning("AMQP connection lost; reconnecting", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
        }
    }

    // MARK: - Requests

    private func perform(_ request: WaitingRequest) {
        switch request.command {
        case .declare(let topology, let remember, let continuation):
            do {
                try declare(topology)
                if remember { remembered.append(topology) }
                continuation.resume()
            } catch { continuation.resume(throwing: error) }
        case .bind(let binding, let continuation):
            do {
                if bindingHolds[binding] == nil { try bind(binding) }
                bindingHolds[binding, default: 0] += 1
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
        case .consume(let spec, let stream, let continuation):
            consumers[spec.id] = ConsumerRecord(spec: spec, stream: stream)
            do {
                try startConsumer(spec.id)
                continuation.resume()
            } catch {
                consumers[spec.id] = nil
                stream.finish(throwing: error)
                continuation.resume(throwing: error)
            }
        case .whenConnected(let continuation):
            continuation.resume()
        case .publish, .unbind, .cancelConsumer, .settle, .shutdown:
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

    /// Drops one hold on a binding; the last hold removes it from the broker.
    private func release(_ binding: AMQPBinding) throws(AMQPError) {
        guard let holds = bindingHolds[binding] else { return }
        if holds > 1 {
            bindingHolds[binding] = holds - 1
            return
        }
        bindingHolds[binding] = nil
        // Not connected: the binding went with the connection's queue or is re-declared
        // from bindingHolds only, so forgetting it is all there is to do.
        guard connection != nil else { return }
        arena.reset()
        amqp_queue_unbind(
            connection, Self.declareChannel, arena.bytes(binding.queue), arena.bytes(binding.exchange),
            arena.bytes(binding.routingKey), arena.table(binding.arguments))
        try checkReply(channel: Self.declareChannel, context: "unbinding queue '\(binding.queue)' from '\(binding.exchange)'")
    }

    private func expireWaiting() {
        let now = clock.now
        resolve(publishing.expire(at: now, notConnected: notConnected()))
        waitingRequests.removeAll { request in
            guard request.deadline <= now else { return false }
            request.fail(notConnected())
            return true
        }
    }

    private func notConnected() -> AMQPError {
        AMQPError(.timeout, "no connection to \(configuration.url) within \(configuration.operationTimeout)")
    }

    // MARK: - Publishing

    /// Fails the publishes whose deadline passed (see `PublisherState.expire`).
    private func expirePublishes() {
        resolve(publishing.expire(at: clock.now, notConnected: nil))
    }

    /// Resumes the callers of settled publishes.
    private func resolve(_ outcomes: [(CheckedContinuation<Void, any Error>, PublishOutcome)]) {
        for (continuation, outcome) in outcomes {
            switch outcome {
            case .confirmed: continuation.resume()
            case .failed(let error): continuation.resume(throwing: error)
            }
        }
    }

    private func sendWaitingPublishes() {
        while let state = connection, let publish = publishing.nextToWrite() {
            let message = publish.message
            arena.reset()
            var properties = arena.properties(message.properties)
            let exchange = arena.bytes(message.exchange)
            let routingKey = arena.bytes(message.routingKey)
            let result = message.body.withUnsafeBytes { body in
                amqp_basic_publish(
                    state, Self.publishChannel, exchange, routingKey, message.mandatory ? 1 : 0, 0, &properties,
                    amqp_bytes_t(len: body.count, bytes: UnsafeMutableRawPointer(mutating: body.baseAddress)))
            }
            if result != AMQP_STATUS_OK.rawValue {
                dropConnection(AMQPError(.connectionLost, "publish failed: \(errorText(result))"), destroy: true)
            }
        }
    }

    // MARK: - Consuming

    private func startConsumer(_ id: Int) throws(AMQPError) {
        guard let record = consumers[id], let connection else { return }
        let channel: UInt16
        if record.spec.onPublishChannel {
            channel = Self.publishChannel
        } else {
            channel = nextChannel
            nextChannel += 1
            try openChannel(channel)
        }
        if !record.spec.noAck {
            amqp_basic_qos(connection, channel, 0, record.spec.prefetch, 0)
            try checkReply(channel: channel, context: "setting prefetch on '\(record.spec.queue)'")
        }
        arena.reset()
        let ok = amqp_basic_consume(
            connection, channel, arena.bytes(record.spec.queue), amqp_empty_bytes, 0,
            record.spec.noAck ? 1 : 0, record.spec.exclusive ? 1 : 0, arena.table(record.spec.arguments))
        try checkReply(channel: channel, context: "consuming from '\(record.spec.queue)'")
        consumers[id]?.channel = channel
        consumers[id]?.tag = ok.map { String(amqp: $0.pointee.consumer_tag) } ?? ""
        consumerByChannel[channel] = id
        settlements[channel] = SettledTags()
    }

    private func cancelConsumer(_ id: Int) {
        guard let record = consumers.removeValue(forKey: id) else { return }
        if let channel = record.channel, connection != nil {
            consumerByChannel[channel] = nil
            arena.reset()
            amqp_basic_cancel(connection, channel, arena.bytes(record.tag))
            try? checkReply(channel: channel)
        }
        record.stream.finish()
    }

    private func settle(channel: UInt16, tag: UInt64, kind: Settlement.Kind) {
        guard let connection else { return }
        let result: Int32
        switch kind {
        case .ack(let multiple): result = amqp_basic_ack(connection, channel, tag, multiple ? 1 : 0)
        case .nack(let requeue): result = amqp_basic_nack(connection, channel, tag, 0, requeue ? 1 : 0)
        case .reject(let requeue): result = amqp_basic_reject(connection, channel, tag, requeue ? 1 : 0)
        }
        if case .ack(multiple: true) = kind {
            settlements[channel]?.settle(upTo: tag)
        } else {
            settlements[channel]?.settle(tag)
        }
        if result != AMQP_STATUS_OK.rawValue {
            dropConnection(AMQPError(.connectionLost, "settling a delivery failed: \(errorText(result))"), destroy: true)
        }
    }

    /// Sends the acks gathered from one batch of commands: the run that continues the settled
    /// prefix of a channel as one `multiple` ack, the rest one by one. A busy consumer thus
    /// costs one write per batch instead of one per message.
    private func flushAcks() {
        guard !pendingAcks.isEmpty else { return }
        let batches = pendingAcks
        pendingAcks.removeAll(keepingCapacity: true)
        for (channel, tags) in batches {
            guard let settled = settlements[channel] else { continue }
            // A tag settled twice would make the broker close the channel: drop repeats.
            let plan = settled.plan(acking: Set(tags).filter { !settled.contains($0) }.sorted())
            if let upTo = plan.multiple { settle(channel: channel, tag: upTo, kind: .ack(multiple: true)) }
            for tag in plan.single { settle(channel: channel, tag: tag, kind: .ack(multiple: false)) }
        }
    }

    private func deliver(_ content: IncomingContent, channel: UInt16) {
        guard case .delivery(let tag, let redelivered, let exchange, let routingKey, let consumerTag) = content.kind,
            let id = consumerByChannel[channel], let record = consumers[id]
        else { return }
        let settlement = Settlement(inbox: inbox, status: status, generation: generation, channel: channel, deliveryTag: tag)
        record.stream.yield(
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
                dropConnection(AMQPError(.connectionLost, errorText(result)), destroy: true)
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
            publishing.returned(
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
            resolve(publishing.confirmed(a.delivery_tag, multiple: a.multiple != 0, ack: true))
        case ringing_basic_nack where channel == Self.publishChannel:
            let n = decoded!.assumingMemoryBound(to: amqp_basic_nack_t.self).pointee
            resolve(publishing.confirmed(n.delivery_tag, multiple: n.multiple != 0, ack: false))
        case ringing_basic_cancel:
            // The broker cancelled a consumer (its queue was deleted): end its sequence.
            if let id = consumerByChannel.removeValue(forKey: channel), let record = consumers.removeValue(forKey: id) {
                logger.warning("AMQP consumer cancelled by the broker", metadata: ["queue": "\(record.spec.queue)"])
                record.stream.finish(
                    throwing: AMQPError(.consumerCancelled, "the broker cancelled the consumer of '\(record.spec.queue)'"))
            }
        case ringing_channel_close:
            let c = decoded!.assumingMemoryBound(to: amqp_channel_close_t.self).pointee
            let error = AMQPError(.channelClosed, String(amqp: c.reply_text), replyCode: c.reply_code)
            channelClosedByBroker(channel, error)
        case ringing_connection_close:
            let c = decoded!.assumingMemoryBound(to: amqp_connection_close_t.self).pointee
            var ok = amqp_connection_close_ok_t(dummy: 0)
            if let connection { amqp_send_method(connection, 0, ringing_connection_close_ok, &ok) }
            dropConnection(
                AMQPError(.connectionLost, "broker closed the connection: \(c.reply_code) \(String(amqp: c.reply_text))"),
                destroy: true)
        case ringing_connection_blocked:
            logger.warning("AMQP connection blocked by the broker (resource alarm): publishes wait, up to their deadlines")
            publishing.setBlocked(true)
            status.blocked.store(true, ordering: .relaxed)
        case ringing_connection_unblocked:
            logger.notice("AMQP connection unblocked")
            publishing.setBlocked(false)
            status.blocked.store(false, ordering: .relaxed)
        default:
            break
        }
    }

    /// The broker closed one channel: acknowledge, then recover what used it.
    private func channelClosedByBroker(_ channel: UInt16, _ error: AMQPError) {
        var ok = amqp_channel_close_ok_t(dummy: 0)
        if let connection { amqp_send_method(connection, channel, ringing_channel_close_ok, &ok) }
        incoming[channel] = nil
        settlements[channel] = nil
        pendingAcks[channel] = nil
        logger.warning("AMQP channel closed by the broker", metadata: ["channel": "\(channel)", "error": "\(error)"])
        do {
            if channel == Self.publishChannel {
                resolve(publishing.channelOpened(failing: error, connectionIsNew: false))
                try openPublishChannel()
                // Consumers on the publishing channel (direct reply-to) start again with it.
                for (id, record) in consumers where record.spec.onPublishChannel { try startConsumer(id) }
            } else if channel == Self.declareChannel {
                try openChannel(channel)
            } else if let id = consumerByChannel.removeValue(forKey: channel), let record = consumers[id] {
                do {
                    try startConsumer(id)
                } catch {
                    consumers[id] = nil
                    record.stream.finish(throwing: error)
                }
            }
        } catch {
            dropConnection(error, destroy: true)
        }
    }

    // MARK: - Replies and errors

    /// Turns the last RPC reply into an error. A channel closed by the broker is acknowledged
    /// and reopened so that one bad declaration does not poison the next; a closed or broken
    /// connection is dropped and reconnected.
    private func checkReply(channel: UInt16, context: String? = nil) throws(AMQPError) {
        guard let state = connection else { throw AMQPError(.connectionLost, "not connected") }
        guard var error = replyError(amqp_get_rpc_reply(state), channel: channel, state: state) else { return }
        if let context { error.message = "\(context): \(error.message)" }
        if error.code == .channelClosed {
            if channel == Self.declareChannel || channel >= Self.firstConsumerChannel {
                do { try openChannel(channel) } catch { dropConnection(error, destroy: true) }
            } else {
                dropConnection(error, destroy: true)
            }
        } else {
            dropConnection(error, destroy: true)
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
        while connection != nil, !publishing.isIdle, clock.now < deadline {
            sendWaitingPublishes()
            readFrames()
            if connection != nil, !publishing.unconfirmed.isEmpty {
                _ = waitReadable([amqp_get_sockfd(connection!)], timeout: .milliseconds(50))
            }
        }
        let closed = AMQPError(.shutdown, "the connection has been shut down")
        if let state = connection {
            amqp_connection_close(state, AMQP_REPLY_SUCCESS)
            dropConnection(closed, destroy: true)
        }
        resolve(publishing.shutDown(closed))
        for request in waitingRequests { request.fail(closed) }
        waitingRequests.removeAll()
        for record in consumers.values { record.stream.finish() }
        consumers.removeAll()
        for command in inbox.close() {
            WaitingRequest(command: command, deadline: clock.now).fail(closed)
        }
        logger.debug("AMQP connection shut down")
    }
}

// MARK: - Bookkeeping types

struct WaitingRequest {
    let command: ConnectionCommand
    let deadline: ContinuousClock.Instant

    func fail(_ error: AMQPError) {
        switch command {
        case .publish(_, _, let c), .declare(_, _, let c), .whenConnected(let c), .bind(_, let c), .unbind(_, let c):
            c.resume(throwing: error)
        case .deleteQueue(_, let c), .purgeQueue(_, let c): c.resume(throwing: error)
        case .consume(_, let stream, let c):
            stream.finish(throwing: error)
            c.resume(throwing: error)
        case .cancelConsumer, .settle, .shutdown: break
        }
    }
}

struct ConsumerRecord {
    let spec: ConsumerSpec
    let stream: DeliveryBuffer
    var channel: UInt16?
    var tag = ""
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
