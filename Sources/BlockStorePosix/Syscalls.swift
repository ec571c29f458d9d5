import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Thin, EINTR-safe wrappers over the POSIX calls the backend uses. Failures become
/// ``StoreError``s naming the path: `noSpace` for ENOSPC/EDQUOT, else `io`.
enum Sys {
    static func failure(_ action: String, _ path: String, _ code: Int32 = errno) -> StoreError {
        let kind: StoreError.Code = (code == ENOSPC || code == EDQUOT) ? .noSpace : .io
        return StoreError(kind, "cannot \(action) \(path): \(Errno(code))", cause: Errno(code))
    }

    static func open(_ path: String, _ flags: Int32, _ mode: mode_t = 0o600) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 || errno != EINTR { return fd }
        }
    }

    static func close(_ fd: Int32) { _ = Glibc.close(fd) }


    /// The alignment O_DIRECT needs of addresses, lengths and offsets here: a page, which is a
    /// multiple of every disk's logical block size.
    static let directAlignment = 4096

    /// Writes `bytes` (aligned, a multiple of ``directAlignment``) from offset 0 of `fd`, opened
    /// with O_DIRECT. Returns how many bytes were written: fewer than all when the kernel or the
    /// filesystem refuses O_DIRECT for them (EINVAL), so that the caller writes the rest through
    /// the page cache.
    static func writeDirect(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws -> Int {
        var done = 0
        while done < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[done...])
            let n = pwrite(fd, rest.baseAddress, rest.count, off_t(done))
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EINVAL { return done }
                throw failure("write", path)
            }
            done += n
            // A short write that leaves an unaligned offset: the rest goes through the cache.
            if done % directAlignment != 0 { return done }
        }
        return done
    }

    /// Turns O_DIRECT off on `fd` (Linux lets F_SETFL change it).
    static func clearDirect(_ fd: Int32, path: String) throws {
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags & ~DirectIO.openFlag) == 0 else { throw failure("reconfigure", path) }
    }

    /// Writes all of `bytes` at `offset` (or at the file position when offset is nil).
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64?, path: String) throws {
        var done = 0
        while done < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[done...])
            let n: Int
            if let offset {
                n = pwrite(fd, rest.baseAddress, rest.count, off_t(offset + UInt64(done)))
            } else {
                n = Glibc.write(fd, rest.baseAddress, rest.count)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("write", path)
            }
            done += n
        }
    }

    /// Reads until `buffer` is full or the end of the data (at `offset`, or from the position
    /// when offset is nil). Returns the bytes read.
    static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64?, path: String)
        throws -> Int
    {
        var done = 0
        while done < buffer.count {
            let rest = UnsafeMutableRawBufferPointer(rebasing: buffer[done...])
            let n: Int
            if let offset {
                n = pread(fd, rest.baseAddress, rest.count, off_t(offset + UInt64(done)))
            } else {
                n = Glibc.read(fd, rest.baseAddress, rest.count)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure("read", path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    static func fsync(_ fd: Int32, path: String) throws {
        while Glibc.fsync(fd) != 0 {
            if errno != EINTR { throw failure("sync", path) }
        }
    }

    static func fdatasync(_ fd: Int32, path: String) throws {
        while Glibc.fdatasync(fd) != 0 {
            if errno != EINTR { throw failure("sync", path) }
        }
    }

    /// fsync of a directory, which makes the names in it durable.
    static func syncDirectory(_ path: String) throws {
        let fd = open(path, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw failure("open directory", path) }
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    /// Creates a directory; an existing one is fine.
    static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw failure("create directory", path) }
    }

    static func statPath(_ path: String) throws -> stat? {
        var s = Glibc.stat()
        if fstatat(AT_FDCWD, path, &s, 0) != 0 {
            if errno == ENOENT { return nil }
            throw failure("stat", path)
        }
        return s
    }

    /// Entries of a directory (without `.` and `..`), with their stat, or nil when it does not exist.
    static func listDirectory(_ path: String) throws -> [(name: String, stat: stat)]? {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return nil }
            throw failure("list", path)
        }
        defer { closedir(dir) }
        let dirFD = dirfd(dir)
        var out: [(String, stat)] = []
        while true {
            errno = 0
            guard let entry = readdir(dir) else {
                if errno != 0 { throw failure("list", path) }
                break
            }
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            var s = Glibc.stat()
            if fstatat(dirFD, name, &s, AT_SYMLINK_NOFOLLOW) != 0 {
                if errno == ENOENT { continue }  // removed meanwhile
                throw failure("stat", path + "/" + name)
            }
            out.append((name, s))
        }
        return out
    }
}

extension stat {
    var isRegularFile: Bool { (st_mode & S_IFMT) == S_IFREG }
    var isDirectory: Bool { (st_mode & S_IFMT) == S_IFDIR }
    var isBlockDevice: Bool { (st_mode & S_IFMT) == S_IFBLK }
}

/// O_DIRECT for the store's writers and the volume server's readers.
public enum DirectIO {
    /// Linux's O_DIRECT (x86-64 and arm64 differ; Glibc does not export it to Swift).
    #if arch(arm64)
    public static let openFlag: Int32 = 0o200000
    #else
    public static let openFlag: Int32 = 0o40000
    #endif
}
