import SQLKit

/// The object-storage tables: accounts (metadata only), containers and objects. Stateless, like
/// ``IdentityStore``: every function runs on the session it is given. Every query names the
/// project: no statement here can reach another project's rows.
enum ObjectTables {
    // MARK: Accounts

    static func accountMetadata(project: String, _ db: any SQLDatabase) async throws -> [String: String] {
        let rows = try await db.select().column("metadata").from("object_accounts")
            .where("project_id", .equal, SQLBind(project)).all()
        guard let row = rows.first else { return [:] }
        return .fromMetadataJSON(try row.decode(column: "metadata", as: String.self))
    }

    static func setAccountMetadata(project: String, _ metadata: [String: String], _ db: any SQLDatabase) async throws {
        try await db.delete(from: "object_accounts").where("project_id", .equal, SQLBind(project)).run()
        try await db.insert(into: "object_accounts").columns("project_id", "metadata")
            .values(SQLBind(project), SQLBind(metadata.metadataJSON)).run()
    }

    static func accountUsage(project: String, _ db: any SQLDatabase) async throws -> (Int64, Int64, Int64) {
        let containers = try await db.raw(
            "SELECT COUNT(*) AS n FROM object_containers WHERE project_id = \(bind: project)"
        ).all()
        let objects = try await db.raw(
            "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS bytes FROM objects WHERE project_id = \(bind: project)"
        ).all()
        return (
            try containers.first?.decode(column: "n", as: Int64.self) ?? 0,
            try objects.first?.decode(column: "n", as: Int64.self) ?? 0,
            try objects.first?.decode(column: "bytes", as: Int64.self) ?? 0
        )
    }

    // MARK: Containers

    /// Containers of `project` with names in the open interval (`after`, `before`) starting with
    /// `prefix`, in bytewise order (descending when `reverse`), at most `limit`, with usage.
    static func containers(
        project: String, after: String?, before: String?, prefix: String, reverse: Bool, limit: Int,
        _ db: any SQLDatabase
    ) async throws -> [ObjectContainer] {
        var query: SQLQueryString = """
            SELECT c.name AS name, c.metadata AS metadata, c.created_at_us AS created_at_us,
              c.modified_at_us AS modified_at_us, COUNT(o.name) AS object_count,
              CAST(COALESCE(SUM(o.size_bytes), 0) AS BIGINT) AS bytes_used
            FROM object_containers c LEFT JOIN objects o ON o.project_id = c.project_id AND o.container = c.name
            WHERE c.project_id = \(bind: project)
            """
        if let after { query = query + " AND c.name > \(bind: after)" }
        if let before { query = query + " AND c.name < \(bind: before)" }
        if !prefix.isEmpty { query = query + prefixCondition("c.name", prefix) }
        query = query + " GROUP BY c.name, c.metadata, c.created_at_us, c.modified_at_us"
        query = query + " ORDER BY c.name \(unsafeRaw: reverse ? "DESC" : "ASC") LIMIT \(unsafeRaw: String(max(0, limit)))"
        return try await db.raw(query).all().map(container(from:))
    }

    static func container(project: String, name: String, _ db: any SQLDatabase) async throws -> ObjectContainer? {
        let rows = try await db.raw(
            """
            SELECT c.name AS name, c.metadata AS metadata, c.created_at_us AS created_at_us,
              c.modified_at_us AS modified_at_us, COUNT(o.name) AS object_count,
              CAST(COALESCE(SUM(o.size_bytes), 0) AS BIGINT) AS bytes_used
            FROM object_containers c LEFT JOIN objects o ON o.project_id = c.project_id AND o.container = c.name
            WHERE c.project_id = \(bind: project) AND c.name = \(bind: name)
            GROUP BY c.name, c.metadata, c.created_at_us, c.modified_at_us
            """
        ).all()
        return try rows.first.map(container(from:))
    }

    static func containerExists(project: String, name: String, _ db: any SQLDatabase) async throws -> Bool {
        try await !db.select().column("name").from("object_containers")
            .where("project_id", .equal, SQLBind(project)).where("name", .equal, SQLBind(name)).all().isEmpty
    }

    static func insertContainer(project: String, name: String, metadata: [String: String], at now: Timestamp, _ db: any SQLDatabase)
        async throws
    {
        try await db.insert(into: "object_containers")
            .columns("project_id", "name", "metadata", "created_at_us", "modified_at_us")
            .values(SQLBind(project), SQLBind(name), SQLBind(metadata.metadataJSON), SQLBind(now.microseconds), SQLBind(now.microseconds))
            .run()
    }

    static func updateContainer(project: String, name: String, metadata: [String: String], at now: Timestamp, _ db: any SQLDatabase)
        async throws
    {
        try await db.update("object_containers")
            .set("metadata", to: SQLBind(metadata.metadataJSON)).set("modified_at_us", to: SQLBind(now.microseconds))
            .where("project_id", .equal, SQLBind(project)).where("name", .equal, SQLBind(name)).run()
    }

    static func deleteContainer(project: String, name: String, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "object_containers")
            .where("project_id", .equal, SQLBind(project)).where("name", .equal, SQLBind(name)).run()
    }

    static func container(from row: any SQLRow) throws -> ObjectContainer {
        ObjectContainer(
            name: try row.decode(column: "name", as: String.self),
            metadata: .fromMetadataJSON(try row.decode(column: "metadata", as: String.self)),
            createdAt: Timestamp(microseconds: try row.decode(column: "created_at_us", as: Int64.self)),
            modifiedAt: Timestamp(microseconds: try row.decode(column: "modified_at_us", as: Int64.self)),
            objectCount: try row.decode(column: "object_count", as: Int64.self),
            bytesUsed: try row.decode(column: "bytes_used", as: Int64.self))
    }

    // MARK: Objects

    static let objectColumns =
        "container, name, map_name, size_bytes, etag, content_type, metadata, manifest, created_at_us, modified_at_us, slo"

    static func objects(
        project: String, container: String, after: String?, before: String?, prefix: String, reverse: Bool,
        limit: Int, _ db: any SQLDatabase
    ) async throws -> [StoredObject] {
        var query: SQLQueryString =
            "SELECT \(unsafeRaw: objectColumns) FROM objects WHERE project_id = \(bind: project) AND container = \(bind: container)"
        if let after { query = query + " AND name > \(bind: after)" }
        if let before { query = query + " AND name < \(bind: before)" }
        if !prefix.isEmpty { query = query + prefixCondition("name", prefix) }
        // Expired objects are gone for clients, even before the expirer removes them.
        query = query + " AND (delete_at_us IS NULL OR delete_at_us > \(bind: Timestamp.now().microseconds))"
        query = query + " ORDER BY name \(unsafeRaw: reverse ? "DESC" : "ASC") LIMIT \(unsafeRaw: String(max(0, limit)))"
        return try await db.raw(query).all().map(object(from:))
    }

    static func object(project: String, container: String, name: String, _ db: any SQLDatabase) async throws -> StoredObject? {
        try await db.raw(
            "SELECT \(unsafeRaw: objectColumns) FROM objects WHERE project_id = \(bind: project) AND container = \(bind: container) AND name = \(bind: name)"
        ).all().first.map(object(from:))
    }

    static func deleteObject(project: String, container: String, name: String, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "objects")
            .where("project_id", .equal, SQLBind(project)).where("container", .equal, SQLBind(container))
            .where("name", .equal, SQLBind(name)).run()
    }

    static func insertObject(project: String, _ o: StoredObject, _ db: any SQLDatabase) async throws {
        try await db.insert(into: "objects")
            .columns(
                "project_id", "container", "name", "map_name", "size_bytes", "etag", "content_type", "metadata",
                "manifest", "created_at_us", "modified_at_us", "slo", "delete_at_us"
            )
            .values(
                SQLBind(project), SQLBind(o.container), SQLBind(o.name), SQLBind(o.mapName), SQLBind(o.sizeBytes),
                SQLBind(o.etag), SQLBind(o.contentType), SQLBind(o.metadata.metadataJSON), SQLBind(o.manifest),
                SQLBind(o.createdAt.microseconds), SQLBind(o.modifiedAt.microseconds), SQLBind(o.slo?.encoded()),
                SQLBind(o.deleteAt.map { $0 * 1_000_000 })
            )
            .run()
    }

    static func updateObjectMetadata(project: String, _ o: StoredObject, _ db: any SQLDatabase) async throws {
        try await db.update("objects")
            .set("metadata", to: SQLBind(o.metadata.metadataJSON)).set("content_type", to: SQLBind(o.contentType))
            .set("modified_at_us", to: SQLBind(o.modifiedAt.microseconds)).set("manifest", to: SQLBind(o.manifest))
            .set("delete_at_us", to: SQLBind(o.deleteAt.map { $0 * 1_000_000 }))
            .where("project_id", .equal, SQLBind(project)).where("container", .equal, SQLBind(o.container))
            .where("name", .equal, SQLBind(o.name)).run()
    }

    /// Objects of every project whose `X-Delete-At` is at or before `now`, oldest first, at most
    /// `limit`: (project, container, name).
    static func expiredObjects(now: Timestamp, limit: Int, _ db: any SQLDatabase) async throws -> [(String, String, String)] {
        try await db.raw(
            "SELECT project_id, container, name FROM objects WHERE delete_at_us <= \(bind: now.microseconds) ORDER BY delete_at_us LIMIT \(unsafeRaw: String(max(0, limit)))"
        ).all().map {
            (try $0.decode(column: "project_id", as: String.self), try $0.decode(column: "container", as: String.self),
             try $0.decode(column: "name", as: String.self))
        }
    }

    static func object(from row: any SQLRow) throws -> StoredObject {
        StoredObject(
            container: try row.decode(column: "container", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            mapName: try row.decode(column: "map_name", as: String.self),
            sizeBytes: try row.decode(column: "size_bytes", as: Int64.self),
            etag: try row.decode(column: "etag", as: String.self),
            contentType: try row.decode(column: "content_type", as: String.self),
            metadata: .fromMetadataJSON(try row.decode(column: "metadata", as: String.self)),
            manifest: try row.decode(column: "manifest", as: String?.self),
            createdAt: Timestamp(microseconds: try row.decode(column: "created_at_us", as: Int64.self)),
            modifiedAt: Timestamp(microseconds: try row.decode(column: "modified_at_us", as: Int64.self)),
            slo: try row.decode(column: "slo", as: String?.self).map(SLOManifest.init(decoding:)))
    }

    // MARK: Blocks a project holds

    /// Records that `project` holds `hashes` (idempotent).
    static func recordBlocks(project: String, _ hashes: Set<String>, _ db: any SQLDatabase) async throws {
        let sorted = hashes.sorted()
        for start in stride(from: 0, to: sorted.count, by: 200) {
            var insert = db.insert(into: "object_blocks").columns("project_id", "block_hash")
            for hash in sorted[start..<min(start + 200, sorted.count)] {
                insert = insert.values(SQLBind(project), SQLBind(hash))
            }
            try await insert.ignoringConflicts().run()
        }
    }

    /// Which of `hashes` `project` holds.
    static func knownBlocks(project: String, _ hashes: Set<String>, _ db: any SQLDatabase) async throws -> Set<String> {
        let sorted = hashes.sorted()
        var known: Set<String> = []
        for start in stride(from: 0, to: sorted.count, by: 200) {
            let chunk = Array(sorted[start..<min(start + 200, sorted.count)])
            let rows = try await db.select().column("block_hash").from("object_blocks")
                .where("project_id", .equal, SQLBind(project))
                .where("block_hash", .in, SQLBind.group(chunk)).all()
            for row in rows { known.insert(try row.decode(column: "block_hash", as: String.self)) }
        }
        return known
    }

    /// `column` starts with `prefix`: SUBSTR counts characters (code points) on both databases.
    /// The length is an integer literal (PostgreSQL's `substr` takes `integer`, not a bound bigint).
    static func prefixCondition(_ column: String, _ prefix: String) -> SQLQueryString {
        " AND SUBSTR(\(unsafeRaw: column), 1, \(unsafeRaw: String(prefix.unicodeScalars.count))) = \(bind: prefix)"
    }
}
