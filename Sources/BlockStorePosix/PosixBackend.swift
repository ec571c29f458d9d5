import BlockStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The local-directory backend: every object is a file under the store root.
///
///     STORE                         format marker ("snf-store 1")
///     blocks/<2 hex>/<64 hex>       content-addressed blocks (256-way fan-out)
///     volumes/<volume>/<epoch>_<i>  private blocks, one directory per volume
///     maps/<64 hex>                 map bodies
///     names/<name>                  records
///     cache/<dev>-<inode>           import cache entries
///     locks/<lock>                  flock(2) files
///     tmp/                          scratch: every new file is written here first
///
/// A put writes `tmp/<unique>`, fsyncs it and renames (replace) or links (create-only) it into
/// place; the target directory is remembered and fsynced by ``flush()``. Everything lives on one
/// filesystem, so rename and link are atomic.
public final class PosixBackend: StoreBackend {
    /// The store's root directory.
    public let root: String
    private let dirtyDirectories = Mutex<Set<String>>([])
    private let scratchCounter = Atomic<UInt64>(0)

    static let marker = "snf-store 1\nblock-size \(BlockStore.blockSizeBytes)\nblock-hash \(BlockStore.blockHashName)\n"
    static let directories = ["blocks", "volumes", "maps", "names", "cache", "locks", "tmp", "meta"]

    /// Opens the store at `root`. Throws ``StoreError/Code/notAStore`` when it was never initialized.
    public init(root: String) throws {
        self.root = PosixBackend.normalized(root)
        guard let marker = try? PosixBackend.readSmallFile(self.root + "/STORE"),
            String(decoding: marker, as: UTF8.self) == PosixBackend.marker
        else {
            throw StoreError(.notAStore, "no block store at \(self.root); run `snf-store init` first")
        }
    }

    /// Creates the store layout at `root` (and `root` itself). Idempotent: returns false when a
    /// store was already there. Throws ``StoreError/Code/notAStore`` when `root` holds other files.
    @discardableResult
    public static func initialize(root: String) throws -> Bool {
        let root = normalized(root)
        if (try? PosixBackend(root: root)) != nil {
            return false
        }
        var parents: [String] = []
        var path = ""
        for part in root.split(separator: "/") {
            path += "/" + part
            parents.append(path)
        }
        for dir in parents where try Sys.statPath(dir) == nil {
            try Sys.makeDirectory(dir)
        }
        if let existing = try Sys.listDirectory(root), !existing.isEmpty,
            existing.contains(where: { !directories.contains($0.name) && $0.name != "STORE" })
        {
            throw StoreError(.notAStore, "\(root) is not empty and holds no block store; choose an empty directory")
        }
        for dir in directories {
            try Sys.makeDirectory(root + "/" + dir)
        }
        for i in 0..<256 {
            try Sys.makeDirectory(root + "/blocks/" + fanOut(UInt8(i)))
        }
        try Sys.syncDirectory(root + "/blocks")
        let backend = PosixBackend(unchecked: root)
        let marker = Array(PosixBackend.marker.utf8)
        try marker.withUnsafeBytes { bytes in
            let scratch = try backend.writeScratch(bytes)
            guard rename(scratch, root + "/STORE") == 0 else { throw Sys.failure("create", root + "/STORE") }
        }
        try Sys.syncDirectory(root)
        if let parent = parents.dropLast().last { try Sys.syncDirectory(parent) }
        return true
    }

    private init(unchecked root: String) { self.root = root }

    static func normalized(_ root: String) -> String {
        var path = root
        if !path.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX))
            if getcwd(&buffer, buffer.count) != nil {
                path = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) + "/" + path
            }
        }
        var parts: [Substring] = []
        for part in path.split(separator: "/") where part != "." {
            if part == ".." { _ = parts.popLast() } else { parts.append(part) }
        }
        return "/" + parts.joined(separator: "/")
    }

    static func fanOut(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xf)]])
    }

    static func readSmallFile(_ path: String) throws -> [UInt8] {
        let fd = Sys.open(path, O_RDONLY)
        guard fd >= 0 else { throw Sys.failure("open", path) }
        defer { Sys.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = try bytes.withUnsafeMutableBytes { try Sys.readFully(fd, $0, at: 0, path: path) }
        return Array(bytes.prefix(n))
    }

    // MARK: Paths

    /// The file of an object. Keys are validated so that no key can leave its directory.
    func path(_ kind: ObjectKind, _ key: String) throws -> String {
        switch kind {
        case .block:
            guard BlockID(hex: key) != nil, key == key.lowercased() else { throw badKey(kind, key) }
            return root + "/blocks/" + key.prefix(2) + "/" + key
        case .map:
            guard MapID(hex: key) != nil, key == key.lowercased() else { throw badKey(kind, key) }
            return root + "/maps/" + key
        case .volumeBlock:
            guard let id = VolumeBlockID(key: key), id.key == key else { throw badKey(kind, key) }
            return root + "/volumes/" + key
        case .record:
            guard MapName.problem(with: key) == nil else { throw badKey(kind, key) }
            return root + "/names/" + key
        case .importCache:
            guard PosixBackend.isCacheKey(key) else { throw badKey(kind, key) }
            return root + "/cache/" + key
        }
    }

    /// `<16 hex>-<16 hex>`.
    static func isCacheKey(_ key: String) -> Bool {
        let utf8 = Array(key.utf8)
        return utf8.count == 33 && utf8[16] == UInt8(ascii: "-")
            && utf8.enumerated().allSatisfy { $0.offset == 16 || (hexDigits.contains($0.element)) }
    }

    static let hexDigits = Set("0123456789abcdef".utf8)

    private func badKey(_ kind: ObjectKind, _ key: String) -> StoreError {
        StoreError(.invalidArgument, "invalid \(kind.rawValue) key \(key.debugDescription)")
    }

    private static func parent(_ path: String) -> String {
        String(path[..<path.lastIndex(of: "/")!])
    }

    func markDirectoryDirty(_ directory: String) { markDirty(directory) }

    private func markDirty(_ directory: String) {
        dirtyDirectories.withLock { _ = $0.insert(directory) }
    }

    // MARK: StoreBackend

    /// Opens an object's file for reading; nil when it does not exist.
    private func openIfPresent(_ path: String) throws -> Int32? {
        let fd = Sys.open(path, O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw Sys.failure("open", path)
        }
        return fd
    }

    public func read(_ kind: ObjectKind, _ key: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
        throws -> Int?
    {
        let path = try path(kind, key)
        guard let fd = try openIfPresent(path) else { return nil }
        defer { Sys.close(fd) }
        return try Sys.readFully(fd, buffer, at: offset, path: path)
    }

    public func get(_ kind: ObjectKind, _ key: String) throws -> [UInt8]? {
        let path = try path(kind, key)
        guard let fd = try openIfPresent(path) else { return nil }
        defer { Sys.close(fd) }
        var s = Glibc.stat()
        guard fstat(fd, &s) == 0 else { throw Sys.failure("stat", path) }
        var bytes = [UInt8](repeating: 0, count: Int(s.st_size))
        let n = try bytes.withUnsafeMutableBytes { try Sys.readFully(fd, $0, at: 0, path: path) }
        return n == bytes.count ? bytes : Array(bytes.prefix(n))
    }

    /// A fresh, unused scratch file name.
    func scratchPath() throws -> String {
        let serial = scratchCounter.wrappingAdd(1, ordering: .relaxed).newValue
        var rng = SystemRandomNumberGenerator()
        return "\(root)/tmp/\(getpid())-\(serial)-\(String(rng.next() as UInt32, radix: 16)).tmp"
    }

    /// New content-addressed blocks of at least this many aligned bytes, from an aligned buffer,
    /// bypass the page cache (O_DIRECT): such a block is written once and read later, if ever,
    /// and copying it into the cache cost a fifth of a streamed upload's CPU (perf, 1 GiB PUT).
    static let directWriteMinimum = 64 * 1024

    /// Whether O_DIRECT is tried: cleared for good the first time this filesystem refuses it.
    private let directWrites = Atomic<Bool>(true)

    /// Writes `bytes` to a new scratch file, fsynced. Returns its path. With `direct`, an aligned
    /// buffer (the store's own, from `BlockBuffer`, or an upload's) of at least
    /// ``directWriteMinimum`` bytes is written with O_DIRECT, all but a last partial page, which
    /// goes through the page cache; the fsync then makes both, and the file's size, durable.
    private func writeScratch(_ bytes: UnsafeRawBufferPointer, direct wanted: Bool = false) throws -> String {
        let path = try scratchPath()
        let alignment = Sys.directAlignment
        let aligned = bytes.count & ~(alignment - 1)
        var direct = wanted && aligned >= Self.directWriteMinimum && directWrites.load(ordering: .relaxed)
            && Int(bitPattern: bytes.baseAddress) % alignment == 0
        var fd = Sys.open(path, O_WRONLY | O_CREAT | O_EXCL | (direct ? DirectIO.openFlag : 0), 0o600)
        if fd < 0 && direct && errno == EINVAL {
            // A filesystem without O_DIRECT (tmpfs on older kernels).
            directWrites.store(false, ordering: .relaxed)
            direct = false
            fd = Sys.open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        }
        guard fd >= 0 else { throw Sys.failure("create", path) }
        do {
            var done = 0
            if direct {
                done = try Sys.writeDirect(fd, UnsafeRawBufferPointer(rebasing: bytes[0..<aligned]), path: path)
                if done == 0 { directWrites.store(false, ordering: .relaxed) }
                if done < bytes.count { try Sys.clearDirect(fd, path: path) }
            }
            if done < bytes.count {
                try Sys.writeAll(fd, UnsafeRawBufferPointer(rebasing: bytes[done...]), at: UInt64(done), path: path)
            }
            try Sys.fsync(fd, path: path)
        } catch {
            Sys.close(fd)
            unlink(path)
            throw error
        }
        Sys.close(fd)
        return path
    }

    @discardableResult
    public func put(_ kind: ObjectKind, _ key: String, _ bytes: UnsafeRawBufferPointer, mode: PutMode) throws -> Bool {
        let target = try path(kind, key)
        // Content-addressed blocks are written once and read later, if ever: around the page
        // cache. A volume's private blocks are rewritten and read back while it runs: through it.
        let scratch = try writeScratch(bytes, direct: kind == .block)
        defer { unlink(scratch) }
        let directory = PosixBackend.parent(target)
        var madeDirectory = false
        while true {
            let rc = mode == .createOnly ? link(scratch, target) : rename(scratch, target)
            if rc == 0 { break }
            let code = errno
            if code == EEXIST && mode == .createOnly { return false }
            if code == ENOENT && kind == .volumeBlock && !madeDirectory {
                // First block of this volume: make its directory, then retry.
                try Sys.makeDirectory(directory)
                markDirty(root + "/volumes")
                madeDirectory = true
                continue
            }
            throw Sys.failure(mode == .createOnly ? "create" : "replace", target, code)
        }
        markDirty(directory)
        return true
    }

    public func write(_ kind: ObjectKind, _ key: String, at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        let path = try path(kind, key)
        let fd = Sys.open(path, O_WRONLY)
        guard fd >= 0 else {
            if errno == ENOENT { throw StoreError(.missing, "cannot write \(path): it does not exist") }
            throw Sys.failure("open", path)
        }
        defer { Sys.close(fd) }
        try Sys.writeAll(fd, bytes, at: offset, path: path)
    }

    public func sync(_ kind: ObjectKind, _ key: String) throws {
        let path = try path(kind, key)
        let fd = Sys.open(path, O_WRONLY)
        guard fd >= 0 else { throw Sys.failure("open", path) }
        defer { Sys.close(fd) }
        try Sys.fdatasync(fd, path: path)
    }

    public func stat(_ kind: ObjectKind, _ key: String) throws -> ObjectInfo? {
        guard let s = try Sys.statPath(try path(kind, key)) else { return nil }
        return ObjectInfo(key: key, sizeBytes: UInt64(s.st_size), modifiedSeconds: Int64(s.st_mtim.tv_sec))
    }

    @discardableResult
    public func touch(_ kind: ObjectKind, _ key: String) throws -> Bool {
        let path = try path(kind, key)
        if utimensat(AT_FDCWD, path, nil, 0) == 0 { return true }
        if errno == ENOENT { return false }
        throw Sys.failure("touch", path)
    }

    public func delete(_ kind: ObjectKind, _ key: String) throws {
        let path = try path(kind, key)
        if unlink(path) != 0 {
            if errno == ENOENT { return }
            throw Sys.failure("remove", path)
        }
        let directory = PosixBackend.parent(path)
        markDirty(directory)
        if kind == .volumeBlock && rmdir(directory) == 0 {
            // The volume's last private block went: its directory goes too.
            markDirty(root + "/volumes")
        }
    }

    public func list(_ kind: ObjectKind, prefix: String) throws -> [ObjectInfo] {
        func infos(_ directory: String, keyPrefix: String = "") throws -> [ObjectInfo] {
            (try Sys.listDirectory(directory) ?? []).compactMap { entry in
                guard entry.stat.isRegularFile else { return nil }
                let key = keyPrefix + entry.name
                guard key.hasPrefix(prefix) else { return nil }
                return ObjectInfo(
                    key: key, sizeBytes: UInt64(entry.stat.st_size), modifiedSeconds: Int64(entry.stat.st_mtim.tv_sec))
            }
        }
        switch kind {
        case .block:
            if prefix.utf8.count >= 2 {
                return try infos(root + "/blocks/" + prefix.prefix(2))
            }
            return try (0..<256).flatMap { try infos(root + "/blocks/" + PosixBackend.fanOut(UInt8($0))) }
        case .map:
            return try infos(root + "/maps")
        case .record:
            return try infos(root + "/names")
        case .importCache:
            return try infos(root + "/cache")
        case .volumeBlock:
            if let slash = prefix.firstIndex(of: "/") {
                let volume = String(prefix[..<slash])
                guard VolumeID(hex: volume) != nil else { return [] }
                return try infos(root + "/volumes/" + volume, keyPrefix: volume + "/").filter { !PosixBackend.isPending($0.key) }
            }
            return try (Sys.listDirectory(root + "/volumes") ?? []).flatMap { entry -> [ObjectInfo] in
                guard entry.stat.isDirectory, VolumeID(hex: entry.name) != nil else { return [] }
                return try infos(root + "/volumes/" + entry.name, keyPrefix: entry.name + "/").filter { !PosixBackend.isPending($0.key) }
            }
        }
    }

    public func flush() throws {
        let directories = dirtyDirectories.withLock { dirty -> Set<String> in
            defer { dirty.removeAll() }
            return dirty
        }
        do {
            for directory in directories.sorted() {
                // A directory removed meanwhile (a volume's last block went) needs no sync: its
                // removal is recorded in its parent, which is dirty too.
                guard try Sys.statPath(directory) != nil else { continue }
                try Sys.syncDirectory(directory)
            }
        } catch {
            dirtyDirectories.withLock { $0.formUnion(directories) }
            throw error
        }
    }

    // MARK: Locks

    func lockPath(_ name: String) throws -> String {
        guard !name.isEmpty, !name.contains("/"), !name.hasPrefix("."), name.utf8.count < 250 else {
            throw StoreError(.invalidArgument, "invalid lock name \(name.debugDescription)")
        }
        return root + "/locks/" + name
    }

    public func lock(_ name: String, exclusive: Bool) throws -> any StoreLock {
        let path = try lockPath(name)
        let fd = Sys.open(path, O_RDWR | O_CREAT, 0o600)
        guard fd >= 0 else { throw Sys.failure("open lock", path) }
        while flock(fd, exclusive ? LOCK_EX : LOCK_SH) != 0 {
            if errno == EINTR { continue }
            let error = Sys.failure("lock", path)
            Sys.close(fd)
            throw error
        }
        return FileLock(fd: fd)
    }

    public func tryLock(_ name: String, exclusive: Bool) throws -> (any StoreLock)? {
        let path = try lockPath(name)
        let fd = Sys.open(path, O_RDWR | O_CREAT, 0o600)
        guard fd >= 0 else { throw Sys.failure("open lock", path) }
        while flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            let code = errno
            Sys.close(fd)
            if code == EWOULDBLOCK { return nil }
            throw Sys.failure("lock", path, code)
        }
        return FileLock(fd: fd)
    }

    public func removeLock(_ name: String) throws {
        let path = try lockPath(name)
        if unlink(path) != 0 && errno != ENOENT { throw Sys.failure("remove", path) }
    }

    public func lockNames() throws -> [String] {
        try (Sys.listDirectory(root + "/locks") ?? []).map(\.name)
    }

    public func purgeScratch(olderThanSeconds: Int64) throws -> Int {
        let cutoff = Int64(time(nil)) - olderThanSeconds
        var removed = 0
        for entry in try Sys.listDirectory(root + "/tmp") ?? [] where Int64(entry.stat.st_mtim.tv_sec) <= cutoff {
            if unlink(root + "/tmp/" + entry.name) == 0 { removed += 1 }
        }
        return removed
    }

    /// Creates an anonymous scratch file under the store (same filesystem, removed on close), for
    /// spooling a stream whose length must be known before it is used. Returns its descriptor.
    public func anonymousScratchFile() throws -> Int32 {
        var template = Array("\(root)/tmp/spool-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw Sys.failure("create", "\(root)/tmp") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }
}

/// A held `flock`; closing the descriptor releases it.
final class FileLock: StoreLock {
    private let fd: Mutex<Int32?>

    init(fd: Int32) { self.fd = Mutex(fd) }

    func unlock() {
        fd.withLock { held in
            if let descriptor = held {
                Sys.close(descriptor)
                held = nil
            }
        }
    }

    deinit { unlock() }
}
