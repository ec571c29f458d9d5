/// What ``BlockStore/importMap(named:from:useCache:progress:)`` did.
public struct ImportResult: Sendable, Equatable {
    /// The new map's record.
    public var record: MapRecord
    /// True when the source was an unchanged file imported before, and was not read again.
    public var reusedUnchangedFile: Bool
}

extension BlockStore {
    /// Imports the bytes of `source` as a new read-only map (an image or object) named `name`.
    ///
    /// Each 4 MiB block is hashed (trailing zeros stripped) and stored once: a block already in
    /// the store is not written again, only re-stamped so that garbage collection's grace period
    /// starts over. All-zero blocks and holes of sparse files are never stored. Hashing and writing
    /// run on ``Workers`` threads. Blocks are durable before the map that names them is published,
    /// and the record is published last: a crash leaves no name, only blocks for garbage collection.
    ///
    /// Import cache: when `useCache` is true and the source has an identity (a regular file), a
    /// file imported before and unchanged since (same device, inode, size, modification and change
    /// time) is not read again: its map is reused after checking that the map data and every block
    /// it names are still stored. An entry is recorded only when the file's change time lay at
    /// least 2 s before the import began and did not move during it, so a file changed at any
    /// moment after it was read never matches (git's "racy" rule).
    ///
    /// - Throws: ``StoreError/Code/alreadyExists`` (checked first; nothing is written),
    ///   or the backend's and the source's errors.
    @discardableResult
    public func importMap(
        named name: MapName, from source: some ByteSource, useCache: Bool = true, progress: ProgressHandler? = nil
    ) throws -> ImportResult {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            try requireAbsent(name)
            let started = BlockStore.systemNanoseconds()
            let identity = useCache ? try source.identity() : nil
            var map: MapID?
            var size: UInt64
            var reused = false
            if let identity, let cached = try cachedImport(of: identity) {
                map = cached.map
                size = identity.sizeBytes
                reused = true
                progress?(size, size)
            } else {
                let (entries, stored) = try storeBlocks(of: source, progress: progress)
                map = try storeBody(entries)
                size = stored
                if let identity {
                    try rememberImport(of: identity, after: try source.identity(), startedNanoseconds: started, map: map)
                }
            }
            try backend.flush()
            let record = MapRecord(
                name: name, kind: .readOnly, sizeBytes: size, map: map, volume: nil, epoch: 0,
                origin: nil, createdSeconds: now())
            try publishNew(record)
            return ImportResult(record: record, reusedUnchangedFile: reused)
        }
    }

    private struct ImportState: PipelineState {
        var next: UInt64 = 0
        /// Number of blocks, once known.
        var end: UInt64?
        var sizeBytes: UInt64 = 0
        var entries: [MapEntry] = []
        var doneBytes: UInt64 = 0
        var failure: (any Error)?
    }

    /// Hashes and stores every block of `source`; returns the entries and the total size.
    package func storeBlocks(of source: some ByteSource, progress: ProgressHandler?) throws -> ([MapEntry], UInt64) {
        let blockSize = BlockStore.blockSizeBytes
        var initial = ImportState()
        if let size = source.sizeBytes {
            initial.end = BlockStore.blockCount(forSize: size)
            initial.sizeBytes = size
            initial.entries = Array(repeating: .zero, count: Int(initial.end!))
        }
        let state = ConditionLock(initial)
        let concurrent = source.supportsConcurrentReads && source.sizeBytes != nil
        let total = source.sizeBytes

        Workers.run(count: workerCount) { _ in
            let buffer = BlockBuffer(count: blockSize)
            while true {
                // Claim the next block; a sequential source is read while holding the claim.
                let claim: (index: UInt64, count: Int)? = state.withLock { s in
                    if s.failure != nil { return nil }
                    if let end = s.end, s.next >= end { return nil }
                    let index = s.next
                    s.next += 1
                    if concurrent { return (index, 0) }
                    do {
                        let n = try source.read(at: index * UInt64(blockSize), into: buffer.pointer)
                        if n < blockSize {
                            s.end = n > 0 ? index + 1 : index
                            s.sizeBytes = index * UInt64(blockSize) + UInt64(n)
                        }
                        return n > 0 ? (index, n) : nil
                    } catch {
                        s.failure = error
                        return nil
                    }
                }
                guard let (index, preRead) = claim else { return }
                do {
                    let offset = index * UInt64(blockSize)
                    var count = preRead
                    var entry = MapEntry.zero
                    if concurrent {
                        count = Int(min(UInt64(blockSize), total! - offset))
                        if !source.isHole(at: offset, count: count) {
                            let n = try source.read(at: offset, into: buffer.prefix(count))
                            guard n == count else {
                                throw StoreError(.io, "the input ended at \(offset + UInt64(n)) bytes while \(total!) were expected (did it change during the import?)")
                            }
                            entry = try self.storeBlock(UnsafeRawBufferPointer(buffer.prefix(count)))
                        }
                    } else {
                        entry = try self.storeBlock(UnsafeRawBufferPointer(buffer.prefix(count)))
                    }
                    state.withLock { s in
                        if s.entries.count <= Int(index) {
                            s.entries.append(contentsOf: repeatElement(.zero, count: Int(index) + 1 - s.entries.count))
                        }
                        s.entries[Int(index)] = entry
                        s.doneBytes += UInt64(count)
                        progress?(s.doneBytes, total)
                    }
                } catch {
                    state.recordFailure(error)
                    return
                }
            }
        }
        let result = try state.finalState()
        let count = Int(result.end ?? UInt64(result.entries.count))
        return (Array(result.entries.prefix(count)), result.sizeBytes)
    }

    /// Stores one block's bytes if absent (else re-stamps it) and returns its entry.
    func storeBlock(_ bytes: UnsafeRawBufferPointer) throws -> MapEntry {
        let kept = BlockID.contentLength(of: bytes)
        if kept == 0 { return .zero }
        let content = UnsafeRawBufferPointer(rebasing: bytes[0..<kept])
        let id = BlockID(digest: Digest(sha256Of: content))
        if try !backend.touch(.block, id.hex) {
            try backend.put(.block, id.hex, content, mode: .createOnly)
        }
        return .block(id)
    }
}
