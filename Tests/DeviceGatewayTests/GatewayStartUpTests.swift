// A gateway whose start fails tells whoever waits for its listener, instead of leaving them
// waiting for ever (see StartUpTests in CallControlTests).
import AMQPClient
import DeviceGateway
import RingingService
import ServiceLifecycle
import TestSupport
import Testing

@Suite struct GatewayStartUpTests {
    @Test func aGatewayThatCannotStartTellsWhoeverWaitsForItsListener() async throws {
        // The app account may use the topology but not declare a gateway's queue (403).
        let gateway = try await DeviceGatewayService(
            configuration: try Gateway.configuration(["RINGING_AMQP_URL": TestEnvironment.amqpURL(account: "app")]),
            logger: quietLogger("gw-startup-test"))
        try await withDeadline(.seconds(120), "the failed start") {
            let group = ServiceGroup(
                configuration: ServiceGroupConfiguration(
                    services: gateway.serviceGroupEntries, logger: quietLogger("gw-startup-test")))
            let run = Task { try await group.run() }
            #expect(await gateway.waitUntilListening() == nil)
            let error = await #expect(throws: AMQPError.self) { try await run.value }
            #expect(error?.replyCode == 403, "\(String(describing: error))")
        }
    }
}
