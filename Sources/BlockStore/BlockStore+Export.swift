extension BlockStore {
    /// Writes the bytes of the map or volume `name` to `sink`.
    ///
    /// Blocks are read and verified on ``Workers`` threads. A sink with random access (a file)
    /// gets each block at its offset as soon as it is ready, and zero blocks are not written at
    /// all (the file keeps a hole); a stream gets the blocks in order. A volume is exported under
    /// its name lock, so the bytes are one consistent state of it.
    /// - Throws: ``StoreError/Code/notFound``; ``StoreError/Code/corrupt`` or
    ///   ``StoreError/Code/missing`` naming the block when stored data is damaged.
    public func export(_ name: MapName, to sink: some ByteSink, progress: ProgressHandler? = nil) throws {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let record = try existingRecord(name)
            if record.kind == .readWrite {
                try withNameLock(name) {
                    // Read again under the lock: the volume may have changed since.
                    try export(view(of: existingRecord(name)), to: sink, progress: progress)
                }
            } else {
                try export(view(of: record), to: sink, progress: progress)
            }
        }
    }

    private struct ExportState: PipelineState {
        var next: UInt64 = 0
        var nextToWrite: UInt64 = 0
        var doneBytes: UInt64 = 0
        var failure: (any Error)?
    }

    func export(_ view: MapView, to sink: some ByteSink, progress: ProgressHandler?) throws {
        let count = view.count
        let total = view.record.sizeBytes
        let state = ConditionLock(ExportState())
        let randomAccess = sink.supportsRandomAccess
        // One write into the file at a time: concurrent writers to one file contend for its
        // inode lock, and the kernel spins on it, burning the core another block hashes on.
        let writing = ConditionLock(())
        Workers.run(count: min(computeWorkerCount, max(1, Int(count)))) { _ in
            let buffer = BlockBuffer(count: BlockStore.blockSizeBytes)
            while let index = state.withLock({ s -> UInt64? in
                guard s.failure == nil, s.next < count else { return nil }
                s.next += 1
                return s.next - 1
            }) {
                let entry = view.entry(at: index)
                let length = view.length(ofBlock: index)
                // A file keeps a hole where a zero block is: nothing to read or write.
                let skip = randomAccess && entry == .zero
                let read = Result { if !skip { try self.readBlock(entry, into: buffer.pointer, of: view.record.name, index: index) } }
                let write = {
                    try read.get()
                    if !skip {
                        try sink.write(at: index * UInt64(BlockStore.blockSizeBytes), UnsafeRawBufferPointer(buffer.prefix(length)))
                    }
                }
                if randomAccess {
                    do {
                        try writing.withLock { _ in try write() }
                        state.withLock { s in
                            s.doneBytes += UInt64(length)
                            progress?(s.doneBytes, total)
                        }
                    } catch {
                        state.recordFailure(error)
                        return
                    }
                } else if !BlockStore.writeInTurn(index, length: length, total: total, state: state, progress: progress, write) {
                    return
                }
            }
        }
        _ = try state.finalState()
        try sink.finish(sizeBytes: total)
    }

    /// Waits until block `index` is next in order (or a failure stopped the export), then writes
    /// it. Returns false when the export stops.
    private static func writeInTurn(
        _ index: UInt64, length: Int, total: UInt64, state: ConditionLock<ExportState>, progress: ProgressHandler?,
        _ write: () throws -> Void
    ) -> Bool {
        state.withLock(when: { $0.nextToWrite == index || $0.failure != nil }) { s in
            guard s.failure == nil else { return false }
            do {
                try write()
                s.nextToWrite += 1
                s.doneBytes += UInt64(length)
                progress?(s.doneBytes, total)
                return true
            } catch {
                s.failure = error
                return false
            }
        }
    }
}
