import BlockStore
import BlockStorePosix
import Crypto
import Foundation
import NIOCore
import NIOPosix
import SQLKit

/// The blocks a hashmap PUT names that the project does not hold: the 409 answer.
public struct MissingBlocks: Error, Sendable, Equatable {
    /// Lowercase hex, in order of first appearance, without duplicates.
    public var hashes: [String]
}

extension ObjectStorageService {
    /// The Pithos hashmap of an object (storage-model.md section 3). Metadata only for objects
    /// stored as content-addressed blocks.
    public func hashmap(project: String, container: String, name: String) async throws -> (StoredObject, PithosHashmap) {
        let object = try await object(project: project, container: container, name: name)
        if let slo = object.slo, !slo.concatenated {
            throw CloudError.conflict("This static large object is read through its segments and has no hashmap of its own.")
        }
        let store = self.store
        let map = try MapName(object.mapName)
        let hashmap = try await StoreIO.run { try store.hashmap(of: map) }
        return (object, hashmap)
    }

    /// Creates an object from a Pithos hashmap, writing no block: every block must be one the
    /// project already holds (uploaded with ``uploadBlocks(project:container:body:)`` or part
    /// of one of its objects) and still stored. Otherwise throws ``MissingBlocks`` listing the
    /// others, whether or not another project holds them: dedup never reveals other projects' data.
    ///
    /// The ETag is the MD5 of the bytes, read back from the store.
    public func putHashmap(
        project: String, container: String, name: String, sizeBytes: Int64, hashes: [String], upload: Upload
    ) async throws -> StoredObject {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        try MetadataChange.check(upload.metadata)
        guard sizeBytes >= 0, sizeBytes <= ObjectLimits.maxFileSizeBytes else {
            throw CloudError(status: 413, message: "Your request is too large.")
        }
        var parsed: [BlockID] = []
        for hash in hashes {
            guard hash.count == 64, let id = BlockID(hex: hash.lowercased()) else {
                throw CloudError.badRequest("Invalid hashmap: \(hash.prefix(70)) is not a SHA-256 in hex.")
            }
            parsed.append(id)
        }
        if sizeBytes == 0 && parsed.isEmpty { parsed = [.zero] }
        let ids = parsed
        guard UInt64(ids.count) == max(1, BlockStore.blockCount(forSize: UInt64(sizeBytes))) else {
            throw CloudError.badRequest("Invalid hashmap: \(ids.count) hashes do not describe \(sizeBytes) bytes.")
        }
        _ = try await self.container(project: project, name: container)
        let wanted = Set(ids.filter { !$0.isZero }.map(\.hex))
        let known = try await database.read { db in try await ObjectTables.knownBlocks(project: project, wanted, db) }
        let store = self.store
        let absent = try await StoreIO.run {
            try store.absentBlocks(ids.filter { known.contains($0.hex) })
        }
        var missing: [String] = []
        var seen: Set<String> = []
        for id in ids where !id.isZero && (!known.contains(id.hex) || absent.contains(id)) {
            if seen.insert(id.hex).inserted { missing.append(id.hex) }
        }
        guard missing.isEmpty else { throw MissingBlocks(hashes: missing) }
        let mapName = try MapName("obj-" + UUID().uuidString.lowercased())
        do {
            try await StoreIO.run {
                _ = try store.createMap(named: mapName, sizeBytes: UInt64(sizeBytes), blocks: ids)
            }
        } catch let error as StoreError where error.code == .missing {
            // Garbage collection took a block since the check: the client uploads it again.
            throw MissingBlocks(hashes: missing.isEmpty ? Array(wanted.sorted()) : missing)
        }
        let entries: [MapEntry] = ids.map { $0.isZero ? .zero : .block($0) }
        var md5 = Insecure.MD5()
        do {
            for index in 0..<Int(BlockStore.blockCount(forSize: UInt64(sizeBytes))) {
                let block = try await readBlock(entries, index: index, sizeBytes: sizeBytes)
                block.withUnsafeReadableBytes { md5.update(bufferPointer: $0) }
            }
        } catch {
            await removeMap(mapName.rawValue)
            throw error
        }
        let etag = md5.finalize().map { String(format: "%02x", $0) }.joined()
        if let expected = upload.expectedETag, Self.normalizedETag(expected) != etag {
            await removeMap(mapName.rawValue)
            throw CloudError(status: 422, message: "Unprocessable Entity: the ETag does not match the MD5 of the body.")
        }
        let now = Timestamp.now()
        let object = StoredObject(
            container: container, name: name, mapName: mapName.rawValue, sizeBytes: sizeBytes, etag: etag,
            contentType: upload.contentType ?? "application/octet-stream", metadata: upload.metadata, manifest: nil,
            createdAt: now, modifiedAt: now)
        try await publish(project: project, object, blocks: wanted)
        return object
    }

    /// Pithos `POST <container>?update` with raw data: stores it as 4 MiB blocks (each once) and
    /// returns their hashes in order; the project then holds them for a hashmap PUT.
    public func uploadBlocks<Body: AsyncSequence & Sendable>(project: String, container: String, body: Body)
        async throws -> [String] where Body.Element == ByteBuffer
    {
        _ = try await self.container(project: project, name: container)
        let streamed = try await streamBlocks(body, limit: ObjectLimits.maxFileSizeBytes)
        guard streamed.sizeBytes > 0 else { return [] }
        let store = self.store
        try await StoreIO.run { try store.backend.flush() }
        let stored = streamed.storedHashes
        try await database.transaction { db in try await ObjectTables.recordBlocks(project: project, stored, db) }
        return streamed.blocks.map(\.hex)
    }

    // MARK: Dynamic large objects

    /// Stores a DLO manifest: an empty object whose content is, on read, every object of the
    /// manifest's container whose name starts with its prefix, in name order.
    public func putManifest(project: String, container: String, name: String, manifest: String, upload: Upload)
        async throws -> StoredObject
    {
        _ = try Self.manifestTarget(manifest)
        let empty = ByteBufferSequence()
        var upload = upload
        upload.declaredLength = nil
        upload.expectedETag = nil
        var object = try await putObject(project: project, container: container, name: name, upload: upload, body: empty)
        object.manifest = manifest
        let stored = object
        try await database.transaction { db in
            try await db.update("objects").set("manifest", to: SQLBind(manifest))
                .where("project_id", .equal, SQLBind(project)).where("container", .equal, SQLBind(container))
                .where("name", .equal, SQLBind(name)).where("map_name", .equal, SQLBind(stored.mapName)).run()
        }
        return object
    }

    /// The segments of a DLO manifest (at most 10,000, as Swift's listing limit).
    public func segments(project: String, manifest: String) async throws -> [StoredObject] {
        let (container, prefix) = try Self.manifestTarget(manifest)
        var query = ListingQuery()
        query.prefix = prefix
        var segments: [StoredObject] = []
        while segments.count < ObjectLimits.listingLimit {
            query.marker = segments.last?.name
            let page: [ListingEntry<StoredObject>]
            do {
                page = try await listObjects(project: project, container: container, query)
            } catch let error as CloudError where error.status == 404 {
                return []
            }
            let objects = page.compactMap { if case .item(let o) = $0 { o } else { nil } }
            if objects.isEmpty { break }
            segments += objects
        }
        return segments
    }

    /// `container/prefix` (percent-encoded or not) → its parts.
    static func manifestTarget(_ manifest: String) throws(CloudError) -> (String, String) {
        let decoded = manifest.removingPercentEncoding ?? manifest
        let trimmed = decoded.drop { $0 == "/" }
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw .badRequest("X-Object-Manifest must be in the format container/prefix")
        }
        try ObjectNames.checkContainer(String(parts[0]))
        return (String(parts[0]), String(parts[1]))
    }
}

/// An empty body.
struct ByteBufferSequence: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    struct AsyncIterator: AsyncIteratorProtocol {
        mutating func next() async throws -> ByteBuffer? { nil }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator() }
}
