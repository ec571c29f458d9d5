/// A Pithos hashmap: the list of block hashes of an object and its top ("Merkle") hash.
///
/// Bit-exact with `snf-pithos-backend` `HashMap.hash` and kamaki's client-side upload:
/// - blocks are 4 MiB, each hashed with SHA-256 after stripping trailing zero bytes;
/// - an empty object has the one hash `sha256("")`;
/// - the top hash of one hash is that hash; of more, the list is padded with all-zero 32-byte
///   values to a power of two and reduced pairwise with `sha256(left || right)` over raw bytes.
public struct PithosHashmap: Equatable, Sendable {
    /// Block size in bytes (4,194,304).
    public var blockSizeBytes: Int
    /// The block hash algorithm's name, "sha256".
    public var blockHash: String
    /// The object's size in bytes.
    public var sizeBytes: UInt64
    /// One hash per block, in order.
    public var hashes: [BlockID]

    public init(sizeBytes: UInt64, hashes: [BlockID]) {
        self.blockSizeBytes = BlockStore.blockSizeBytes
        self.blockHash = BlockStore.blockHashName
        self.sizeBytes = sizeBytes
        self.hashes = hashes.isEmpty ? [.zero] : hashes
    }

    /// The hashmap of `bytes`, computed directly (for clients and tests).
    public init(hashing bytes: [UInt8]) {
        var hashes: [BlockID] = []
        bytes.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let end = min(offset + BlockStore.blockSizeBytes, raw.count)
                hashes.append(BlockID(hashing: UnsafeRawBufferPointer(rebasing: raw[offset..<end])))
                offset = end
            }
        }
        self.init(sizeBytes: UInt64(bytes.count), hashes: hashes)
    }

    /// The top hash (`X-Object-Hash`).
    public var topHash: Digest { PithosHashmap.topHash(of: hashes.map(\.digest)) }

    /// The Pithos top hash of a list of leaf hashes.
    public static func topHash(of leaves: [Digest]) -> Digest {
        if leaves.isEmpty { return .ofEmpty }
        if leaves.count == 1 { return leaves[0] }
        var width = 1
        while width < leaves.count { width <<= 1 }
        var level: [[UInt8]] = leaves.map(\.raw)
        level.append(contentsOf: repeatElement([UInt8](repeating: 0, count: 32), count: width - leaves.count))
        while level.count > 1 {
            var next: [[UInt8]] = []
            next.reserveCapacity(level.count / 2)
            for pair in stride(from: 0, to: level.count, by: 2) {
                next.append(Digest(sha256Of: level[pair] + level[pair + 1]).raw)
            }
            level = next
        }
        return level[0].withUnsafeBytes { Digest(raw: $0) }
    }
}

extension BlockStore {
    /// The Pithos hashmap of the map or volume `name`.
    ///
    /// Content-addressed and zero entries cost nothing; private blocks (of a volume, or of a
    /// snapshot not yet hashed) are read and hashed. A volume is read under its name lock.
    /// - Throws: ``StoreError/Code/notFound``; read errors of private blocks.
    public func hashmap(of name: MapName) throws -> PithosHashmap {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let record = try existingRecord(name)
            if record.kind == .readWrite {
                return try withNameLock(name) {
                    try hashmap(of: view(of: existingRecord(name)))
                }
            }
            return try hashmap(of: view(of: record))
        }
    }

    func hashmap(of view: MapView) throws -> PithosHashmap {
        var hashes: [BlockID] = []
        hashes.reserveCapacity(Int(view.count))
        var buffer: BlockBuffer?
        for index in 0..<view.count {
            let entry = view.entry(at: index)
            if let known = entry.knownBlockID {
                hashes.append(known)
                continue
            }
            let block = buffer ?? BlockBuffer(count: BlockStore.blockSizeBytes)
            buffer = block
            try readBlock(entry, into: block.pointer, of: view.record.name, index: index)
            hashes.append(BlockID(hashing: UnsafeRawBufferPointer(block.prefix(view.length(ofBlock: index)))))
        }
        return PithosHashmap(sizeBytes: view.record.sizeBytes, hashes: hashes)
    }
}
