// call-control: reads its configuration from the environment and runs the service until
// SIGTERM or SIGINT, then stops gracefully.
import CallControl
import Logging
import RingingOperations
import RingingService
import RingingTracing

RingingLogging.bootstrap(default: .info)
let logger = Logger(label: "call-control")
_ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on
_ = RingingTracing.bootstrap  // W3C trace context propagation (swift-distributed-tracing)

await ServiceRunner.run("call-control", logger: logger) {
    try await CallControlService(configuration: try CallControlConfiguration(), logger: logger)
}
