import BlockStore
import BlockStorePosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// One attached map or volume as a random-access device: the engine behind the NBD server and the
/// FUSE export.
///
/// Holds a ``VolumeSession`` (so nothing else changes the volume while attached) and keeps the
/// files of the blocks it touched open. Reads of zero blocks cost no I/O; the first write to a
/// block of the current epoch copies it on write into a private block (temp file, link); later
/// writes change that file in place. ``flush()`` fsyncs every private block written since the
/// last flush and the directories of new ones, so every acknowledged flush survives a power loss;
/// every completed write survives the daemon being killed (it is in the kernel's page cache under
/// its final name).
///
/// Copy-on-write of a block with data does not wait for the disk either: the copy is linked under
/// a *pending* name that carries the machine's boot id, and the next flush syncs it and gives it
/// its final name. If the daemon is killed, the copy is still in the page cache and is made final
/// when the volume is next opened; after a power failure (another boot id) it is removed, so the
/// block reads as before the copy and no untouched byte of it can have lost the origin's content.
/// A block that was all zeros needs no such care: its copy gets its final name at once, and losing
/// its content reads as the old zeros.
public final class VolumeDevice: VolumeIO {
    /// The attached name.
    public let name: MapName
    /// True when writes are allowed (a volume, not a snapshot or image).
    public let isWritable: Bool
    private let backend: PosixBackend
    private let state: Mutex<State>
    private let size: Atomic<UInt64>
    /// Bytes served, for `snf-store status`.
    public let bytesRead = Atomic<UInt64>(0)
    public let bytesWritten = Atomic<UInt64>(0)

    /// At most this many block files stay open per device (beyond the ones awaiting a flush).
    static let maxOpenFiles = 4096

    private struct State {
        var session: VolumeSession
        /// Open files by block index, for the blocks touched so far.
        var files: [UInt64: BlockFile] = [:]
        /// Private blocks written since the last flush.
        var dirty: [UInt64: BlockFile] = [:]
        /// A private block was created since the last flush: its directory needs a sync.
        var created = false
        /// Pending copies (keys by block index) that the next flush makes final.
        var pending: [UInt64: String] = [:]
        /// Partial copies: blocks with data that were first written in part (see ``PartialBlock``).
        var partial: [UInt64: PartialBlock] = [:]
        var closed = false
    }

    /// A copy-on-write in progress: the private block holds only the 64 KiB granules the guest
    /// wrote (`covered`); the others are still read from `source`. Writes that cover the whole
    /// block in pieces (a sequential write) never copy the origin; the next flush copies what is
    /// left. Its name records `covered`, updated after the data is written, so a daemon killed
    /// meanwhile leaves a block that opening the volume completes correctly.
    struct PartialBlock {
        let file: BlockFile
        let source: BlockFile
        let key: String
        var covered: UInt64
    }

    static let granule = PosixBackend.granuleBytes

    /// Bits of the granules that `[low, low + count)` touches.
    static func granules(_ low: UInt64, _ count: Int) -> (first: Int, last: Int, mask: UInt64) {
        let first = Int(low) / granule
        let last = (Int(low) + count - 1) / granule
        let width = last - first + 1
        let mask = width == 64 ? UInt64.max : ((UInt64(1) << UInt64(width)) - 1) << UInt64(first)
        return (first, last, mask)
    }

    /// Opens `name` in `store` (whose backend must be `backend`) for exclusive use.
    public init(store: BlockStore, backend: PosixBackend, name: MapName) throws {
        let session = try store.openSession(name)
        self.name = name
        self.backend = backend
        self.isWritable = session.isWritable
        self.size = Atomic(session.record.sizeBytes)
        self.state = Mutex(State(session: session))
    }

    deinit {
        state.withLock { $0.session.close() }
    }

    public var sizeBytes: UInt64 { size.load(ordering: .acquiring) }

    /// The volume's record as of now.
    public var record: MapRecord { state.withLock { $0.session.record } }

    /// Calls `body` for each block that `[offset, offset + count)` touches, with the block's index,
    /// the offset inside the block, and the range of the request it covers.
    private static func forEachBlock(
        offset: UInt64, count: Int, _ body: (_ index: UInt64, _ low: UInt64, _ range: Range<Int>) throws -> Void
    ) rethrows {
        let blockSize = UInt64(BlockStore.blockSizeBytes)
        var done = 0
        while done < count {
            let position = offset + UInt64(done)
            let index = position / blockSize
            let low = position - index * blockSize
            let n = min(count - done, Int(blockSize - low))
            try body(index, low, done..<(done + n))
            done += n
        }
    }

    // MARK: Reads

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try check(offset: offset, count: buffer.count)
        try VolumeDevice.forEachBlock(offset: offset, count: buffer.count) { index, low, range in
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[range])
            if try readPartial(index, low: low, into: piece) { return }
            if let file = try fileForReading(index) {
                if try file.readDirect(into: piece, at: low) { return }
                let got = try PosixBackend.readFully(file.fd, into: piece, at: low, what: file.what)
                if got < piece.count { memset(piece.baseAddress! + got, 0, piece.count - got) }
            } else {
                memset(piece.baseAddress!, 0, piece.count)
            }
        }
        bytesRead.wrappingAdd(UInt64(buffer.count), ordering: .relaxed)
    }

    /// Reads from a partial block (covered granules from the copy, the rest from the origin);
    /// false when block `index` is not partial.
    private func readPartial(_ index: UInt64, low: UInt64, into piece: UnsafeMutableRawBufferPointer) throws -> Bool {
        try state.withLock { s in
            try requireOpen(s)
            guard let partial = s.partial[index] else { return false }
            var done = 0
            while done < piece.count {
                let at = low + UInt64(done)
                let g = Int(at) / VolumeDevice.granule
                let n = min(piece.count - done, (g + 1) * VolumeDevice.granule - Int(at))
                let part = UnsafeMutableRawBufferPointer(rebasing: piece[done..<(done + n)])
                let file = partial.covered & (UInt64(1) << UInt64(g)) != 0 ? partial.file : partial.source
                let got = try PosixBackend.readFully(file.fd, into: part, at: at, what: file.what)
                if got < n { memset(part.baseAddress! + got, 0, n - got) }
                done += n
            }
            return true
        }
    }

    /// The open file block `index` reads from, or nil for a zero block.
    private func fileForReading(_ index: UInt64) throws -> BlockFile? {
        try state.withLock { s in
            try requireOpen(s)
            if let file = s.files[index] { return file }
            let file: BlockFile?
            switch s.session.entry(at: index) {
            case .zero:
                return nil
            case .block(let id):
                file = try open(.block, id.hex, writable: false, owner: index)
            case .volumeBlock(let id):
                let current = s.session.isWritable && id.epoch == s.session.record.epoch
                file = try open(.volumeBlock, id.key, writable: current, owner: index)
            }
            remember(file!, at: index, in: &s)
            return file
        }
    }

    private func open(_ kind: ObjectKind, _ key: String, writable: Bool, owner index: UInt64) throws -> BlockFile {
        guard let fd = try backend.openObject(kind, key, writable: writable) else {
            throw StoreError(.missing, "\(kind == .block ? "block" : "private block") \(key) (block \(index) of \(name)) is missing from the store; run `snf-store check`")
        }
        return BlockFile(fd: fd, writable: writable, what: "\(kind.rawValue) \(key) of \(name)")
    }

    private func remember(_ file: BlockFile, at index: UInt64, in s: inout State) {
        if s.files.count >= VolumeDevice.maxOpenFiles {
            // Forget every clean file; dirty ones stay referenced until the flush.
            s.files = s.dirty
        }
        s.files[index] = file
    }

    // MARK: Writes

    public func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool) throws {
        guard isWritable else {
            throw StoreError(.wrongKind, "\(name) is a read-only map (an image or snapshot); it cannot be written")
        }
        try check(offset: offset, count: bytes.count)
        var touched: [BlockFile] = []
        var createdAny = false
        try VolumeDevice.forEachBlock(offset: offset, count: bytes.count) { index, low, range in
            let piece = UnsafeRawBufferPointer(rebasing: bytes[range])
            let (file, created) = try fileForWriting(index, low: low, piece: piece)
            if !created {
                if try !file.writeDirect(piece, at: low) {
                    try file.write(piece, at: low)
                }
            }
            createdAny = createdAny || created
            if fua { touched.append(file) }
        }
        if fua {
            let anyPending = state.withLock { !$0.pending.isEmpty || !$0.partial.isEmpty }
            if anyPending {
                // A pending copy must become final for the write to be durable: flush it all.
                try flush()
            } else {
                for file in touched { try PosixBackend.dataSync(file.fd, what: file.what) }
                if createdAny { try backend.flush() }
            }
        }
        bytesWritten.wrappingAdd(UInt64(bytes.count), ordering: .relaxed)
    }

    /// The private block of the current epoch for block `index`, copied on write if needed.
    /// Returns `created: true` when the new block already holds `piece` at `low`.
    private func fileForWriting(_ index: UInt64, low: UInt64, piece: UnsafeRawBufferPointer) throws -> (BlockFile, created: Bool) {
        try state.withLock { s in
            try requireOpen(s)
            if let file = s.files[index], file.writable {
                s.dirty[index] = file
                return (file, false)
            }
            let old = s.session.entry(at: index)
            if case .volumeBlock(let id) = old, id.epoch == s.session.record.epoch {
                // Written in this epoch by an earlier attachment: change it in place.
                let file = try open(.volumeBlock, id.key, writable: true, owner: index)
                remember(file, at: index, in: &s)
                s.dirty[index] = file
                return (file, false)
            }
            if var partial = s.partial[index] {
                try writePartial(&partial, low: low, piece: piece)
                if partial.covered == UInt64.max {
                    try complete(partial, at: index, in: &s)
                } else {
                    s.partial[index] = partial
                }
                return (partial.file, true)
            }
            let key = s.session.privateBlock(at: index).key
            let what = "private block \(key) of \(name)"
            let fd: Int32
            if old != .zero && !(low == 0 && piece.count == BlockStore.blockSizeBytes) {
                // A block with data, written in part: a partial copy holding just the granules written.
                let source = try s.files[index] ?? fileForCopy(old, index: index)
                let touched = VolumeDevice.granules(low, piece.count)
                let fd = try backend.createPrivateBlock(key, as: .partial(covered: touched.mask)) { fd in
                    let scratch = BlockFile(fd: dup(fd), writable: true, what: what)
                    try copyEdges(of: touched, low: low, count: piece.count, from: source, to: scratch, covered: 0)
                    try scratch.write(piece, at: low)
                }
                let partial = PartialBlock(file: BlockFile(fd: fd, writable: true, what: what), source: source, key: key, covered: touched.mask)
                s.created = true
                if partial.covered == UInt64.max {
                    try complete(partial, at: index, in: &s)
                } else {
                    s.partial[index] = partial
                }
                return (partial.file, true)
            }
            if old == .zero {
                // Nothing to preserve: a lost copy reads as the old zeros.
                fd = try backend.createPrivateBlock(key, as: .final(sync: false)) { fd in
                    try BlockFile.writeInPieces(fd, piece, at: low, what: what)
                }
            } else {
                let source = try s.files[index] ?? fileForCopy(old, index: index)
                let whole = low == 0 && piece.count == BlockStore.blockSizeBytes
                fd = try backend.createPrivateBlock(key, as: .pending) { fd in
                    try copyBlock(from: whole ? nil : source, overlaid: piece, at: low, to: fd, what: what)
                }
                s.pending[index] = key
            }
            let file = BlockFile(fd: fd, writable: true, what: what)
            s.session.markWritten(index)
            remember(file, at: index, in: &s)
            s.dirty[index] = file
            s.created = true
            return (file, true)
        }
    }

    /// Writes `piece` into a partial block: first copies from the origin the granules at its edges
    /// that it covers only in part, then writes, then records the granules (in that order, so a
    /// recorded granule always holds the block's data).
    private func writePartial(_ partial: inout PartialBlock, low: UInt64, piece: UnsafeRawBufferPointer) throws {
        let touched = VolumeDevice.granules(low, piece.count)
        try copyEdges(of: touched, low: low, count: piece.count, from: partial.source, to: partial.file, covered: partial.covered)
        try partial.file.write(piece, at: low)
        let covered = partial.covered | touched.mask
        if covered != partial.covered {
            try backend.updatePartialBlock(partial.key, from: partial.covered, to: covered)
            partial.covered = covered
        }
    }

    /// Copies from `source` the first and last granules of `touched` when the write covers them
    /// only in part and they are not yet `covered`.
    private func copyEdges(
        of touched: (first: Int, last: Int, mask: UInt64), low: UInt64, count: Int, from source: BlockFile, to file: BlockFile,
        covered: UInt64
    ) throws {
        let granule = VolumeDevice.granule
        let end = Int(low) + count
        for g in Set([touched.first, touched.last]) where covered & (UInt64(1) << UInt64(g)) == 0 {
            let start = g * granule
            guard Int(low) > start || end < start + granule else { continue }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: granule, alignment: 4096)
            defer { buffer.deallocate() }
            let got = try PosixBackend.readFully(source.fd, into: buffer, at: UInt64(start), what: source.what)
            if got < granule { memset(buffer.baseAddress! + got, 0, granule - got) }
            try file.write(UnsafeRawBufferPointer(buffer), at: UInt64(start))
        }
    }

    /// Turns a partial block that holds every granule into a pending one.
    private func complete(_ partial: PartialBlock, at index: UInt64, in s: inout State) throws {
        try backend.completePartialBlock(partial.key, covered: partial.covered)
        s.partial[index] = nil
        s.pending[index] = partial.key
        s.session.markWritten(index)
        remember(partial.file, at: index, in: &s)
        s.dirty[index] = partial.file
        s.created = true
    }

    /// Copies the rest of every partial block from its origin and makes it pending.
    private func completeAllPartials(_ s: inout State) throws {
        for (index, var partial) in s.partial.sorted(by: { $0.key < $1.key }) {
            try backend.fillGranules(partial.file.fd, path: partial.file.what, except: partial.covered, from: s.session.entry(at: index))
            try backend.updatePartialBlock(partial.key, from: partial.covered, to: UInt64.max)
            partial.covered = UInt64.max
            try complete(partial, at: index, in: &s)
        }
    }

    private func fileForCopy(_ entry: MapEntry, index: UInt64) throws -> BlockFile {
        switch entry {
        case .zero: preconditionFailure("zero blocks are not copied")
        case .block(let id): return try open(.block, id.hex, writable: false, owner: index)
        case .volumeBlock(let id): return try open(.volumeBlock, id.key, writable: false, owner: index)
        }
    }

    /// Writes the new block: the old content (none when `source` is nil) with `piece` laid over
    /// it at `low`.
    private func copyBlock(from source: BlockFile?, overlaid piece: UnsafeRawBufferPointer, at low: UInt64, to fd: Int32, what: String)
        throws
    {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: BlockStore.blockSizeBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var length = 0
        if let source {
            length = try PosixBackend.readFully(source.fd, into: buffer, at: 0, what: source.what)
        }
        let end = Int(low) + piece.count
        if end > length {
            memset(buffer.baseAddress! + length, 0, end - length)
            length = end
        }
        (buffer.baseAddress! + Int(low)).copyMemory(from: piece.baseAddress!, byteCount: piece.count)
        try BlockFile.writeInPieces(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<length]), at: 0, what: what)
    }

    /// Writes `count` zero bytes at `offset`. Blocks that already read as zeros and were never
    /// written are skipped: no copy-on-write, no I/O.
    public func writeZeroes(at offset: UInt64, count: Int, fua: Bool) throws {
        guard isWritable else {
            throw StoreError(.wrongKind, "\(name) is a read-only map (an image or snapshot); it cannot be written")
        }
        try check(offset: offset, count: count)
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: BlockStore.blockSizeBytes, alignment: 4096)
        defer { zeros.deallocate() }
        memset(zeros.baseAddress!, 0, zeros.count)
        try VolumeDevice.forEachBlock(offset: offset, count: count) { index, _, range in
            let alreadyZero = try state.withLock { s in
                try requireOpen(s)
                return s.files[index] == nil && s.session.entry(at: index) == .zero
            }
            if !alreadyZero {
                try write(at: offset + UInt64(range.lowerBound), from: UnsafeRawBufferPointer(rebasing: zeros[0..<range.count]), fua: fua)
            }
        }
    }

    // MARK: Flush, snapshot, grow

    public func flush() throws {
        let (files, created, pending) = try state.withLock { s -> ([UInt64: BlockFile], Bool, [UInt64: String]) in
            try completeAllPartials(&s)
            let out = (s.dirty, s.created, s.pending)
            s.dirty = [:]
            s.created = false
            s.pending = [:]
            return out
        }
        do {
            try sync(files: files, created: created, pending: pending)
        } catch {
            // Keep them dirty: the next flush tries again.
            state.withLock { s in
                s.dirty.merge(files) { newer, _ in newer }
                s.pending.merge(pending) { newer, _ in newer }
                s.created = s.created || created
            }
            throw error
        }
    }

    /// fdatasync of every dirty block, pending copies made final, directories synced.
    private func sync(files: [UInt64: BlockFile], created: Bool, pending: [UInt64: String]) throws {
        for file in files.values { try PosixBackend.dataSync(file.fd, what: file.what) }
        for key in pending.values { try backend.promotePendingBlock(key) }
        if created || !pending.isEmpty { try backend.flush() }
    }

    /// Flushes, then freezes the volume into the read-only map `snapshotName` (see
    /// ``VolumeSession/snapshot(as:)``). Writes that complete while this runs wait for it.
    @discardableResult
    public func snapshot(as snapshotName: MapName) throws -> MapRecord {
        try state.withLock { s in
            try requireOpen(s)
            try completeAllPartials(&s)
            try sync(files: s.dirty, created: s.created, pending: s.pending)
            s.dirty = [:]
            s.created = false
            s.pending = [:]
            let snapshot = try s.session.snapshot(as: snapshotName)
            // Every private block is frozen now: reopen lazily with the new resolution.
            s.files = [:]
            return snapshot
        }
    }

    /// Grows the volume to `sizeBytes` (never shrinks); the new bytes read as zeros.
    @discardableResult
    public func grow(toSizeBytes sizeBytes: UInt64) throws -> MapRecord {
        try state.withLock { s in
            try requireOpen(s)
            let record = try s.session.grow(toSizeBytes: sizeBytes)
            size.store(record.sizeBytes, ordering: .releasing)
            return record
        }
    }

    /// Flushes and releases the volume; later calls fail. Idempotent.
    public func close() throws {
        let alreadyClosed = state.withLock { $0.closed }
        guard !alreadyClosed else { return }
        try flush()
        state.withLock { s in
            s.closed = true
            s.files = [:]
            s.session.close()
        }
    }

    /// Releases the volume without flushing, as a killed daemon would (for tests).
    func abandon() {
        state.withLock { s in
            s.closed = true
            s.files = [:]
            s.dirty = [:]
            s.pending = [:]
            s.partial = [:]
            s.session.close()
        }
    }

    // MARK: Checks

    private func check(offset: UInt64, count: Int) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(count))
        guard !overflow, end <= sizeBytes else {
            throw StoreError(.outOfRange, "\(count) bytes at offset \(offset) pass the end of \(name) (\(sizeBytes) bytes)")
        }
    }

    private func requireOpen(_ s: State) throws {
        guard !s.closed else { throw StoreError(.invalidArgument, "\(name) is no longer attached") }
    }
}

/// An open block file; closed when the last user lets go.
final class BlockFile: Sendable {
    let fd: Int32
    let writable: Bool
    let what: String
    /// A second descriptor of a read-only block opened with O_DIRECT, for small reads: -1 until
    /// the first one, -2 when the file system refuses direct I/O.
    private let directFD = Atomic<Int32>(-1)

    init(fd: Int32, writable: Bool, what: String) {
        self.fd = fd
        self.writable = writable
        self.what = what
    }

    /// Reads of at most this many bytes from read-only blocks bypass the page cache.
    static let directReadLimit = 64 * 1024

    /// Reads `piece` from `offset` with O_DIRECT when that applies: the file is read-only (an
    /// immutable content block or an older epoch's private block, so no dirty page of it can be
    /// in the page cache), and the request is small and 4 KiB aligned. A small random read of a
    /// cold block then costs one disk read, like a raw file opened with O_DIRECT (qemu's
    /// `cache=none`), without the page cache's readahead and page allocation. Large reads keep
    /// the page cache and its readahead. Returns false when the caller must read buffered.
    func readDirect(into piece: UnsafeMutableRawBufferPointer, at offset: UInt64) throws -> Bool {
        guard !writable, piece.count <= BlockFile.directReadLimit, piece.count % 4096 == 0, offset % 4096 == 0 else {
            return false
        }
        guard let direct = BlockFile.directDescriptor(directFD, of: fd, flags: O_RDONLY) else { return false }
        let aligned = Int(bitPattern: piece.baseAddress!) % 4096 == 0
        let target = aligned ? piece : UnsafeMutableRawBufferPointer.allocate(byteCount: piece.count, alignment: 4096)
        defer { if !aligned { target.deallocate() } }
        let got = try PosixBackend.readFully(direct, into: target, at: offset, what: what)
        if !aligned { piece.baseAddress!.copyMemory(from: target.baseAddress!, byteCount: got) }
        if got < piece.count { memset(piece.baseAddress! + got, 0, piece.count - got) }
        return true
    }

    /// A descriptor of a writable block opened with O_DIRECT, for large aligned writes: -1 until
    /// the first one, -2 when the file system refuses direct I/O.
    private let directWriteFD = Atomic<Int32>(-1)

    /// Writes of at least this many bytes (aligned) bypass the page cache.
    static let directWriteMinimum = 128 * 1024

    /// Writes `bytes` at `offset` with O_DIRECT when the file is writable and the write is large
    /// and 4 KiB aligned (offset, length and buffer): a sequential write then costs no copy into
    /// the page cache and no writeback later, like a raw file opened with O_DIRECT (qemu's
    /// `cache=none`). The kernel writes back and drops any cached pages of the range first, so
    /// earlier buffered writes stay coherent; the next flush's fdatasync makes it durable like any
    /// other write. Returns false when the caller must write buffered.
    func writeDirect(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws -> Bool {
        guard writable, bytes.count >= BlockFile.directWriteMinimum, bytes.count % 4096 == 0, offset % 4096 == 0,
            Int(bitPattern: bytes.baseAddress!) % 4096 == 0
        else { return false }
        guard let direct = BlockFile.directDescriptor(directWriteFD, of: fd, flags: O_RDWR) else { return false }
        try PosixBackend.writeAll(direct, bytes, at: offset, what: what)
        return true
    }

    /// The O_DIRECT twin of `fd` kept in `slot`, opened on first use; nil when refused.
    private static func directDescriptor(_ slot: borrowing Atomic<Int32>, of fd: Int32, flags: Int32) -> Int32? {
        let direct = slot.load(ordering: .acquiring)
        if direct == -2 { return nil }
        if direct >= 0 { return direct }
        let opened = Glibc.open("/proc/self/fd/\(fd)", flags | O_CLOEXEC | DirectIO.openFlag)
        let value = opened >= 0 ? opened : -2
        let (exchanged, current) = slot.compareExchange(expected: -1, desired: value, ordering: .acquiringAndReleasing)
        if !exchanged {
            if opened >= 0 { _ = Glibc.close(opened) }
            return current >= 0 ? current : nil
        }
        return value >= 0 ? value : nil
    }

    /// Buffered writes reach the kernel in pieces of at most this size, so that the page cache
    /// holds small folios. A 4 KiB write into a large folio costs time in proportion to the folio
    /// (ext4 walks its buffers): after one 1 MiB write, 4 KiB random writes to the same range ran
    /// at 0.7 of a raw file's IOPS; with 16 KiB pieces they match it, and sequential writes keep
    /// their speed (Benchmarks/extstorage-bench).
    static let pieceBytes = 16 * 1024

    /// Writes `bytes` at `offset` (through the page cache; durable after a flush).
    func write(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        try BlockFile.writeInPieces(fd, bytes, at: offset, what: what)
    }

    static func writeInPieces(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, what: String) throws {
        var done = 0
        while done < bytes.count {
            let n = min(pieceBytes - Int((offset + UInt64(done)) % UInt64(pieceBytes)), bytes.count - done)
            try PosixBackend.writeAll(fd, UnsafeRawBufferPointer(rebasing: bytes[done..<(done + n)]), at: offset + UInt64(done), what: what)
            done += n
        }
    }

    deinit {
        _ = Glibc.close(fd)
        for slot in [directFD.load(ordering: .acquiring), directWriteFD.load(ordering: .acquiring)] where slot >= 0 {
            _ = Glibc.close(slot)
        }
    }
}
