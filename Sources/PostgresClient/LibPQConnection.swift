// One libpq connection. Not thread-safe, like libpq itself: it belongs to exactly one owner
// (a PostgresConnection actor, or the listener's thread) and is used from there only.
import CLibPQ
import DedicatedThreads
import Foundation

final class LibPQConnection {
    private var handle: OpaquePointer?
    let configuration: PostgresConfiguration
    private(set) var isBroken = false
    /// Names of the statements prepared on this connection, by SQL text and parameter types.
    private var prepared: [PreparedKey: String] = [:]
    private var preparedCount = 0
    /// Beyond this many distinct statements, the rest run unnamed (parsed every time).
    static let preparedLimit = 512

    private struct PreparedKey: Hashable {
        var sql: String
        var types: [Oid]

        init(_ query: PostgresQuery) {
            sql = query.sql
            types = query.binds.map { Oid($0.type.oid) }
        }
    }

    /// Connects; waits at most `connectTimeout` (libpq's `connect_timeout`).
    init(configuration: PostgresConfiguration) throws(PostgresError) {
        self.configuration = configuration
        let parameters = configuration.libpqParameters
        var keys = parameters.map { strdup($0.0) }
        var values = parameters.map { strdup($0.1) }
        defer {
            for key in keys { free(key) }
            for value in values { free(value) }
        }
        keys.append(nil)
        values.append(nil)
        let connection = keys.withUnsafeBufferPointer { k in
            values.withUnsafeBufferPointer { v in
                k.withMemoryRebound(to: UnsafePointer<CChar>?.self) { k in
                    v.withMemoryRebound(to: UnsafePointer<CChar>?.self) { v in
                        PQconnectdbParams(k.baseAddress, v.baseAddress, 0)
                    }
                }
            }
        }
        guard let connection, PQstatus(connection) == CONNECTION_OK else {
            let message = connection.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            PQfinish(connection)
            throw PostgresError(
                .connectionFailed,
                "cannot connect to \(configuration.redactedURL): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        // Server notices ("relation already exists, skipping") are not errors; libpq would
        // print them on stderr.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        handle = connection
    }

    deinit { close() }

    func close() {
        PQfinish(handle)
        handle = nil
        isBroken = true
    }

    var socket: Int32 { handle.map { PQsocket($0) } ?? -1 }

    /// Round trips made on this connection (and counted for the process, `DatabaseRoundTrips`).
    private(set) var roundTrips = 0

    private func countRoundTrip() {
        roundTrips += 1
        DatabaseRoundTrips.count()
    }

    /// Runs one statement with bind parameters (extended protocol, text format).
    func execute(_ query: PostgresQuery) throws(PostgresError) -> PostgresRows {
        let connection = try liveHandle()
        let key = PreparedKey(query)
        let name = try preparedName(key)
        try send(query, key: key, name: name, on: connection)
        countRoundTrip()
        do {
            return try collectResults()
        } catch {
            forgetInvalidatedPlan(error, key: key, name: name)
            throw error
        }
    }

    /// Runs `queries` in order as one pipeline: sent together and answered together, one
    /// round trip for all (libpq's pipeline mode, one sync at the end). Once one fails, the
    /// server skips the rest and its error is thrown; outside a transaction block they all
    /// run in one implicit transaction, rolled back by the failure.
    ///
    /// When the pipeline ends with COMMIT and every statement succeeded, the transaction is
    /// committed whatever happens after: a missing sync then closes the connection but the
    /// results are returned, so that a committed transaction is never retried as a failed one.
    func executePipeline(_ queries: [PostgresQuery]) throws(PostgresError) -> [PostgresRows] {
        if queries.count == 1 { return [try execute(queries[0])] }
        let connection = try liveHandle()
        let keys = queries.map(PreparedKey.init)
        // Prepared beforehand, outside the pipeline: once per statement and connection.
        var names: [String?] = []
        for key in keys { names.append(try preparedName(key)) }
        guard PQenterPipelineMode(connection) == 1 else { throw connectionError("entering pipeline mode failed") }
        var results: [PostgresRows] = []
        var failure: (index: Int, error: PostgresError)?
        do throws(PostgresError) {
            for index in queries.indices {
                try send(queries[index], key: keys[index], name: names[index], on: connection)
            }
            guard PQpipelineSync(connection) == 1 else { throw connectionError("sending the pipeline's sync failed") }
            countRoundTrip()
            // Each statement has its own budget, as the server's statement_timeout does.
            for index in queries.indices {
                let (rows, error) = try nextResults(connection, until: freshDeadline())
                results.append(rows)
                if let error, failure == nil { failure = (index, error) }
            }
            // The sync's own result ends the pipeline.
            try waitForResult(connection, until: freshDeadline())
            let sync = PQgetResult(connection)
            let status = sync.map(PQresultStatus)
            PQclear(sync)
            guard status == PGRES_PIPELINE_SYNC else {
                throw PostgresError(
                    .connectionLost, "the pipeline ended without its sync (status \(status.map { "\($0.rawValue)" } ?? "none"))")
            }
            guard PQexitPipelineMode(connection) == 1 else { throw connectionError("leaving pipeline mode failed") }
        } catch {
            // Whatever went wrong inside pipeline mode, this connection is not reused half-way
            // through a pipeline.
            close()
            let committed =
                failure == nil && results.count == queries.count
                && (queries.last.map { $0.sql.uppercased().hasPrefix("COMMIT") } ?? false)
            guard committed else { throw error }
            return results
        }
        if let failure {
            forgetInvalidatedPlan(failure.error, key: keys[failure.index], name: names[failure.index])
            throw failure.error
        }
        return results
    }

    /// Sends one statement, by its prepared name when it has one, without waiting.
    private func send(_ query: PostgresQuery, key: PreparedKey, name: String?, on connection: OpaquePointer)
        throws(PostgresError)
    {
        var values: [UnsafeMutablePointer<CChar>?] = query.binds.map { $0.text.map { strdup($0) } ?? nil }
        defer { for value in values { free(value) } }
        let sent = values.withUnsafeMutableBufferPointer { values in
            values.withMemoryRebound(to: UnsafePointer<CChar>?.self) { values in
                if let name {
                    PQsendQueryPrepared(connection, name, Int32(key.types.count), values.baseAddress, nil, nil, 0)
                } else {
                    PQsendQueryParams(connection, query.sql, Int32(key.types.count), key.types, values.baseAddress, nil, nil, 0)
                }
            }
        }
        guard sent == 1 else { throw connectionError("sending the query failed") }
    }

    /// A plan invalidated by a schema change ("cached plan must not change result type"):
    /// prepare it afresh next time.
    private func forgetInvalidatedPlan(_ error: PostgresError, key: PreparedKey, name: String?) {
        guard let name, error.sqlState == .featureNotSupported, let connection = handle, !isBroken else { return }
        prepared[key] = nil
        if PQsendQuery(connection, "DEALLOCATE \(name)") == 1 { countRoundTrip() }
        _ = try? collectResults()
    }

    /// The name of the statement prepared on this connection (preparing it the first time), or nil
    /// when it runs unnamed.
    private func preparedName(_ key: PreparedKey) throws(PostgresError) -> String? {
        guard configuration.preparesStatements else { return nil }
        if let name = prepared[key] { return name }
        guard prepared.count < Self.preparedLimit else { return nil }
        let connection = try liveHandle()
        preparedCount += 1
        let name = "ringing_\(preparedCount)"
        guard PQsendPrepare(connection, name, key.sql, Int32(key.types.count), key.types) == 1 else {
            throw connectionError("preparing the query failed")
        }
        countRoundTrip()
        _ = try collectResults()
        prepared[key] = name
        return name
    }

    /// Runs SQL text without parameters, possibly several statements (migrations).
    func executeScript(_ sql: String) throws(PostgresError) {
        let connection = try liveHandle()
        guard PQsendQuery(connection, sql) == 1 else { throw connectionError("sending the script failed") }
        countRoundTrip()
        _ = try collectResults()
    }

    /// Reads whatever arrived and returns pending notifications (for LISTEN).
    func notifications() throws(PostgresError) -> [PostgresNotification] {
        let connection = try liveHandle()
        guard PQconsumeInput(connection) == 1, PQstatus(connection) == CONNECTION_OK else {
            isBroken = true
            throw connectionError("reading from the server failed")
        }
        var result: [PostgresNotification] = []
        while let notify = PQnotifies(connection) {
            result.append(
                PostgresNotification(
                    channel: String(cString: notify.pointee.relname), payload: String(cString: notify.pointee.extra),
                    processID: notify.pointee.be_pid))
            PQfreemem(notify)
        }
        return result
    }

    private func liveHandle() throws(PostgresError) -> OpaquePointer {
        guard let handle, !isBroken else { throw PostgresError(.connectionLost, "the connection is closed") }
        return handle
    }

    /// Waits for every result of the statement just sent; every wait is bounded by the
    /// statement timeout plus a grace period, after which the connection is given up.
    private func collectResults() throws(PostgresError) -> PostgresRows {
        let connection = try liveHandle()
        let (rows, error) = try nextResults(connection, until: freshDeadline())
        if let error { throw error }
        return rows
    }

    /// The latest a statement's answer may come: the statement timeout plus a grace period.
    private func freshDeadline() -> ContinuousClock.Instant {
        ContinuousClock.now + configuration.statementTimeout + configuration.clientGrace
    }

    /// Reads the results of the next statement, up to the null result that ends them: its
    /// rows, and its first error (a statement a pipeline skipped has neither). Throws when
    /// the connection is lost or the deadline passes; returns the server's error, marking
    /// the connection broken when the error says the session is gone.
    private func nextResults(_ connection: OpaquePointer, until deadline: ContinuousClock.Instant) throws(PostgresError)
        -> (PostgresRows, PostgresError?)
    {
        var rows = PostgresRows(columns: [], cells: [], affectedRows: 0)
        var firstError: PostgresError?
        while true {
            try waitForResult(connection, until: deadline)
            guard let result = PQgetResult(connection) else { break }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
                rows = Self.copyRows(result)
            case PGRES_COMMAND_OK:
                rows = PostgresRows(columns: [], cells: [], affectedRows: Int(String(cString: PQcmdTuples(result))) ?? 0)
            case PGRES_EMPTY_QUERY, PGRES_NONFATAL_ERROR, PGRES_PIPELINE_ABORTED:
                break
            default:
                if firstError == nil { firstError = Self.serverError(result) }
            }
        }
        if PQstatus(connection) != CONNECTION_OK {
            isBroken = true
            var error = firstError ?? PostgresError(.connectionLost, "the connection to \(configuration.redactedURL) was lost")
            error.code = .connectionLost
            throw error
        }
        if var error = firstError, error.sqlState?.isConnectionFailure ?? false {
            isBroken = true
            error.code = .connectionLost
            throw error
        }
        return (rows, firstError)
    }

    /// Waits until the next result can be read without blocking, at most until `deadline`;
    /// then gives the connection up.
    private func waitForResult(_ connection: OpaquePointer, until deadline: ContinuousClock.Instant) throws(PostgresError) {
        while PQisBusy(connection) == 1 {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else {
                close()
                throw PostgresError(
                    .timeout,
                    "no answer from \(configuration.redactedURL) within \(configuration.statementTimeout + configuration.clientGrace)"
                )
            }
            _ = waitReadable([PQsocket(connection)], timeout: remaining)
            guard PQconsumeInput(connection) == 1 else { throw connectionError("reading the result failed") }
        }
    }

    private func connectionError(_ what: String) -> PostgresError {
        let message = handle.map { String(cString: PQerrorMessage($0)) } ?? ""
        if let handle, PQstatus(handle) != CONNECTION_OK { isBroken = true }
        return PostgresError(.connectionLost, "\(what): \(message.trimmingCharacters(in: .whitespacesAndNewlines))")
    }

    private static func serverError(_ result: OpaquePointer) -> PostgresError {
        func field(_ code: Character) -> String? {
            PQresultErrorField(result, Int32(code.asciiValue!)).map { String(cString: $0) }
        }
        let state = field("C").map(SQLState.init)
        let message = field("M") ?? String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        return PostgresError(.server, message, sqlState: state, detail: field("D"), constraint: field("n"))
    }

    private static func copyRows(_ result: OpaquePointer) -> PostgresRows {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        let columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        var cells: [[String?]] = []
        cells.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            cells.append(
                (0..<Int32(columnCount)).map { column in
                    PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column))
                })
        }
        return PostgresRows(columns: columns, cells: cells, affectedRows: rowCount)
    }
}

/// A `NOTIFY` received on a channel this session listens to.
public struct PostgresNotification: Sendable, Hashable {
    public let channel: String
    public let payload: String
    /// The server process that sent it.
    public let processID: Int32
}
