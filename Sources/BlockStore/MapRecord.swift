/// The named record of a map or volume: what a name means.
///
/// Records are small text files, replaced atomically, ending with a SHA-256 of the lines above so
/// that bit rot is detected (format frozen in `docs/design/store-format.md`):
///
///     snf-store-record 1
///     name vol1
///     kind rw
///     size 1073741824
///     map 4c1f…(64 hex) | -
///     volume 9a0e…(32 hex) | -
///     epoch 3
///     origin img1 | -
///     created 1763891234
///     sha256 <64 hex of all the lines above, newlines included>
public struct MapRecord: Equatable, Sendable {
    /// Read-only maps (images, snapshots, objects) and read-write volumes.
    public enum Kind: String, Sendable {
        /// A frozen map: every entry is content-addressed, zero, or a frozen private block.
        case readOnly = "ro"
        /// A volume: its current-epoch private blocks overlay its base map.
        case readWrite = "rw"
    }

    /// The name the record is stored under.
    public var name: MapName
    /// Read-only map or read-write volume.
    public var kind: Kind
    /// Logical size in bytes.
    public var sizeBytes: UInt64
    /// The body holding the entries; nil when every entry is the zero block. For a volume this is
    /// its *base*: the entries before its current epoch's private blocks.
    public var map: MapID?
    /// The volume identity (read-write only).
    public var volume: VolumeID?
    /// The volume's current epoch (read-write only; 0 for read-only maps). Starts at 1.
    public var epoch: UInt64
    /// The name this was cloned, snapshotted or imported from, for operators (informational).
    public var origin: String?
    /// Creation time, seconds since the Unix epoch.
    public var createdSeconds: Int64

    public init(
        name: MapName, kind: Kind, sizeBytes: UInt64, map: MapID?, volume: VolumeID?, epoch: UInt64,
        origin: String?, createdSeconds: Int64
    ) {
        self.name = name
        self.kind = kind
        self.sizeBytes = sizeBytes
        self.map = map
        self.volume = volume
        self.epoch = epoch
        self.origin = origin
        self.createdSeconds = createdSeconds
    }

    /// The number of block entries: ceil(size / block size).
    public var blockCount: UInt64 { BlockStore.blockCount(forSize: sizeBytes) }

    static let header = "snf-store-record 1"

    /// The stored form.
    public func encoded() -> [UInt8] {
        var text = MapRecord.header + "\n"
        text += "name \(name.rawValue)\n"
        text += "kind \(kind.rawValue)\n"
        text += "size \(sizeBytes)\n"
        text += "map \(map?.hex ?? "-")\n"
        text += "volume \(volume?.hex ?? "-")\n"
        text += "epoch \(epoch)\n"
        text += "origin \(origin ?? "-")\n"
        text += "created \(createdSeconds)\n"
        let sum = Digest(sha256Of: Array(text.utf8))
        text += "sha256 \(sum.hex)\n"
        return Array(text.utf8)
    }

    /// Parses a stored record. Throws ``StoreError/Code/corrupt`` naming `what` when it does not parse.
    public init(decoding bytes: [UInt8], what: String) throws {
        func corrupt(_ why: String) -> StoreError {
            StoreError(.corrupt, "\(what) is corrupt: \(why); run `snf-store check`")
        }
        guard let lastLineStart = bytes.dropLast().lastIndex(of: UInt8(ascii: "\n")).map({ $0 + 1 }),
            bytes.last == UInt8(ascii: "\n")
        else { throw corrupt("truncated") }
        let body = Array(bytes[..<lastLineStart])
        let sumLine = String(decoding: bytes[lastLineStart..<(bytes.count - 1)], as: UTF8.self)
        guard sumLine.hasPrefix("sha256 "), let sum = Digest(hex: sumLine.dropFirst(7)) else {
            throw corrupt("no checksum line")
        }
        guard Digest(sha256Of: body) == sum else { throw corrupt("checksum mismatch") }
        let lines = String(decoding: body, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.first.map(String.init) == MapRecord.header else { throw corrupt("unknown format") }
        var fields: [String: String] = [:]
        for line in lines.dropFirst() where !line.isEmpty {
            guard let space = line.firstIndex(of: " ") else { throw corrupt("bad line") }
            fields[String(line[..<space])] = String(line[line.index(after: space)...])
        }
        func field(_ key: String) throws -> String {
            guard let v = fields[key] else { throw corrupt("no \(key) field") }
            return v
        }
        do {
            name = try MapName(try field("name"))
        } catch let error as StoreError where error.code == .invalidName {
            throw corrupt("bad name")
        }
        guard let k = Kind(rawValue: try field("kind")) else { throw corrupt("bad kind") }
        kind = k
        guard let size = UInt64(try field("size")) else { throw corrupt("bad size") }
        sizeBytes = size
        let mapText = try field("map")
        if mapText == "-" {
            map = nil
        } else {
            guard let m = MapID(hex: mapText) else { throw corrupt("bad map id") }
            map = m
        }
        let volumeText = try field("volume")
        if volumeText == "-" {
            volume = nil
        } else {
            guard let v = VolumeID(hex: volumeText) else { throw corrupt("bad volume id") }
            volume = v
        }
        guard let e = UInt64(try field("epoch")) else { throw corrupt("bad epoch") }
        epoch = e
        let originText = try field("origin")
        origin = originText == "-" ? nil : originText
        guard let created = Int64(try field("created")) else { throw corrupt("bad created time") }
        createdSeconds = created
        if kind == .readWrite && (volume == nil || epoch == 0) {
            throw corrupt("a volume record without volume id or epoch")
        }
    }
}
