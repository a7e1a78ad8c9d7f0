// The token service: answers token.generate with a call token for an accepted participant of
// an ongoing call, and token.jwks with the public keys.
import AMQPClient
import CallRules
import CallStore
public import CallTokens
import DedicatedThreads
import Foundation
public import Logging
import Metrics
import PostgresClient
import RingingAuth
import RingingContract
public import RingingOperations
import RingingService
public import ServiceLifecycle
import Synchronization

public final class TokenService: ComposedService, Sendable {
    public let configuration: TokenServiceConfiguration
    public let issuer: CallTokenIssuer
    let logger: Logger
    let publisher: AMQPConnection
    let consumerConnection: AMQPConnection
    let pool: PostgresPool
    let auth: AuthTokens
    let workers: QueueWorkers
    private let ready = Atomic<Bool>(false)

    public init(configuration: TokenServiceConfiguration, logger: Logger) async throws {
        self.configuration = configuration
        self.logger = logger
        issuer = try await CallTokenIssuer(
            signing: configuration.signingKey, previous: configuration.previousKeys, issuer: configuration.issuer,
            audience: configuration.audience, lifetime: configuration.lifetime)
        publisher = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) publish"),
            logger: logger)
        consumerConnection = AMQPConnection(
            configuration: AMQPConfiguration(url: configuration.amqp, connectionName: "\(configuration.instanceName) consume"),
            logger: logger)
        pool = PostgresPool(
            configuration: configuration.database, size: configuration.workers, acquireTimeout: .seconds(10), logger: logger)
        auth = try await AuthTokens(secret: configuration.authSecret)
        workers = QueueWorkers(
            connection: consumerConnection, queue: Topology.tokenServiceQueue, count: configuration.workers,
            prefetch: UInt16(configuration.prefetch), logger: logger)
    }

    public var isReady: Bool { ready.load(ordering: .relaxed) }

    /// The broker connections and the operations server, run beside the service.
    public var dependencies: [any Service] {
        [
            Background("amqp publish") { await self.publisher.run() },
            Background("amqp consume") { await self.consumerConnection.run() },
        ]
            + OperationsServer.dependency(
                host: configuration.httpHost, port: configuration.httpPort, logger: logger
            ) { await self.readiness() }
    }

    public func run() async throws {
        if configuration.usesDevelopmentKey {
            logger.warning("RINGING_TOKEN_KEY is not set: signing with the development key, which every checkout has")
        }
        try await publisher.awaitRingingTopology(logger: logger)
        try await workers.subscribeAll()
        try await withThrowingTaskGroup(of: Void.self) { work in
            work.addTask {
                // The queue is call-control's to declare: wait until it is back (DESIGN §9).
                try await self.workers.run(
                    batchSize: 32, recover: { try await self.publisher.awaitRingingTopology(logger: self.logger) },
                    handle: { batch, _ in await self.answering.work(batch) })
            }
            work.addTask {
                try? await gracefulShutdown()
                self.logger.info("token-service stopping: no new requests, finishing the ones in hand")
                self.workers.stop()
            }
            ready.store(true, ordering: .relaxed)
            logger.info(
                "token-service ready",
                metadata: ["workers": "\(configuration.workers)", "kid": "\(configuration.signingKey.kid)"])
            // A worker that could not subscribe again throws here: the service stops with it.
            while try await work.next() != nil {}
        }
        await pool.close()
    }

    /// For /readyz: consumers started, both broker connections up, the database answering.
    func readiness() async -> Readiness {
        let database = await pool.answers(within: .seconds(2))
        let live = workers.liveCount
        return Readiness(checks: [
            ("consumers", isReady),
            ("consumers subscribed (\(live) of \(configuration.workers))", live == configuration.workers),
            ("broker (publish)", publisher.isConnected),
            ("broker not blocking publishes (no resource alarm)", !publisher.isBlocked),
            ("broker (consume)", consumerConnection.isConnected),
            ("database", database),
        ])
    }

    /// Answers batches of requests; replies go out on the publishing connection. The calls a
    /// batch names are read in one statement before its requests are answered.
    var answering: RequestAnswering<[UUID: CallSession]?> {
        RequestAnswering(
            publisher: publisher, logger: logger, unavailableMessage: "the token could not be issued now; retry",
            preload: { await self.preloadCalls($0) }, respond: { try await self.respond($0, $1) })
    }

    /// The calls `requests` name, in one read; nil when the database did not answer (each
    /// request then reads its call on its own, retrying).
    private func preloadCalls(_ requests: [Request]) async -> [UUID: CallSession]? {
        let ids = requests.compactMap { request -> UUID? in
            if case .generateToken(let id) = request.command { return id } else { return nil }
        }
        guard !ids.isEmpty else { return [:] }
        do {
            return try await pool.withConnection { try await CallStore.readCalls($0, Array(Set(ids))) }
        } catch {
            logger.debug("reading the batch's calls failed; reading them one by one", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func respond(_ request: Request, _ preloaded: [UUID: CallSession]?) async throws -> WireReply {
        switch request.command {
        case .jwks:
            return .keys(issuer.jwks.keys.map { $0.mapValues(JSONValue.string) })
        case .generateToken(let sessionID):
            let user = try await auth.verify(request.authToken ?? "")
            // Not in the batch's read (it failed, or the call was made just after it): read it alone.
            let call: CallSession?
            if let found = preloaded?[sessionID] { call = found } else { call = try await loadCall(sessionID) }
            guard let call else {
                throw CallError(.notFound, "no call with session_id \(sessionID.uuidString.lowercased())", field: "session_id")
            }
            if let refusal = CallRules.authorizeMediaToken(call, for: user.uid) { throw refusal }
            let (token, expiresAt) = try await issuer.issue(for: user.uid, sessionID: sessionID, callType: call.callType.rawValue)
            return .token(token, expiresAt: expiresAt)
        default:
            throw CallError(
                .invalidRequest, "\(request.type.rawValue) is answered by call-control, not the token service", field: "type")
        }
    }

    /// Reads the call, retrying a database that is away for a few seconds before answering
    /// `unavailable`.
    private func loadCall(_ id: UUID) async throws -> CallSession? {
        var backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        let deadline = ContinuousClock.now + .seconds(10)
        while true {
            do {
                return try await pool.withConnection { try await CallStore.loadCall($0, id) }
            } catch let error as PostgresError where error.isTransient && ContinuousClock.now < deadline {
                let delay = backoff.next()
                logger.warning("database not reachable; retrying", metadata: ["error": "\(error)", "retry_in": "\(delay)"])
                try await Task.sleep(for: delay)
            } catch let error as PostgresError {
                logger.error("reading the call failed", metadata: ["error": "\(error)"])
                throw CallError(.unavailable, "the call could not be read now; retry")
            } catch let error as StoredValueError {
                logger.error("a stored call does not read back", metadata: ["error": "\(error)"])
                throw CallError(.unavailable, "the call cannot be read: \(error)")
            }
        }
    }

}
