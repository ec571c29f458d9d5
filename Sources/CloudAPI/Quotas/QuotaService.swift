import SQLKit

/// A resource a project's quota limits: a name as stored in the `quotas` table.
public struct QuotaResource: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    /// Bytes of objects (the logical size of each object, as `X-Account-Bytes-Used` counts them).
    public static let storageBytes = QuotaResource(rawValue: "storage_bytes")
    public static let images = QuotaResource(rawValue: "images")
    public static let volumes = QuotaResource(rawValue: "volumes")
    public static let snapshots = QuotaResource(rawValue: "snapshots")

    /// Every resource the service knows (the admin verb and the configuration file accept these).
    /// Compute resources (`instances`, `cores`, `ram_mib`) join when the compute API does.
    public static let known: [QuotaResource] = [.storageBytes, .images, .volumes, .snapshots]

    /// The known resource named `name`, or nil.
    public static func named(_ name: String) -> QuotaResource? { known.first { $0.rawValue == name } }
}

/// A refused charge: `usage + requested` would pass `limit`. Services turn it into their own
/// fault (Swift: ``cloudError``, 413 "Upload exceeds quota."; Glance/Cinder: 413 or 403 in the
/// OpenStack shape).
public struct QuotaExceeded: Error, Sendable, Equatable, CustomStringConvertible {
    public var resource: QuotaResource
    public var limit: Int64
    public var usage: Int64
    public var requested: Int64

    public var description: String {
        "Quota exceeded for \(resource): \(requested) requested, \(usage) of \(limit) in use."
    }

    /// Swift's answer (the account-quota middleware's): 413.
    public var cloudError: CloudError { CloudError(status: 413, message: "Upload exceeds quota.") }

    /// Glance's and Cinder's answer: 413 (Cinder's `overLimit`, e.g. VolumeLimitExceeded).
    public var openStackError: CloudError {
        CloudError(status: 413, message: "Quota exceeded for \(resource): the limit is \(limit), \(usage) in use.")
    }
}

/// One resource of one project: its limit and what is in use.
public struct QuotaUsage: Sendable, Equatable {
    public var resource: QuotaResource
    /// The limit set for the project, or nil when it uses the default.
    public var projectLimit: Int64?
    /// The limit in force: the project's, else the configured default, else nil (unlimited).
    public var limit: Int64?
    public var usage: Int64

    public init(resource: QuotaResource, projectLimit: Int64?, limit: Int64?, usage: Int64) {
        self.resource = resource
        self.projectLimit = projectLimit
        self.limit = limit
        self.usage = usage
    }
}

/// Per-project quotas: limits and exact usage, kept in the metadata database (table `quotas`,
/// schema version 4: one row per project and resource, created on first use).
///
/// Usage changes only through ``charge(project:_:in:delta:)``, inside the transaction that makes
/// the change it accounts for (an object row, an image row...), so usage and what it counts
/// commit or roll back together. The row is locked first (PostgreSQL `SELECT ... FOR UPDATE`;
/// SQLite transactions are serialized by `BEGIN IMMEDIATE`): two requests of one project charge
/// one after the other and usage stays exact, whatever the concurrency.
public struct QuotaService: Sendable {
    public let database: MetadataDatabase
    /// Limits of projects that have none of their own; a resource absent here is unlimited.
    public let defaultLimits: [QuotaResource: Int64]

    public init(database: MetadataDatabase, defaultLimits: [QuotaResource: Int64] = [:]) {
        self.database = database
        self.defaultLimits = defaultLimits
    }

    /// The quota service of `configuration` (its `quota_default_*` keys).
    public init(database: MetadataDatabase, configuration: CloudConfiguration) {
        var defaults: [QuotaResource: Int64] = [:]
        for (name, limit) in configuration.quotaDefaults {
            if let resource = QuotaResource.named(name) { defaults[resource] = limit }
        }
        self.init(database: database, defaultLimits: defaults)
    }

    /// Charges `resource` of `project` (a negative delta refunds) inside the caller's transaction
    /// `db`. The usage row is locked before `delta` is called, so what `delta` reads (the size of
    /// the object being replaced...) cannot change under another charge of the same project
    /// until the caller commits. A positive delta that would take usage past the limit throws
    /// ``QuotaExceeded`` and writes nothing (the caller's transaction then rolls back); a refund
    /// or a zero delta always succeeds. Returns the new usage.
    @discardableResult
    public func charge(
        project: String, _ resource: QuotaResource, in db: any SQLDatabase, delta: () async throws -> Int64
    ) async throws -> Int64 {
        let row = try await lockedRow(project: project, resource, db)
        let amount = try await delta()
        let usage = row.usage + amount
        if amount > 0, let limit = row.limit ?? defaultLimits[resource], usage > limit {
            throw QuotaExceeded(resource: resource, limit: limit, usage: row.usage, requested: amount)
        }
        if amount != 0 {
            try await db.update("quotas").set("in_use", to: SQLBind(max(0, usage)))
                .where("project_id", .equal, SQLBind(project)).where("resource", .equal, SQLBind(resource.rawValue))
                .run()
        }
        return max(0, usage)
    }

    /// ``charge(project:_:in:delta:)`` with a delta known in advance.
    @discardableResult
    public func charge(project: String, _ resource: QuotaResource, delta: Int64, in db: any SQLDatabase) async throws
        -> Int64
    {
        try await charge(project: project, resource, in: db) { delta }
    }

    /// ``charge(project:_:delta:in:)`` for Glance and Cinder: a refusal is their 413 (Cinder's
    /// `overLimit`), with the resource, limit and usage in the message.
    public func chargeOpenStack(project: String, _ resource: QuotaResource, delta: Int64, in db: any SQLDatabase)
        async throws
    {
        do {
            try await charge(project: project, resource, delta: delta, in: db)
        } catch let refused as QuotaExceeded {
            throw refused.openStackError
        }
    }

    /// ``check(project:_:delta:)`` for Glance and Cinder (their 413).
    public func checkOpenStack(project: String, _ resource: QuotaResource, delta: Int64) async throws {
        do {
            try await check(project: project, resource, delta: delta)
        } catch let refused as QuotaExceeded {
            throw refused.openStackError
        }
    }

    /// Throws ``QuotaExceeded`` when charging `delta` now would be refused; charges nothing.
    /// A check before a long write (a streamed upload of known length); the charge that counts
    /// comes when the result is committed.
    public func check(project: String, _ resource: QuotaResource, delta: Int64) async throws {
        guard delta > 0 else { return }
        let row = try await database.read { db in try await Self.row(project: project, resource, forUpdate: false, db) }
        let usage = row?.usage ?? 0
        if let limit = row?.limit ?? defaultLimits[resource], usage + delta > limit {
            throw QuotaExceeded(resource: resource, limit: limit, usage: usage, requested: delta)
        }
    }

    /// Every known resource of `project` (plus any other with a row), in the order of ``QuotaResource/known``.
    public func usage(project: String) async throws -> [QuotaUsage] {
        let rows = try await database.read { db in
            try await db.select().columns("resource", "quota_limit", "in_use").from("quotas")
                .where("project_id", .equal, SQLBind(project)).all()
        }
        var found: [QuotaResource: (Int64?, Int64)] = [:]
        for row in rows {
            let resource = QuotaResource(rawValue: try row.decode(column: "resource", as: String.self))
            found[resource] = (
                try row.decode(column: "quota_limit", as: Int64?.self), try row.decode(column: "in_use", as: Int64.self)
            )
        }
        let others = found.keys.filter { !QuotaResource.known.contains($0) }.sorted { $0.rawValue < $1.rawValue }
        return (QuotaResource.known + others).map { resource in
            let (projectLimit, usage) = found[resource] ?? (nil, 0)
            return QuotaUsage(
                resource: resource, projectLimit: projectLimit, limit: projectLimit ?? defaultLimits[resource],
                usage: usage)
        }
    }

    /// The usage of one resource of `project`.
    public func usage(project: String, _ resource: QuotaResource) async throws -> QuotaUsage {
        let row = try await database.read { db in try await Self.row(project: project, resource, forUpdate: false, db) }
        return QuotaUsage(
            resource: resource, projectLimit: row?.limit, limit: row?.limit ?? defaultLimits[resource],
            usage: row?.usage ?? 0)
    }

    /// Sets the project's limit of `resource` (nil: back to the default). A limit below the
    /// current usage is allowed: nothing is removed, further charges are refused.
    public func setLimit(project: String, _ resource: QuotaResource, limit: Int64?) async throws {
        if let limit, limit < 0 { throw CloudError.badRequest("A quota limit cannot be negative.") }
        try await database.transaction { db in
            _ = try await lockedRow(project: project, resource, db)
            try await db.update("quotas").set("quota_limit", to: SQLBind(limit))
                .where("project_id", .equal, SQLBind(project)).where("resource", .equal, SQLBind(resource.rawValue))
                .run()
        }
    }

    // MARK: Rows

    struct Row: Sendable {
        var limit: Int64?
        var usage: Int64
    }

    /// The row of (`project`, `resource`), created (unlimited, nothing in use) when absent and
    /// locked until the transaction ends.
    func lockedRow(project: String, _ resource: QuotaResource, _ db: any SQLDatabase) async throws -> Row {
        try await db.insert(into: "quotas").columns("project_id", "resource", "quota_limit", "in_use")
            .values(SQLBind(project), SQLBind(resource.rawValue), SQLBind(Int64?.none), SQLBind(Int64(0)))
            .ignoringConflicts().run()
        guard let row = try await Self.row(project: project, resource, forUpdate: true, db) else {
            throw DatabaseError("the quota row of \(resource) vanished inside its transaction")
        }
        return row
    }

    static func row(project: String, _ resource: QuotaResource, forUpdate: Bool, _ db: any SQLDatabase) async throws
        -> Row?
    {
        let lock = forUpdate && db.dialect.name == "postgresql" ? " FOR UPDATE" : ""
        let rows = try await db.raw(
            "SELECT quota_limit, in_use FROM quotas WHERE project_id = \(bind: project) AND resource = \(bind: resource.rawValue)\(unsafeRaw: lock)"
        ).all()
        guard let row = rows.first else { return nil }
        return Row(
            limit: try row.decode(column: "quota_limit", as: Int64?.self), usage: try row.decode(column: "in_use", as: Int64.self))
    }
}
