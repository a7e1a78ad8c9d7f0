// The logic of one AMQP connection as a state machine (issue 15, item 6), in the style of
// swift-kafka-client: the link's state is an enum, every event is a transition, and every
// transition returns the actions the connection's thread must perform (open this channel,
// start that consumer, send these acks, resume those callers). It does no I/O, so reconnects,
// confirms, returns, broker cancellations, channel closes, blocking and settling are
// unit-tested without a broker; ConnectionLoop only reads frames and performs actions.
import DedicatedThreads
import Logging

/// What the connection's thread must do after a transition, in order.
enum ConnectionAction<PublishTicket, Consumer, Request> {
    /// Resume the callers of settled publishes.
    case resolve([(PublishTicket, PublishOutcome)])
    /// Open the publishing channel in confirm mode (setting up a connection).
    case openPublishChannel
    /// Open a channel (the declaration channel, after it was closed).
    case openChannel(UInt16)
    /// Declare a remembered topology again (setting up a connection).
    case declare(AMQPTopology)
    /// Bind a held binding again (setting up a connection).
    case bind(AMQPBinding)
    /// Start consumer `id` on `channel`, opening the channel first unless it is the publishing
    /// one; then report `consumerStarted` or `consumerFailed`.
    case startConsumer(id: Int, spec: ConsumerSpec, channel: UInt16)
    /// `basic.cancel` for a consumer's tag.
    case cancelConsumer(channel: UInt16, tag: String)
    /// End a consumer's sequence, with the error when it did not end by request.
    case finish(Consumer, AMQPError?)
    /// Send `basic.ack`/`nack`/`reject`.
    case settle(channel: UInt16, tag: UInt64, kind: Settlement.Kind)
    /// Carry out a request that waited for a connection.
    case perform(Request)
    /// Fail a request that waited for a connection in vain.
    case fail(Request, AMQPError)
    /// Log a line.
    case log(Logger.Level, String)
    /// The connection is set up: call the `onConnected` hook.
    case connected(reconnected: Bool)
}

struct ConnectionState<PublishTicket, Consumer, Request> {
    typealias Action = ConnectionAction<PublishTicket, Consumer, Request>

    static var publishChannel: UInt16 { 1 }
    static var declareChannel: UInt16 { 2 }
    static var firstConsumerChannel: UInt16 { 3 }

    enum Link: Equatable {
        /// No connection; the next attempt is due at `retryAt`.
        case disconnected(retryAt: ContinuousClock.Instant)
        /// Logged in; channels, topology and consumers are being set up.
        case settingUp
        /// Connected and set up.
        case connected
        /// Shut down: closed for good.
        case closed
    }

    struct ConsumerEntry {
        let spec: ConsumerSpec
        let consumer: Consumer
        /// The channel it consumes on, while it does.
        var channel: UInt16?
        var tag = ""
    }

    private(set) var link: Link
    /// A shutdown was asked for: no new connection; what is in flight may still finish.
    private(set) var stopping = false
    /// Bumped whenever the connection is set up or lost: deliveries carry the generation they
    /// came with, and a settlement from another one is stale (the broker requeued it).
    private(set) var generation: UInt64 = 0
    private(set) var reconnects = 0
    private var everConnected = false
    private var backoff: Backoff
    let requestTimeout: Duration

    /// The publishing side (channel 1, confirm mode).
    private(set) var publishing: PublisherState<PublishTicket>

    /// Topology declared again after every reconnect.
    private(set) var remembered: [AMQPTopology] = []
    /// Bindings held by `bind` calls, with how many holds each has: bound while at least one
    /// hold remains, and bound again after every reconnect.
    private(set) var bindingHolds: [AMQPBinding: Int] = [:]
    /// Requests waiting for a connection, each with its deadline.
    private var waiting: [(request: Request, deadline: ContinuousClock.Instant)] = []

    private(set) var consumers: [Int: ConsumerEntry] = [:]
    private var consumerByChannel: [UInt16: Int] = [:]
    private var nextChannel = Self.firstConsumerChannel
    /// Which delivery tags are settled, per open consumer channel (a cancelled consumer's
    /// channel stays open so that its deliveries can still be settled).
    private(set) var settlements: [UInt16: SettledTags] = [:]
    private var pendingAcks: [UInt16: [UInt64]] = [:]

    init(confirmWindow: Int, backoff: Backoff, requestTimeout: Duration, now: ContinuousClock.Instant) {
        self.publishing = PublisherState(window: confirmWindow)
        self.backoff = backoff
        self.requestTimeout = requestTimeout
        self.link = .disconnected(retryAt: now)
    }

    var isConnected: Bool { link == .connected }
    var isSettingUp: Bool { link == .settingUp }
    /// Logged in (set up or being set up): channels may be used.
    var hasConnection: Bool { link == .connected || link == .settingUp }
    var isBlocked: Bool { publishing.blocked }

    /// Whether a connection attempt is due.
    func shouldConnect(at now: ContinuousClock.Instant) -> Bool {
        if stopping { return false }
        if case .disconnected(let retryAt) = link { return now >= retryAt }
        return false
    }

    /// When the thread must wake up next without I/O (a retry), if disconnected.
    var retryAt: ContinuousClock.Instant? {
        if case .disconnected(let retryAt) = link { return retryAt }
        return nil
    }

    // MARK: - Connecting

    /// The TCP connection or the login failed: the next attempt after a backoff.
    mutating func connectFailed(_ error: AMQPError, at now: ContinuousClock.Instant) -> [Action] {
        guard case .disconnected = link else { return [] }
        let delay = backoff.next()
        link = .disconnected(retryAt: now + delay)
        return [.log(.warning, "AMQP connect failed; retrying in \(delay): \(error)")]
    }

    /// Logged in: what sets the connection up, in order (the publishing channel, remembered
    /// topology, held bindings, then every consumer on a fresh channel). When all succeeded,
    /// call `setUpFinished`; when one fails, `connectionLost`.
    mutating func loggedIn() -> [Action] {
        guard case .disconnected = link else { return [] }
        link = .settingUp
        nextChannel = Self.firstConsumerChannel
        var actions: [Action] = [.openPublishChannel, .openChannel(Self.declareChannel)]
        actions += remembered.map { .declare($0) }
        actions += bindingHolds.keys.sorted { "\($0)" < "\($1)" }.map { .bind($0) }
        for id in consumers.keys.sorted() { actions.append(startAction(id)) }
        return actions
    }

    /// The publishing channel is open (again): numbering starts over and what was unconfirmed
    /// on the old one fails with `error` (its fate is unknown).
    mutating func publishChannelOpened(failing error: AMQPError) -> [Action] {
        [.resolve(publishing.channelOpened(failing: error, connectionIsNew: false))]
    }

    /// Every setup action succeeded: the connection is up, waiting requests go ahead.
    mutating func setUpFinished() -> [Action] {
        guard link == .settingUp else { return [] }
        link = .connected
        generation += 1
        backoff.reset()
        let reconnected = everConnected
        if reconnected { reconnects += 1 }
        everConnected = true
        var actions: [Action] = [
            .log(reconnected ? .notice : .info, reconnected ? "AMQP connection re-established" : "AMQP connected")
        ]
        actions += waiting.map { .perform($0.request) }
        waiting.removeAll()
        actions.append(.connected(reconnected: reconnected))
        return actions
    }

    /// The connection is gone (or could not be set up): in-flight publishes fail (their
    /// outcome is unknown), publishes and requests that wait keep waiting, consumers wait to
    /// be started on the next connection, and deliveries in hand become stale.
    mutating func connectionLost(_ error: AMQPError, at now: ContinuousClock.Instant) -> [Action] {
        guard hasConnection else { return [] }
        generation += 1
        var actions: [Action] = [
            .resolve(
                publishing.connectionLost(
                    AMQPError(.connectionLost, "connection lost before the broker confirmed: \(error.message)")))
        ]
        consumerByChannel.removeAll()
        settlements.removeAll()
        pendingAcks.removeAll()
        for id in consumers.keys { consumers[id]?.channel = nil }
        let delay = backoff.next()
        link = .disconnected(retryAt: now + delay)
        if !stopping { actions.append(.log(.warning, "AMQP connection lost; reconnecting in \(delay): \(error)")) }
        return actions
    }

    // MARK: - Requests

    /// A request that needs a connection: carried out now, or when one is up (at most
    /// `requestTimeout` from now).
    mutating func request(_ request: Request, at now: ContinuousClock.Instant) -> [Action] {
        if isConnected { return [.perform(request)] }
        waiting.append((request, now + requestTimeout))
        return []
    }

    /// Declared topology to declare again after every reconnect.
    mutating func remember(_ topology: AMQPTopology) { remembered.append(topology) }

    /// A hold on a binding: true when this is its first, so it must be bound now.
    mutating func hold(_ binding: AMQPBinding) -> Bool {
        defer { bindingHolds[binding, default: 0] += 1 }
        return bindingHolds[binding] == nil
    }

    /// The first hold could not be bound: it is not held.
    mutating func holdFailed(_ binding: AMQPBinding) {
        if let holds = bindingHolds[binding] { bindingHolds[binding] = holds > 1 ? holds - 1 : nil }
    }

    /// Drops one hold: true when it was the last and the broker must unbind it now (not when
    /// disconnected: the binding went with the connection's queue, or is bound again from the
    /// holds only, so forgetting it is all there is to do).
    mutating func release(_ binding: AMQPBinding) -> Bool {
        guard let holds = bindingHolds[binding] else { return false }
        if holds > 1 {
            bindingHolds[binding] = holds - 1
            return false
        }
        bindingHolds[binding] = nil
        return isConnected
    }

    // MARK: - Consumers

    /// A new consumer: started now when connected (else with the next connection).
    mutating func addConsumer(_ spec: ConsumerSpec, _ consumer: Consumer) -> [Action] {
        consumers[spec.id] = ConsumerEntry(spec: spec, consumer: consumer)
        return isConnected ? [startAction(spec.id)] : []
    }

    private mutating func startAction(_ id: Int) -> Action {
        let spec = consumers[id]!.spec
        let channel: UInt16
        if spec.onPublishChannel {
            channel = Self.publishChannel
        } else {
            channel = nextChannel
            nextChannel += 1
        }
        return .startConsumer(id: id, spec: spec, channel: channel)
    }

    /// `basic.consume-ok`: deliveries on `channel` go to consumer `id`.
    mutating func consumerStarted(_ id: Int, channel: UInt16, tag: String) {
        guard consumers[id] != nil else { return }
        consumers[id]!.channel = channel
        consumers[id]!.tag = tag
        consumerByChannel[channel] = id
        settlements[channel] = SettledTags()
    }

    /// A consumer could not be started on a live connection (its queue is missing, say): it
    /// ends with the error.
    mutating func consumerFailed(_ id: Int, _ error: AMQPError) -> [Action] {
        guard let entry = consumers.removeValue(forKey: id) else { return [] }
        return [.finish(entry.consumer, error)]
    }

    /// The consumer taking deliveries on `channel`, if any.
    func consumer(on channel: UInt16) -> Consumer? {
        consumerByChannel[channel].flatMap { consumers[$0]?.consumer }
    }

    /// The application cancels a consumer: `basic.cancel` when it consumes now, and its
    /// sequence ends. Its channel stays open, so deliveries in hand can still be settled.
    mutating func cancelConsumer(_ id: Int) -> [Action] {
        guard let entry = consumers.removeValue(forKey: id) else { return [] }
        var actions: [Action] = []
        if let channel = entry.channel, hasConnection {
            consumerByChannel[channel] = nil
            actions.append(.cancelConsumer(channel: channel, tag: entry.tag))
        }
        actions.append(.finish(entry.consumer, nil))
        return actions
    }

    /// The broker cancelled a consumer (its queue was deleted or re-declared, a node failed
    /// over): its sequence ends with `consumerCancelled`, for the application to subscribe
    /// again. Its channel stays open for settling what is in hand.
    mutating func brokerCancelled(channel: UInt16) -> [Action] {
        guard let id = consumerByChannel.removeValue(forKey: channel), let entry = consumers.removeValue(forKey: id) else {
            return []
        }
        return [
            .log(.warning, "AMQP consumer of '\(entry.spec.queue)' cancelled by the broker"),
            .finish(
                entry.consumer, AMQPError(.consumerCancelled, "the broker cancelled the consumer of '\(entry.spec.queue)'")),
        ]
    }

    /// The broker closed one channel (after the thread answered `channel.close-ok`): what used
    /// it is recovered. The publishing channel is opened again (its unconfirmed publishes
    /// fail) with the consumers that live on it; the declaration channel is opened again; a
    /// consumer's channel is replaced by a new one. Unsettled deliveries of a closed channel
    /// are back in their queues.
    mutating func channelClosed(_ channel: UInt16, _ error: AMQPError) -> [Action] {
        guard hasConnection else { return [] }
        settlements[channel] = nil
        pendingAcks[channel] = nil
        var actions: [Action] = [.log(.warning, "AMQP channel \(channel) closed by the broker: \(error)")]
        if channel == Self.publishChannel {
            actions.append(.resolve(publishing.channelOpened(failing: error, connectionIsNew: false)))
            actions.append(.openPublishChannel)
            for id in consumers.keys.sorted() where consumers[id]!.spec.onPublishChannel {
                consumerByChannel[Self.publishChannel] = nil
                actions.append(startAction(id))
            }
        } else if channel == Self.declareChannel {
            actions.append(.openChannel(channel))
        } else if let id = consumerByChannel.removeValue(forKey: channel), consumers[id] != nil {
            consumers[id]!.channel = nil
            actions.append(startAction(id))
        }
        return actions
    }

    // MARK: - Settling

    /// A settlement from the application. Single acks are gathered and sent by `flushAcks`;
    /// anything else goes now (after the gathered acks, to keep their order). A settlement
    /// from an earlier connection, or for a channel the broker closed, is dropped: the
    /// delivery is already back in its queue.
    mutating func settle(generation: UInt64, channel: UInt16, tag: UInt64, kind: Settlement.Kind) -> [Action] {
        guard hasConnection, generation == self.generation, let settled = settlements[channel] else { return [] }
        if case .ack(multiple: false) = kind {
            pendingAcks[channel, default: []].append(tag)
            return []
        }
        if settled.contains(tag) { return [.log(.warning, "AMQP delivery \(tag) settled twice; ignored")] }
        var actions = flushAcks()
        actions.append(.settle(channel: channel, tag: tag, kind: kind))
        record(channel: channel, tag: tag, kind: kind)
        return actions
    }

    /// The acks gathered since the last flush: on each channel, the run that continues the
    /// settled prefix as one `multiple` ack, the rest one by one. A busy consumer thus costs
    /// one write per batch instead of one per message. Tags settled already are dropped (a
    /// second ack of a tag makes the broker close the channel).
    mutating func flushAcks() -> [Action] {
        guard !pendingAcks.isEmpty else { return [] }
        let batches = pendingAcks
        pendingAcks.removeAll(keepingCapacity: true)
        var actions: [Action] = []
        for channel in batches.keys.sorted() {
            guard let settled = settlements[channel] else { continue }
            let plan = settled.plan(acking: Set(batches[channel]!).filter { !settled.contains($0) }.sorted())
            if let upTo = plan.multiple {
                actions.append(.settle(channel: channel, tag: upTo, kind: .ack(multiple: true)))
                record(channel: channel, tag: upTo, kind: .ack(multiple: true))
            }
            for tag in plan.single {
                actions.append(.settle(channel: channel, tag: tag, kind: .ack(multiple: false)))
                record(channel: channel, tag: tag, kind: .ack(multiple: false))
            }
        }
        return actions
    }

    private mutating func record(channel: UInt16, tag: UInt64, kind: Settlement.Kind) {
        if case .ack(multiple: true) = kind {
            settlements[channel]?.settle(upTo: tag)
        } else {
            settlements[channel]?.settle(tag)
        }
    }

    // MARK: - Publishing

    /// A caller's publish, with its deadline.
    mutating func publish(_ message: AMQPMessage, _ ticket: PublishTicket, deadline: ContinuousClock.Instant) {
        publishing.enqueue(message, ticket, deadline: deadline)
    }

    /// How many publishes can be written now (`PublisherState.writable`), only when set up.
    var writablePublishes: Int { isConnected ? publishing.writable : 0 }

    /// The next publish to write now (see `PublisherState.nextToWrite`): only when set up.
    mutating func nextToWrite() -> PublisherState<PublishTicket>.Publish? {
        isConnected ? publishing.nextToWrite() : nil
    }

    /// `basic.ack` / `basic.nack` on the publishing channel.
    mutating func confirmed(_ tag: UInt64, multiple: Bool, ack: Bool) -> [Action] {
        [.resolve(publishing.confirmed(tag, multiple: multiple, ack: ack))]
    }

    /// `basic.return` (before the confirm of the same message).
    mutating func returned(exchange: String, routingKey: String, messageID: String?, replyText: String) {
        publishing.returned(exchange: exchange, routingKey: routingKey, messageID: messageID, replyText: replyText)
    }

    /// `connection.blocked` / `connection.unblocked` (a resource alarm): nothing is written
    /// while blocked; waiting publishes count their deadlines down.
    mutating func setBlocked(_ blocked: Bool) -> [Action] {
        guard blocked != publishing.blocked else { return [] }
        publishing.setBlocked(blocked)
        return [
            blocked
                ? .log(.warning, "AMQP connection blocked by the broker (resource alarm): publishes wait, up to their deadlines")
                : .log(.notice, "AMQP connection unblocked")
        ]
    }

    // MARK: - Time

    /// Publishes and waiting requests whose deadline passed fail; `notConnected` says why when
    /// there is no connection.
    /// This runs on every turn of the connection's loop: `notConnected` is built only when
    /// something expires, and then once for all of them.
    mutating func expire(at now: ContinuousClock.Instant, notConnected: @autoclosure () -> AMQPError) -> [Action] {
        var built: AMQPError?
        func why() -> AMQPError {
            if let built { return built }
            let error = notConnected()
            built = error
            return error
        }
        let connected = isConnected
        var actions: [Action] = [.resolve(publishing.expire(at: now, notConnected: connected ? nil : why()))]
        waiting.removeAll { entry in
            guard entry.deadline <= now else { return false }
            actions.append(.fail(entry.request, why()))
            return true
        }
        return actions
    }

    // MARK: - Shutdown

    /// Shutting down: no new connection; publishes in flight may still be confirmed.
    mutating func beginShutdown() { stopping = true }

    /// An RPC on `channel` failed: a declaration or consumer channel the broker closed is
    /// opened again (one bad declaration must not poison the next); anything else (the
    /// publishing channel, a broken connection) drops the connection.
    static func reopensChannel(after error: AMQPError, on channel: UInt16) -> Bool {
        error.code == .channelClosed && channel != publishChannel
    }

    /// The end: everything still queued fails with `error` and every consumer ends.
    mutating func finishShutdown(_ error: AMQPError) -> [Action] {
        stopping = true
        link = .closed
        var actions: [Action] = [.resolve(publishing.shutDown(error))]
        actions += waiting.map { .fail($0.request, error) }
        waiting.removeAll()
        for id in consumers.keys.sorted() { actions.append(.finish(consumers[id]!.consumer, nil)) }
        consumers.removeAll()
        consumerByChannel.removeAll()
        settlements.removeAll()
        pendingAcks.removeAll()
        return actions
    }
}
