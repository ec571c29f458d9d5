import BlockStore
import BlockStorePosix
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix
import SQLKit

/// Images (Glance v2) below HTTP. An image's bytes are a read-only block-store map of its own,
/// `img-<image id>`: imported from an upload, or, without reading or writing a block, a new map
/// record sharing the map body of an object (``ImageRules/sourceObjectProperty``) or of a volume
/// snapshot (``ImageRules/sourceSnapshotProperty``; such images carry `EXCLUDE_ALL_TASKS=yes`,
/// so snf-image deploys them without customization). `img-<id>` is also a valid ExtStorage
/// `origin` (Ganeti disks clone it directly).
///
/// Access: the owner's project reads and (member role) writes; `public` and `community` images
/// are readable by every project; admins read and write everything. Another project's private
/// image is 404, as if it did not exist; a readable image the caller may not change is 403.
public struct ImageService: Sendable {
    public let database: MetadataDatabase
    public let objects: ObjectStorageService
    let logger: Logger
    /// Glance's `image_size_cap` default: 1 TiB.
    static let maxUploadBytes: Int64 = 1 << 40

    public init(database: MetadataDatabase, objects: ObjectStorageService, logger: Logger) {
        self.database = database
        self.objects = objects
        self.logger = logger
    }

    var store: BlockStore { objects.store }
    var quotas: QuotaService { objects.quotas }

    static func mapName(forImage id: String) throws -> MapName { try MapName("img-" + id) }

    // MARK: Access

    static func readable(_ i: Image, by c: Caller) -> Bool {
        c.isAdmin || i.projectID == c.projectID || i.visibility == "public" || i.visibility == "community"
    }

    static func requireWritable(_ i: Image, by c: Caller) throws(CloudError) {
        guard c.canWrite, c.isAdmin || i.projectID == c.projectID else {
            throw .forbidden("You are not permitted to modify image \(i.id).")
        }
    }

    static func notFound(_ id: String) -> CloudError { .notFound("No image found with ID \(id).") }

    /// The image `id` if the caller may see it; 404 otherwise.
    func image(_ c: Caller, id: String) async throws -> Image {
        guard ResourceNames.isUUID(id) else { throw Self.notFound(id) }
        let found = try await database.read { db in try await ImageTables.image(id: id.lowercased(), db) }
        guard let found, Self.readable(found, by: c) else { throw Self.notFound(id) }
        return found
    }

    // MARK: Create

    /// `POST /v2/images`: a queued image, or an active one registered from an object or a snapshot.
    func create(_ c: Caller, _ body: [String: JSON]) async throws -> Image {
        guard c.canWrite else { throw CloudError.forbidden("You are not permitted to create images.") }
        let now = Timestamp.now()
        var image = Image(
            id: ResourceNames.newID(), projectID: c.projectID, name: "", status: "queued", visibility: "shared",
            protected: false, diskFormat: nil, containerFormat: nil, minDisk: 0, minRAM: 0, sizeBytes: nil,
            checksum: nil, hashAlgorithm: nil, hashValue: nil, mapName: nil, properties: [:], tags: [],
            createdAt: now, updatedAt: now)
        for (key, value) in body.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "id":
                guard let id = value.stringValue, ResourceNames.isUUID(id) else { throw CloudError.badRequest("id must be a UUID.") }
                image.id = id.lowercased()
            case "owner":
                guard let owner = value.stringValue else { throw CloudError.badRequest("owner must be a string.") }
                guard owner == c.projectID || c.isAdmin else {
                    throw CloudError.forbidden("You are not permitted to create images owned by another project.")
                }
                image.projectID = owner
            default:
                try Self.apply(key, value, to: &image, caller: c, creating: true)
            }
        }
        try Self.checkCounts(image)
        let sourceObject = image.properties[ImageRules.sourceObjectProperty]
        let sourceSnapshot = image.properties[ImageRules.sourceSnapshotProperty]
        guard sourceObject == nil || sourceSnapshot == nil else {
            throw CloudError.badRequest("Give \(ImageRules.sourceObjectProperty) or \(ImageRules.sourceSnapshotProperty), not both.")
        }
        let existing = try await database.read { [id = image.id] db in try await ImageTables.image(id: id, db) }
        guard existing == nil else { throw CloudError.conflict("An image with identifier \(image.id) already exists.") }
        let mapName = try Self.mapName(forImage: image.id)
        // Over quota: refused before any map record is written (charged for real with the insert).
        try await quotas.checkOpenStack(project: image.projectID, .images, delta: 1)
        if let sourceObject {
            // Register an object: a new map record naming the object's map body. No block moves.
            let (container, name) = try Self.objectPath(sourceObject)
            let object = try await objects.object(project: c.projectID, container: container, name: name)
            guard object.manifest == nil else {
                throw CloudError.badRequest("\(sourceObject) is a large-object manifest; register one of its segments or a plain object.")
            }
            let origin = try MapName(object.mapName)
            try await copyMap(from: origin, to: mapName, missing: "The object \(sourceObject) does not exist.")
            image.status = "active"
            image.sizeBytes = object.sizeBytes
            image.checksum = object.etag
            image.hashAlgorithm = "sha512"
            image.hashValue = nil  // would need reading every block; see docs/cloud.md
            image.mapName = mapName.rawValue
        } else if let sourceSnapshot {
            guard ResourceNames.isUUID(sourceSnapshot),
                let snapshot = try await database.read({ db in
                    try await VolumeTables.snapshot(id: sourceSnapshot.lowercased(), project: c.projectID, db)
                }), snapshot.status == "available"
            else { throw CloudError.notFound("No available snapshot found with ID \(sourceSnapshot).") }
            let record = try await copyMap(
                from: try MapName(snapshot.mapName), to: mapName, missing: "The snapshot \(sourceSnapshot) does not exist.")
            image.status = "active"
            image.sizeBytes = Int64(record.sizeBytes)
            image.mapName = mapName.rawValue
            image.properties["EXCLUDE_ALL_TASKS"] = "yes"
        }
        // `images` counts image rows: charged with the insert, refunded with the delete.
        let row = image
        do {
            try await database.transaction { db in
                try await quotas.chargeOpenStack(project: row.projectID, .images, delta: 1, in: db)
                try await ImageTables.insert(row, db)
            }
        } catch {
            if image.mapName != nil { await removeMap(mapName.rawValue) }
            throw error
        }
        return image
    }

    @discardableResult
    func copyMap(from origin: MapName, to name: MapName, missing: String) async throws -> MapRecord {
        let store = self.store
        do {
            return try await StoreIO.run { try store.copyMap(from: origin, named: name) }
        } catch let error as StoreError where error.code == .notFound {
            throw CloudError.notFound(missing)
        } catch let error as StoreError where error.code == .alreadyExists {
            throw CloudError.conflict("The image's data already exists (\(name)).")
        }
    }

    /// `container/object` (a leading `/` allowed) in the caller's own account.
    static func objectPath(_ value: String) throws(CloudError) -> (String, String) {
        let trimmed = value.hasPrefix("/") ? String(value.dropFirst()) : value
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw .badRequest("\(ImageRules.sourceObjectProperty) must be <container>/<object>.")
        }
        return (parts[0], parts[1])
    }

    /// Sets attribute `key` from a create body or a patch (`value` nil: remove).
    static func apply(_ key: String, _ value: JSON?, to image: inout Image, caller c: Caller, creating: Bool) throws(CloudError) {
        if ImageRules.readOnly.contains(key) || key == "id" || key == "owner" {
            throw .forbidden("Attribute '\(key)' is read-only.")
        }
        if ImageRules.core.contains(key) && value == nil {
            throw .forbidden("Attribute '\(key)' cannot be removed.")
        }
        switch key {
        case "name":
            guard let v = value, let name = v.isNull ? "" : v.stringValue else { throw .badRequest("name must be a string.") }
            try ResourceNames.check(name, what: "image name")
            image.name = name
        case "visibility":
            guard let v = value?.stringValue, ImageRules.visibilities.contains(v) else {
                throw .badRequest("visibility must be one of private, public, shared, community.")
            }
            if v == "public" && !c.isAdmin { throw .forbidden("Only an admin may make an image public.") }
            image.visibility = v
        case "protected":
            guard let v = value?.boolValue else { throw .badRequest("protected must be true or false.") }
            image.protected = v
        case "os_hidden":
            guard value?.boolValue != nil else { throw .badRequest("os_hidden must be true or false.") }
        case "disk_format", "container_format":
            let allowed = key == "disk_format" ? ImageRules.diskFormats : ImageRules.containerFormats
            var format: String?
            if let v = value, !v.isNull {
                guard let s = v.stringValue, allowed.contains(s) else {
                    throw .badRequest("\(key) must be one of \(allowed.sorted().joined(separator: ", ")).")
                }
                format = s
            }
            if !creating && image.status != "queued" {
                throw .forbidden("Attribute \(key) can be only replaced for a queued image.")
            }
            if key == "disk_format" { image.diskFormat = format } else { image.containerFormat = format }
        case "min_disk", "min_ram":
            guard let n = value?.integerValue, n >= 0, n < Int64(Int32.max) else {
                throw .badRequest("\(key) must be a non-negative integer.")
            }
            if key == "min_disk" { image.minDisk = n } else { image.minRAM = n }
        case "tags":
            guard let list = value?.arrayValue else { throw .badRequest("tags must be an array of strings.") }
            var tags: [String] = []
            for item in list {
                guard let tag = item.stringValue else { throw .badRequest("tags must be an array of strings.") }
                try ImageRules.checkTag(tag)
                if !tags.contains(tag) { tags.append(tag) }
            }
            image.tags = tags
        default:
            if !creating && (key == ImageRules.sourceObjectProperty || key == ImageRules.sourceSnapshotProperty) {
                throw .forbidden("Attribute '\(key)' is read-only.")
            }
            guard let value else {
                guard image.properties.removeValue(forKey: key) != nil else {
                    throw .conflict("Property \(key) does not exist.")
                }
                return
            }
            guard let s = value.stringValue else { throw .badRequest("The value of property \(key) must be a string.") }
            try ImageRules.checkProperty(key, s)
            image.properties[key] = s
        }
    }

    static func checkCounts(_ image: Image) throws(CloudError) {
        guard image.properties.count <= ImageRules.maxProperties else {
            throw .init(status: 413, message: "An image has at most \(ImageRules.maxProperties) properties.")
        }
        guard image.tags.count <= ImageRules.maxTags else {
            throw .init(status: 413, message: "An image has at most \(ImageRules.maxTags) tags.")
        }
    }

    // MARK: Data

    /// `PUT /v2/images/{id}/file`: streams `body` to a scratch file (bounded memory; MD5 and
    /// SHA-512 on the way), imports it as `img-<id>`, then marks the image active. queued →
    /// saving → active; a failure puts it back to queued and leaves no map.
    func upload<Body: AsyncSequence & Sendable>(_ c: Caller, id: String, declaredLength: Int64?, body: Body) async throws
        -> Image where Body.Element == ByteBuffer
    {
        if let declaredLength, declaredLength > Self.maxUploadBytes {
            throw CloudError(status: 413, message: "The image is larger than \(Self.maxUploadBytes) bytes.")
        }
        let image = try await transition(c, id: id, from: ["queued"], to: "saving")
        let mapName = try Self.mapName(forImage: image.id)
        let scratch = objects.scratchDirectory + "/image-" + ResourceNames.newID()
        defer { unlink(scratch) }
        var imported = false
        do {
            let (size, md5, sha512) = try await Self.spool(body, to: scratch, limit: Self.maxUploadBytes)
            if let declaredLength, declaredLength != size {
                throw CloudError.badRequest("The body had \(size) bytes, not the \(declaredLength) of Content-Length.")
            }
            let store = self.store
            try await StoreIO.run {
                // A map left by a process that died mid-upload (the image stayed `saving`) goes first.
                if try store.record(named: mapName) != nil { try store.remove(mapName) }
                _ = try store.importMap(named: mapName, from: try FileSource(path: scratch), useCache: false)
            }
            imported = true
            // Image bytes are not a quota resource of their own (`storage_bytes` counts objects);
            // the `images` count was charged at create.
            return try await database.transaction { db in
                guard var current = try await ImageTables.image(id: image.id, forUpdate: true, db),
                    current.status == "saving"
                else { throw CloudError.conflict("Image \(image.id) was deleted during the upload.") }
                current.status = "active"
                current.sizeBytes = size
                current.checksum = md5
                current.hashAlgorithm = "sha512"
                current.hashValue = sha512
                current.mapName = mapName.rawValue
                current.updatedAt = Timestamp.now()
                try await ImageTables.update(current, db)
                return current
            }
        } catch {
            if imported { await removeMap(mapName.rawValue) }
            _ = try? await database.transaction { db in
                if var current = try await ImageTables.image(id: image.id, forUpdate: true, db), current.status == "saving" {
                    current.status = "queued"
                    try await ImageTables.update(current, db)
                }
            }
            throw error
        }
    }

    /// Image `id` locked for update in `db`: 404 unless the caller may read it, 403 unless it may
    /// change it.
    static func lockedWritable(_ c: Caller, id: String, _ db: any SQLDatabase) async throws -> Image {
        guard let image = try await ImageTables.image(id: id.lowercased(), forUpdate: true, db), readable(image, by: c)
        else { throw notFound(id) }
        try requireWritable(image, by: c)
        return image
    }

    /// Moves image `id` from one of `from` to `to` in one transaction (409 from another status).
    func transition(_ c: Caller, id: String, from: Set<String>, to: String) async throws -> Image {
        guard ResourceNames.isUUID(id) else { throw Self.notFound(id) }
        return try await database.transaction { db in
            var image = try await Self.lockedWritable(c, id: id, db)
            guard from.contains(image.status) else {
                throw CloudError.conflict("Image status transition from \(image.status) to \(to) is not allowed.")
            }
            image.status = to
            image.updatedAt = Timestamp.now()
            try await ImageTables.update(image, db)
            return image
        }
    }

    /// The entries of an image's map (nil when it has no data yet), resolved before any byte is sent.
    func entries(of image: Image) async throws -> [MapEntry]? {
        guard let mapName = image.mapName, image.status == "active" else { return nil }
        let store = self.store
        let map = try MapName(mapName)
        do {
            return try await StoreIO.run { try store.resolvedEntries(of: map).entries }
        } catch let error as StoreError where error.code == .notFound {
            throw Self.notFound(image.id)
        }
    }

    // MARK: List, update, delete

    struct ListQuery: Sendable {
        var limit = 25
        var marker: String?
        var name: String?
        var status: String?
        var visibility: String?
        var owner: String?
        var tags: [String] = []
        var sortKey = "created_at"
        var ascending = false
    }

    static let maxListLimit = 1000

    /// Glance's listing: the caller's images, public ones and (when asked for) community ones;
    /// an admin sees all. Filtered, sorted (then by id), paged after `marker`. Returns the page
    /// and whether more follow.
    func list(_ c: Caller, _ q: ListQuery) async throws -> ([Image], Bool) {
        let all = try await database.read { db in try await ImageTables.images(visibleTo: c.isAdmin ? nil : c.projectID, db) }
        var images = all.filter { i in
            if let v = q.visibility {
                guard i.visibility == v else { return false }
                if v == "private" || v == "shared" { guard c.isAdmin || i.projectID == c.projectID else { return false } }
            } else if i.visibility == "community" && i.projectID != c.projectID && !c.isAdmin {
                return false
            }
            if let name = q.name, i.name != name { return false }
            if let status = q.status, i.status != status { return false }
            if let owner = q.owner, i.projectID != owner { return false }
            for tag in q.tags where !i.tags.contains(tag) { return false }
            return true
        }
        func key(_ i: Image) -> String {
            switch q.sortKey {
            case "name": i.name
            case "status": i.status
            case "size": String(format: "%020lld", i.sizeBytes ?? -1)
            case "updated_at": String(format: "%020lld", i.updatedAt.microseconds)
            case "id": i.id
            default: String(format: "%020lld", i.createdAt.microseconds)
            }
        }
        images.sort { a, b in
            let (ka, kb) = (key(a), key(b))
            if ka != kb { return q.ascending ? ka < kb : ka > kb }
            return q.ascending ? a.id < b.id : a.id > b.id
        }
        if let marker = q.marker {
            guard let index = images.firstIndex(where: { $0.id == marker.lowercased() }) else {
                throw CloudError.badRequest("Invalid marker. Image \(marker) could not be found.")
            }
            images.removeFirst(index + 1)
        }
        let limit = max(0, min(q.limit, Self.maxListLimit))
        return (Array(images.prefix(limit)), images.count > limit)
    }

    /// One JSON-patch operation (`op`, `path` as a JSON pointer, `value`).
    struct PatchOperation: Sendable {
        var op: String
        var path: String
        var value: JSON?
    }

    /// `PATCH /v2/images/{id}`: applies the operations in order, all or nothing.
    func update(_ c: Caller, id: String, _ operations: [PatchOperation]) async throws -> Image {
        guard ResourceNames.isUUID(id) else { throw Self.notFound(id) }
        return try await database.transaction { db in
            var image = try await Self.lockedWritable(c, id: id, db)
            for operation in operations {
                let key = Self.pointerKey(operation.path)
                guard !key.isEmpty, !key.contains("/") else {
                    throw CloudError.badRequest("Invalid JSON pointer for this resource: '\(operation.path)'.")
                }
                if ImageRules.readOnly.contains(key) || key == "id" || key == "owner" {
                    throw CloudError.forbidden("Attribute '\(key)' is read-only.")
                }
                switch operation.op {
                case "add", "replace":
                    guard let value = operation.value else { throw CloudError.badRequest("\(operation.op) needs a value.") }
                    if operation.op == "replace" && !ImageRules.core.contains(key) && image.properties[key] == nil {
                        throw CloudError.conflict("Property \(key) does not exist.")
                    }
                    try Self.apply(key, value, to: &image, caller: c, creating: false)
                case "remove":
                    try Self.apply(key, nil, to: &image, caller: c, creating: false)
                default:
                    throw CloudError.badRequest("Unsupported JSON patch operation '\(operation.op)' (add, replace, remove).")
                }
            }
            try Self.checkCounts(image)
            image.updatedAt = Timestamp.now()
            try await ImageTables.update(image, db)
            return image
        }
    }

    /// `/name` → `name` (RFC 6901 unescaping).
    static func pointerKey(_ path: String) -> String {
        guard path.hasPrefix("/") else { return "" }
        return String(path.dropFirst()).replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
    }

    /// `DELETE /v2/images/{id}`: the row is marked deleted (404 from then on), its map record goes,
    /// then the row. Volumes cloned from the image keep their data (their own map records).
    func delete(_ c: Caller, id: String) async throws {
        guard ResourceNames.isUUID(id) else { throw Self.notFound(id) }
        let image = try await database.transaction { db in
            guard var image = try await ImageTables.image(id: id.lowercased(), forUpdate: true, db),
                Self.readable(image, by: c)
            else { throw Self.notFound(id) }
            try Self.requireWritable(image, by: c)
            guard !image.protected else { throw CloudError.forbidden("Image \(id) is protected and cannot be deleted.") }
            guard image.status != "saving" else { throw CloudError.conflict("Image \(id) is being uploaded.") }
            image.status = "deleted"
            image.updatedAt = Timestamp.now()
            try await ImageTables.update(image, db)
            return image
        }
        if let map = image.mapName { await removeMap(map) }
        try await database.transaction { db in
            try await quotas.charge(project: image.projectID, .images, delta: -1, in: db)
            try await ImageTables.delete(id: image.id, db)
        }
    }

    func addTag(_ c: Caller, id: String, tag: String) async throws {
        try ImageRules.checkTag(tag)
        try await mutate(c, id: id) { image throws(CloudError) in
            if !image.tags.contains(tag) { image.tags.append(tag) }
            try Self.checkCounts(image)
        }
    }

    func removeTag(_ c: Caller, id: String, tag: String) async throws {
        try await mutate(c, id: id) { image throws(CloudError) in
            guard let index = image.tags.firstIndex(of: tag) else { throw .notFound("Tag \(tag) not found.") }
            image.tags.remove(at: index)
        }
    }

    func mutate(_ c: Caller, id: String, _ change: @escaping @Sendable (inout Image) throws(CloudError) -> Void) async throws {
        guard ResourceNames.isUUID(id) else { throw Self.notFound(id) }
        try await database.transaction { db in
            guard var image = try await ImageTables.image(id: id.lowercased(), forUpdate: true, db),
                Self.readable(image, by: c)
            else { throw Self.notFound(id) }
            try Self.requireWritable(image, by: c)
            try change(&image)
            image.updatedAt = Timestamp.now()
            try await ImageTables.update(image, db)
        }
    }

    /// Removes a map whose row is gone or going; its blocks stay until the store's garbage
    /// collection. Failures are logged: the image is already gone for every client.
    func removeMap(_ name: String) async {
        let store = self.store
        do {
            let map = try MapName(name)
            try await StoreIO.run {
                do { try store.remove(map) } catch let error as StoreError where error.code == .notFound {}
            }
        } catch {
            logger.warning("could not remove the map of a deleted image", metadata: ["map": "\(name)", "error": "\(error)"])
        }
    }

    /// Writes `body` to a new file at `path` in 1 MiB writes on the blocking pool, computing MD5
    /// and SHA-512 on the way. Returns the size and both digests in lowercase hex.
    static func spool<Body: AsyncSequence & Sendable>(_ body: Body, to path: String, limit: Int64) async throws
        -> (Int64, String, String) where Body.Element == ByteBuffer
    {
        let fd = Glibc.open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw DatabaseError("cannot create the upload file \(path): \(String(cString: strerror(errno)))") }
        defer { Glibc.close(fd) }
        var md5 = Insecure.MD5()
        var sha512 = SHA512()
        var size: Int64 = 0
        var pending = ByteBuffer()
        @Sendable func writeAll(_ chunk: ByteBuffer) throws {
            try chunk.withUnsafeReadableBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = Glibc.write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 {
                        if errno == EINTR { continue }
                        throw DatabaseError("cannot write the upload file \(path): \(String(cString: strerror(errno)))")
                    }
                    offset += n
                }
            }
        }
        for try await chunk in body {
            size += Int64(chunk.readableBytes)
            guard size <= limit else { throw CloudError(status: 413, message: "The image is larger than \(limit) bytes.") }
            chunk.withUnsafeReadableBytes {
                md5.update(bufferPointer: $0)
                sha512.update(bufferPointer: $0)
            }
            var chunk = chunk
            pending.writeBuffer(&chunk)
            if pending.readableBytes >= 1 << 20 {
                let full = pending
                pending = ByteBuffer()
                try await StoreIO.run { try writeAll(full) }
            }
        }
        if pending.readableBytes > 0 {
            let rest = pending
            try await StoreIO.run { try writeAll(rest) }
        }
        func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }
        return (size, hex(md5.finalize()), hex(sha512.finalize()))
    }
}
