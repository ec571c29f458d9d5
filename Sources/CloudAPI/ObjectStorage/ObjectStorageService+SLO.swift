import BlockStore
import Crypto
import Foundation
import NIOCore
import NIOPosix

/// One segment of a static large object, as recorded when the manifest was stored.
public struct SLOSegment: Sendable, Equatable {
    public var container: String
    public var name: String
    /// The segment's ETag then (its MD5, lowercase hex).
    public var etag: String
    public var sizeBytes: Int64
    public var contentType: String
    public var modifiedAt: Timestamp
}

/// A static large object's manifest (`?multipart-manifest=put`).
///
/// When every segment but the last is a whole number of 4 MiB blocks, the object's own map is
/// the concatenation of the segments' block lists (`concatenated`): it reads like any object and
/// outlives its segments. Otherwise its map is empty and a read goes through the segments, which
/// must still be there with the same ETags.
public struct SLOManifest: Sendable, Equatable {
    public var segments: [SLOSegment]
    public var concatenated: Bool

    /// Swift's SLO ETag (unquoted): the MD5 of the segments' ETags, concatenated.
    public var etag: String { md5Hex(Array(segments.map(\.etag).joined().utf8)) }

    public var sizeBytes: Int64 { segments.reduce(0) { $0 + $1.sizeBytes } }

    /// What `?multipart-manifest=get` returns: Swift's stored manifest format.
    var swiftJSON: JSON {
        .array(
            segments.map { s in
                [
                    "name": .string("/\(s.container)/\(s.name)"), "hash": .string(s.etag), "bytes": .int(Int(s.sizeBytes)),
                    "content_type": .string(s.contentType),
                    "last_modified": .string(String(s.modifiedAt.iso8601Microseconds.dropLast())),
                ]
            })
    }

    /// The `slo` column.
    func encoded() -> String {
        let segments = JSON.array(
            segments.map { s in
                [
                    "container": .string(s.container), "name": .string(s.name), "hash": .string(s.etag),
                    "bytes": .int(Int(s.sizeBytes)), "content_type": .string(s.contentType),
                    "modified_at_us": .int(Int(s.modifiedAt.microseconds)),
                ]
            })
        return String(decoding: JSON.object(["concatenated": .bool(concatenated), "segments": segments]).encoded(), as: UTF8.self)
    }

    init(segments: [SLOSegment], concatenated: Bool) {
        self.segments = segments
        self.concatenated = concatenated
    }

    init(decoding text: String) throws {
        let json = try JSON.parse(Data(text.utf8))
        guard let list = json["segments"]?.arrayValue, let concatenated = json["concatenated"]?.boolValue else {
            throw DatabaseError("an object's slo column is not a manifest")
        }
        segments = try list.map { item in
            guard let container = item["container"]?.stringValue, let name = item["name"]?.stringValue,
                let etag = item["hash"]?.stringValue, case .int(let bytes)? = item["bytes"],
                let contentType = item["content_type"]?.stringValue, case .int(let modified)? = item["modified_at_us"]
            else { throw DatabaseError("an object's slo column has a malformed segment") }
            return SLOSegment(
                container: container, name: name, etag: etag, sizeBytes: Int64(bytes), contentType: contentType,
                modifiedAt: Timestamp(microseconds: Int64(modified)))
        }
        self.concatenated = concatenated
    }
}

fileprivate func md5Hex(_ bytes: [UInt8]) -> String { Insecure.MD5.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

/// What `?multipart-manifest=delete` did.
public struct SLODeleteReport: Sendable, Equatable {
    public var deleted = 0
    public var notFound = 0
}

extension ObjectStorageService {
    /// Swift's SLO limits (`/info`).
    static let maxManifestSegments = 1000
    static let maxManifestBytes = 8 * 1024 * 1024

    /// Stores a static large object from a manifest: `[{"path": "/container/object", "etag",
    /// "size_bytes"}]` (`etag` and `size_bytes` optional or null; `range` is not supported).
    /// Every segment must be an object of this project, not a manifest read through its
    /// segments, with the given ETag and size (400 otherwise), and only the last may be empty.
    /// When the segments but the last are whole 4 MiB blocks, the new object's map is the
    /// concatenation of theirs (no block written); otherwise its map is empty and reads go
    /// through the segments. Charged its total size, like any object of that size.
    public func putStaticManifest(
        project: String, container: String, name: String, manifest: JSON, upload: Upload
    ) async throws -> StoredObject {
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        try MetadataChange.check(upload.metadata)
        guard let items = manifest.arrayValue else {
            throw CloudError.badRequest("Manifest must be a JSON list of segments.")
        }
        guard !items.isEmpty else { throw CloudError.badRequest("Manifest must have at least one segment.") }
        guard items.count <= Self.maxManifestSegments else {
            throw CloudError.badRequest("Too many segments: at most \(Self.maxManifestSegments).")
        }
        _ = try await self.container(project: project, name: container)
        var segments: [SLOSegment] = []
        var maps: [String] = []
        for (index, item) in items.enumerated() {
            guard let path = item["path"]?.stringValue else {
                throw CloudError.badRequest("Segment \(index): \"path\" (/container/object) is required.")
            }
            if let range = item["range"], !range.isNull {
                throw CloudError.badRequest("Segment \(index): ranges in a manifest are not supported.")
            }
            let (segmentContainer, segmentName) = try Self.segmentPath(path, index: index)
            let found = try await database.read { db in
                try await ObjectTables.object(project: project, container: segmentContainer, name: segmentName, db)
            }
            guard let segment = found else {
                throw CloudError.badRequest("Segment \(index): \(path) does not exist.")
            }
            guard segment.manifest == nil, segment.slo?.concatenated ?? true else {
                throw CloudError.badRequest("Segment \(index): \(path) is a manifest read through its segments; nesting those is not supported.")
            }
            if let etag = item["etag"], !etag.isNull {
                guard let value = etag.stringValue, Self.normalizedETag(value) == segment.etag else {
                    throw CloudError.badRequest("Segment \(index): Etag Mismatch for \(path).")
                }
            }
            if let size = item["size_bytes"], !size.isNull {
                guard case .int(let value) = size, Int64(value) == segment.sizeBytes else {
                    throw CloudError.badRequest("Segment \(index): Size Mismatch for \(path).")
                }
            }
            if segment.sizeBytes == 0 && index < items.count - 1 {
                throw CloudError.badRequest("Segment \(index): only the last segment may be empty.")
            }
            segments.append(
                SLOSegment(
                    container: segmentContainer, name: segmentName, etag: segment.etag, sizeBytes: segment.sizeBytes,
                    contentType: segment.contentType, modifiedAt: segment.modifiedAt))
            maps.append(segment.mapName)
        }
        let block = Int64(BlockStore.blockSizeBytes)
        let concatenated = segments.dropLast().allSatisfy { $0.sizeBytes % block == 0 }
        let slo = SLOManifest(segments: segments, concatenated: concatenated)
        if let expected = upload.expectedETag, Self.normalizedETag(expected) != slo.etag {
            throw CloudError(status: 422, message: "Unprocessable Entity: the ETag does not match the manifest's.")
        }
        guard slo.sizeBytes <= ObjectLimits.maxFileSizeBytes * Int64(Self.maxManifestSegments) else {
            throw CloudError(status: 413, message: "Your request is too large.")
        }
        let mapName = try MapName("obj-" + UUID().uuidString.lowercased())
        let store = self.store
        let sizes = segments.map(\.sizeBytes)
        let segmentMaps = maps
        let total = slo.sizeBytes
        let stored: Set<String>
        do {
            stored = try await StoreIO.run { () throws -> Set<String> in
                var blocks: [BlockID] = []
                if concatenated {
                    for (map, size) in zip(segmentMaps, sizes) {
                        let entries = try store.resolvedEntries(of: try MapName(map)).entries
                        let count = Int(BlockStore.blockCount(forSize: UInt64(size)))
                        for i in 0..<count {
                            blocks.append(i < entries.count ? (entries[i].knownBlockID ?? .zero) : .zero)
                        }
                    }
                }
                _ = try store.createMap(named: mapName, sizeBytes: concatenated ? UInt64(total) : 0, blocks: blocks)
                return Set(blocks.filter { !$0.isZero }.map(\.hex))
            }
        } catch let error as StoreError where error.code == .notFound || error.code == .missing {
            throw CloudError.conflict("A segment changed while the manifest was stored; try again.")
        }
        let now = Timestamp.now()
        let object = StoredObject(
            container: container, name: name, mapName: mapName.rawValue, sizeBytes: total, etag: slo.etag,
            contentType: upload.contentType ?? "application/octet-stream", metadata: upload.metadata, manifest: nil,
            createdAt: now, modifiedAt: now, slo: slo)
        try await publish(project: project, object, blocks: stored)
        return object
    }

    /// The segments of a static large object that reads through them (not concatenated), as
    /// they are now. 409 when one is gone or no longer has the ETag the manifest recorded.
    public func staticSegments(project: String, _ slo: SLOManifest) async throws -> [StoredObject] {
        var parts: [StoredObject] = []
        for segment in slo.segments {
            let found = try await database.read { db in
                try await ObjectTables.object(project: project, container: segment.container, name: segment.name, db)
            }
            guard let found, found.etag == segment.etag, found.sizeBytes == segment.sizeBytes else {
                throw CloudError.conflict("The segment /\(segment.container)/\(segment.name) of this large object was changed or deleted.")
            }
            parts.append(found)
        }
        return parts
    }

    /// `?multipart-manifest=delete`: deletes the segments of a static large object, then the
    /// object. A segment already gone is counted, not an error. Any other object is deleted alone.
    public func deleteStaticLargeObject(project: String, container: String, name: String) async throws -> SLODeleteReport {
        let manifest = try await object(project: project, container: container, name: name)
        var report = SLODeleteReport()
        for segment in manifest.slo?.segments ?? [] {
            do {
                try await deleteObject(project: project, container: segment.container, name: segment.name)
                report.deleted += 1
            } catch let error as CloudError where error.status == 404 {
                report.notFound += 1
            }
        }
        do {
            try await deleteObject(project: project, container: container, name: name)
            report.deleted += 1
        } catch let error as CloudError where error.status == 404 {
            report.notFound += 1
        }
        return report
    }

    /// `/container/object` (the leading `/` optional), not percent-encoded, as Swift takes it.
    static func segmentPath(_ path: String, index: Int) throws(CloudError) -> (String, String) {
        let trimmed = path.hasPrefix("/") ? path.dropFirst() : Substring(path)
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            throw .badRequest("Segment \(index): path must be /container/object.")
        }
        let container = String(parts[0])
        let name = String(parts[1])
        try ObjectNames.checkContainer(container)
        try ObjectNames.checkObject(name)
        return (container, name)
    }
}
