/// Where imported or written bytes come from: a file, standard input, or memory.
public protocol ByteSource: Sendable {
    /// The total size in bytes when known before reading (regular files), else nil (pipes).
    var sizeBytes: UInt64? { get }

    /// True when ``read(at:into:)`` may be called for different offsets at once. When false, reads
    /// come in increasing offset order without gaps, one at a time.
    var supportsConcurrentReads: Bool { get }

    /// Fills `buffer` with the bytes at `offset`. Returns how many were read: fewer than
    /// `buffer.count` only at the end of the data.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int

    /// True when `[offset, offset + count)` is known to read as zeros without I/O (a hole of a
    /// sparse file). Returning false is always correct.
    func isHole(at offset: UInt64, count: Int) -> Bool

    /// What identifies this version of the source's content (regular files), for the import
    /// cache; nil when nothing does (streams, devices). Read when called: call it before and
    /// after reading to see whether the source changed meanwhile.
    func identity() throws -> SourceIdentity?
}

extension ByteSource {
    public func isHole(at offset: UInt64, count: Int) -> Bool { false }
    public func identity() throws -> SourceIdentity? { nil }
}

/// The facts that identify one version of a file's content: device, inode, size, and
/// modification and change times in nanoseconds (what git, restic and borg compare).
///
/// The change time (ctime) cannot be set by users and moves on every write, so a file whose
/// identity is unchanged holds the same bytes, provided the identity was recorded when the
/// change time was already in the past (see ``BlockStore/importMap(named:from:useCache:progress:)``).
public struct SourceIdentity: Hashable, Sendable {
    public var device: UInt64
    public var inode: UInt64
    public var sizeBytes: UInt64
    public var modifiedNanoseconds: Int64
    public var changedNanoseconds: Int64

    public init(device: UInt64, inode: UInt64, sizeBytes: UInt64, modifiedNanoseconds: Int64, changedNanoseconds: Int64) {
        self.device = device
        self.inode = inode
        self.sizeBytes = sizeBytes
        self.modifiedNanoseconds = modifiedNanoseconds
        self.changedNanoseconds = changedNanoseconds
    }

    /// The import cache key: `<device 16 hex>-<inode 16 hex>`.
    public var cacheKey: String { hexString(device) + "-" + hexString(inode) }
}

/// Where exported bytes go: a file or standard output.
public protocol ByteSink: Sendable {
    /// True when ``write(at:_:)`` accepts any offset (a regular file): zero blocks are then skipped
    /// and left as holes. When false, writes come in order, without gaps, one at a time.
    var supportsRandomAccess: Bool { get }

    /// Writes `bytes` at `offset`.
    func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws

    /// Called once after the last write, with the total size (a file sets its length to it).
    func finish(sizeBytes: UInt64) throws
}

/// Reports progress of long operations: bytes done so far and the total when known.
/// Called from worker threads, one call at a time.
public typealias ProgressHandler = @Sendable (_ doneBytes: UInt64, _ totalBytes: UInt64?) -> Void
