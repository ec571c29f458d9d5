/// One import cache entry: the file version (``SourceIdentity``) last imported, and its map.
///
/// Text, ending with a SHA-256 of the lines above (like ``MapRecord``):
///
///     snf-store-import-cache 1
///     size 1073741824
///     modified 1763891234123456789
///     changed 1763891234123456789
///     map <64 hex> | -
///     sha256 <64 hex>
public struct ImportCacheEntry: Equatable, Sendable {
    public var identity: SourceIdentity
    /// The map body the file's content produced; nil when every block was zero.
    public var map: MapID?

    static let header = "snf-store-import-cache 1"

    public init(identity: SourceIdentity, map: MapID?) {
        self.identity = identity
        self.map = map
    }

    public func encoded() -> [UInt8] {
        var text = ImportCacheEntry.header + "\n"
        text += "size \(identity.sizeBytes)\n"
        text += "modified \(identity.modifiedNanoseconds)\n"
        text += "changed \(identity.changedNanoseconds)\n"
        text += "map \(map?.hex ?? "-")\n"
        text += "sha256 \(Digest(sha256Of: Array(text.utf8)).hex)\n"
        return Array(text.utf8)
    }

    /// Parses an entry stored under `key`; nil when it does not parse (a damaged entry is a
    /// cache miss, and `check` reports it).
    public init?(decoding bytes: [UInt8], key: String) {
        let parts = key.split(separator: "-")
        guard parts.count == 2, let device = parseHex64(parts[0]), let inode = parseHex64(parts[1]) else { return nil }
        let text = String(decoding: bytes, as: UTF8.self)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.last == "", lines.count == 7 else { return nil }
        lines.removeLast()
        let body = lines.dropLast().map { $0 + "\n" }.joined()
        guard lines[0] == ImportCacheEntry.header, lines[5] == "sha256 " + Digest(sha256Of: Array(body.utf8)).hex else {
            return nil
        }
        func field(_ line: String, _ name: String) -> String? {
            line.hasPrefix(name + " ") ? String(line.dropFirst(name.count + 1)) : nil
        }
        guard let size = field(lines[1], "size").flatMap({ UInt64($0) }),
            let modified = field(lines[2], "modified").flatMap({ Int64($0) }),
            let changed = field(lines[3], "changed").flatMap({ Int64($0) }),
            let mapText = field(lines[4], "map")
        else { return nil }
        if mapText == "-" {
            map = nil
        } else {
            guard let id = MapID(hex: mapText) else { return nil }
            map = id
        }
        identity = SourceIdentity(
            device: device, inode: inode, sizeBytes: size, modifiedNanoseconds: modified, changedNanoseconds: changed)
    }
}

extension BlockStore {
    /// How long before an import a file's change time must lie for its identity to be trusted:
    /// generous against coarse kernel timestamps (a few milliseconds).
    static let racyMarginNanoseconds: Int64 = 2_000_000_000

    /// The entries of the map an unchanged file was imported as, if the import cache knows the
    /// file and everything the map needs is still stored (blocks are re-stamped for the grace
    /// period). Nil on any doubt: the caller then reads the file.
    func cachedImport(of identity: SourceIdentity) throws -> (map: MapID?, entries: Int)? {
        guard let bytes = try backend.get(.importCache, identity.cacheKey),
            let entry = ImportCacheEntry(decoding: bytes, key: identity.cacheKey), entry.identity == identity
        else { return nil }
        let count = Int(BlockStore.blockCount(forSize: identity.sizeBytes))
        guard let map = entry.map else { return (nil, count) }
        let body: MapBody
        do {
            body = try loadBody(map, of: MapName("import-cache"))
        } catch let error as StoreError where error.code == .missing || error.code == .corrupt {
            return nil
        }
        guard body.entries.count == count else { return nil }
        for case .block(let id) in body.entries {
            guard try backend.touch(.block, id.hex) else { return nil }
        }
        return (map, count)
    }

    /// Remembers that `identity` imported as `map`, when it is safe to: the file's change time
    /// lay at least ``racyMarginNanoseconds`` before the import began and did not move during it.
    func rememberImport(of before: SourceIdentity, after: SourceIdentity?, startedNanoseconds: Int64, map: MapID?) throws {
        guard let after, after == before,
            before.changedNanoseconds <= startedNanoseconds - BlockStore.racyMarginNanoseconds
        else { return }
        let bytes = ImportCacheEntry(identity: before, map: map).encoded()
        try bytes.withUnsafeBytes { _ = try backend.put(.importCache, before.cacheKey, $0, mode: .replace) }
    }
}
