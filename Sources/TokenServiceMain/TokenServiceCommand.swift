// token-service: serves token.generate and token.jwks; `jwks` prints the public keys, and
// `generate-key` makes a new signing key for RINGING_TOKEN_KEY.
import ArgumentParser
import CallTokens
import Foundation
import Logging
import RingingOperations
import RingingService
import ServiceLifecycle
import TokenService

@main
struct TokenServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "token-service",
        abstract: "Issues signed call tokens to accepted participants of ongoing calls.",
        discussion:
            "Configuration comes from the environment (RINGING_AMQP_URL, RINGING_TOKEN_DATABASE_URL, RINGING_AUTH_SECRET, RINGING_TOKEN_KEY, RINGING_TOKEN_PREVIOUS_KEYS, RINGING_TOKEN_TTL_S, …); see README.md.",
        subcommands: [Serve.self, JWKS.self, GenerateKey.self],
        defaultSubcommand: Serve.self)

    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run the service until SIGTERM or SIGINT (the default).")

        func run() async throws {
            RingingLogging.bootstrap(default: .info)
            let logger = Logger(label: "token-service")
            _ = RingingMetrics.registry  // swift-metrics reports to Prometheus (/metrics) from here on
            await ServiceRunner.run("token-service", logger: logger) {
                try await TokenService(configuration: try TokenServiceConfiguration(), logger: logger)
            }
        }
    }

    struct JWKS: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the JWKS (public keys) a media server verifies call tokens with.",
            discussion: "Uses RINGING_TOKEN_KEY and RINGING_TOKEN_PREVIOUS_KEYS, as the service does.")

        func run() async throws {
            do {
                let configuration = try TokenServiceConfiguration()
                let issuer = try await CallTokenIssuer(signing: configuration.signingKey, previous: configuration.previousKeys)
                print(issuer.jwks.json)
            } catch {
                throw ValidationError("\(error)")
            }
        }
    }

    struct GenerateKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "generate-key",
            abstract:
                "Print a new Ed25519 signing key as kid:seed, for RINGING_TOKEN_KEY, and its public part for RINGING_TOKEN_PREVIOUS_KEYS."
        )

        @Option(help: "The key id (kid) tokens signed with it will carry.")
        var kid: String = "key-\(Int(Date().timeIntervalSince1970))"

        func run() throws {
            let line = try CallTokenKey.generate(kid: kid)
            let key = try CallTokenKey(line, private: true)
            print("RINGING_TOKEN_KEY=\(line)")
            print("# after rotating to a newer key, keep this in RINGING_TOKEN_PREVIOUS_KEYS until its tokens expire:")
            print("# \(key.publicConfiguration)")
        }
    }
}
