extension BlockStore {
    /// Creates an empty read-write volume of `sizeBytes` (every block reads as zeros).
    /// - Throws: ``StoreError/Code/alreadyExists``.
    @discardableResult
    public func createVolume(named name: MapName, sizeBytes: UInt64) throws -> MapRecord {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try requireAbsent(name)
            let record = MapRecord(
                name: name, kind: .readWrite, sizeBytes: sizeBytes, map: nil, volume: .random(), epoch: 1,
                origin: nil, createdSeconds: now())
            try publishNew(record)
            return record
        }
    }

    /// Thin-clones the read-only map `origin` into a new volume `name` of `sizeBytes` (default:
    /// the origin's size). Writes one record and no data, whatever the origin's size: the clone
    /// shares the origin's stored map body, and blocks past the origin's end read as zeros.
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/wrongKind`` for a volume origin
    ///   (snapshot it first), ``StoreError/Code/invalidArgument`` for a size below the origin's,
    ///   ``StoreError/Code/alreadyExists``.
    @discardableResult
    public func cloneVolume(from origin: MapName, named name: MapName, sizeBytes: UInt64? = nil) throws -> MapRecord {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let source = try existingRecord(origin)
            guard source.kind == .readOnly else {
                throw StoreError(.wrongKind, "\(origin) is a read-write volume and cannot be cloned; snapshot it and clone the snapshot")
            }
            let size = sizeBytes ?? source.sizeBytes
            guard size >= source.sizeBytes else {
                throw StoreError(.invalidArgument, "a clone of \(origin) needs at least its \(source.sizeBytes) bytes, not \(size)")
            }
            try requireAbsent(name)
            let record = MapRecord(
                name: name, kind: .readWrite, sizeBytes: size, map: source.map, volume: .random(), epoch: 1,
                origin: origin.rawValue, createdSeconds: now())
            try publishNew(record)
            return record
        }
    }

    /// Writes the bytes of `source` into volume `name` at byte `offset`.
    ///
    /// Copy-on-write at block granularity: the first write to a block of this epoch copies the old
    /// block (from the origin, a snapshot or zeros) with the new bytes laid over it into a new
    /// private block (temp file, fsync, rename); later writes to it change it in place. When this
    /// returns, every written byte is durable (private blocks synced, directories flushed).
    /// A crash during the call may leave part of the written range changed, as a disk would; no
    /// other byte of the volume, and no byte of any other map, ever changes.
    ///
    /// - Precondition: `source.sizeBytes` is known (spool a stream to a file first).
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/wrongKind`` (read-only map),
    ///   ``StoreError/Code/outOfRange`` when the data would end past the volume's size (checked
    ///   before anything is written).
    @discardableResult
    public func write(to name: MapName, at offset: UInt64, from source: some ByteSource, progress: ProgressHandler? = nil)
        throws -> UInt64
    {
        guard let length = source.sizeBytes else {
            preconditionFailure("write(to:at:from:) needs a source of known size")
        }
        return try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try withNameLock(name) {
                let record = try existingRecord(name)
                guard record.kind == .readWrite, let volume = record.volume else {
                    throw StoreError(.wrongKind, "\(name) is a read-only map; clone it to a volume to write")
                }
                let (end, overflow) = offset.addingReportingOverflow(length)
                guard !overflow, end <= record.sizeBytes else {
                    throw StoreError(.outOfRange, "writing \(length) bytes at offset \(offset) would pass the end of \(name) (\(record.sizeBytes) bytes); grow it first")
                }
                guard length > 0 else { return 0 }
                let view = try view(of: record)
                let blockSize = UInt64(BlockStore.blockSizeBytes)
                let buffer = BlockBuffer(count: BlockStore.blockSizeBytes)
                var changedInPlace: [String] = []
                var position = offset
                while position < end {
                    let index = position / blockSize
                    let blockStart = index * blockSize
                    let low = Int(position - blockStart)
                    let high = Int(min(end, blockStart + blockSize) - blockStart)
                    let chunk = buffer.prefix(BlockStore.blockSizeBytes)
                    let id = VolumeBlockID(volume: volume, epoch: record.epoch, index: index)
                    if view.written.contains(index) {
                        let data = UnsafeMutableRawBufferPointer(rebasing: chunk[0..<(high - low)])
                        try readExactly(source, at: position - offset, into: data)
                        try backend.write(.volumeBlock, id.key, at: UInt64(low), UnsafeRawBufferPointer(data))
                        changedInPlace.append(id.key)
                    } else {
                        if low != 0 || high != BlockStore.blockSizeBytes {
                            try readBlock(view.entry(at: index), into: chunk, of: name, index: index)
                        }
                        let data = UnsafeMutableRawBufferPointer(rebasing: chunk[low..<high])
                        try readExactly(source, at: position - offset, into: data)
                        let kept = BlockID.contentLength(of: UnsafeRawBufferPointer(chunk))
                        try backend.put(
                            .volumeBlock, id.key, UnsafeRawBufferPointer(rebasing: chunk[0..<kept]), mode: .replace)
                    }
                    position = blockStart + UInt64(high)
                    progress?(position - offset, length)
                }
                for key in changedInPlace {
                    try backend.sync(.volumeBlock, key)
                }
                try backend.flush()
                return length
            }
        }
    }

    private func readExactly(_ source: some ByteSource, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
        throws
    {
        let n = try source.read(at: offset, into: buffer)
        guard n == buffer.count else {
            throw StoreError(.io, "the input ended at \(offset + UInt64(n)) bytes while \(source.sizeBytes ?? 0) were expected (did it change during the write?)")
        }
    }

    /// Freezes volume `volume` into a new read-only map `name`.
    ///
    /// Writes the volume's current entries as a map body, then bumps the volume's epoch and points
    /// it at that body (so its next write to any block copies on write and the snapshot never
    /// changes), then publishes the snapshot's record. A crash between the two record writes costs
    /// only extra copy-on-write later.
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/wrongKind`` (not a volume),
    ///   ``StoreError/Code/alreadyExists`` for `name` (checked first).
    @discardableResult
    public func snapshot(_ volume: MapName, as name: MapName) throws -> MapRecord {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try withNameLock(volume) {
                var record = try existingRecord(volume)
                return try snapshotHoldingLock(&record, view: try view(of: record), as: name)
            }
        }
    }

    /// ``snapshot(_:as:)`` for a caller that holds the volume's name lock and the `gc` lock shared.
    func snapshotHoldingLock(_ record: inout MapRecord, view: MapView, as name: MapName) throws -> MapRecord {
        guard record.kind == .readWrite else {
            throw StoreError(.wrongKind, "\(record.name) is already a read-only map; clone it to get a volume")
        }
        try requireAbsent(name)
        let entries = (0..<view.count).map { view.entry(at: $0) }
        let map = try storeBody(entries)
        try backend.flush()
        var next = record
        next.epoch += 1
        next.map = map
        try publishReplacement(next)
        record = next
        let snapshot = MapRecord(
            name: name, kind: .readOnly, sizeBytes: record.sizeBytes, map: map, volume: nil, epoch: 0,
            origin: record.name.rawValue, createdSeconds: now())
        try publishNew(snapshot)
        return snapshot
    }

    /// Grows volume `name` to `sizeBytes`; the new bytes read as zeros. Growing to the current
    /// size changes nothing and succeeds (Ganeti retries).
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/wrongKind`` (read-only map),
    ///   ``StoreError/Code/invalidArgument`` for a size below the current one.
    @discardableResult
    public func grow(_ name: MapName, toSizeBytes sizeBytes: UInt64) throws -> MapRecord {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try withNameLock(name) {
                var record = try existingRecord(name)
                try growHoldingLock(&record, toSizeBytes: sizeBytes)
                return record
            }
        }
    }

    /// ``grow(_:toSizeBytes:)`` for a caller that holds the volume's name lock and `gc` shared.
    func growHoldingLock(_ record: inout MapRecord, toSizeBytes sizeBytes: UInt64) throws {
        guard record.kind == .readWrite else {
            throw StoreError(.wrongKind, "\(record.name) is a read-only map and cannot grow; clone it to a larger volume")
        }
        guard sizeBytes >= record.sizeBytes else {
            throw StoreError(.invalidArgument, "\(record.name) has \(record.sizeBytes) bytes and cannot shrink to \(sizeBytes)")
        }
        guard sizeBytes > record.sizeBytes else { return }
        var next = record
        next.sizeBytes = sizeBytes
        try publishReplacement(next)
        record = next
    }

    /// Removes the map or volume `name`: its record goes; its blocks and map data stay until
    /// garbage collection finds nothing else refers to them.
    /// - Throws: ``StoreError/Code/notFound``.
    public func remove(_ name: MapName) throws {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try withNameLock(name) {
                guard try backend.stat(.record, name.rawValue) != nil else {
                    throw StoreError(.notFound, "no map or volume named \(name)")
                }
                try backend.delete(.record, name.rawValue)
                try backend.flush()
            }
        }
    }
}
