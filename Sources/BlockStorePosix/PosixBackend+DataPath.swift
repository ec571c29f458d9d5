import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Direct file access for the node daemon's data path, which keeps descriptors open instead of
/// opening a file per request. Same files, same crash rules as the ``StoreBackend`` calls.
extension PosixBackend {
    /// Opens the file of an existing object; nil when it does not exist.
    public func openObject(_ kind: ObjectKind, _ key: String, writable: Bool) throws -> Int32? {
        let path = try path(kind, key)
        let fd = Sys.open(path, writable ? O_RDWR : O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw Sys.failure("open", path)
        }
        return fd
    }

    /// Creates the private block `key` (which must not exist): a scratch file that `fill` writes,
    /// fsynced when `sync` is set, then linked into place. Returns a read-write descriptor of the
    /// new block. The name is durable after the next ``flush()``.
    ///
    /// Without `sync` the content may be lost by a power failure even after the name survived;
    /// the caller passes `sync: false` only when the block's previous content was all zeros, so
    /// that losing it reads as the old content.
    public func createPrivateBlock(_ key: String, sync: Bool, fill: (Int32) throws -> Void) throws -> Int32 {
        let target = try path(.volumeBlock, key)
        let scratch = try scratchPath()
        let fd = Sys.open(scratch, O_RDWR | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw Sys.failure("create", scratch) }
        defer { unlink(scratch) }
        do {
            try fill(fd)
            if sync { try Sys.fdatasync(fd, path: scratch) }
            let directory = String(target[..<target.lastIndex(of: "/")!])
            var madeDirectory = false
            while link(scratch, target) != 0 {
                let code = errno
                if code == ENOENT && !madeDirectory {
                    try Sys.makeDirectory(directory)
                    markDirectoryDirty(root + "/volumes")
                    madeDirectory = true
                    continue
                }
                throw Sys.failure("create", target, code)
            }
            markDirectoryDirty(directory)
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// Reads until `buffer` is full or the file ends; returns the bytes read.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: String)
        throws -> Int
    {
        try Sys.readFully(fd, buffer, at: offset, path: what)
    }

    /// Writes all of `bytes` at `offset`.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, what: String) throws {
        try Sys.writeAll(fd, bytes, at: offset, path: what)
    }

    /// fdatasync, as a ``StoreError`` naming `what` on failure.
    public static func dataSync(_ fd: Int32, what: String) throws {
        try Sys.fdatasync(fd, path: what)
    }
}

/// Operator metadata of volumes (Ganeti's `setinfo`): `meta/<name>`, one line of text, replaced
/// atomically. Not part of the map format: losing it loses no data.
extension PosixBackend {
    /// Stores `text` as the metadata of `name`, or removes it when `text` is nil.
    public func setMetadata(of name: String, to text: String?) throws {
        guard MapName.problem(with: name) == nil else {
            throw StoreError(.invalidName, "invalid name \(name.debugDescription)")
        }
        let directory = root + "/meta"
        let target = directory + "/" + name
        guard let text else {
            if unlink(target) != 0 && errno != ENOENT { throw Sys.failure("remove", target) }
            return
        }
        try Sys.makeDirectory(directory)
        let scratch = try scratchPath()
        let fd = Sys.open(scratch, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw Sys.failure("create", scratch) }
        defer { unlink(scratch) }
        do {
            try Array((text + "\n").utf8).withUnsafeBytes { try Sys.writeAll(fd, $0, at: 0, path: scratch) }
            try Sys.fsync(fd, path: scratch)
            Sys.close(fd)
        } catch {
            Sys.close(fd)
            throw error
        }
        guard rename(scratch, target) == 0 else { throw Sys.failure("replace", target) }
        try Sys.syncDirectory(directory)
    }

    /// The metadata of `name`, or nil.
    public func metadata(of name: String) throws -> String? {
        guard MapName.problem(with: name) == nil else { return nil }
        let path = root + "/meta/" + name
        guard try Sys.statPath(path) != nil else { return nil }
        let bytes = try PosixBackend.readSmallFile(path)
        return String(decoding: bytes, as: UTF8.self).trimmingSuffixNewline
    }
}

extension String {
    var trimmingSuffixNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
