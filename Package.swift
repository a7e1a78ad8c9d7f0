// swift-tools-version: 6.1
// Ringing: the server side of call ringing. See README.md for what each target is for.
import PackageDescription

let strict: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "Ringing",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "AMQPClient", targets: ["AMQPClient"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/vapor/jwt-kit", from: "5.8.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.1.0"),
        .package(url: "https://github.com/swift-otel/swift-w3c-trace-context", from: "1.0.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-nio-http2", from: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.0.0"),
    ],
    targets: [
        // C libraries, from Debian's -dev packages (see scripts/stack).
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // Threads of our own for blocking C calls, so the cooperative pool never blocks.
        .target(name: "DedicatedThreads", swiftSettings: strict),
        // Safe Swift layer over rabbitmq-c: confirms, consumers, reconnects.
        .target(
            name: "AMQPClient",
            dependencies: [
                "CRabbitMQ", "DedicatedThreads",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Safe Swift layer over libpq: bind parameters, transactions, pool, LISTEN/NOTIFY.
        .target(
            name: "PostgresClient",
            dependencies: [
                "CLibPQ", "DedicatedThreads",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The ringing rules: a pure state machine, no I/O.
        .target(name: "CallRules", swiftSettings: strict),
        // The wire contract of DESIGN §2: requests, replies, events, notifications as JSON.
        .target(name: "RingingContract", dependencies: ["CallRules"], swiftSettings: strict),
        // Auth tokens (HS256 JWT): verification for the services, minting for development.
        .target(
            name: "RingingAuth",
            dependencies: ["CallRules", "RingingContract", .product(name: "JWTKit", package: "jwt-kit")],
            swiftSettings: strict
        ),
        // PostgreSQL persistence of calls: migrations, sessions, idempotency, outbox, groups.
        .target(
            name: "CallStore",
            dependencies: [
                "CallRules", "RingingContract", "PostgresClient", .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        // What both services share: topology, request envelopes, configuration, publishing.
        .target(
            name: "RingingService",
            dependencies: [
                "AMQPClient", "PostgresClient", "CallRules", "RingingContract", "CallStore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // The operations surface of the services: /healthz, /readyz, /metrics (Prometheus).
        .target(
            name: "RingingOperations",
            dependencies: [
                "PostgresClient",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // W3C trace context propagation through swift-distributed-tracing.
        .target(
            name: "RingingTracing",
            dependencies: [
                .product(name: "Instrumentation", package: "swift-distributed-tracing"),
                .product(name: "W3CTraceContext", package: "swift-w3c-trace-context"),
            ],
            swiftSettings: strict
        ),
        // The call-control service: workers, ring timer, outbox relay.
        .target(
            name: "CallControl",
            dependencies: [
                "AMQPClient", "PostgresClient", "CallRules", "RingingContract", "RingingAuth", "CallStore", "RingingService",
                "DedicatedThreads", "RingingOperations", "RingingTracing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "call-control",
            dependencies: [
                "CallControl", "RingingOperations", "RingingService", "RingingTracing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/CallControlMain",
            swiftSettings: strict
        ),
        // Call tokens: EdDSA signing for the token service, verification for media servers.
        .target(
            name: "CallTokens",
            dependencies: [.product(name: "JWTKit", package: "jwt-kit"), .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: strict
        ),
        // The token service: token.generate and token.jwks.
        .target(
            name: "TokenService",
            dependencies: [
                "AMQPClient", "PostgresClient", "CallRules", "RingingContract", "RingingAuth", "CallStore", "RingingService",
                "CallTokens", "DedicatedThreads", "RingingOperations",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "token-service",
            dependencies: [
                "TokenService", "CallTokens", "RingingService", "RingingOperations",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/TokenServiceMain",
            swiftSettings: strict
        ),
        // The device gateway (DESIGN §7): WebSocket and HTTP for phones and browsers, with the
        // socket registry and frame protocol as pure logic and the broker behind it.
        .target(
            name: "DeviceGateway",
            dependencies: [
                "AMQPClient", "CallRules", "RingingContract", "RingingAuth", "RingingService", "RingingOperations",
                "DedicatedThreads",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The web softphone's HTML, CSS and JavaScript, served as they are.
            resources: [.copy("Softphone")],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "device-gateway",
            dependencies: [
                "DeviceGateway", "RingingOperations", "RingingService",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/DeviceGatewayMain",
            swiftSettings: strict
        ),
        // What the push notifier sends (DESIGN §8) as pure logic: which pushes a notification
        // makes, the APNs and FCM requests, how a provider's answer is read, retry timing.
        .target(name: "PushRules", dependencies: ["CallRules", "RingingContract"], swiftSettings: strict),
        // The push notifier: device registry in PostgreSQL schema `push`, the notification
        // consumer, APNs and FCM over HTTP/2 (async-http-client), provider tokens (jwt-kit).
        .target(
            name: "PushNotifier",
            dependencies: [
                "AMQPClient", "PostgresClient", "CallRules", "RingingContract", "RingingAuth", "RingingService",
                "RingingOperations", "PushRules", "DedicatedThreads",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "JWTKit", package: "jwt-kit"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "push-notifier",
            dependencies: [
                "PushNotifier", "RingingOperations", "RingingService",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Sources/PushNotifierMain",
            swiftSettings: strict
        ),
        // Local stand-ins for APNs and FCM (tests and the bench): HTTP/2 over TLS with ALPN h2
        // and a certificate made at start, checking what the real providers check.
        .target(
            name: "PushProviderStubs",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOHTTP2", package: "swift-nio-http2"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "JWTKit", package: "jwt-kit"),
            ],
            swiftSettings: strict
        ),
        // The client library: the seed's calls and callbacks through the device gateway's
        // WebSocket. No rabbitmq-c: an iOS or Android-side Swift app can depend on it.
        .target(
            name: "RingingClient",
            dependencies: [
                "CallRules", "RingingContract", .product(name: "Logging", package: "swift-log"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
            ],
            swiftSettings: strict
        ),
        // The client library over the broker, for server-side users with a broker account.
        .target(
            name: "RingingClientAMQP",
            dependencies: [
                "RingingClient", "AMQPClient", "CallRules", "RingingContract", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // ringctl: tokens, calls from a terminal, the demo, history, groups, JWKS.
        .executableTarget(
            name: "ringctl",
            dependencies: [
                "RingingClient", "RingingClientAMQP", "RingingAuth", "RingingContract", "CallRules", "AMQPClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Micro benchmark: the Swift AMQP layer next to raw rabbitmq-c calls.
        .executableTarget(
            name: "AMQPBenchmark",
            dependencies: ["AMQPClient", "CRabbitMQ"],
            swiftSettings: strict
        ),
        // The load generator: seed flows at a rate or flat out, latencies in HDR histograms,
        // and the floor program that does the same broker and database work without the rules.
        .target(
            name: "LoadGenerator",
            dependencies: [
                "AMQPClient", "PostgresClient", "CallRules", "RingingContract", "RingingAuth", "RingingService",
                "PushProviderStubs",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ringing-bench",
            dependencies: [
                "AMQPClient", "LoadGenerator", "RingingAuth", "RingingService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Sources/RingingBenchMain",
            swiftSettings: strict
        ),
        // Test helpers shared by the integration tests (server addresses, stack restarts).
        .target(
            name: "TestSupport",
            dependencies: [
                "AMQPClient", "CallRules", "RingingContract", "RingingClient", .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/TestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "AMQPClientTests",
            dependencies: ["AMQPClient", "CRabbitMQ", "DedicatedThreads", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(name: "CallRulesTests", dependencies: ["CallRules"], swiftSettings: strict),
        .testTarget(
            name: "DeviceGatewayTests",
            dependencies: [
                "DeviceGateway", "CallControl", "CallRules", "RingingContract", "RingingAuth", "RingingService", "AMQPClient",
                "RingingOperations", "LoadGenerator", "RingingClient", "TokenService", "PushProviderStubs", "PostgresClient",
                "TestSupport",
                .product(name: "HummingbirdWSClient", package: "hummingbird-websocket"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CallControlTests",
            dependencies: [
                "CallControl", "TokenService", "CallTokens", "RingingClient", "RingingClientAMQP", "LoadGenerator", "RingingOperations", "RingingTracing", "CallRules",
                "RingingContract",
                "RingingAuth",
                "CallStore",
                "AMQPClient", "PostgresClient",
                "TestSupport", .product(name: "Logging", package: "swift-log"), .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(name: "LoadGeneratorTests", dependencies: ["LoadGenerator"], swiftSettings: strict),
        .testTarget(name: "PushRulesTests", dependencies: ["PushRules", "RingingContract", "CallRules"], swiftSettings: strict),
        .testTarget(
            name: "PostgresClientTests",
            dependencies: ["PostgresClient", "TestSupport"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
