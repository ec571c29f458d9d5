#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The entry list of a map, stored immutably under the SHA-256 of its encoding (``MapID``).
///
/// Encoding (format 1, all integers big-endian; frozen in `docs/design/store-format.md`):
///
///     offset size  field
///          0    8  magic "SNFMAP" 0x00 0x01
///          8    4  block size in bytes (4,194,304)
///         12    8  entry count N
///         20  33N  entries: 1 tag byte + 32 payload bytes
///                  tag 0 zero block           payload all zero
///                  tag 1 content block        payload = SHA-256 (the BlockID)
///                  tag 2 volume private block payload = volume id (16) + epoch (8) + index (8)
///
/// 33 bytes per 4 MiB block: a 1 GiB map is 256 entries = 8,468 bytes, a 100 GiB map is
/// 25,600 entries = 844,820 bytes.
public struct MapBody: Equatable, Sendable {
    /// Bytes of each encoded entry.
    public static let entryBytes = 33
    /// Bytes before the first entry.
    public static let headerBytes = 20
    static let magic: [UInt8] = Array("SNFMAP".utf8) + [0, 1]

    /// The entries, one per block, in block order.
    public var entries: [MapEntry]

    public init(entries: [MapEntry]) { self.entries = entries }

    /// The stored form (see the type's documentation).
    public func encoded(blockSizeBytes: Int = BlockStore.blockSizeBytes) -> [UInt8] {
        let count = MapBody.headerBytes + entries.count * MapBody.entryBytes
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            memset(raw.baseAddress!, 0, count)
            for (i, b) in MapBody.magic.enumerated() { raw[i] = b }
            raw.storeBytes(of: UInt32(blockSizeBytes).bigEndian, toByteOffset: 8, as: UInt32.self)
            raw.storeBytes(of: UInt64(entries.count).bigEndian, toByteOffset: 12, as: UInt64.self)
            var offset = MapBody.headerBytes
            for entry in entries {
                let slot = UnsafeMutableRawBufferPointer(rebasing: raw[offset + 1..<offset + MapBody.entryBytes])
                switch entry {
                case .zero:
                    raw[offset] = 0
                case .block(let id):
                    raw[offset] = 1
                    id.digest.write(to: slot)
                case .volumeBlock(let v):
                    raw[offset] = 2
                    slot.storeBytes(of: v.volume.high.bigEndian, toByteOffset: 0, as: UInt64.self)
                    slot.storeBytes(of: v.volume.low.bigEndian, toByteOffset: 8, as: UInt64.self)
                    slot.storeBytes(of: v.epoch.bigEndian, toByteOffset: 16, as: UInt64.self)
                    slot.storeBytes(of: v.index.bigEndian, toByteOffset: 24, as: UInt64.self)
                }
                offset += MapBody.entryBytes
            }
            initialized = count
        }
    }

    /// Parses a stored body. Throws ``StoreError/Code/corrupt`` naming `what` when it does not parse.
    public init(decoding bytes: UnsafeRawBufferPointer, what: String) throws {
        func corrupt(_ why: String) -> StoreError {
            StoreError(.corrupt, "\(what) is corrupt: \(why); run `snf-store check`")
        }
        guard bytes.count >= MapBody.headerBytes, Array(bytes[0..<8]) == MapBody.magic else {
            throw corrupt("bad header")
        }
        let blockSize = UInt32(bigEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
        guard blockSize == UInt32(BlockStore.blockSizeBytes) else {
            throw corrupt("block size \(blockSize), expected \(BlockStore.blockSizeBytes)")
        }
        let count = UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: 12, as: UInt64.self))
        guard count <= UInt64(Int.max / MapBody.entryBytes),
            bytes.count == MapBody.headerBytes + Int(count) * MapBody.entryBytes
        else {
            throw corrupt("length \(bytes.count) does not fit \(count) entries")
        }
        var entries: [MapEntry] = []
        entries.reserveCapacity(Int(count))
        var offset = MapBody.headerBytes
        for _ in 0..<Int(count) {
            let slot = UnsafeRawBufferPointer(rebasing: bytes[offset + 1..<offset + MapBody.entryBytes])
            switch bytes[offset] {
            case 0:
                entries.append(.zero)
            case 1:
                entries.append(.block(BlockID(digest: Digest(raw: slot))))
            case 2:
                let high = UInt64(bigEndian: slot.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
                let low = UInt64(bigEndian: slot.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
                let epoch = UInt64(bigEndian: slot.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
                let index = UInt64(bigEndian: slot.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
                entries.append(
                    .volumeBlock(VolumeBlockID(volume: VolumeID(high: high, low: low), epoch: epoch, index: index)))
            case let tag:
                throw corrupt("unknown entry tag \(tag) at entry \((offset - MapBody.headerBytes) / MapBody.entryBytes)")
            }
            offset += MapBody.entryBytes
        }
        self.entries = entries
    }
}
