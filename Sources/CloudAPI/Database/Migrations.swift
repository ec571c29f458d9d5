import SQLKit

/// Versioned schema migrations. Each migration runs once, in one transaction together with
/// the row that records it in `snf_schema_migrations`, so a crash leaves either the old or the
/// new schema. Migrations are append-only: never edit one that has shipped; add the next version.
enum Migrations {
    struct Migration: Sendable {
        var version: Int
        var name: String
        var apply: @Sendable (any SQLDatabase) async throws -> Void
    }

    static let all: [Migration] = [
        Migration(version: 1, name: "identity: projects, users, roles, role assignments, tokens", apply: identityV1),
        Migration(version: 2, name: "object storage: accounts, containers, objects", apply: objectStorageV2),
        Migration(version: 3, name: "images and volumes", apply: imagesAndVolumesV3),
        Migration(version: 4, name: "quotas", apply: quotasV4),
        Migration(version: 5, name: "static large objects", apply: staticLargeObjectsV5),
        Migration(version: 6, name: "object expiry", apply: objectExpiryV6),
    ]

    /// The PostgreSQL advisory lock key migrations hold ("snf-migr" in ASCII): one per database.
    static let migrationLockKey: Int64 = 0x736e_662d_6d69_6772

    /// The newest schema version this program knows.
    static var latestVersion: Int { all.last?.version ?? 0 }

    /// Applies every migration newer than the database's version, all in one transaction (a
    /// crash leaves the old schema or the new one; processes opening the database at once take
    /// the lock once each, then find nothing left to do). Throws when the database was migrated
    /// by a newer `snf-cloud` (running old code on a new schema could lose data).
    static func migrate(_ database: MetadataDatabase) async throws {
        try await database.transaction { db in
            if database.dialect == .postgresql {
                // Two processes migrating a fresh database at once: `CREATE TABLE IF NOT EXISTS`
                // is not atomic in PostgreSQL (both see no table, one fails on a duplicate
                // catalog row). This lock, held until the transaction ends, makes them take turns.
                // (SQLite's `BEGIN IMMEDIATE` already does.)
                try await db.raw("SELECT pg_advisory_xact_lock(\(unsafeRaw: String(migrationLockKey)))").run()
            }
            try await db.create(table: "snf_schema_migrations").ifNotExists()
                .column("version", type: .bigint, .primaryKey(autoIncrement: false))
                .column("name", type: .text, .notNull)
                .column("applied_at_us", type: .bigint, .notNull)
                .run()
            let rows = try await db.select().column("version").from("snf_schema_migrations").all()
            let applied = Set(try rows.map { try $0.decode(column: "version", as: Int.self) })
            let known = Set(all.map(\.version))
            if let unknown = applied.subtracting(known).max() {
                throw DatabaseError(
                    "the database \(database.displayLocation) has schema version \(unknown), which this snf-cloud does not know (it knows up to \(latestVersion)); upgrade snf-cloud"
                )
            }
            // Each version is applied when its own row is absent (not when it is above the
            // highest applied one): versions written on parallel branches (3 on one, 4 on
            // another) apply whatever order they merge in.
            for migration in all where !applied.contains(migration.version) {
                try await migration.apply(db)
                try await db.insert(into: "snf_schema_migrations")
                    .columns("version", "name", "applied_at_us")
                    .values(SQLBind(migration.version), SQLBind(migration.name), SQLBind(Timestamp.now().microseconds))
                    .run()
            }
        }
    }

    /// Schema version 1. Timestamps are microseconds since the epoch (BIGINT), booleans are 0/1
    /// (BIGINT): both read back the same from SQLite and PostgreSQL.
    @Sendable static func identityV1(_ db: any SQLDatabase) async throws {
        try await db.create(table: "projects")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("name", type: .text, .notNull)
            .column("domain_id", type: .text, .notNull)
            .column("description", type: .text, .notNull)
            .column("enabled", type: .bigint, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .unique("domain_id", "name")
            .run()
        try await db.create(table: "users")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("name", type: .text, .notNull)
            .column("domain_id", type: .text, .notNull)
            .column("password_hash", type: .text)
            .column("enabled", type: .bigint, .notNull)
            .column("default_project_id", type: .text)
            .column("email", type: .text)
            .column("description", type: .text, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .unique("domain_id", "name")
            .run()
        try await db.create(table: "roles")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("name", type: .text, .notNull, .unique)
            .column("description", type: .text, .notNull)
            .run()
        try await db.create(table: "role_assignments")
            .column("user_id", type: .text, .notNull, .references("users", "id", onDelete: .cascade))
            .column("project_id", type: .text, .notNull, .references("projects", "id", onDelete: .cascade))
            .column("role_id", type: .text, .notNull, .references("roles", "id", onDelete: .cascade))
            .primaryKey("user_id", "project_id", "role_id")
            .run()
        // A token is stored by the SHA-256 of its secret: a copy of the database holds no usable token.
        try await db.create(table: "tokens")
            .column("token_hash", type: .text, .primaryKey(autoIncrement: false))
            .column("user_id", type: .text, .notNull, .references("users", "id", onDelete: .cascade))
            .column("project_id", type: .text, .references("projects", "id", onDelete: .cascade))
            .column("methods", type: .text, .notNull)
            .column("audit_id", type: .text, .notNull)
            .column("parent_audit_id", type: .text)
            .column("issued_at_us", type: .bigint, .notNull)
            .column("expires_at_us", type: .bigint, .notNull)
            .column("revoked", type: .bigint, .notNull)
            .run()
        try await db.create(index: "tokens_expires").on("tokens").column("expires_at_us").run()
        try await db.create(index: "role_assignments_project").on("role_assignments").column("project_id").run()
    }

    /// Schema version 2: object storage. Names compare bytewise (Swift's listing order): SQLite's
    /// default BINARY collation, PostgreSQL's `"C"`. Metadata is a JSON object of the user's
    /// `X-*-Meta-*` pairs. An object's bytes are the block-store map `map_name`; `manifest` is a
    /// dynamic large object's `container/prefix`.
    @Sendable static func objectStorageV2(_ db: any SQLDatabase) async throws {
        let bytewise: [SQLColumnConstraintAlgorithm] =
            db.dialect.name == "postgresql" ? [.notNull, .custom(SQLRaw("COLLATE \"C\""))] : [.notNull]
        try await db.create(table: "object_accounts")
            .column("project_id", type: .text, .primaryKey(autoIncrement: false))
            .column("metadata", type: .text, .notNull)
            .run()
        try await db.create(table: "object_containers")
            .column("project_id", type: .text, .notNull)
            .column("name", type: .text, bytewise)
            .column("metadata", type: .text, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .column("modified_at_us", type: .bigint, .notNull)
            .primaryKey("project_id", "name")
            .run()
        try await db.create(table: "objects")
            .column("project_id", type: .text, .notNull)
            .column("container", type: .text, bytewise)
            .column("name", type: .text, bytewise)
            .column("map_name", type: .text, .notNull, .unique)
            .column("size_bytes", type: .bigint, .notNull)
            .column("etag", type: .text, .notNull)
            .column("content_type", type: .text, .notNull)
            .column("metadata", type: .text, .notNull)
            .column("manifest", type: .text)
            .column("created_at_us", type: .bigint, .notNull)
            .column("modified_at_us", type: .bigint, .notNull)
            .primaryKey("project_id", "container", "name")
            .run()
        // The blocks each project has stored (uploaded or as part of an object): a hashmap PUT
        // finds only these, so dedup never tells a project that another one holds a block.
        try await db.create(table: "object_blocks")
            .column("project_id", type: .text, .notNull)
            .column("block_hash", type: .text, .notNull)
            .primaryKey("project_id", "block_hash")
            .run()
    }

    /// Schema version 3: images (Glance), volumes and volume snapshots (Cinder). Each row names
    /// the block-store map holding its bytes (`map_name`): an image registered from an object,
    /// a volume cloned from an image or snapshot, a snapshot of a volume all share blocks through
    /// their maps. `properties`, `tags` and `metadata` are JSON (an object, an array, an object).
    /// Self-contained: no foreign key to the identity or object tables (a project's rows are
    /// removed by the service, not by cascade).
    @Sendable static func imagesAndVolumesV3(_ db: any SQLDatabase) async throws {
        try await db.create(table: "images")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("project_id", type: .text, .notNull)
            .column("name", type: .text, .notNull)
            .column("status", type: .text, .notNull)
            .column("visibility", type: .text, .notNull)
            .column("protected", type: .bigint, .notNull)
            .column("disk_format", type: .text)
            .column("container_format", type: .text)
            .column("min_disk", type: .bigint, .notNull)
            .column("min_ram", type: .bigint, .notNull)
            .column("size_bytes", type: .bigint)
            .column("checksum", type: .text)
            .column("os_hash_algo", type: .text)
            .column("os_hash_value", type: .text)
            .column("map_name", type: .text, .unique)
            .column("properties", type: .text, .notNull)
            .column("tags", type: .text, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .column("updated_at_us", type: .bigint, .notNull)
            .run()
        try await db.create(index: "images_project").on("images").column("project_id").run()
        try await db.create(index: "images_visibility").on("images").column("visibility").run()
        try await db.create(table: "volumes")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("project_id", type: .text, .notNull)
            .column("user_id", type: .text, .notNull)
            .column("name", type: .text, .notNull)
            .column("description", type: .text, .notNull)
            .column("status", type: .text, .notNull)
            .column("size_gib", type: .bigint, .notNull)
            .column("map_name", type: .text, .notNull, .unique)
            .column("image_id", type: .text)
            .column("snapshot_id", type: .text)
            .column("source_volid", type: .text)
            .column("bootable", type: .bigint, .notNull)
            .column("metadata", type: .text, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .column("updated_at_us", type: .bigint, .notNull)
            .run()
        try await db.create(index: "volumes_project").on("volumes").column("project_id").run()
        try await db.create(table: "volume_snapshots")
            .column("id", type: .text, .primaryKey(autoIncrement: false))
            .column("project_id", type: .text, .notNull)
            .column("volume_id", type: .text, .notNull)
            .column("name", type: .text, .notNull)
            .column("description", type: .text, .notNull)
            .column("status", type: .text, .notNull)
            .column("size_gib", type: .bigint, .notNull)
            .column("map_name", type: .text, .notNull, .unique)
            .column("metadata", type: .text, .notNull)
            .column("created_at_us", type: .bigint, .notNull)
            .column("updated_at_us", type: .bigint, .notNull)
            .run()
        try await db.create(index: "volume_snapshots_project").on("volume_snapshots").column("project_id").run()
        try await db.create(index: "volume_snapshots_volume").on("volume_snapshots").column("volume_id").run()
    }

    /// Schema version 4: quotas. One row per project and resource: `quota_limit` (NULL: the
    /// configured default, else unlimited) and `in_use`, changed only in the transaction that
    /// makes the change it counts. Object storage's usage starts as the bytes already stored, and
    /// images, volumes and snapshots as the rows already there.
    @Sendable static func quotasV4(_ db: any SQLDatabase) async throws {
        try await db.create(table: "quotas")
            .column("project_id", type: .text, .notNull)
            .column("resource", type: .text, .notNull)
            .column("quota_limit", type: .bigint)
            .column("in_use", type: .bigint, .notNull)
            .primaryKey("project_id", "resource")
            .run()
        try await db.raw(
            """
            INSERT INTO quotas (project_id, resource, quota_limit, in_use)
            SELECT project_id, 'storage_bytes', NULL, CAST(SUM(size_bytes) AS BIGINT) FROM objects GROUP BY project_id
            """
        ).run()
        // Images, volumes and snapshots (version 3, which runs first) count their rows.
        for (resource, table) in [("images", "images"), ("volumes", "volumes"), ("snapshots", "volume_snapshots")] {
            try await db.raw(
                """
                INSERT INTO quotas (project_id, resource, quota_limit, in_use)
                SELECT project_id, \(bind: resource), NULL, CAST(COUNT(*) AS BIGINT) FROM \(ident: table) GROUP BY project_id
                """
            ).run()
        }
    }

    /// Schema version 5: static large objects. `slo` is the manifest of an SLO as JSON
    /// (`ObjectStorageService.SLOManifest`), NULL for every other object.
    @Sendable static func staticLargeObjectsV5(_ db: any SQLDatabase) async throws {
        try await db.alter(table: "objects").column("slo", type: .text).run()
    }

    /// Schema version 6: `delete_at_us`, when an object expires (its `X-Delete-At`, which the
    /// metadata column also keeps under `sys:x-delete-at`), NULL for most; indexed for the expirer
    /// and for listings, which leave expired objects out. Rows written before this version take it
    /// from their metadata.
    @Sendable static func objectExpiryV6(_ db: any SQLDatabase) async throws {
        try await db.alter(table: "objects").column("delete_at_us", type: .bigint).run()
        try await db.create(index: "objects_delete_at").on("objects").column("delete_at_us").run()
        let seconds: SQLQueryString =
            db.dialect.name == "postgresql"
            ? "CAST(CAST(metadata AS json)->>'sys:x-delete-at' AS BIGINT)"
            : "CAST(json_extract(metadata, '$.\"sys:x-delete-at\"') AS INTEGER)"
        try await db.raw(
            "UPDATE objects SET delete_at_us = \(seconds) * 1000000 WHERE metadata LIKE '%sys:x-delete-at%'"
        ).run()
    }
}
