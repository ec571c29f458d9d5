import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Bytes from a file descriptor: a regular file or block device (random access, known size,
/// holes skipped) or a pipe (sequential).
public final class FileSource: ByteSource {
    let fd: Int32
    let path: String
    let ownsDescriptor: Bool
    let isRegularFile: Bool
    public let sizeBytes: UInt64?
    public let supportsConcurrentReads: Bool

    /// Opens `path` for reading.
    public convenience init(path: String) throws {
        let fd = Sys.open(path, O_RDONLY)
        guard fd >= 0 else {
            let code = errno
            if code == ENOENT { throw StoreError(.invalidArgument, "cannot read \(path): no such file") }
            throw Sys.failure("open", path, code)
        }
        try self.init(descriptor: fd, path: path, owns: true)
    }

    /// Reads from an open descriptor (standard input is `0`); `path` is used in messages.
    public init(descriptor fd: Int32, path: String, owns: Bool = false) throws {
        self.fd = fd
        self.path = path
        self.ownsDescriptor = owns
        var s = stat()
        guard fstat(fd, &s) == 0 else {
            let error = Sys.failure("stat", path)
            if owns { Sys.close(fd) }
            throw error
        }
        if s.isDirectory {
            if owns { Sys.close(fd) }
            throw StoreError(.invalidArgument, "cannot read \(path): it is a directory")
        }
        isRegularFile = s.isRegularFile
        if s.isRegularFile {
            sizeBytes = UInt64(s.st_size)
            supportsConcurrentReads = true
        } else if s.isBlockDevice {
            let end = lseek(fd, 0, SEEK_END)
            sizeBytes = end >= 0 ? UInt64(end) : nil
            supportsConcurrentReads = end >= 0
        } else {
            sizeBytes = nil
            supportsConcurrentReads = false
        }
    }

    deinit {
        if ownsDescriptor { Sys.close(fd) }
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        try Sys.readFully(fd, buffer, at: supportsConcurrentReads ? offset : nil, path: path)
    }

    /// Device, inode, size, modification and change time of a regular file; nil otherwise.
    public func identity() throws -> SourceIdentity? {
        guard isRegularFile else { return nil }
        var s = stat()
        guard fstat(fd, &s) == 0 else { throw Sys.failure("stat", path) }
        return SourceIdentity(
            device: UInt64(s.st_dev), inode: UInt64(s.st_ino), sizeBytes: UInt64(s.st_size),
            modifiedNanoseconds: Int64(s.st_mtim.tv_sec) * 1_000_000_000 + Int64(s.st_mtim.tv_nsec),
            changedNanoseconds: Int64(s.st_ctim.tv_sec) * 1_000_000_000 + Int64(s.st_ctim.tv_nsec))
    }

    /// `SEEK_DATA` (Linux): not exported by Swift's Glibc module.
    static let seekData: Int32 = 3

    public func isHole(at offset: UInt64, count: Int) -> Bool {
        guard isRegularFile else { return false }
        let next = lseek(fd, off_t(offset), FileSource.seekData)
        if next < 0 { return errno == ENXIO }  // no data at or after offset
        return UInt64(next) >= offset + UInt64(count)
    }
}

/// Bytes to a file descriptor: a regular file (random access: zero blocks stay holes) or a
/// pipe or device (sequential).
public final class FileSink: ByteSink {
    let fd: Int32
    let path: String
    let ownsDescriptor: Bool
    public let supportsRandomAccess: Bool

    /// Creates or truncates the file at `path`.
    public convenience init(path: String) throws {
        // Never truncate a device; a regular file is replaced by the export's bytes.
        let existing = try Sys.statPath(path)
        let flags = existing.map { !$0.isRegularFile } == true ? O_WRONLY : (O_WRONLY | O_CREAT | O_TRUNC)
        let fd = Sys.open(path, flags, 0o644)
        guard fd >= 0 else { throw Sys.failure("open", path) }
        try self.init(descriptor: fd, path: path, owns: true)
    }

    /// Writes to an open descriptor (standard output is `1`), always sequentially.
    public init(descriptor fd: Int32, path: String, owns: Bool = false) throws {
        self.fd = fd
        self.path = path
        self.ownsDescriptor = owns
        var s = stat()
        guard fstat(fd, &s) == 0 else { throw Sys.failure("stat", path) }
        supportsRandomAccess = owns && s.isRegularFile
        if (s.st_mode & S_IFMT) == S_IFIFO {
            // A larger pipe buffer (1 MiB) means a fraction of the wake-ups per block.
            _ = fcntl(fd, FileSink.setPipeSize, Int32(1 << 20))
        }
    }

    /// `F_SETPIPE_SZ` (Linux): not exported by Swift's Glibc module.
    static let setPipeSize: Int32 = 1031

    deinit {
        if ownsDescriptor { Sys.close(fd) }
    }

    public func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        try Sys.writeAll(fd, bytes, at: supportsRandomAccess ? offset : nil, path: path)
    }

    public func finish(sizeBytes: UInt64) throws {
        if supportsRandomAccess && ftruncate(fd, off_t(sizeBytes)) != 0 {
            throw Sys.failure("set the length of", path)
        }
    }
}
