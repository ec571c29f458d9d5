extension BlockStore {
    /// Stores one block of a map being built a block at a time (a streamed upload), and returns
    /// its id; ``createMap(named:sizeBytes:blocks:)`` then publishes the map from the ids.
    ///
    /// `bytes` is at most one block (4 MiB); shorter means zero-padded (the last block of a map).
    /// Trailing zeros are stripped before hashing, as in every map. An all-zero block is never
    /// stored and returns ``BlockID/zero``. A block already stored is not written again, only
    /// re-stamped. A new block is written crash-safe by the backend (scratch file, fsync, link):
    /// its content is durable on return, its name after the next flush (which `createMap` does
    /// before publishing). Until a map names it, garbage collection keeps it for its grace period
    /// (measured from this call), so a map must be created within that period.
    /// Safe to call from several threads at once.
    /// - Throws: ``StoreError/Code/invalidArgument`` when `bytes` is longer than a block, or the
    ///   backend's errors.
    public func putBlock(_ bytes: UnsafeRawBufferPointer) throws -> BlockID {
        guard bytes.count <= BlockStore.blockSizeBytes else {
            throw StoreError(.invalidArgument, "a block holds at most \(BlockStore.blockSizeBytes) bytes, not \(bytes.count)")
        }
        return try backend.withLock(BlockStore.gcLock, exclusive: false) {
            switch try storeBlock(bytes) {
            case .block(let id): id
            default: .zero
            }
        }
    }
}
