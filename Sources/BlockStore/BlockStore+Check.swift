/// What ``BlockStore/check(progress:)`` found.
public struct CheckReport: Sendable, Equatable {
    /// One line per problem, naming the map or block at fault. Empty when the store is sound.
    public var problems: [String] = []
    /// Records read.
    public var maps = 0
    /// Stored content-addressed blocks whose content was verified against their name, and bytes.
    public var blocksVerified = 0
    public var bytesVerified: UInt64 = 0
    /// Stored blocks that no map refers to (garbage collection frees them; not a problem).
    public var unreferencedBlocks = 0

    public init() {}

    /// True when no problem was found.
    public var isSound: Bool { problems.isEmpty }
}

extension BlockStore {
    /// Verifies every record, map body and block, collecting every problem instead of stopping at
    /// the first: records parse and match their names; every map body a record names exists,
    /// hashes to its name and parses with the right number of entries; every block a map names
    /// exists; every stored content-addressed block hashes to its name; no private block is
    /// larger than a block. Holds the `gc` lock shared (writers may run meanwhile).
    public func check(progress: ProgressHandler? = nil) throws -> CheckReport {
        try backend.withLock(BlockStore.gcLock, exclusive: false) {
            var report = CheckReport()
            /// First map and entry that refers to each block, for messages.
            var users: [BlockID: String] = [:]
            var referencedMaps: Set<MapID> = []
            var checkedMaps: Set<MapID> = []
            for object in try backend.list(.record, prefix: "").sorted(by: { $0.key < $1.key }) {
                report.maps += 1
                guard let name = try? MapName(object.key) else {
                    report.problems.append("record \(MapName.quoted(object.key)): not a valid name")
                    continue
                }
                let record: MapRecord
                do {
                    guard let r = try self.record(named: name) else { continue }
                    record = r
                } catch let error as StoreError where error.code == .corrupt {
                    report.problems.append("map \(name): its record is corrupt (\(error.message))")
                    continue
                }
                guard let mapID = record.map else { continue }
                referencedMaps.insert(mapID)
                let body: MapBody
                do {
                    body = try loadBody(mapID, of: name)
                } catch let error as StoreError where error.code == .corrupt || error.code == .missing {
                    report.problems.append("map \(name): \(error.message)")
                    continue
                }
                let expected = record.blockCount
                let fits = record.kind == .readOnly ? UInt64(body.entries.count) == expected
                    : UInt64(body.entries.count) <= expected
                if !fits {
                    report.problems.append("map \(name): its map data has \(body.entries.count) entries for \(record.sizeBytes) bytes (\(expected) blocks)")
                }
                guard checkedMaps.insert(mapID).inserted else { continue }
                for (index, entry) in body.entries.enumerated() {
                    switch entry {
                    case .zero:
                        break
                    case .block(let id):
                        if users[id] == nil { users[id] = "block \(index) of \(name)" }
                    case .volumeBlock(let id):
                        if try backend.stat(.volumeBlock, id.key) == nil {
                            report.problems.append("private block \(id.key) (block \(index) of \(name)) is missing")
                        }
                    }
                }
            }
            // Every map body in the store, referenced or not, must hash to its name.
            for object in try backend.list(.map, prefix: "") {
                guard let id = MapID(hex: object.key) else {
                    report.problems.append("map data \(MapName.quoted(object.key)): not a valid map name")
                    continue
                }
                if referencedMaps.contains(id) { continue }
                guard let bytes = try backend.get(.map, object.key) else { continue }
                if Digest(sha256Of: bytes) != id.digest {
                    report.problems.append("map data \(id.hex) (unreferenced) is corrupt")
                }
            }
            for object in try backend.list(.volumeBlock, prefix: "") {
                if VolumeBlockID(key: object.key) == nil {
                    report.problems.append("private block \(MapName.quoted(object.key)): not a valid private block name")
                } else if object.sizeBytes > UInt64(BlockStore.blockSizeBytes) {
                    report.problems.append("private block \(object.key) is corrupt: \(object.sizeBytes) bytes, more than a block")
                }
            }
            for object in try backend.list(.importCache, prefix: "") {
                let bytes = try backend.get(.importCache, object.key) ?? []
                if ImportCacheEntry(decoding: bytes, key: object.key) == nil {
                    report.problems.append("import cache entry \(MapName.quoted(object.key)) is corrupt (gc removes it)")
                }
            }
            let stored = try backend.list(.block, prefix: "")
            let verification = try verifyBlocks(stored, progress: progress)
            report.blocksVerified = verification.verified
            report.bytesVerified = verification.bytes
            var present: Set<BlockID> = []
            present.reserveCapacity(stored.count)
            for object in stored {
                guard let id = BlockID(hex: object.key) else {
                    report.problems.append("block \(MapName.quoted(object.key)): not a valid block name")
                    continue
                }
                present.insert(id)
                if users[id] == nil { report.unreferencedBlocks += 1 }
            }
            for (id, actual) in verification.corrupt.sorted(by: { $0.key < $1.key }) {
                let user = users[id].map { " (\($0))" } ?? " (unreferenced)"
                report.problems.append("block \(id.hex)\(user) is corrupt: \(actual)")
            }
            for (id, user) in users.sorted(by: { $0.key < $1.key }) where !present.contains(id) {
                report.problems.append("block \(id.hex) (\(user)) is missing")
            }
            return report
        }
    }

    private struct VerifyState: PipelineState {
        var next = 0
        var verified = 0
        var bytes: UInt64 = 0
        var corrupt: [BlockID: String] = [:]
        var failure: (any Error)?
    }

    /// Reads every stored block and compares its content hash with its name, on worker threads.
    private func verifyBlocks(_ objects: [ObjectInfo], progress: ProgressHandler?)
        throws -> (verified: Int, bytes: UInt64, corrupt: [BlockID: String])
    {
        let total = objects.reduce(UInt64(0)) { $0 + $1.sizeBytes }
        let state = ConditionLock(VerifyState())
        Workers.run(count: min(computeWorkerCount, max(1, objects.count))) { _ in
            // One byte more than a block, to notice an oversized file.
            let buffer = BlockBuffer(count: BlockStore.blockSizeBytes + 1)
            while true {
                let claimed: Int? = state.withLock { s in
                    guard s.failure == nil, s.next < objects.count else { return nil }
                    s.next += 1
                    return s.next - 1
                }
                guard let i = claimed else { return }
                guard let id = BlockID(hex: objects[i].key) else { continue }
                do {
                    // Absent now: removed since listing (only garbage collection removes blocks).
                    guard let n = try self.backend.read(.block, objects[i].key, at: 0, into: buffer.pointer) else { continue }
                    var problem: String?
                    if n > BlockStore.blockSizeBytes {
                        problem = "it holds more than \(BlockStore.blockSizeBytes) bytes"
                    } else {
                        let actual = BlockID(hashing: UnsafeRawBufferPointer(buffer.prefix(n)))
                        if actual != id { problem = "its content hashes to \(actual.hex)" }
                    }
                    state.withLock { s in
                        s.verified += 1
                        s.bytes += UInt64(n)
                        if let problem { s.corrupt[id] = problem }
                        progress?(s.bytes, total)
                    }
                } catch {
                    state.recordFailure(error)
                    return
                }
            }
        }
        let result = try state.finalState()
        return (result.verified, result.bytes, result.corrupt)
    }
}
