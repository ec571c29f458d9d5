/// What ``BlockStore/info(_:)`` reports about a map or volume.
public struct MapInfo: Sendable, Equatable {
    /// The record itself (name, kind, size, map id, volume id, epoch, origin, creation time).
    public var record: MapRecord
    /// Entries: ceil(size / 4 MiB).
    public var blocks: UInt64
    /// Entries that are the virtual zero block (never stored).
    public var zeroBlocks: UInt64
    /// Entries naming content-addressed (shared, deduplicated) blocks.
    public var contentBlocks: UInt64
    /// Entries naming private volume blocks (written by a volume, frozen or not).
    public var privateBlocks: UInt64
    /// Private blocks of a volume's current epoch (the ones it writes in place).
    public var writableBlocks: UInt64
}

extension BlockStore {
    /// Facts about the map or volume `name`.
    /// - Throws: ``StoreError/Code/notFound``.
    public func info(_ name: MapName) throws -> MapInfo {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            let view = try view(of: existingRecord(name))
            var info = MapInfo(
                record: view.record, blocks: view.count, zeroBlocks: 0, contentBlocks: 0, privateBlocks: 0,
                writableBlocks: UInt64(view.written.count))
            for index in 0..<view.count {
                switch view.entry(at: index) {
                case .zero: info.zeroBlocks += 1
                case .block: info.contentBlocks += 1
                case .volumeBlock: info.privateBlocks += 1
                }
            }
            return info
        }
    }

    /// Every map and volume record, sorted by name. A record that does not parse is reported by
    /// `check`, and skipped here.
    public func list() throws -> [MapRecord] {
        var records: [MapRecord] = []
        for object in try backend.list(.record, prefix: "") {
            guard let name = try? MapName(object.key), let record = try? record(named: name) else { continue }
            records.append(record)
        }
        return records.sorted { $0.name < $1.name }
    }
}
