// call-control: reads its configuration from the environment and runs the service until
// SIGTERM or SIGINT, then stops gracefully.
import CallControl
import Foundation
import Logging
import RingingOperations
import RingingService
import RingingTracing
import ServiceLifecycle

RingingLogging.bootstrap(default: .info)
let logger = Logger(label: "call-control")
_ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on
_ = RingingTracing.bootstrap  // W3C trace context propagation (swift-distributed-tracing)

do {
    let configuration = try CallControlConfiguration()
    let service = try await CallControlService(configuration: configuration, logger: logger)
    let group = ServiceGroup(
        configuration: ServiceGroupConfiguration(
            services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
} catch {
    logger.critical("call-control stopped: \(error)")
    exit(1)
}
