// device-gateway: reads its configuration from the environment and serves devices until
// SIGTERM or SIGINT, then closes every socket with 1001 and stops.
import DeviceGateway
import Foundation
import Logging
import RingingOperations
import RingingService
import ServiceLifecycle

RingingLogging.bootstrap(default: .info)
let logger = Logger(label: "device-gateway")
_ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on

do {
    let configuration = try GatewayConfiguration()
    let service = try await DeviceGatewayService(configuration: configuration, logger: logger)
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
} catch {
    logger.critical("device-gateway stopped: \(error)")
    exit(1)
}
