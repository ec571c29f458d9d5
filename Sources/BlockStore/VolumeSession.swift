/// Exclusive use of one map or volume by a long-lived user: the node daemon's data path.
///
/// Holds the name's lock from ``BlockStore/openSession(_:)`` until ``close()``, so no other
/// command changes the record or its private blocks meanwhile (they fail as
/// ``StoreError/Code/busy``). The holder reads and writes blocks itself; the session tells it what
/// each block resolves to and performs the record changes (snapshot, grow) on its behalf.
///
/// Not thread-safe: the owner serializes calls (the data path keeps it under its own lock).
public final class VolumeSession {
    /// The store the session belongs to.
    public let store: BlockStore
    /// The record as of the last change made through the session.
    public private(set) var record: MapRecord
    private var view: BlockStore.MapView
    private var lock: (any StoreLock)?

    init(store: BlockStore, record: MapRecord, view: BlockStore.MapView, lock: any StoreLock) {
        self.store = store
        self.record = record
        self.view = view
        self.lock = lock
    }

    deinit { lock?.unlock() }

    /// True for a volume (read-write); false for a read-only map, which can only be read.
    public var isWritable: Bool { record.kind == .readWrite }

    /// What block `index` resolves to now (zero past the body's end).
    public func entry(at index: UInt64) -> MapEntry { view.entry(at: index) }

    /// The private block that a write to block `index` in the current epoch goes to.
    /// - Precondition: the session is writable.
    public func privateBlock(at index: UInt64) -> VolumeBlockID {
        VolumeBlockID(volume: record.volume!, epoch: record.epoch, index: index)
    }

    /// Records that the holder created the current-epoch private block of `index` (so it resolves
    /// to that block from now on).
    public func markWritten(_ index: UInt64) {
        view = BlockStore.MapView(record: view.record, base: view.base, written: view.written.union([index]))
    }

    /// Freezes the volume into the read-only map `name` (see ``BlockStore/snapshot(_:as:)``).
    /// Every block the holder wrote must be durable first. Afterwards every block resolves to the
    /// snapshot's entries, so the holder's next write to any block copies on write.
    @discardableResult
    public func snapshot(as name: MapName) throws -> MapRecord {
        try requireOpen()
        return try store.backend.withLock(BlockStore.gcLock, exclusive: false) {
            var next = record
            let snapshot = try store.snapshotHoldingLock(&next, view: view, as: name)
            record = next
            view = try store.view(of: next)
            return snapshot
        }
    }

    /// Grows the volume to `sizeBytes` (see ``BlockStore/grow(_:toSizeBytes:)``).
    @discardableResult
    public func grow(toSizeBytes sizeBytes: UInt64) throws -> MapRecord {
        try requireOpen()
        return try store.backend.withLock(BlockStore.gcLock, exclusive: false) {
            var next = record
            try store.growHoldingLock(&next, toSizeBytes: sizeBytes)
            record = next
            view = BlockStore.MapView(record: next, base: view.base, written: view.written)
            return next
        }
    }

    /// Releases the name. Calling it twice is harmless.
    public func close() {
        lock?.unlock()
        lock = nil
    }

    private func requireOpen() throws {
        guard lock != nil else { throw StoreError(.invalidArgument, "the session of \(record.name) is closed") }
    }
}

extension BlockStore {
    /// Opens `name` for exclusive use until the session is closed (see ``VolumeSession``).
    /// - Throws: ``StoreError/Code/notFound``, ``StoreError/Code/busy`` when another holder keeps
    ///   the name longer than ``nameLockWaitSeconds``.
    public func openSession(_ name: MapName) throws -> VolumeSession {
        let held = try lockName(name)
        do {
            let record = try existingRecord(name)
            return VolumeSession(store: self, record: record, view: try view(of: record), lock: held)
        } catch {
            held.unlock()
            throw error
        }
    }
}
