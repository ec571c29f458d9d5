import Foundation
import SQLKit

/// A volume (Cinder v3) as stored. Its bytes are the read-write block-store map `mapName`
/// (`vol-<id>` for volumes made through the API): an empty volume, or a thin clone of an image,
/// a snapshot or (through a transient snapshot) another volume. The same map is what the
/// ExtStorage provider `snf-store` serves to Ganeti when a disk names it.
public struct Volume: Sendable, Equatable {
    public var id: String
    public var projectID: String
    public var userID: String
    public var name: String
    public var description: String
    /// `creating`, `available`, `extending`, `deleting`, `error`.
    public var status: String
    public var sizeGiB: Int64
    public var mapName: String
    public var imageID: String?
    public var snapshotID: String?
    public var sourceVolumeID: String?
    public var bootable: Bool
    public var metadata: [String: String]
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
}

/// A volume snapshot (Cinder v3): the read-only map `snap-<id>`, frozen from the volume's map.
public struct VolumeSnapshot: Sendable, Equatable {
    public var id: String
    public var projectID: String
    public var volumeID: String
    public var name: String
    public var description: String
    /// `creating`, `available`, `deleting`, `error`.
    public var status: String
    public var sizeGiB: Int64
    public var mapName: String
    public var metadata: [String: String]
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
}

/// The `volumes` and `volume_snapshots` tables. Every query names the project.
enum VolumeTables {
    static let volumeColumns =
        "id, project_id, user_id, name, description, status, size_gib, map_name, image_id, snapshot_id, source_volid, bootable, metadata, created_at_us, updated_at_us"
    static let snapshotColumns =
        "id, project_id, volume_id, name, description, status, size_gib, map_name, metadata, created_at_us, updated_at_us"

    static func forUpdate(_ query: SQLQueryString, _ lock: Bool, _ db: any SQLDatabase) -> SQLQueryString {
        lock && db.dialect.name == "postgresql" ? query + " FOR UPDATE" : query
    }

    // MARK: Volumes

    static func volume(id: String, project: String, forUpdate lock: Bool = false, _ db: any SQLDatabase) async throws -> Volume? {
        let query: SQLQueryString =
            "SELECT \(unsafeRaw: volumeColumns) FROM volumes WHERE id = \(bind: id) AND project_id = \(bind: project)"
        return try await db.raw(forUpdate(query, lock, db)).all().first.map(volume(from:))
    }

    static func volumes(project: String, _ db: any SQLDatabase) async throws -> [Volume] {
        try await db.raw("SELECT \(unsafeRaw: volumeColumns) FROM volumes WHERE project_id = \(bind: project)").all()
            .map(volume(from:))
    }

    static func insert(_ v: Volume, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            INSERT INTO volumes (\(unsafeRaw: volumeColumns)) VALUES (\(bind: v.id), \(bind: v.projectID), \(bind: v.userID),
              \(bind: v.name), \(bind: v.description), \(bind: v.status), \(bind: v.sizeGiB), \(bind: v.mapName),
              \(bind: v.imageID), \(bind: v.snapshotID), \(bind: v.sourceVolumeID), \(bind: v.bootable ? 1 : 0),
              \(bind: v.metadata.metadataJSON), \(bind: v.createdAt.microseconds), \(bind: v.updatedAt.microseconds))
            """
        ).run()
    }

    static func update(_ v: Volume, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            UPDATE volumes SET name = \(bind: v.name), description = \(bind: v.description), status = \(bind: v.status),
              size_gib = \(bind: v.sizeGiB), bootable = \(bind: v.bootable ? 1 : 0), metadata = \(bind: v.metadata.metadataJSON),
              updated_at_us = \(bind: v.updatedAt.microseconds)
            WHERE id = \(bind: v.id) AND project_id = \(bind: v.projectID)
            """
        ).run()
    }

    static func deleteVolume(id: String, project: String, _ db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM volumes WHERE id = \(bind: id) AND project_id = \(bind: project)").run()
    }

    static func volume(from row: any SQLRow) throws -> Volume {
        Volume(
            id: try row.decode(column: "id", as: String.self),
            projectID: try row.decode(column: "project_id", as: String.self),
            userID: try row.decode(column: "user_id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            description: try row.decode(column: "description", as: String.self),
            status: try row.decode(column: "status", as: String.self),
            sizeGiB: try row.decode(column: "size_gib", as: Int64.self),
            mapName: try row.decode(column: "map_name", as: String.self),
            imageID: try row.decode(column: "image_id", as: String?.self),
            snapshotID: try row.decode(column: "snapshot_id", as: String?.self),
            sourceVolumeID: try row.decode(column: "source_volid", as: String?.self),
            bootable: try row.decode(column: "bootable", as: Int64.self) != 0,
            metadata: .fromMetadataJSON(try row.decode(column: "metadata", as: String.self)),
            createdAt: Timestamp(microseconds: try row.decode(column: "created_at_us", as: Int64.self)),
            updatedAt: Timestamp(microseconds: try row.decode(column: "updated_at_us", as: Int64.self)))
    }

    // MARK: Snapshots

    static func snapshot(id: String, project: String, forUpdate lock: Bool = false, _ db: any SQLDatabase) async throws
        -> VolumeSnapshot?
    {
        let query: SQLQueryString =
            "SELECT \(unsafeRaw: snapshotColumns) FROM volume_snapshots WHERE id = \(bind: id) AND project_id = \(bind: project)"
        return try await db.raw(forUpdate(query, lock, db)).all().first.map(snapshot(from:))
    }

    static func snapshots(project: String, _ db: any SQLDatabase) async throws -> [VolumeSnapshot] {
        try await db.raw("SELECT \(unsafeRaw: snapshotColumns) FROM volume_snapshots WHERE project_id = \(bind: project)")
            .all().map(snapshot(from:))
    }

    static func snapshotCount(volume: String, _ db: any SQLDatabase) async throws -> Int64 {
        let rows = try await db.raw("SELECT COUNT(*) AS n FROM volume_snapshots WHERE volume_id = \(bind: volume)").all()
        return try rows.first?.decode(column: "n", as: Int64.self) ?? 0
    }

    static func insert(_ s: VolumeSnapshot, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            INSERT INTO volume_snapshots (\(unsafeRaw: snapshotColumns)) VALUES (\(bind: s.id), \(bind: s.projectID),
              \(bind: s.volumeID), \(bind: s.name), \(bind: s.description), \(bind: s.status), \(bind: s.sizeGiB),
              \(bind: s.mapName), \(bind: s.metadata.metadataJSON), \(bind: s.createdAt.microseconds), \(bind: s.updatedAt.microseconds))
            """
        ).run()
    }

    static func update(_ s: VolumeSnapshot, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            UPDATE volume_snapshots SET name = \(bind: s.name), description = \(bind: s.description), status = \(bind: s.status),
              metadata = \(bind: s.metadata.metadataJSON), updated_at_us = \(bind: s.updatedAt.microseconds)
            WHERE id = \(bind: s.id) AND project_id = \(bind: s.projectID)
            """
        ).run()
    }

    static func deleteSnapshot(id: String, project: String, _ db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM volume_snapshots WHERE id = \(bind: id) AND project_id = \(bind: project)").run()
    }

    static func snapshot(from row: any SQLRow) throws -> VolumeSnapshot {
        VolumeSnapshot(
            id: try row.decode(column: "id", as: String.self),
            projectID: try row.decode(column: "project_id", as: String.self),
            volumeID: try row.decode(column: "volume_id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            description: try row.decode(column: "description", as: String.self),
            status: try row.decode(column: "status", as: String.self),
            sizeGiB: try row.decode(column: "size_gib", as: Int64.self),
            mapName: try row.decode(column: "map_name", as: String.self),
            metadata: .fromMetadataJSON(try row.decode(column: "metadata", as: String.self)),
            createdAt: Timestamp(microseconds: try row.decode(column: "created_at_us", as: Int64.self)),
            updatedAt: Timestamp(microseconds: try row.decode(column: "updated_at_us", as: Int64.self)))
    }
}
