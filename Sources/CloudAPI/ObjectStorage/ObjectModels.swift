import Foundation

/// Swift's limits (`/info`), enforced on every request.
public enum ObjectLimits {
    public static let maxContainerNameBytes = 256
    public static let maxObjectNameBytes = 1024
    /// 5 GiB + 2, Swift's default `max_file_size`.
    public static let maxFileSizeBytes: Int64 = 5 * 1024 * 1024 * 1024 + 2
    public static let maxMetaNameBytes = 128
    public static let maxMetaValueBytes = 256
    public static let maxMetaCount = 90
    public static let maxMetaOverallBytes = 4096
    public static let listingLimit = 10_000
}

/// Name rules. Names live in the metadata database only (the bytes are block-store maps named
/// by the service), so no name ever reaches a path on disk; these rules still refuse what Swift
/// refuses and what a client could mistake for a path step.
enum ObjectNames {
    /// A container: 1 to 256 bytes of UTF-8, no `/`, no control characters, not `.` or `..`.
    static func checkContainer(_ name: String) throws(CloudError) {
        let bytes = name.utf8
        guard !bytes.isEmpty else { throw .badRequest("A container name cannot be empty.") }
        guard bytes.count <= ObjectLimits.maxContainerNameBytes else {
            // Swift's own text (clients and tempest match it).
            throw .badRequest("Container name length of \(bytes.count) longer than \(ObjectLimits.maxContainerNameBytes)")
        }
        guard !bytes.contains(UInt8(ascii: "/")) else { throw .badRequest("A container name cannot contain '/'.") }
        guard name != "." && name != ".." else { throw .badRequest("A container name cannot be '.' or '..'.") }
        try checkCharacters(name, what: "container")
    }

    /// An object: 1 to 1024 bytes of UTF-8, no control characters, no `.` or `..` path step.
    static func checkObject(_ name: String) throws(CloudError) {
        let bytes = name.utf8
        guard !bytes.isEmpty else { throw .badRequest("An object name cannot be empty.") }
        guard bytes.count <= ObjectLimits.maxObjectNameBytes else {
            throw .badRequest("An object name has at most \(ObjectLimits.maxObjectNameBytes) bytes.")
        }
        for step in name.split(separator: "/", omittingEmptySubsequences: false) where step == "." || step == ".." {
            throw .badRequest("An object name cannot contain a '.' or '..' path step.")
        }
        try checkCharacters(name, what: "object")
    }

    private static func checkCharacters(_ name: String, what: String) throws(CloudError) {
        for scalar in name.unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7f {
            throw .badRequest("A \(what) name cannot contain control characters.")
        }
    }
}

/// A container with its usage.
public struct ObjectContainer: Sendable, Equatable {
    public var name: String
    public var metadata: [String: String]
    public var createdAt: Timestamp
    public var modifiedAt: Timestamp
    public var objectCount: Int64
    public var bytesUsed: Int64
}

/// An object's metadata row. Its bytes are the block-store map `mapName`.
public struct StoredObject: Sendable, Equatable {
    public var container: String
    public var name: String
    public var mapName: String
    public var sizeBytes: Int64
    /// MD5 of the bytes, 32 lowercase hex characters.
    public var etag: String
    public var contentType: String
    public var metadata: [String: String]
    /// A dynamic large object's `container/prefix` (`X-Object-Manifest`); its own map is empty.
    public var manifest: String?
    public var createdAt: Timestamp
    public var modifiedAt: Timestamp
    /// A static large object's manifest; nil for every other object.
    public var slo: SLOManifest? = nil

    /// User metadata (`X-Object-Meta-*`), without the stored system headers.
    public var userMetadata: [String: String] { metadata.filter { !$0.key.hasPrefix(ObjectSystemHeaders.prefix) } }

    /// The stored system headers (`Content-Disposition`, `X-Delete-At`, ...), by lowercase name.
    public var systemHeaders: [String: String] {
        var out: [String: String] = [:]
        for (key, value) in metadata where key.hasPrefix(ObjectSystemHeaders.prefix) {
            out[String(key.dropFirst(ObjectSystemHeaders.prefix.count))] = value
        }
        return out
    }

    /// `X-Delete-At` (Unix seconds) when the object expires.
    public var deleteAt: Int64? { metadata[ObjectSystemHeaders.prefix + "x-delete-at"].flatMap { Int64($0) } }

    /// True once `X-Delete-At` has passed: the object reads as absent and is removed.
    public func isExpired(at now: Timestamp = .now()) -> Bool {
        guard let deleteAt else { return false }
        return deleteAt * 1_000_000 <= now.microseconds
    }
}

/// Headers Swift stores with an object besides user metadata (its `allowed_headers`, and
/// `X-Delete-At`). They live in the object's metadata column under keys that start with `sys:`,
/// which no user metadata name can (a colon is not allowed in an HTTP field name). Like user
/// metadata, a PUT sets them, a POST replaces them all, a copy keeps them (but `X-Delete-At`).
public enum ObjectSystemHeaders {
    static let prefix = "sys:"
    /// Stored as sent and returned on GET and HEAD.
    static let passedThrough = [
        "content-disposition", "content-encoding", "content-language", "cache-control", "expires", "x-robots-tag",
    ]
}

/// An account's usage.
public struct ObjectAccount: Sendable, Equatable {
    public var containerCount: Int64
    public var objectCount: Int64
    public var bytesUsed: Int64
    public var metadata: [String: String]
    /// The storage quota in force (bytes), nil when unlimited.
    public var quotaBytes: Int64? = nil

    /// Where the object-count quota (`X-Account-Quota-Count`) is kept in the account's metadata
    /// (a key no `X-Account-Meta-*` name can be).
    static let countQuotaKey = ObjectSystemHeaders.prefix + "quota-count"

    /// The most objects the account may hold (`X-Account-Quota-Count`), nil when unlimited.
    public var countQuota: Int64? { Self.countQuota(in: metadata) }

    static func countQuota(in metadata: [String: String]) -> Int64? { metadata[countQuotaKey].flatMap { Int64($0) } }
}

/// The paging and filtering parameters of a listing.
public struct ListingQuery: Sendable, Equatable {
    public var limit: Int = ObjectLimits.listingLimit
    public var marker: String?
    public var endMarker: String?
    public var prefix: String = ""
    public var delimiter: String?
    public var reverse = false

    public init() {}
}

/// One line of a listing: an entry, or a common prefix rolled up at the delimiter.
public enum ListingEntry<Item: Sendable>: Sendable {
    case item(Item)
    case subdir(String)
}

/// A change to user metadata: pairs to set (an empty value removes, except on objects, where
/// Swift keeps it), names to remove, or a replacement of the whole set (object POST).
public struct MetadataChange: Sendable, Equatable {
    public var set: [String: String] = [:]
    public var remove: Set<String> = []
    public var replaceAll = false
    /// Objects keep metadata with an empty value; accounts and containers remove it.
    public var keepsEmptyValues = false

    public init() {}

    func applied(to current: [String: String]) -> [String: String] {
        var result = replaceAll ? [:] : current
        for name in remove { result[name] = nil }
        for (name, value) in set { result[name] = value.isEmpty && !keepsEmptyValues ? nil : value }
        return result
    }

    /// Swift's metadata limits on the resulting set (user metadata only); 400 when one is broken.
    static func check(_ all: [String: String]) throws(CloudError) {
        let metadata = all.filter { !$0.key.hasPrefix(ObjectSystemHeaders.prefix) }
        guard metadata.count <= ObjectLimits.maxMetaCount else {
            throw .badRequest("Too many metadata items; max \(ObjectLimits.maxMetaCount).")
        }
        var total = 0
        for (name, value) in metadata {
            guard name.utf8.count <= ObjectLimits.maxMetaNameBytes else {
                throw .badRequest("Metadata name too long; max \(ObjectLimits.maxMetaNameBytes).")
            }
            guard value.utf8.count <= ObjectLimits.maxMetaValueBytes else {
                throw .badRequest("Metadata value longer than \(ObjectLimits.maxMetaValueBytes).")
            }
            total += name.utf8.count + value.utf8.count
        }
        guard total <= ObjectLimits.maxMetaOverallBytes else {
            throw .badRequest("Total metadata too large; max \(ObjectLimits.maxMetaOverallBytes).")
        }
    }
}

extension Dictionary where Key == String, Value == String {
    /// The metadata column: a JSON object.
    var metadataJSON: String {
        String(decoding: JSON.object(mapValues { JSON.string($0) }).encoded(), as: UTF8.self)
    }

    static func fromMetadataJSON(_ text: String) -> [String: String] {
        guard let object = (try? JSON.parse(Data(text.utf8)))?.objectValue else { return [:] }
        return object.compactMapValues(\.stringValue)
    }
}
