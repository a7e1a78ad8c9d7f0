// push-notifier: rings backgrounded phones by APNs VoIP push and FCM (DESIGN §8).
import Logging
import PushNotifier
import RingingOperations
import RingingService
import ServiceLifecycle

RingingLogging.bootstrap(default: .info)
let logger = Logger(label: "push-notifier")
_ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on
await ServiceRunner.run("push-notifier", logger: logger) {
    try await PushNotifierService(configuration: try PushNotifierConfiguration(), logger: logger)
}
