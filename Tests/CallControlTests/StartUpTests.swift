// Starting while the broker does not answer yet, and a start that fails. A service waits for
// the first and says so (readiness "not ready" meanwhile); whoever waits for it to be ready
// learns of the second instead of waiting for ever. The CI run of 2737990 hung two tests
// this way: an instance whose start-up failed was waited for until the tests' deadlines.
import AMQPClient
import CallControl
import Foundation
import RingingService
import ServiceLifecycle
import TestSupport
import Testing

@Suite struct StartUpTests {
    @Test func aQueueThatCannotBeConsumedStillEndsTheStart() async throws {
        let log = LogLines(label: "startup-tests")
        try await AMQPConnection.withConnection(
            configuration: AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: "startup-tests")
        ) { amqp in
            let workers = QueueWorkers(
                connection: amqp, queue: TestEnvironment.uniqueName("no-such-queue"), count: 1, prefetch: 10, logger: log.logger)
            let error = await #expect(throws: AMQPError.self) { try await workers.subscribeAll() }
            #expect(error?.replyCode == 404, "\(String(describing: error))")
        }
    }

    @Test func anInstanceThatCannotStartTellsWhoeverWaitsForIt() async throws {
        // The app account may not declare the topology: call-control's start fails (403).
        var environment = try Scenario.configuration()
        environment.amqp = try AMQPURL(TestEnvironment.amqpURL(account: "app"))
        let service = try await CallControlService(configuration: environment, logger: Scenario.quietLogger("startup-tests"))
        try await withDeadline(.seconds(120), "the failed start") {
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: service.serviceGroupEntries, logger: Scenario.quietLogger("startup-tests")))
            let run = Task { try await group.run() }
            #expect(await service.waitUntilReady() == false)
            let error = await #expect(throws: AMQPError.self) { try await run.value }
            #expect(error?.replyCode == 403, "\(String(describing: error))")
        }
    }
}

/// In the serial pass (`*AloneTests`): rabbitmqctl starts an Erlang VM per call, enough load on
/// two cores to delay the timing-bound tests of the parallel pass (a token expiring before its
/// welcome).
@Suite struct StartUpAloneTests {
    /// An account of its own that may consume one queue, and that queue.
    static func withAccount(_ body: @Sendable (_ user: String, _ queue: String) async throws -> Void) async throws {
        let user = TestEnvironment.uniqueName("startup")
        let queue = "test-startup-\(user)"
        try await AMQPConnection.withConnection(
            configuration: AMQPConfiguration(url: try AMQPURL(TestEnvironment.amqpURL), connectionName: "startup-tests")
        ) { amqp in
            try await amqp.declare(
                AMQPTopology(queues: [AMQPQueue(queue, durable: false, arguments: ["x-expires": .int32(300_000)])]),
                remember: false)
        }
        try StackServer.rabbitmqctl("add_user", user, user)
        defer { try? StackServer.rabbitmqctl("delete_user", user) }
        try StackServer.rabbitmqctl("set_permissions", "-p", "/", user, "^$", "^$", "^\(queue)$")
        try await body(user, queue)
    }

    @Test func theWorkersWaitForABrokerThatDoesNotLetThemInYet() async throws {
        try await Self.withAccount { user, queue in
            // The broker refuses the account's connections until the limit is lifted: every
            // subscribe meanwhile finds no connection within the operation timeout.
            try StackServer.rabbitmqctl("set_user_limits", user, #"{"max-connections": 0}"#)
            var configuration = AMQPConfiguration(
                url: try AMQPURL(TestEnvironment.amqpURL(account: user)), connectionName: "startup-tests \(user)")
            configuration.operationTimeout = .seconds(1)
            let log = LogLines(label: "startup-tests")
            let connection = AMQPConnection(configuration: configuration, logger: log.logger)
            let workers = QueueWorkers(connection: connection, queue: queue, count: 2, prefetch: 10, logger: log.logger)
            try await withDeadline(.seconds(120), "the workers to subscribe") {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { await connection.run() }
                    defer { group.cancelAll() }
                    let subscribing = Task { try await workers.subscribeAll() }
                    let waiting = await log.first(containing: "broker not answering to subscribe to \(queue); retrying")
                    #expect(waiting != nil)
                    #expect(workers.liveCount == 0)
                    try StackServer.rabbitmqctl("clear_user_limits", user, "max-connections")
                    try await subscribing.value
                    #expect(workers.liveCount == 2)
                    workers.stop()
                }
            }
        }
    }
}
