#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The block store: content-addressed blocks, maps, volumes, thin clones, snapshots, dedup.
///
/// Objects, images, snapshots (read-only maps) and volumes (read-write maps) are records that
/// point at entry lists of blocks. Importing stores each distinct 4 MiB block once; cloning writes
/// one small record; writing to a volume copies on write one block at a time into the volume's
/// private blocks; a snapshot freezes a volume's entries into a new immutable map and bumps its
/// epoch. Nothing but garbage collection deletes a block.
///
/// What is correct lives here; how bytes reach storage is the ``StoreBackend``'s business.
/// Concurrency: every operation that changes the store holds the store-wide `gc` lock shared (so
/// garbage collection, which holds it exclusively, never runs beside it) and, for an existing name,
/// that name's lock exclusively. New names are claimed atomically (``PutMode/createOnly``).
public final class BlockStore: Sendable {
    /// 4 MiB, the Pithos block size and Archipelago's `MAPPER_DEFAULT_BLOCKSIZE`.
    public static let blockSizeBytes = 4 * 1024 * 1024
    /// The block hash, as Pithos names it in `X-Container-Block-Hash`.
    public static let blockHashName = "sha256"

    /// The backend the store keeps its objects in.
    public let backend: any StoreBackend
    let now: @Sendable () -> Int64
    /// Threads for import, whose workers wait in fsync.
    let workerCount: Int
    /// How long an operation on a name waits for that name's lock before failing as busy.
    public let nameLockWaitSeconds: Double
    /// Threads for export and check, whose workers hash and copy without waiting for the disk.
    var computeWorkerCount: Int { min(workerCount, Workers.coreCount) }

    /// A store on `backend`.
    /// - Parameters:
    ///   - clock: seconds since the Unix epoch; garbage collection's grace period is measured
    ///     with it against the backend's modification times.
    ///   - workers: threads for hashing and I/O in import (default: cores + 2); export and check
    ///     use at most one per core.
    ///   - nameLockWaitSeconds: how long an operation on a map or volume waits for another holder
    ///     of that name (see ``StoreError/Code/busy``).
    public init(
        backend: any StoreBackend, clock: @escaping @Sendable () -> Int64 = BlockStore.systemSeconds,
        workers: Int? = nil, nameLockWaitSeconds: Double = 60
    ) {
        self.nameLockWaitSeconds = nameLockWaitSeconds
        self.backend = backend
        self.now = clock
        self.workerCount = max(1, workers ?? Workers.defaultCount)
    }

    /// The system clock in whole seconds.
    public static let systemSeconds: @Sendable () -> Int64 = { Int64(time(nil)) }

    /// The system clock (CLOCK_REALTIME, like file times) in nanoseconds.
    static func systemNanoseconds() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }

    /// ceil(size / block size): how many entries a map of `size` bytes has.
    public static func blockCount(forSize size: UInt64) -> UInt64 {
        (size + UInt64(blockSizeBytes) - 1) / UInt64(blockSizeBytes)
    }

    static let gcLock = "gc"
    static func nameLock(_ name: MapName) -> String { "name." + name.rawValue }

    /// Takes `name`'s lock exclusively, waiting at most ``nameLockWaitSeconds`` (the node daemon
    /// holds the lock of every volume it has attached, for as long as it is attached).
    /// - Throws: ``StoreError/Code/busy`` when it stays taken.
    func lockName(_ name: MapName) throws -> any StoreLock {
        let deadline = BlockStore.monotonicNanoseconds() + Int64(nameLockWaitSeconds * 1e9)
        var pause: Int64 = 1_000_000
        while true {
            if let held = try backend.tryLock(BlockStore.nameLock(name), exclusive: true) { return held }
            guard BlockStore.monotonicNanoseconds() < deadline else {
                throw StoreError(.busy, "\(name) is in use: attached on this node (`snf-store detach \(name)` frees it) or being changed by another command; try again")
            }
            var t = timespec(tv_sec: 0, tv_nsec: Int(pause))
            nanosleep(&t, nil)
            pause = min(pause * 2, 50_000_000)
        }
    }

    /// Runs `body` holding `name`'s lock (see ``lockName(_:)``).
    func withNameLock<T>(_ name: MapName, _ body: () throws -> T) throws -> T {
        let held = try lockName(name)
        defer { held.unlock() }
        return try body()
    }

    package static func monotonicNanoseconds() -> Int64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }

    // MARK: Records and views

    /// The record of `name`, or nil when no map or volume has that name.
    public func record(named name: MapName) throws -> MapRecord? {
        guard let bytes = try backend.get(.record, name.rawValue) else { return nil }
        let record = try MapRecord(decoding: bytes, what: "the record of \(name)")
        guard record.name == name else {
            throw StoreError(.corrupt, "the record of \(name) names \(record.name); run `snf-store check`")
        }
        return record
    }

    /// The record of `name`; throws ``StoreError/Code/notFound`` when there is none.
    func existingRecord(_ name: MapName) throws -> MapRecord {
        guard let record = try record(named: name) else {
            throw StoreError(.notFound, "no map or volume named \(name)")
        }
        return record
    }

    /// Throws ``StoreError/Code/alreadyExists`` when `name` is taken.
    func requireAbsent(_ name: MapName) throws {
        if try backend.stat(.record, name.rawValue) != nil {
            throw StoreError(.alreadyExists, "\(name) already exists; remove it first or choose another name")
        }
    }

    /// Publishes a new record; throws ``StoreError/Code/alreadyExists`` when the name was taken meanwhile.
    func publishNew(_ record: MapRecord) throws {
        let bytes = record.encoded()
        let created = try bytes.withUnsafeBytes {
            try backend.put(.record, record.name.rawValue, $0, mode: .createOnly)
        }
        guard created else {
            throw StoreError(.alreadyExists, "\(record.name) already exists; remove it first or choose another name")
        }
        try backend.flush()
    }

    /// Atomically replaces an existing record (the caller holds the name lock).
    func publishReplacement(_ record: MapRecord) throws {
        let bytes = record.encoded()
        try bytes.withUnsafeBytes { _ = try backend.put(.record, record.name.rawValue, $0, mode: .replace) }
        try backend.flush()
    }

    /// Loads and verifies the map body `id`, which `owner` refers to.
    func loadBody(_ id: MapID, of owner: MapName) throws -> MapBody {
        guard let bytes = try backend.get(.map, id.hex) else {
            throw StoreError(.missing, "the map data \(id.digest.shortHex)… of \(owner) is missing from the store; run `snf-store check`")
        }
        let actual = Digest(sha256Of: bytes)
        guard actual == id.digest else {
            throw StoreError(.corrupt, "the map data \(id.digest.shortHex)… of \(owner) is corrupt (its content hashes to \(actual.shortHex)…); run `snf-store check`")
        }
        return try bytes.withUnsafeBytes { try MapBody(decoding: $0, what: "the map data \(id.digest.shortHex)… of \(owner)") }
    }

    /// Stores `entries` as a map body (if not already stored) and returns its id, or nil when
    /// every entry is the zero block.
    func storeBody(_ entries: [MapEntry]) throws -> MapID? {
        guard entries.contains(where: { $0 != .zero }) else { return nil }
        let bytes = MapBody(entries: entries).encoded()
        let id = MapID(digest: Digest(sha256Of: bytes))
        try bytes.withUnsafeBytes { _ = try backend.put(.map, id.hex, $0, mode: .createOnly) }
        return id
    }

    /// Which entry each block of a map or volume resolves to right now.
    struct MapView: Sendable {
        let record: MapRecord
        /// The base entries (the body); entries past its end are zero.
        let base: [MapEntry]
        /// Indices with a private block of the volume's current epoch.
        let written: Set<UInt64>

        var count: UInt64 { record.blockCount }

        func entry(at index: UInt64) -> MapEntry {
            if let volume = record.volume, written.contains(index) {
                return .volumeBlock(VolumeBlockID(volume: volume, epoch: record.epoch, index: index))
            }
            return index < UInt64(base.count) ? base[Int(index)] : .zero
        }

        /// Bytes of block `index` that lie inside the map.
        func length(ofBlock index: UInt64) -> Int {
            let start = index * UInt64(BlockStore.blockSizeBytes)
            return Int(min(UInt64(BlockStore.blockSizeBytes), record.sizeBytes - start))
        }
    }

    func view(of record: MapRecord) throws -> MapView {
        let base = try record.map.map { try loadBody($0, of: record.name).entries } ?? []
        var written: Set<UInt64> = []
        if record.kind == .readWrite, let volume = record.volume {
            try backend.settlePendingBlocks(volume: volume, epoch: record.epoch, base: base)
            for info in try backend.list(.volumeBlock, prefix: volume.hex + "/") {
                guard let id = VolumeBlockID(key: info.key) else { continue }
                if id.epoch == record.epoch && id.index < record.blockCount { written.insert(id.index) }
            }
        }
        return MapView(record: record, base: base, written: written)
    }

    /// Fills `buffer` (one block long) with the block `entry` refers to, zero-padded.
    /// Content-addressed blocks are verified against their name; a mismatch throws
    /// ``StoreError/Code/corrupt`` naming the block, a missing block ``StoreError/Code/missing``.
    func readBlock(_ entry: MapEntry, into buffer: UnsafeMutableRawBufferPointer, of owner: MapName, index: UInt64)
        throws
    {
        precondition(buffer.count == BlockStore.blockSizeBytes)
        let read: Int
        switch entry {
        case .zero:
            read = 0
        case .block(let id):
            guard let n = try backend.read(.block, id.hex, at: 0, into: buffer) else {
                throw StoreError(.missing, "block \(id.hex) (block \(index) of \(owner)) is missing from the store; run `snf-store check`")
            }
            let actual = BlockID(hashing: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            guard actual == id else {
                throw StoreError(.corrupt, "block \(id.hex) (block \(index) of \(owner)) is corrupt: its content hashes to \(actual.hex); run `snf-store check`")
            }
            read = n
        case .volumeBlock(let id):
            guard let n = try backend.read(.volumeBlock, id.key, at: 0, into: buffer) else {
                throw StoreError(.missing, "private block \(id.key) (block \(index) of \(owner)) is missing from the store; run `snf-store check`")
            }
            read = n
        }
        if read < buffer.count {
            memset(buffer.baseAddress! + read, 0, buffer.count - read)
        }
    }
}
