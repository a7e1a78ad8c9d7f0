// Versioned migrations, applied at start in one transaction under an advisory lock, so that
// several instances starting at once migrate exactly once. Each owner of tables keeps its own
// history table (call-control's `schema_migrations`, the push notifier's `push.schema_migrations`).

/// One step of a schema: applied once, recorded by its version.
public typealias SchemaMigration = (version: Int, name: String, sql: String)

extension PostgresConnection {
    /// Applies every migration not yet recorded in `<schema>.schema_migrations` (the search
    /// path's `schema_migrations` when `schema` is nil; the schema is created when missing),
    /// in one transaction under the advisory lock `lock`. Returns the versions applied now.
    @discardableResult
    public func applyMigrations(_ migrations: [SchemaMigration], schema: String? = nil, lock: Int) throws -> [Int] {
        try withTransaction { db in
            try db.query("SELECT pg_advisory_xact_lock(\(lock))")
            // Migrations plan as the server would: a backfill has no index to use, and a
            // session that steers away from sequential scans (call-control's) would read its
            // table in index order instead.
            try db.query("SET LOCAL enable_seqscan = on")
            if let schema {
                // The history table (and whatever a migration leaves unqualified) goes into the
                // schema, for this transaction only.
                try db.query("CREATE SCHEMA IF NOT EXISTS \(identifier: schema)")
                try db.query("SET LOCAL search_path TO \(identifier: schema)")
            }
            try db.query(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """)
            let done = Set(try db.query("SELECT version FROM schema_migrations").map { try $0.decode(Int.self, at: 0) })
            var applied: [Int] = []
            for migration in migrations where !done.contains(migration.version) {
                try db.executeScript(migration.sql)
                try db.query(
                    "INSERT INTO schema_migrations (version, name) VALUES (\(migration.version), \(migration.name))")
                applied.append(migration.version)
            }
            return applied
        }
    }
}
