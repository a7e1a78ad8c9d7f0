// Configuration from the environment (DESIGN §6), with working local defaults and errors that
// name the variable at fault.
public import AMQPClient
public import Foundation
public import PostgresClient

public struct ConfigurationError: Error, CustomStringConvertible {
    public let variable: String
    public let message: String
    public var description: String { "\(variable): \(message)" }

    public init(variable: String, message: String) {
        self.variable = variable
        self.message = message
    }
}

/// Reads `RINGING_*` variables.
public struct Environment: Sendable {
    public let values: [String: String]

    public init(_ values: [String: String] = ProcessInfo.processInfo.environment) {
        self.values = values
    }

    public func string(_ name: String, default fallback: String) -> String {
        guard let value = values[name], !value.isEmpty else { return fallback }
        return value
    }

    public func integer(_ name: String, default fallback: Int, in range: ClosedRange<Int>) throws -> Int {
        guard let text = values[name], !text.isEmpty else { return fallback }
        guard let value = Int(text), range.contains(value) else {
            throw ConfigurationError(
                variable: name, message: "'\(text)' must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    /// `RINGING_AMQP_URL`, by default the local stack's broker with `account`'s development
    /// credentials: each executable connects with its own broker account (DESIGN §9).
    public func amqpURL(account: String) throws -> AMQPURL {
        let text = string("RINGING_AMQP_URL", default: "amqp://\(account):\(account)@127.0.0.1:5672/")
        do { return try AMQPURL(text) } catch {
            throw ConfigurationError(variable: "RINGING_AMQP_URL", message: error.message)
        }
    }

    public func database() throws -> PostgresConfiguration {
        let text = string("RINGING_DATABASE_URL", default: "postgres://ringing:ringing@127.0.0.1:5432/ringing")
        do { return try PostgresConfiguration(url: text) } catch {
            throw ConfigurationError(variable: "RINGING_DATABASE_URL", message: error.message)
        }
    }
}
