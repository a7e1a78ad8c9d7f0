// The errors of the AMQP layer: one struct with a code, as swift-kafka-client does.

/// An error of the AMQP layer. Switch on `code`; `message` is for people.
public struct AMQPError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        /// The URL could not be parsed; `message` names the part.
        public static let invalidURL = Code("invalidURL")
        /// No connection could be made within the connect timeout (the layer keeps retrying).
        public static let connectionFailed = Code("connectionFailed")
        /// The connection was lost while the operation was in flight: a publish may or may not
        /// have reached the broker; a delivery will be redelivered.
        public static let connectionLost = Code("connectionLost")
        /// The broker refused the publish (`basic.nack`).
        public static let nacked = Code("nacked")
        /// A mandatory publish matched no queue and came back (`basic.return`).
        public static let unroutable = Code("unroutable")
        /// The broker closed the channel: a declaration conflicted, an exchange is missing, …
        /// `replyCode` holds the AMQP reply code (404, 406, …).
        public static let channelClosed = Code("channelClosed")
        /// The broker cancelled the consumer (queue deleted, node failed over).
        public static let consumerCancelled = Code("consumerCancelled")
        /// The operation did not finish in time.
        public static let timeout = Code("timeout")
        /// The connection was shut down by its owner.
        public static let shutdown = Code("shutdown")
        /// The C library reported an error; `message` carries its text.
        public static let library = Code("library")
    }

    public var code: Code
    public var message: String
    /// The broker's reply code for `channelClosed`, otherwise nil.
    public var replyCode: UInt16?

    public init(_ code: Code, _ message: String, replyCode: UInt16? = nil) {
        self.code = code
        self.message = message
        self.replyCode = replyCode
    }

    /// The broker did not answer in time, or the connection went or could not be made:
    /// waiting and trying again can help (a refusal, a conflict or a shutdown cannot).
    public var isUnavailable: Bool { code == .timeout || code == .connectionLost || code == .connectionFailed }

    public var description: String {
        if let replyCode { return "AMQP \(code) (\(replyCode)): \(message)" }
        return "AMQP \(code): \(message)"
    }
}
