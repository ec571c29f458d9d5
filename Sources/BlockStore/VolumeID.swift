/// The identity of one read-write volume: 128 random bits, 32 hex characters.
///
/// A fresh one is drawn for every created or cloned volume, so reusing a volume's *name* never
/// reuses the names of its private blocks (which garbage collection relies on).
public struct VolumeID: Hashable, Sendable, CustomStringConvertible {
    var high: UInt64
    var low: UInt64

    /// A new random identity.
    public static func random() -> VolumeID {
        var rng = SystemRandomNumberGenerator()
        return VolumeID(high: rng.next(), low: rng.next())
    }

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// Parses 32 hex characters.
    public init?(hex: some StringProtocol) {
        let s = String(hex)
        guard s.utf8.count == 32, let h = parseHex64(s.prefix(16)), let l = parseHex64(s.suffix(16)) else {
            return nil
        }
        high = h
        low = l
    }

    /// 32 lowercase hex characters.
    public var hex: String { hexString(high) + hexString(low) }
    public var description: String { hex }
}

/// The name of a private (writable) block of a volume: volume, epoch and block index.
///
/// A snapshot bumps the volume's epoch, so a private block name is never written again once a
/// snapshot refers to it. Key form: `<volume 32 hex>/<epoch 16 hex>_<index 16 hex>`.
public struct VolumeBlockID: Hashable, Sendable, CustomStringConvertible {
    /// The volume that wrote the block.
    public var volume: VolumeID
    /// The volume's epoch when the block was written.
    public var epoch: UInt64
    /// The block's index in the volume (byte offset / block size).
    public var index: UInt64

    public init(volume: VolumeID, epoch: UInt64, index: UInt64) {
        self.volume = volume
        self.epoch = epoch
        self.index = index
    }

    /// Parses a key of the form `<volume>/<epoch>_<index>`.
    public init?(key: some StringProtocol) {
        let s = String(key)
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let v = VolumeID(hex: parts[0]) else { return nil }
        guard let rest = VolumeBlockID.parseLeaf(parts[1]) else { return nil }
        self.init(volume: v, epoch: rest.epoch, index: rest.index)
    }

    /// Parses the part after the slash, `<epoch>_<index>`.
    static func parseLeaf(_ leaf: some StringProtocol) -> (epoch: UInt64, index: UInt64)? {
        let parts = leaf.split(separator: "_", omittingEmptySubsequences: false)
        guard parts.count == 2, let e = parseHex64(parts[0]), let i = parseHex64(parts[1]) else { return nil }
        return (e, i)
    }

    /// The backend key: `<volume>/<epoch>_<index>`.
    public var key: String { volume.hex + "/" + hexString(epoch) + "_" + hexString(index) }
    public var description: String { key }
}
