// The errors of the PostgreSQL layer, with the server's SQLSTATE as a typed code.

/// A five-character SQLSTATE (https://www.postgresql.org/docs/current/errcodes-appendix.html)
/// with names for the codes callers switch on.
public struct SQLState: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public init(_ rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let uniqueViolation = SQLState("23505")
    public static let foreignKeyViolation = SQLState("23503")
    public static let notNullViolation = SQLState("23502")
    public static let checkViolation = SQLState("23514")
    public static let exclusionViolation = SQLState("23P01")
    public static let serializationFailure = SQLState("40001")
    public static let deadlockDetected = SQLState("40P01")
    public static let lockNotAvailable = SQLState("55P03")
    public static let queryCanceled = SQLState("57014")
    public static let adminShutdown = SQLState("57P01")
    public static let cannotConnectNow = SQLState("57P03")
    public static let undefinedTable = SQLState("42P01")
    public static let duplicateDatabase = SQLState("42P04")
    public static let invalidTextRepresentation = SQLState("22P02")
    public static let featureNotSupported = SQLState("0A000")

    /// Class 08 (connection exception) and the shutdown codes: the connection is gone.
    public var isConnectionFailure: Bool {
        rawValue.hasPrefix("08") || self == .adminShutdown || self == .cannotConnectNow || rawValue == "57P02"
    }

    /// Worth retrying the whole transaction.
    public var isTransient: Bool {
        self == .serializationFailure || self == .deadlockDetected || isConnectionFailure
    }
}

/// An error of the PostgreSQL layer. Switch on `code`; a server error carries `sqlState`.
public struct PostgresError: Error, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }
        public var description: String { name }

        public static let invalidURL = Code("invalidURL")
        /// No connection could be made (the pool keeps retrying until its acquire timeout).
        public static let connectionFailed = Code("connectionFailed")
        /// The connection broke during the call: the transaction did not commit, unless the
        /// failure hit the COMMIT itself, in which case the outcome is unknown.
        public static let connectionLost = Code("connectionLost")
        /// The server reported an error; see `sqlState`.
        public static let server = Code("server")
        /// The call did not finish in time; the connection was dropped.
        public static let timeout = Code("timeout")
        /// A column could not be decoded into the requested type.
        public static let decoding = Code("decoding")
        /// The connection or pool has been closed.
        public static let closed = Code("closed")
    }

    public var code: Code
    public var message: String
    public var sqlState: SQLState?
    public var detail: String?
    public var constraint: String?

    public init(_ code: Code, _ message: String, sqlState: SQLState? = nil, detail: String? = nil, constraint: String? = nil) {
        self.code = code
        self.message = message
        self.sqlState = sqlState
        self.detail = detail
        self.constraint = constraint
    }

    /// The transaction may succeed if tried again (serialization failure, deadlock, lost
    /// connection).
    public var isTransient: Bool {
        code == .connectionLost || code == .connectionFailed || code == .timeout || (sqlState?.isTransient ?? false)
    }

    public var description: String {
        var text = "PostgreSQL \(code)"
        if let sqlState { text += " \(sqlState)" }
        text += ": \(message)"
        if let detail { text += " (\(detail))" }
        return text
    }
}
