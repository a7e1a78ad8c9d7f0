// device-gateway: reads its configuration from the environment and serves devices until
// SIGTERM or SIGINT, then closes every socket with 1001 and stops.
import DeviceGateway
import Logging
import RingingOperations
import RingingService

RingingLogging.bootstrap(default: .info)
let logger = Logger(label: "device-gateway")
_ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on

await ServiceRunner.run("device-gateway", logger: logger) {
    try await DeviceGatewayService(configuration: try GatewayConfiguration(), logger: logger)
}
