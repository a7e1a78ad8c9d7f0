// Parsing of amqp:// URLs as RabbitMQ documents them (https://www.rabbitmq.com/docs/uri-spec).
import Foundation

/// Where and as whom to connect: `amqp://user:pass@host:port/vhost?heartbeat=10`.
public struct AMQPURL: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var virtualHost: String
    /// `heartbeat` query parameter (seconds), if given.
    public var heartbeat: Duration?
    /// `connection_timeout` query parameter (milliseconds), if given.
    public var connectTimeout: Duration?

    public init(
        host: String = "127.0.0.1", port: Int = 5672, user: String = "guest",
        password: String = "guest", virtualHost: String = "/"
    ) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.virtualHost = virtualHost
    }

    /// Parses `amqp://[user[:password]@]host[:port][/vhost][?query]`. An absent path means the
    /// default virtual host `/`; `/%2f` names it explicitly; `/` alone names the empty vhost
    /// only in the spec, which nobody means, so it is read as `/` too.
    public init(_ string: String) throws(AMQPError) {
        guard let components = URLComponents(string: string) else {
            throw AMQPError(.invalidURL, "'\(string)' is not a URL")
        }
        guard let scheme = components.scheme?.lowercased() else {
            throw AMQPError(.invalidURL, "'\(string)' has no scheme; expected amqp://")
        }
        guard scheme == "amqp" else {
            throw AMQPError(.invalidURL, "scheme '\(scheme)' is not supported; expected amqp:// (TLS is not built in)")
        }
        self.init()
        if let host = components.percentEncodedHost, !host.isEmpty {
            self.host = host.removingPercentEncoding ?? host
            if self.host.hasPrefix("["), self.host.hasSuffix("]") { self.host = String(self.host.dropFirst().dropLast()) }
        }
        if let port = components.port {
            guard (1...65535).contains(port) else { throw AMQPError(.invalidURL, "port \(port) is out of range 1...65535") }
            self.port = port
        }
        if let user = components.percentEncodedUser { self.user = user.removingPercentEncoding ?? user }
        if let password = components.percentEncodedPassword { self.password = password.removingPercentEncoding ?? password }
        let path = components.percentEncodedPath
        if path.count > 1 {
            let raw = String(path.dropFirst())
            guard !raw.contains("/") else {
                throw AMQPError(.invalidURL, "virtual host '\(raw)' contains '/'; percent-encode it as %2F")
            }
            virtualHost = raw.removingPercentEncoding ?? raw
        }
        for item in components.queryItems ?? [] {
            switch item.name {
            case "heartbeat":
                guard let value = item.value.flatMap(Int.init), value >= 0 else {
                    throw AMQPError(.invalidURL, "query parameter 'heartbeat' must be a whole number of seconds")
                }
                heartbeat = .seconds(value)
            case "connection_timeout":
                guard let value = item.value.flatMap(Int.init), value > 0 else {
                    throw AMQPError(.invalidURL, "query parameter 'connection_timeout' must be a positive number of milliseconds")
                }
                connectTimeout = .milliseconds(value)
            default:
                continue  // other clients' parameters (channel_max, auth_mechanism …) are ignored
            }
        }
    }

    /// The URL without the password, for logs.
    public var description: String {
        let vhost =
            virtualHost == "/"
            ? "" : "/" + (virtualHost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? virtualHost)
        let shownHost = host.contains(":") ? "[\(host)]" : host
        return "amqp://\(user)@\(shownHost):\(port)\(vhost)"
    }
}
