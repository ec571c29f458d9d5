extension BlockStore {
    /// Publishes a new read-only map `name` with the same content as the read-only map `origin`.
    ///
    /// Writes one record and no data, whatever the size: the copy names the origin's stored map
    /// body, so the two share every block (an object copy, an object registered as an image).
    /// Removing either later leaves the other intact.
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/wrongKind`` for a volume origin
    ///   (snapshot it first), ``StoreError/Code/alreadyExists``.
    @discardableResult
    public func copyMap(from origin: MapName, named name: MapName) throws -> MapRecord {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let source = try existingRecord(origin)
            guard source.kind == .readOnly else {
                throw StoreError(.wrongKind, "\(origin) is a read-write volume and cannot be copied as a map; snapshot it first")
            }
            try requireAbsent(name)
            let record = MapRecord(
                name: name, kind: .readOnly, sizeBytes: source.sizeBytes, map: source.map, volume: nil, epoch: 0,
                origin: origin.rawValue, createdSeconds: now())
            try publishNew(record)
            return record
        }
    }
}

extension BlockStore {
    /// Which of `blocks` are not in the store (the zero block never is, and is never missing).
    public func absentBlocks(_ blocks: [BlockID]) throws -> Set<BlockID> {
        var absent: Set<BlockID> = []
        for id in Set(blocks) where !id.isZero {
            if try backend.stat(.block, id.hex) == nil { absent.insert(id) }
        }
        return absent
    }

    /// Publishes a new read-only map `name` of `sizeBytes` whose blocks are `blocks` (a Pithos
    /// hashmap), all of which must already be stored: no block is written, only the map body and
    /// the record. Each block is re-stamped, so garbage collection's grace period starts over.
    /// - Throws: ``StoreError/Code/invalidArgument`` when the count is not ceil(size / 4 MiB)
    ///   (one entry for an empty map), ``StoreError/Code/missing`` naming a block that is not
    ///   stored, ``StoreError/Code/alreadyExists``.
    @discardableResult
    public func createMap(named name: MapName, sizeBytes: UInt64, blocks: [BlockID]) throws -> MapRecord {
        let expected = max(1, BlockStore.blockCount(forSize: sizeBytes))
        guard UInt64(blocks.count) == expected || (sizeBytes == 0 && blocks.isEmpty) else {
            throw StoreError(.invalidArgument, "\(blocks.count) block hashes do not describe \(sizeBytes) bytes (\(expected) expected)")
        }
        return try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try requireAbsent(name)
            var entries: [MapEntry] = []
            entries.reserveCapacity(blocks.count)
            for id in blocks {
                if id.isZero {
                    entries.append(.zero)
                    continue
                }
                guard try backend.touch(.block, id.hex) else {
                    throw StoreError(.missing, "block \(id.hex) is not in the store")
                }
                entries.append(.block(id))
            }
            let map = try storeBody(sizeBytes == 0 ? [] : entries)
            try backend.flush()
            let record = MapRecord(
                name: name, kind: .readOnly, sizeBytes: sizeBytes, map: map, volume: nil, epoch: 0,
                origin: nil, createdSeconds: now())
            try publishNew(record)
            return record
        }
    }
}
