// SQL with bind parameters, written as string interpolation: values can never become SQL text.

/// A statement and its bind parameters. Interpolated values become `$1`, `$2`, … and travel
/// separately from the SQL:
///
///     let rows = try connection.query("SELECT status FROM calls WHERE id = \(id)")
///
/// Identifiers (a database name in `CREATE DATABASE`) go through `\(identifier:)`, which
/// quotes them; there is no way to splice raw text.
public struct PostgresQuery: Sendable, Hashable, ExpressibleByStringInterpolation {
    public struct Bind: Sendable, Hashable {
        public let type: PostgresType
        /// Text format; nil is SQL NULL.
        public let text: String?
    }

    public private(set) var sql: String
    public private(set) var binds: [Bind]

    public init(stringLiteral value: String) {
        sql = value
        binds = []
    }

    public init(stringInterpolation: StringInterpolation) {
        sql = stringInterpolation.sql
        binds = stringInterpolation.binds
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [Bind] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) { sql += literal }

        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T) {
            binds.append(Bind(type: T.postgresType, text: value.postgresText))
            sql += "$\(binds.count)"
        }

        public mutating func appendInterpolation<T: PostgresEncodable>(_ value: T?) {
            binds.append(Bind(type: T.postgresType, text: value?.postgresText))
            sql += "$\(binds.count)"
        }

        /// SQL text fixed at compile time (a shared column list): a `StaticString` cannot hold
        /// a runtime value, so this cannot splice data into the statement.
        public mutating func appendInterpolation(fragment: StaticString) {
            sql += fragment.description
        }

        /// A quoted identifier (`"name"`), for the few statements that take no parameters
        /// where a name goes (`CREATE DATABASE`, `LISTEN`).
        public mutating func appendInterpolation(identifier: String) {
            sql += "\"" + identifier.replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }
    }
}

extension String {
    fileprivate func replacingOccurrences(of target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
