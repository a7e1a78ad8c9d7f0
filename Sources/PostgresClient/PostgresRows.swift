// Query results, copied out of libpq into Swift values.

/// The rows of one result, with their column names.
public struct PostgresRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let cells: [[String?]]
    /// Rows changed by INSERT/UPDATE/DELETE (`PQcmdTuples`), or the row count of a SELECT.
    public let affectedRows: Int

    public var startIndex: Int { 0 }
    public var endIndex: Int { cells.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(columns: columns, cells: cells[position]) }

    /// Decodes the first row, or nil when there is none.
    public func decodeFirst<each T: PostgresDecodable>(_ types: (repeat each T).Type) throws(PostgresError) -> (repeat each T)? {
        guard !isEmpty else { return nil }
        let row: PostgresRow = self[0]
        let values: (repeat each T) = try row.decodeColumns(types)
        return (repeat each values)
    }
}

/// One row: decode columns by position or by name.
public struct PostgresRow: Sendable {
    public let columns: [String]
    let cells: [String?]

    /// The raw text of a column, nil for NULL.
    public subscript(index: Int) -> String? { cells[index] }

    /// Decodes column `index`; a NULL decodes only into an Optional.
    public func decode<T: PostgresDecodable>(_ type: T.Type, at index: Int) throws(PostgresError) -> T {
        guard index < cells.count else {
            throw PostgresError(.decoding, "column \(index) does not exist; the row has \(cells.count)")
        }
        if let optional = T.self as? any OptionalPostgresDecodable.Type {
            if let text = cells[index] {
                guard let value = optional.decodeWrapped(text) else { throw mismatch(T.self, index) }
                return value as! T
            }
            return optional.null as! T
        }
        guard let text = cells[index] else {
            throw PostgresError(.decoding, "column '\(columns[index])' is NULL; decode it as \(T.self)?")
        }
        guard let value = T(postgresText: text) else { throw mismatch(T.self, index) }
        return value
    }

    /// Decodes column `name`.
    public func decode<T: PostgresDecodable>(_ type: T.Type, named name: String) throws(PostgresError) -> T {
        guard let index = columns.firstIndex(of: name) else {
            throw PostgresError(.decoding, "no column '\(name)'; the row has \(columns.joined(separator: ", "))")
        }
        return try decode(type, at: index)
    }

    /// Decodes the leading columns as a tuple: `row.decodeColumns((UUID, String, Date?).self)`.
    public func decodeColumns<each T: PostgresDecodable>(_ types: (repeat each T).Type) throws(PostgresError) -> (repeat each T) {
        var index = 0
        func next<U: PostgresDecodable>(_ type: U.Type) throws(PostgresError) -> U {
            defer { index += 1 }
            return try decode(type, at: index)
        }
        return (repeat try next((each T).self))
    }

    private func mismatch<T>(_ type: T.Type, _ index: Int) -> PostgresError {
        PostgresError(.decoding, "column '\(columns[index])' value '\(cells[index] ?? "NULL")' is not a \(T.self)")
    }
}

protocol OptionalPostgresDecodable {
    static var null: Any { get }
    static func decodeWrapped(_ text: String) -> Any?
}

extension Optional: PostgresDecodable where Wrapped: PostgresDecodable {
    public init?(postgresText: String) {
        guard let value = Wrapped(postgresText: postgresText) else { return nil }
        self = .some(value)
    }
}

extension Optional: OptionalPostgresDecodable where Wrapped: PostgresDecodable {
    static var null: Any { Optional<Wrapped>.none as Any }
    static func decodeWrapped(_ text: String) -> Any? {
        Wrapped(postgresText: text).map { Optional($0) as Any }
    }
}
