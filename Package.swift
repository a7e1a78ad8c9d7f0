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
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0")
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
        // Micro benchmark: the Swift AMQP layer next to raw rabbitmq-c calls.
        .executableTarget(
            name: "AMQPBenchmark",
            dependencies: ["AMQPClient", "CRabbitMQ"],
            swiftSettings: strict
        ),
        // Test helpers shared by the integration tests (server addresses, stack restarts).
        .target(name: "TestSupport", path: "Tests/TestSupport", swiftSettings: strict),
        .testTarget(
            name: "AMQPClientTests",
            dependencies: ["AMQPClient", "CRabbitMQ", "DedicatedThreads", "TestSupport"],
            swiftSettings: strict
        ),
        .testTarget(name: "CallRulesTests", dependencies: ["CallRules"], swiftSettings: strict),
        .testTarget(
            name: "PostgresClientTests",
            dependencies: ["PostgresClient", "TestSupport"],
            swiftSettings: strict
        ),
    ],
    swiftLanguageModes: [.v6]
)
