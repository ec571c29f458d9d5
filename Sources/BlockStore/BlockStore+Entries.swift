extension BlockStore {
    /// The entries of a map or volume as a pure metadata read (for comparisons such as "is this
    /// volume still an untouched clone of that image"): nothing is written, no name lock is
    /// taken, so it works while the node daemon serves the volume.
    public struct ResolvedEntries: Sendable, Equatable {
        public var record: MapRecord
        /// One entry per block: the base map, with the volume's current-epoch private blocks over it.
        public var entries: [MapEntry]
        /// A volume with copy-on-write copies in progress (partial or pending private blocks):
        /// which blocks they belong to is not resolved here, so the entries may be incomplete.
        public var hasUnsettledBlocks: Bool
    }

    /// Reads the record of `name` and resolves its entries without changing anything.
    /// - Throws: ``StoreError/Code/notFound``; ``StoreError/Code/corrupt`` or
    ///   ``StoreError/Code/missing`` for a damaged map body.
    public func resolvedEntries(of name: MapName) throws -> ResolvedEntries {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let record = try existingRecord(name)
            let base = try record.map.map { try loadBody($0, of: record.name).entries } ?? []
            let count = Int(record.blockCount)
            var entries = Array(base.prefix(count))
            if entries.count < count { entries += Array(repeating: .zero, count: count - entries.count) }
            var unsettled = false
            if record.kind == .readWrite, let volume = record.volume {
                for info in try backend.list(.volumeBlock, prefix: volume.hex + "/") {
                    guard let id = VolumeBlockID(key: info.key) else {
                        unsettled = true
                        continue
                    }
                    if id.epoch == record.epoch && id.index < record.blockCount { entries[Int(id.index)] = .volumeBlock(id) }
                }
            }
            return ResolvedEntries(record: record, entries: entries, hasUnsettledBlocks: unsettled)
        }
    }
}
