/// What one garbage collection freed.
public struct GarbageReport: Sendable, Equatable {
    /// Content-addressed blocks deleted, and their stored bytes.
    public var blocks = 0
    public var blockBytes: UInt64 = 0
    /// Private volume blocks deleted, and their stored bytes.
    public var privateBlocks = 0
    public var privateBlockBytes: UInt64 = 0
    /// Map bodies deleted, and their bytes.
    public var maps = 0
    public var mapBytes: UInt64 = 0
    /// Unreferenced content-addressed blocks kept because they are younger than the grace period.
    public var blocksInGrace = 0
    /// Scratch files of dead writers, stale lock files and import cache entries removed.
    public var scratchFiles = 0
    public var staleLocks = 0
    public var cacheEntries = 0

    public init() {}

    /// Total bytes freed.
    public var freedBytes: UInt64 { blockBytes + privateBlockBytes + mapBytes }
}

extension BlockStore {
    /// Mark and sweep: deletes every block and map body no record refers to.
    ///
    /// Holds the `gc` lock exclusively, so no import, clone, snapshot or write runs meanwhile and
    /// the mark is exact. Content-addressed blocks are swept only once unreferenced and older than
    /// `graceSeconds` (by modification time, which every store or re-use of a block refreshes):
    /// their names *can* be referenced again (an upload of the same data), so a block stored by a
    /// client that has not yet committed its map must survive. Private blocks are swept at once:
    /// their names (volume id, epoch, index) are never reused. A private block is alive when a map
    /// names it or it belongs to a volume's current epoch.
    ///
    /// Refuses to run (``StoreError/Code/corrupt`` or ``StoreError/Code/missing``) when a record
    /// or map body cannot be read: it would not know what that map refers to.
    public func collectGarbage(graceSeconds: Int64) throws -> GarbageReport {
        try backend.withLock(BlockStore.gcLock, exclusive: true) {
            var report = GarbageReport()
            // Mark.
            var liveMaps: Set<MapID> = []
            var liveVolumes: [VolumeID: UInt64] = [:]
            var liveNames: Set<String> = []
            for object in try backend.list(.record, prefix: "") {
                guard let name = try? MapName(object.key) else {
                    throw StoreError(.corrupt, "the store holds a record with the invalid name \(MapName.quoted(object.key)); remove it before collecting garbage")
                }
                guard let record = try record(named: name) else { continue }
                liveNames.insert(name.rawValue)
                if let map = record.map { liveMaps.insert(map) }
                if let volume = record.volume { liveVolumes[volume] = record.epoch }
            }
            // Unflushed copies of removed volumes: nothing can read them any more.
            try backend.discardPendingBlocks(keeping: Set(liveVolumes.keys))
            var liveBlocks: Set<BlockID> = []
            var livePrivate: Set<VolumeBlockID> = []
            for map in liveMaps {
                for entry in try loadBody(map, of: try MapName("map-" + map.digest.shortHex)).entries {
                    switch entry {
                    case .zero: break
                    case .block(let id): liveBlocks.insert(id)
                    case .volumeBlock(let id): livePrivate.insert(id)
                    }
                }
            }
            // Sweep.
            let cutoff = now() - graceSeconds
            for object in try backend.list(.block, prefix: "") {
                guard let id = BlockID(hex: object.key), !liveBlocks.contains(id) else { continue }
                guard object.modifiedSeconds <= cutoff else {
                    report.blocksInGrace += 1
                    continue
                }
                try backend.delete(.block, object.key)
                report.blocks += 1
                report.blockBytes += object.sizeBytes
            }
            for object in try backend.list(.volumeBlock, prefix: "") {
                guard let id = VolumeBlockID(key: object.key) else { continue }
                if livePrivate.contains(id) || liveVolumes[id.volume] == id.epoch { continue }
                try backend.delete(.volumeBlock, object.key)
                report.privateBlocks += 1
                report.privateBlockBytes += object.sizeBytes
            }
            for object in try backend.list(.map, prefix: "") {
                guard let id = MapID(hex: object.key), !liveMaps.contains(id) else { continue }
                try backend.delete(.map, object.key)
                report.maps += 1
                report.mapBytes += object.sizeBytes
            }
            // Import cache entries whose map is gone (or that do not parse) are forgotten.
            for object in try backend.list(.importCache, prefix: "") {
                let bytes = try backend.get(.importCache, object.key) ?? []
                let entry = ImportCacheEntry(decoding: bytes, key: object.key)
                if entry == nil || entry!.map.map({ !liveMaps.contains($0) }) == true {
                    try backend.delete(.importCache, object.key)
                    report.cacheEntries += 1
                }
            }
            // Lock files of names that no longer exist. Safe here: a name lock is only taken while
            // holding the gc lock shared, which nobody holds now.
            for lock in try backend.lockNames() where lock.hasPrefix("name.") {
                if !liveNames.contains(String(lock.dropFirst(5))) {
                    try backend.removeLock(lock)
                    report.staleLocks += 1
                }
            }
            report.scratchFiles = try backend.purgeScratch(olderThanSeconds: graceSeconds)
            try backend.flush()
            return report
        }
    }
}
