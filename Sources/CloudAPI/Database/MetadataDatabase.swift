import Foundation
import Logging
import NIOCore
import NIOPosix
import PostgresKit
import SQLKit
import SQLiteKit

/// The cloud's metadata database: one SQLKit code path over SQLite (the embedded default, a file
/// under the data directory) and PostgreSQL (several `snf-cloud` processes on several machines).
///
/// Every query runs inside ``read(_:)`` or ``transaction(_:)``, which hand the body one session
/// (`any SQLDatabase`). The stores above this type never look at which database they talk to,
/// except through ``Dialect`` for the few statements SQL does not spell the same way.
public final class MetadataDatabase: Sendable {
    /// Which server is behind the SQL.
    public enum Dialect: String, Sendable {
        case sqlite
        case postgresql
    }

    enum Backend: Sendable {
        /// One connection, serialized by `lock`: SQLite allows one writer, and a single connection
        /// makes `BEGIN`/`COMMIT` sessions trivially correct inside this process. Other processes
        /// (the admin verbs while the server runs) wait on SQLite's own lock (`busy_timeout`).
        /// The connection has a thread of its own: a wait in `busy_timeout` blocks that thread,
        /// and on a shared pool it could block the very connection it waits for.
        case sqlite(SQLiteConnection, AsyncLock, NIOThreadPool)
        case postgres(PostgresPool)
    }

    let backend: Backend
    let logger: Logger
    public let dialect: Dialect
    /// Where the data is, for messages and logs; never contains a password.
    public let displayLocation: String

    private init(backend: Backend, dialect: Dialect, displayLocation: String, logger: Logger) {
        self.backend = backend
        self.dialect = dialect
        self.displayLocation = displayLocation
        self.logger = logger
    }

    /// Opens the database the configuration names and, unless `migrating` is false, brings its
    /// schema up to date. `migrating: false` is for administration sessions (`CREATE DATABASE`
    /// on a server's maintenance database) that must not leave the cloud's tables there.
    ///
    /// - Throws: ``DatabaseError`` when the URL is not understood, the server cannot be reached,
    ///   or the schema is newer than this program.
    public static func open(
        _ configuration: CloudConfiguration, logger: Logger, migrating: Bool = true
    ) async throws -> MetadataDatabase {
        let database: MetadataDatabase
        if let url = configuration.databaseURL, !url.hasPrefix("sqlite:") {
            database = try await openPostgres(url: url, logger: logger)
        } else {
            var path = configuration.sqlitePath
            if let url = configuration.databaseURL {
                path = String(url.dropFirst("sqlite://".count))
                guard url.hasPrefix("sqlite://"), path.hasPrefix("/") else {
                    throw DatabaseError("database_url for SQLite must be sqlite:///ABSOLUTE/PATH")
                }
            }
            database = try await openSQLite(path: path, logger: logger)
        }
        guard migrating else { return database }
        do {
            try await retryingWhileBusy { try await Migrations.migrate(database) }
        } catch {
            await database.close()
            throw error
        }
        return database
    }

    static func openSQLite(path: String, logger: Logger) async throws -> MetadataDatabase {
        let directory = (path as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw DatabaseError("cannot create the data directory \(directory): \(error.localizedDescription)")
        }
        // The file holds password hashes: create it readable by its owner only, before SQLite does.
        let fd = Glibc.open(path, O_CREAT | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw DatabaseError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        Glibc.close(fd)
        let threadPool = NIOThreadPool(numberOfThreads: 1)
        threadPool.start()
        let connection: SQLiteConnection
        do {
            connection = try await SQLiteConnection.open(
                storage: .file(path: path), threadPool: threadPool, logger: logger,
                on: MultiThreadedEventLoopGroup.singleton.any()
            ).get()
        } catch {
            try? await threadPool.shutdownGracefully()
            throw DatabaseError("cannot open the SQLite database \(path): \(error)")
        }
        let sql = connection.sql()
        do {
            // busy_timeout: the admin verbs wait for the server's writes (first, so that the
            // switch to WAL also waits for another process opening the same new file). A whole
            // minute: a commit's fsync can take many seconds on a disk busy with volume writes,
            // and waiting is better than failing. WAL: readers do not block the writer;
            // synchronous=FULL: a committed transaction survives a power cut.
            try await sql.raw("PRAGMA busy_timeout = 60000").run()
            try await retryingWhileBusy {
                // Another process switching the same new file at that moment: SQLite may answer
                // the old mode, or busy, without waiting. Until it says "wal", again.
                let mode = try await sql.raw("PRAGMA journal_mode = WAL").first()?
                    .decode(column: "journal_mode", as: String.self)
                guard mode?.lowercased() == "wal" else {
                    throw StillBusy()
                }
            }
            try await sql.raw("PRAGMA synchronous = FULL").run()
            try await sql.raw("PRAGMA foreign_keys = ON").run()
        } catch {
            try? await connection.close().get()
            try? await threadPool.shutdownGracefully()
            throw DatabaseError("cannot configure the SQLite database \(path): \(error)")
        }
        return MetadataDatabase(
            backend: .sqlite(connection, AsyncLock(), threadPool), dialect: .sqlite, displayLocation: path, logger: logger)
    }

    /// Runs `body` again while SQLite says busy without having waited (it does so in a few races
    /// between processes opening one new file: the switch to WAL, the first transactions), for
    /// up to a minute, as `busy_timeout` would have. Other errors, and PostgreSQL's, pass through.
    static func retryingWhileBusy<R>(_ body: () async throws -> R) async throws -> R {
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        var pause = Duration.milliseconds(5)
        while true {
            do {
                return try await body()
            } catch where isBusy(error) && ContinuousClock.now < deadline {
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(200))
            }
        }
    }

    private struct StillBusy: Error {}

    private static func isBusy(_ error: any Error) -> Bool {
        if error is StillBusy { return true }
        guard let error = error as? SQLiteError else { return false }
        return error.reason == .busy || error.reason == .busyInRecovery || error.reason == .busyInSnapshot
    }

    static func openPostgres(url: String, logger: Logger) async throws -> MetadataDatabase {
        let configuration: SQLPostgresConfiguration
        do {
            configuration = try SQLPostgresConfiguration(url: url)
        } catch {
            // The URL may hold a password: do not repeat it.
            throw DatabaseError(
                "database_url is neither sqlite:///PATH nor a PostgreSQL URL (postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=disable)"
            )
        }
        let display: String
        if let parsed = URL(string: url) {
            display = "postgresql://\(parsed.host ?? "?"):\(parsed.port ?? 5432)\(parsed.path)"
        } else {
            display = "postgresql"
        }
        let pool = EventLoopGroupConnectionPool(
            source: PostgresConnectionSource(sqlConfiguration: configuration),
            maxConnectionsPerEventLoop: 4,
            // A burst of writes to one project queues on its quota row while holding connections;
            // the others wait for a connection, as SQLite's busy_timeout waits, rather than fail
            // after the pool's default 10 s (seen as 500s under a loaded 2-core CI machine).
            requestTimeout: .seconds(60),
            logger: logger,
            on: MultiThreadedEventLoopGroup.singleton
        )
        let database = MetadataDatabase(
            backend: .postgres(PostgresPool(pool: pool)), dialect: .postgresql, displayLocation: display, logger: logger)
        do {
            try await database.read { db in try await db.raw("SELECT 1 AS one").run() }
        } catch {
            await database.close()
            throw DatabaseError("cannot reach the PostgreSQL database at \(display): \(String(reflecting: error))")
        }
        return database
    }

    /// Runs `body` on one session without a transaction (single statements, reads).
    public func read<R: Sendable>(_ body: @escaping @Sendable (any SQLDatabase) async throws -> R) async throws -> R {
        switch backend {
        case .sqlite(let connection, let lock, _):
            return try await lock.withLock { try await body(connection.sql()) }
        case .postgres(let pool):
            return try await pool.pool.database(logger: logger).sql().withSession(body)
        }
    }

    /// Runs `body` in one transaction: everything it wrote is committed when it returns, and
    /// nothing is when it throws (the error is rethrown after `ROLLBACK`).
    public func transaction<R: Sendable>(
        _ body: @escaping @Sendable (any SQLDatabase) async throws -> R
    ) async throws -> R {
        let begin = dialect == .sqlite ? "BEGIN IMMEDIATE" : "BEGIN"
        return try await read { db in
            try await db.raw(SQLQueryString(begin)).run()
            do {
                let result = try await body(db)
                try await db.raw("COMMIT").run()
                return result
            } catch {
                try? await db.raw("ROLLBACK").run()
                throw error
            }
        }
    }

    /// Closes the connection or pool. Call once, after the last query.
    public func close() async {
        switch backend {
        case .sqlite(let connection, _, let threadPool):
            // The future, not the async close: that one is skipped when the task is cancelled,
            // which would leave the file open (and trip SQLiteNIO's assertion in debug builds).
            try? await connection.close().get()
            try? await threadPool.shutdownGracefully()
        case .postgres(let pool):
            try? await pool.pool.shutdownAsync()
        }
    }
}

/// AsyncKit's pool guards its state with locks and is used from any thread, but predates
/// `Sendable`; this box says so in one place.
struct PostgresPool: @unchecked Sendable {
    let pool: EventLoopGroupConnectionPool<PostgresConnectionSource>
}

/// The database cannot be used; the message says which and why, never a password.
public struct DatabaseError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A FIFO mutual-exclusion lock for async code (the SQLite session).
actor AsyncLock {
    private var locked = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func lock() async {
        if !locked {
            locked = true
            return
        }
        await withCheckedContinuation { waiters.append($0) }
    }

    func unlock() {
        if waiters.isEmpty {
            locked = false
        } else {
            waiters.removeFirst().resume()
        }
    }

    nonisolated func withLock<R: Sendable>(_ body: () async throws -> R) async throws -> R {
        await lock()
        do {
            let result = try await body()
            await unlock()
            return result
        } catch {
            await unlock()
            throw error
        }
    }
}
