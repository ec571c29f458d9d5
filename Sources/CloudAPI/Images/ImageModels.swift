import Foundation
import SQLKit

/// An image (Glance v2) as stored. Its bytes, once it has any, are the block-store map
/// `mapName`: uploaded (`img-<id>`, imported from the upload), registered from an object or a
/// volume snapshot (`img-<id>`, a map record sharing the source's map body: no block copied).
public struct Image: Sendable, Equatable {
    public var id: String
    /// The owner.
    public var projectID: String
    public var name: String
    /// `queued` (no data), `saving` (upload running), `active`, `deleted` (row on its way out).
    public var status: String
    /// `private`, `public`, `shared` (no members API yet: as private), `community`.
    public var visibility: String
    public var protected: Bool
    public var diskFormat: String?
    public var containerFormat: String?
    public var minDisk: Int64
    public var minRAM: Int64
    public var sizeBytes: Int64?
    /// MD5 of the data, hex.
    public var checksum: String?
    public var hashAlgorithm: String?
    public var hashValue: String?
    public var mapName: String?
    /// Glance's additional properties (strings).
    public var properties: [String: String]
    public var tags: [String]
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
}

/// Glance's vocabularies and limits.
enum ImageRules {
    static let visibilities: Set<String> = ["private", "public", "shared", "community"]
    static let diskFormats: Set<String> = ["ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]
    static let containerFormats: Set<String> = ["ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]
    /// Attributes a client cannot set (Glance answers 403).
    static let readOnly: Set<String> = [
        "status", "size", "virtual_size", "checksum", "os_hash_algo", "os_hash_value", "created_at", "updated_at",
        "file", "self", "schema", "direct_url", "locations", "deleted", "deleted_at",
    ]
    /// Core attributes (not additional properties).
    static let core: Set<String> = [
        "id", "name", "visibility", "protected", "disk_format", "container_format", "min_disk", "min_ram", "tags",
        "owner", "os_hidden",
    ]
    static let maxProperties = 128
    static let maxTags = 128
    static let maxPropertyValueBytes = 65535
    /// The property naming an object (`container/object` in the caller's account) to register as
    /// the image's data without copying it.
    static let sourceObjectProperty = "snf_source_object"
    /// The property naming a volume snapshot (its id) to register as the image's data.
    static let sourceSnapshotProperty = "snf_source_snapshot"

    static func checkProperty(_ key: String, _ value: String) throws(CloudError) {
        guard !key.isEmpty, key.utf8.count <= 255 else { throw .badRequest("A property name has 1 to 255 bytes.") }
        try ResourceNames.check(key, what: "property name")
        guard value.utf8.count <= maxPropertyValueBytes else {
            throw .badRequest("The value of property \(key) is longer than \(maxPropertyValueBytes) bytes.")
        }
    }

    static func checkTag(_ tag: String) throws(CloudError) {
        guard !tag.isEmpty, tag.utf8.count <= 255 else { throw .badRequest("A tag has 1 to 255 bytes.") }
        try ResourceNames.check(tag, what: "tag")
    }
}

/// The `images` table. Every function runs on the session it is given.
enum ImageTables {
    static let columns =
        "id, project_id, name, status, visibility, protected, disk_format, container_format, min_disk, min_ram, size_bytes, checksum, os_hash_algo, os_hash_value, map_name, properties, tags, created_at_us, updated_at_us"

    /// The image `id` (not deleted), locked for the rest of the transaction on PostgreSQL.
    static func image(id: String, forUpdate: Bool = false, _ db: any SQLDatabase) async throws -> Image? {
        var query: SQLQueryString =
            "SELECT \(unsafeRaw: columns) FROM images WHERE id = \(bind: id) AND status <> 'deleted'"
        if forUpdate && db.dialect.name == "postgresql" { query = query + " FOR UPDATE" }
        return try await db.raw(query).all().first.map(image(from:))
    }

    /// Every image `project` may see (nil: every image), deleted ones excepted.
    static func images(visibleTo project: String?, _ db: any SQLDatabase) async throws -> [Image] {
        var query: SQLQueryString = "SELECT \(unsafeRaw: columns) FROM images WHERE status <> 'deleted'"
        if let project {
            query = query + " AND (project_id = \(bind: project) OR visibility IN ('public', 'community'))"
        }
        return try await db.raw(query).all().map(image(from:))
    }

    static func insert(_ i: Image, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            INSERT INTO images (\(unsafeRaw: columns)) VALUES (\(bind: i.id), \(bind: i.projectID), \(bind: i.name),
              \(bind: i.status), \(bind: i.visibility), \(bind: i.protected ? 1 : 0), \(bind: i.diskFormat),
              \(bind: i.containerFormat), \(bind: i.minDisk), \(bind: i.minRAM), \(bind: i.sizeBytes), \(bind: i.checksum),
              \(bind: i.hashAlgorithm), \(bind: i.hashValue), \(bind: i.mapName), \(bind: propertiesJSON(i.properties)),
              \(bind: tagsJSON(i.tags)), \(bind: i.createdAt.microseconds), \(bind: i.updatedAt.microseconds))
            """
        ).run()
    }

    /// Writes every column of `i` but its id, owner and creation time.
    static func update(_ i: Image, _ db: any SQLDatabase) async throws {
        try await db.raw(
            """
            UPDATE images SET name = \(bind: i.name), status = \(bind: i.status), visibility = \(bind: i.visibility),
              protected = \(bind: i.protected ? 1 : 0), disk_format = \(bind: i.diskFormat),
              container_format = \(bind: i.containerFormat), min_disk = \(bind: i.minDisk), min_ram = \(bind: i.minRAM),
              size_bytes = \(bind: i.sizeBytes), checksum = \(bind: i.checksum), os_hash_algo = \(bind: i.hashAlgorithm),
              os_hash_value = \(bind: i.hashValue), map_name = \(bind: i.mapName),
              properties = \(bind: propertiesJSON(i.properties)), tags = \(bind: tagsJSON(i.tags)),
              updated_at_us = \(bind: i.updatedAt.microseconds)
            WHERE id = \(bind: i.id)
            """
        ).run()
    }

    static func delete(id: String, _ db: any SQLDatabase) async throws {
        try await db.raw("DELETE FROM images WHERE id = \(bind: id)").run()
    }

    static func propertiesJSON(_ p: [String: String]) -> String { p.metadataJSON }

    static func tagsJSON(_ tags: [String]) -> String {
        String(decoding: JSON.array(tags.map(JSON.string)).encoded(), as: UTF8.self)
    }

    static func image(from row: any SQLRow) throws -> Image {
        let tagsText = try row.decode(column: "tags", as: String.self)
        let tags = (try? JSON.parse(Data(tagsText.utf8)))?.arrayValue?.compactMap(\.stringValue) ?? []
        return Image(
            id: try row.decode(column: "id", as: String.self),
            projectID: try row.decode(column: "project_id", as: String.self),
            name: try row.decode(column: "name", as: String.self),
            status: try row.decode(column: "status", as: String.self),
            visibility: try row.decode(column: "visibility", as: String.self),
            protected: try row.decode(column: "protected", as: Int64.self) != 0,
            diskFormat: try row.decode(column: "disk_format", as: String?.self),
            containerFormat: try row.decode(column: "container_format", as: String?.self),
            minDisk: try row.decode(column: "min_disk", as: Int64.self),
            minRAM: try row.decode(column: "min_ram", as: Int64.self),
            sizeBytes: try row.decode(column: "size_bytes", as: Int64?.self),
            checksum: try row.decode(column: "checksum", as: String?.self),
            hashAlgorithm: try row.decode(column: "os_hash_algo", as: String?.self),
            hashValue: try row.decode(column: "os_hash_value", as: String?.self),
            mapName: try row.decode(column: "map_name", as: String?.self),
            properties: .fromMetadataJSON(try row.decode(column: "properties", as: String.self)),
            tags: tags,
            createdAt: Timestamp(microseconds: try row.decode(column: "created_at_us", as: Int64.self)),
            updatedAt: Timestamp(microseconds: try row.decode(column: "updated_at_us", as: Int64.self)))
    }
}
