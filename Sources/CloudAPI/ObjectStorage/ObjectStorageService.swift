import BlockStore
import BlockStorePosix
import Crypto
import Foundation
import Logging
import NIOCore
import NIOPosix

/// Object storage's logic, below HTTP: accounts, containers and objects of one project at a time.
///
/// Metadata lives in the ``MetadataDatabase``; every object's bytes are a read-only block-store
/// map of its own (`obj-<uuid>`), made of the same content-addressed 4 MiB blocks as images and
/// volumes, so registering an object as an image is a metadata write. A copy is a new map record
/// naming the same map body: no block is read or written.
///
/// Every function takes the project the caller was authorized for and touches nothing else.
/// Errors are ``CloudError``s whose status the HTTP layer returns as is.
public struct ObjectStorageService: Sendable {
    public let database: MetadataDatabase
    public let store: BlockStore
    /// A scratch directory for uploads that need a file (object uploads stream into the store
    /// and use none).
    public let scratchDirectory: String
    /// Storage bytes are charged here (``QuotaResource/storageBytes``).
    public let quotas: QuotaService
    let logger: Logger

    public init(
        database: MetadataDatabase, store: BlockStore, scratchDirectory: String, quotas: QuotaService? = nil,
        logger: Logger
    ) {
        self.database = database
        self.store = store
        self.scratchDirectory = scratchDirectory
        self.quotas = quotas ?? QuotaService(database: database)
        self.logger = logger
    }

    /// Opens (creating if needed) the block store `storeDirectory` (default `DATA_DIR/store`) and the scratch directory
    /// `DATA_DIR/object-uploads`, removing uploads older than a day there (left by a crashed
    /// process; another `serve` on the same data directory may be writing the younger ones).
    public static func open(
        dataDirectory: String, storeDirectory: String? = nil, database: MetadataDatabase, quotas: QuotaService? = nil,
        logger: Logger
    ) throws -> ObjectStorageService {
        let root = storeDirectory ?? dataDirectory + "/store"
        let scratch = dataDirectory + "/object-uploads"
        do {
            try FileManager.default.createDirectory(
                atPath: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            _ = try PosixBackend.initialize(root: root)
            try FileManager.default.createDirectory(
                atPath: scratch, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            let dayAgo = Date().addingTimeInterval(-86400)
            for name in (try? FileManager.default.contentsOfDirectory(atPath: scratch)) ?? [] {
                let path = scratch + "/" + name
                if let modified = (try? FileManager.default.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
                    modified < dayAgo
                {
                    unlink(path)
                }
            }
        } catch {
            throw DatabaseError("cannot prepare the object store under \(dataDirectory): \(error)")
        }
        let store = BlockStore(backend: try PosixBackend(root: root), nameLockWaitSeconds: 10)
        return ObjectStorageService(
            database: database, store: store, scratchDirectory: scratch, quotas: quotas, logger: logger)
    }

    // MARK: Accounts

    public func account(project: String) async throws -> ObjectAccount {
        var account = try await database.read { db in
            let (containers, objects, bytes) = try await ObjectTables.accountUsage(project: project, db)
            let metadata = try await ObjectTables.accountMetadata(project: project, db)
            return ObjectAccount(containerCount: containers, objectCount: objects, bytesUsed: bytes, metadata: metadata)
        }
        account.quotaBytes = try await quotas.usage(project: project, .storageBytes).limit
        return account
    }

    public func updateAccountMetadata(project: String, _ change: MetadataChange) async throws {
        try await database.transaction { db in
            let metadata = change.applied(to: try await ObjectTables.accountMetadata(project: project, db))
            try MetadataChange.check(metadata)
            try await ObjectTables.setAccountMetadata(project: project, metadata, db)
        }
    }

    public func listContainers(project: String, _ query: ListingQuery) async throws -> [ListingEntry<ObjectContainer>] {
        try await Self.listing(query, name: \.name) { after, before, prefix, reverse, limit in
            try await database.read { db in
                try await ObjectTables.containers(
                    project: project, after: after, before: before, prefix: prefix, reverse: reverse, limit: limit, db)
            }
        }
    }

    // MARK: Containers

    /// Creates the container, or updates its metadata when it exists. Returns true when created.
    public func putContainer(project: String, name: String, _ change: MetadataChange) async throws -> Bool {
        try ObjectNames.checkContainer(name)
        let now = Timestamp.now()
        return try await database.transaction { db in
            if let existing = try await ObjectTables.container(project: project, name: name, db) {
                let metadata = change.applied(to: existing.metadata)
                try MetadataChange.check(metadata)
                try await ObjectTables.updateContainer(project: project, name: name, metadata: metadata, at: now, db)
                return false
            }
            let metadata = change.applied(to: [:])
            try MetadataChange.check(metadata)
            try await ObjectTables.insertContainer(project: project, name: name, metadata: metadata, at: now, db)
            return true
        }
    }

    public func container(project: String, name: String) async throws -> ObjectContainer {
        try ObjectNames.checkContainer(name)
        guard let found = try await database.read({ db in try await ObjectTables.container(project: project, name: name, db) })
        else { throw CloudError.notFound("The container \(name) does not exist.") }
        return found
    }

    /// The ACLs of a container; nil when there is no such container (or name).
    public func containerACL(project: String, name: String) async -> ContainerACL? {
        guard let c = try? await container(project: project, name: name) else { return nil }
        return ContainerACL(metadata: c.metadata)
    }

    public func updateContainerMetadata(project: String, name: String, _ change: MetadataChange) async throws {
        try ObjectNames.checkContainer(name)
        let now = Timestamp.now()
        try await database.transaction { db in
            guard let existing = try await ObjectTables.container(project: project, name: name, db) else {
                throw CloudError.notFound("The container \(name) does not exist.")
            }
            let metadata = change.applied(to: existing.metadata)
            try MetadataChange.check(metadata)
            try await ObjectTables.updateContainer(project: project, name: name, metadata: metadata, at: now, db)
        }
    }

    /// Deletes an empty container: 404 when absent, 409 when it holds objects.
    public func deleteContainer(project: String, name: String) async throws {
        try ObjectNames.checkContainer(name)
        try await database.transaction { db in
            guard let existing = try await ObjectTables.container(project: project, name: name, db) else {
                throw CloudError.notFound("The container \(name) does not exist.")
            }
            guard existing.objectCount == 0 else {
                throw CloudError.conflict("There was a conflict when trying to complete your request.")  // Swift's text
            }
            try await ObjectTables.deleteContainer(project: project, name: name, db)
        }
    }

    public func listObjects(project: String, container: String, _ query: ListingQuery) async throws
        -> [ListingEntry<StoredObject>]
    {
        _ = try await self.container(project: project, name: container)
        return try await Self.listing(query, name: \.name) { after, before, prefix, reverse, limit in
            try await database.read { db in
                try await ObjectTables.objects(
                    project: project, container: container, after: after, before: before, prefix: prefix,
                    reverse: reverse, limit: limit, db)
            }
        }
    }

    // MARK: Objects

    public func object(project: String, container: String, name: String) async throws -> StoredObject {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        let found = try await database.read { db in
            try await ObjectTables.object(project: project, container: container, name: name, db)
        }
        guard let found else { throw CloudError.notFound("The object \(container)/\(name) does not exist.") }
        if found.isExpired() {
            // Past its X-Delete-At: gone for every client, and removed now.
            _ = try? await removeExpired(project: project, container: container, name: name)
            throw CloudError.notFound("The object \(container)/\(name) does not exist.")
        }
        return found
    }

    /// Removes every object past its `X-Delete-At`, in every project (`snf-cloud serve` runs this
    /// once a minute; a request that finds an expired object removes it at once). Returns how many.
    public func removeExpiredObjects(batch: Int = 1000) async throws -> Int {
        var removed = 0
        while true {
            let due = try await database.read { db in try await ObjectTables.expiredObjects(now: .now(), limit: batch, db) }
            var removedNow = 0
            for (project, container, name) in due where try await removeExpired(project: project, container: container, name: name) {
                removedNow += 1
            }
            removed += removedNow
            if due.count < batch || removedNow == 0 { return removed }
        }
    }

    /// Removes the object if it is (still) past its `X-Delete-At`; false when there was none.
    @discardableResult
    func removeExpired(project: String, container: String, name: String) async throws -> Bool {
        try await removeObjectRow(project: project, container: container, name: name) { $0.isExpired() } != nil
    }

    /// What a PUT supplies besides the bytes.
    public struct Upload: Sendable {
        public var contentType: String?
        public var metadata: [String: String] = [:]
        /// The client's `ETag` (MD5 hex); a mismatch is 422 and nothing is stored.
        public var expectedETag: String?
        /// `Content-Length` when the client sent one.
        public var declaredLength: Int64?

        public init() {}
    }

    /// Stores the bytes of `body` as the object, replacing any object of that name.
    ///
    /// The body streams straight into the block store (``streamBlocks(_:limit:)``: 4 MiB blocks
    /// hashed and written as they arrive, the MD5 on the way, bounded memory); then the map is
    /// published from the block ids (``BlockStore/createMap(named:sizeBytes:blocks:)``), then
    /// the row is written in one transaction that charges the storage quota, and the replaced
    /// object's map is removed after it commits. With a `Content-Length`, the quota is checked
    /// before a byte is read (and charged again, exactly, at the commit); a chunked body is
    /// checked at the commit only. A failure at any step (short body, ETag mismatch 422, quota
    /// 413) commits nothing and leaves the previous object as it was; blocks already written
    /// stay unnamed until garbage collection.
    public func putObject<Body: AsyncSequence & Sendable>(
        project: String, container: String, name: String, upload: Upload, body: Body
    ) async throws -> StoredObject where Body.Element == ByteBuffer {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        try MetadataChange.check(upload.metadata)
        if let length = upload.declaredLength, length > ObjectLimits.maxFileSizeBytes {
            throw CloudError(status: 413, message: "Your request is too large.")
        }
        // 404 before reading a byte of the body.
        _ = try await self.container(project: project, name: container)
        if let length = upload.declaredLength, length > 0 {
            let replaced = try await database.read { db in
                try await ObjectTables.object(project: project, container: container, name: name, db)?.sizeBytes
            }
            do {
                try await quotas.check(project: project, .storageBytes, delta: length - (replaced ?? 0))
            } catch let exceeded as QuotaExceeded {
                throw exceeded.cloudError
            }
        }
        let streamed = try await streamBlocks(body, limit: upload.declaredLength ?? ObjectLimits.maxFileSizeBytes)
        if let length = upload.declaredLength, length != streamed.sizeBytes {
            throw CloudError.badRequest("The body had \(streamed.sizeBytes) bytes, not the \(length) of Content-Length.")
        }
        if let expected = upload.expectedETag, Self.normalizedETag(expected) != streamed.md5 {
            throw CloudError(status: 422, message: "Unprocessable Entity: the ETag does not match the MD5 of the body.")
        }
        let mapName = try MapName("obj-" + UUID().uuidString.lowercased())
        let store = self.store
        try await StoreIO.run {
            _ = try store.createMap(named: mapName, sizeBytes: UInt64(streamed.sizeBytes), blocks: streamed.blocks)
        }
        let now = Timestamp.now()
        let object = StoredObject(
            container: container, name: name, mapName: mapName.rawValue, sizeBytes: streamed.sizeBytes,
            etag: streamed.md5, contentType: upload.contentType ?? "application/octet-stream", metadata: upload.metadata,
            manifest: nil, createdAt: now, modifiedAt: now)
        try await publish(project: project, object, blocks: streamed.storedHashes)
        return object
    }

    /// The content-addressed blocks among `entries`, as hex.
    static func blockHashes(_ entries: [MapEntry]) -> Set<String> {
        Set(entries.compactMap { if case .block(let id) = $0 { id.hex } else { nil } })
    }

    /// Copies an object without copying data: a new map record names the source's map body.
    /// Metadata: the source's, with `change` applied; the content type: `contentType` or the source's.
    public func copyObject(
        project: String, from source: (container: String, name: String), to target: (container: String, name: String),
        change: MetadataChange, contentType: String?
    ) async throws -> StoredObject {
        let original = try await object(project: project, container: source.container, name: source.name)
        try ObjectNames.checkContainer(target.container)
        try ObjectNames.checkObject(target.name)
        // A copy does not inherit the source's expiry (Swift's rule); the request may set one.
        var inherited = original.metadata
        inherited[ObjectSystemHeaders.prefix + "x-delete-at"] = nil
        let metadata = change.applied(to: inherited)
        try MetadataChange.check(metadata)
        _ = try await self.container(project: project, name: target.container)
        let mapName = try MapName("obj-" + UUID().uuidString.lowercased())
        let store = self.store
        do {
            let origin = try MapName(original.mapName)
            try await StoreIO.run { _ = try store.copyMap(from: origin, named: mapName) }
        } catch let error as StoreError where error.code == .notFound {
            throw CloudError.notFound("The object \(source.container)/\(source.name) does not exist.")
        }
        let now = Timestamp.now()
        let object = StoredObject(
            container: target.container, name: target.name, mapName: mapName.rawValue, sizeBytes: original.sizeBytes,
            etag: original.etag, contentType: contentType ?? original.contentType, metadata: metadata,
            manifest: original.manifest, createdAt: now,
            modifiedAt: now, slo: original.slo)
        try await publish(project: project, object)
        return object
    }

    /// Writes the row of `object` (whose map is stored), replacing any previous object of that
    /// name, and charges the storage quota the difference, in one transaction; then removes the
    /// replaced map. When the row cannot be written (over quota: 413), the new map goes.
    ///
    /// The quota row is locked first, so writes of one project's objects are serialized here:
    /// the replaced object read below is the one this transaction deletes (last writer wins).
    func publish(project: String, _ object: StoredObject, blocks: Set<String> = []) async throws {
        let replaced: String?
        let quotas = self.quotas
        do {
            replaced = try await database.transaction { db -> String? in
                var old: StoredObject?
                try await quotas.charge(project: project, .storageBytes, in: db) {
                    old = try await ObjectTables.object(
                        project: project, container: object.container, name: object.name, db)
                    return object.sizeBytes - (old?.sizeBytes ?? 0)
                }
                guard try await ObjectTables.containerExists(project: project, name: object.container, db) else {
                    throw CloudError.notFound("The container \(object.container) does not exist.")
                }
                if old == nil, let limit = ObjectAccount.countQuota(in: try await ObjectTables.accountMetadata(project: project, db)) {
                    // The object-count quota: exact, since the quota row above serializes this
                    // project's publishes.
                    let count = try await ObjectTables.accountUsage(project: project, db).1
                    if count + 1 > limit { throw CloudError(status: 413, message: "Upload exceeds quota.") }
                }
                if old != nil {
                    try await ObjectTables.deleteObject(project: project, container: object.container, name: object.name, db)
                }
                try await ObjectTables.insertObject(project: project, object, db)
                try await ObjectTables.recordBlocks(project: project, blocks, db)
                return old?.mapName
            }
        } catch let exceeded as QuotaExceeded {
            await removeMap(object.mapName)
            throw exceeded.cloudError
        } catch {
            await removeMap(object.mapName)
            throw error
        }
        if let replaced { await removeMap(replaced) }
    }

    public func updateObjectMetadata(
        project: String, container: String, name: String, _ change: MetadataChange, contentType: String?,
        manifest: String? = nil
    ) async throws {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        if let manifest { _ = try Self.manifestTarget(manifest) }
        let now = Timestamp.now()
        try await database.transaction { db in
            guard var object = try await ObjectTables.object(project: project, container: container, name: name, db),
                !object.isExpired(at: now)
            else {
                throw CloudError.notFound("The object \(container)/\(name) does not exist.")
            }
            object.metadata = change.applied(to: object.metadata)
            if let manifest { object.manifest = manifest }
            try MetadataChange.check(object.metadata)
            if let contentType { object.contentType = contentType }
            object.modifiedAt = now
            try await ObjectTables.updateObjectMetadata(project: project, object, db)
        }
    }

    public func deleteObject(project: String, container: String, name: String) async throws {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        guard let removed = try await removeObjectRow(project: project, container: container, name: name, when: { _ in true }),
            !removed.isExpired()
        else {
            // An expired object is removed all the same, and was already gone for clients.
            throw CloudError.notFound("The object \(container)/\(name) does not exist.")
        }
    }

    /// Deletes the object's row when `condition` holds for it, credits the storage quota, then
    /// removes its map; returns the removed object, nil when there was none (or it did not hold).
    private func removeObjectRow(
        project: String, container: String, name: String, when condition: @escaping @Sendable (StoredObject) -> Bool
    ) async throws -> StoredObject? {
        let quotas = self.quotas
        let removed = try await database.transaction { db -> StoredObject? in
            var found: StoredObject?
            try await quotas.charge(project: project, .storageBytes, in: db) {
                found = try await ObjectTables.object(project: project, container: container, name: name, db)
                    .flatMap { condition($0) ? $0 : nil }
                return -(found?.sizeBytes ?? 0)
            }
            guard let object = found else { return nil }
            try await ObjectTables.deleteObject(project: project, container: container, name: name, db)
            return object
        }
        if let removed { await removeMap(removed.mapName) }
        return removed
    }

    /// Removes a map whose row is gone; its blocks stay until the store's garbage collection.
    /// A failure is logged, not returned: the object is already gone for every client.
    func removeMap(_ name: String) async {
        let store = self.store
        do {
            let map = try MapName(name)
            try await StoreIO.run { try store.remove(map) }
        } catch {
            logger.warning("could not remove the map of a deleted object", metadata: ["map": "\(name)", "error": "\(error)"])
        }
    }

    // MARK: Reading

    /// The entries of `object`'s map, resolved before any byte is sent (so a damaged or missing
    /// map is an error status, not a truncated body).
    public func entries(of object: StoredObject) async throws -> [MapEntry] {
        let store = self.store
        let map = try MapName(object.mapName)
        return try await StoreIO.run { try store.resolvedEntries(of: map).entries }
    }

    /// Reads block `index` of an object of `sizeBytes` (`entries` from ``entries(of:)``): its
    /// logical bytes, verified against the block's hash, zero padding included.
    public func readBlock(_ entries: [MapEntry], index: Int, sizeBytes: Int64) async throws -> ByteBuffer {
        let blockSize = Int64(BlockStore.blockSizeBytes)
        let length = Int(min(blockSize, sizeBytes - Int64(index) * blockSize))
        let entry = index < entries.count ? entries[index] : .zero
        let backend = store.backend
        return try await StoreIO.run {
            var buffer = ByteBuffer(repeating: 0, count: length)
            try buffer.withUnsafeMutableReadableBytes { raw in
                switch entry {
                case .zero:
                    return
                case .block(let id):
                    var block = [UInt8](repeating: 0, count: BlockStore.blockSizeBytes)
                    let n = try block.withUnsafeMutableBytes { try backend.read(.block, id.hex, at: 0, into: $0) }
                    guard let n else { throw StoreError(.missing, "block \(id.hex) is missing from the store") }
                    let actual = block.withUnsafeBytes { BlockID(hashing: UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
                    guard actual == id else { throw StoreError(.corrupt, "block \(id.hex) is corrupt") }
                    block.withUnsafeBytes { raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<min(n, length)])) }
                case .volumeBlock(let id):
                    guard try backend.read(.volumeBlock, id.key, at: 0, into: raw) != nil else {
                        throw StoreError(.missing, "private block \(id.key) is missing from the store")
                    }
                }
            }
            return buffer
        }
    }

    // MARK: Helpers

    /// `"ABC…"` → `abc…`.
    static func normalizedETag(_ etag: String) -> String {
        var s = etag.trimmingCharacters(in: .whitespaces)
        if s.hasPrefix("\"") && s.hasSuffix("\"") && s.count >= 2 { s = String(s.dropFirst().dropLast()) }
        return s.lowercased()
    }

    /// Swift's listing over a source of name-ordered pages: marker/end_marker/prefix/reverse go to
    /// the database; the delimiter rolls names up into `subdir` entries here.
    static func listing<Item: Sendable>(
        _ query: ListingQuery, name: (Item) -> String,
        page: (_ after: String?, _ before: String?, _ prefix: String, _ reverse: Bool, _ limit: Int) async throws -> [Item]
    ) async throws -> [ListingEntry<Item>] {
        let limit = min(max(query.limit, 0), ObjectLimits.listingLimit)
        var results: [ListingEntry<Item>] = []
        var after = query.reverse ? query.endMarker : query.marker
        var before = query.reverse ? query.marker : query.endMarker
        if after?.isEmpty == true { after = nil }
        if before?.isEmpty == true { before = nil }
        var lastSubdir: String?
        let delimiter = query.delimiter.flatMap { $0.isEmpty ? nil : $0 }
        while results.count < limit {
            let batch = try await page(after, before, query.prefix, query.reverse, delimiter == nil ? limit - results.count : 1000)
            if batch.isEmpty { break }
            for item in batch {
                let itemName = name(item)
                if query.reverse { before = itemName } else { after = itemName }
                if let delimiter {
                    let rest = itemName.dropFirst(query.prefix.count)
                    if let range = rest.range(of: delimiter) {
                        let subdir = query.prefix + rest[..<range.upperBound]
                        // The client pages with the last subdir as marker: never repeat it.
                        if subdir != lastSubdir && subdir != query.marker {
                            results.append(.subdir(subdir))
                            lastSubdir = subdir
                        }
                        // Forward, skip the rest of the subdir at once: every name in it sorts
                        // before `<subdir>U+10FFFF` (the largest code point; a name past it
                        // rolls up into the same subdir, which is not repeated).
                        if !query.reverse {
                            after = subdir + "\u{10FFFF}"
                            break
                        }
                        if results.count == limit { break }
                        continue
                    }
                }
                results.append(.item(item))
                if results.count == limit { break }
            }
            if delimiter == nil { break }
        }
        return results
    }
}
