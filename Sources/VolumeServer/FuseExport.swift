import BlockStore
import CFuse3
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Volumes as regular files in one FUSE mount, so that a loop device can sit on each file.
///
/// The mount is a flat directory owned by root; `add(name:device:)` makes `<mountpoint>/<name>`
/// appear as a regular file (mode 0600) of `device.sizeBytes` bytes. The kernel is served through
/// libfuse 3's low-level API by a multi-threaded loop on background threads.
///
/// Semantics:
/// - Files are opened with `direct_io` and there is no writeback cache: every read, write and
///   fsync reaches the ``VolumeIO``; nothing is cached in the kernel's page cache.
/// - Attribute and entry timeouts are 0: sizes are asked for on every stat, so a grown volume
///   shows at once (a loop device on top needs ``LoopDevice/refreshCapacity(_:)``).
/// - Reads past the end are short (0 bytes at or after the end); writes at or after the end fail
///   with `EFBIG`, writes that cross it are short. Files never grow or shrink through the mount:
///   size changes (truncate) fail with `EPERM` unless they keep the current size, `fallocate`
///   (so also discard on a loop device above) fails with `EOPNOTSUPP`.
/// - `fsync`, `fdatasync` and `close` (FUSE flush) call ``VolumeIO/flush()``. Writes to a file
///   opened with `O_SYNC`/`O_DSYNC`, or made with `RWF_SYNC`/`RWF_DSYNC`, are passed `fua: true`.
/// - Errors of the device become `ENOSPC` for ``StoreError/Code/noSpace`` and `EIO` otherwise; the
///   `onError` handler given at init sees the original error.
/// - ``remove(name:)`` hides the name at once; handles opened before (such as a loop device's)
///   stay open but every read, write and fsync through them then fails with `EIO`, even if the
///   name is added again (that makes a new file). The device is never called after `remove`
///   returns, except by calls already in progress.
/// - Only root can use the mount (no `allow_other`; `default_permissions` with mode 0600 files).
/// - Mounts show in /proc/self/mountinfo as type `fuse.snf-store` from source `snf-store`.
public final class FuseExport: Sendable {
    /// The absolute, normalized path of the mount.
    public let mountpoint: String
    private let filesystem: FuseFilesystem
    private let session: Mutex<FuseSession?>

    /// The largest read or write request the export asks the kernel for (the kernel may cap it
    /// lower: at its `max_pages_limit`, 256 pages by default).
    public static let maxRequestBytes = 1 << 20

    /// Mounts an empty FUSE filesystem at `mountpoint` (creating the directory and its parents if
    /// missing, mode 0700) and starts serving it on background threads.
    ///
    /// A stale `fuse.snf-store` mount at the same place (its process was killed: the mount answers
    /// `ENOTCONN`) is lazily unmounted first; a live one makes this throw. Needs root.
    /// - Parameter onError: called (on a FUSE thread) with the file name and the error whenever
    ///   the device of a file throws, before the error is answered as `EIO`/`ENOSPC`.
    public init(mountpoint: String, onError: (@Sendable (_ name: String, _ error: any Error) -> Void)? = nil) throws {
        let path = FuseExport.normalize(mountpoint)
        self.mountpoint = path
        self.filesystem = FuseFilesystem(onError: onError)
        try FuseExport.removeStaleMounts(at: path)
        try FuseExport.makeDirectories(path)
        self.session = Mutex(try FuseSession.start(filesystem: filesystem, mountpoint: path))
    }

    deinit {
        unmount()
    }

    /// Makes `<mountpoint>/<name>` appear: a regular file of `device.sizeBytes` bytes whose reads and
    /// writes go to `device`. `name` must be a valid file name (no `/`, not `.` or `..`). Adding a
    /// name again replaces its device (handles opened before then fail with `EIO`).
    public func add(name: String, device: any VolumeIO) {
        precondition(!name.isEmpty && !name.contains("/") && name != "." && name != "..", "bad file name \(name)")
        filesystem.add(name: name, device: device)
    }

    /// Makes `<mountpoint>/<name>` disappear: later opens get `ENOENT`, handles already open get
    /// `EIO` on every read, write and fsync. Does nothing for a name that is not there.
    public func remove(name: String) {
        filesystem.remove(name: name)
    }

    /// The names currently served.
    public var names: [String] {
        filesystem.names
    }

    /// Path of the file for `name`.
    public func path(of name: String) -> String {
        mountpoint + "/" + name
    }

    /// Unmounts and stops the threads; idempotent.
    ///
    /// If files are still open (a loop device still attached), the FUSE connection is aborted
    /// (`umount -f`, then a lazy unmount): their users get `ENOTCONN`/`EIO` from then on.
    public func unmount() {
        guard let running = session.withLock({ state -> FuseSession? in
            let running = state
            state = nil
            return running
        }) else { return }
        running.stop(mountpoint: mountpoint)
    }

    /// Mount points of every `fuse.snf-store` filesystem in this mount namespace.
    public static func mountpoints() -> [String] {
        MountTable.read().filter { $0.fstype == FuseSession.fstype }.map(\.mountpoint)
    }

    // MARK: - Paths and stale mounts

    /// `path` made absolute and normalized lexically (no `.`, `..`, repeated or trailing `/`),
    /// which is how the kernel shows mount points.
    static func normalize(_ path: String) -> String {
        var full = path
        if !full.hasPrefix("/") {
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            if let cwd = getcwd(&buffer, buffer.count) {
                full = String(cString: cwd) + "/" + full
            }
        }
        var parts: [Substring] = []
        for part in full.split(separator: "/", omittingEmptySubsequences: true) {
            if part == "." { continue }
            if part == ".." {
                _ = parts.popLast()
                continue
            }
            parts.append(part)
        }
        return "/" + parts.joined(separator: "/")
    }

    /// `mkdir -p`: the leaf with mode 0700, missing parents 0755.
    static func makeDirectories(_ path: String) throws {
        var prefix = ""
        let parts = path.split(separator: "/")
        for (index, part) in parts.enumerated() {
            prefix += "/" + part
            let mode: mode_t = index == parts.count - 1 ? 0o700 : 0o755
            if mkdir(prefix, mode) != 0 && errno != EEXIST {
                let code = errno
                throw StoreError(
                    .io, "cannot create the FUSE mount point \(prefix): \(Errno(code))", cause: Errno(code))
            }
        }
    }

    /// Lazily unmounts `fuse.snf-store` mounts at `path` whose process is gone (they answer
    /// ENOTCONN); throws if one is alive.
    static func removeStaleMounts(at path: String) throws {
        // Mounts can be stacked: repeat while the top one is ours and stale.
        for _ in 0..<16 {
            guard MountTable.read().contains(where: { $0.mountpoint == path && $0.fstype == FuseSession.fstype })
            else { return }
            var info = statvfs()
            if statvfs(path, &info) == 0 {
                throw StoreError(
                    .io, "cannot mount the FUSE export at \(path): another running process already serves it there")
            }
            let code = errno
            guard code == ENOTCONN || code == ECONNABORTED else {
                throw StoreError(
                    .io, "cannot check the FUSE mount already at \(path): \(Errno(code))", cause: Errno(code))
            }
            if umount2(path, FuseSession.detach | FuseSession.umountNoFollow) != 0 {
                let code = errno
                throw StoreError(
                    .io, "cannot unmount the stale FUSE mount at \(path): \(Errno(code))", cause: Errno(code))
            }
        }
    }
}

// MARK: - Mount table

/// Entries of /proc/self/mountinfo.
struct MountTable {
    struct Entry {
        var mountpoint: String
        var fstype: String
        var source: String
    }

    static func read() -> [Entry] {
        guard let text = readTextFile("/proc/self/mountinfo") else { return [] }
        var entries: [Entry] = []
        for line in text.split(separator: "\n") {
            // id parent major:minor root mountpoint options [optional...] - fstype source superoptions
            let fields = line.split(separator: " ", omittingEmptySubsequences: false)
            guard fields.count >= 7, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { continue }
            entries.append(
                Entry(
                    mountpoint: unescape(fields[4]), fstype: unescape(fields[dash + 1]),
                    source: unescape(fields[dash + 2])))
        }
        return entries
    }

    /// Undoes the kernel's octal escapes (`\040` for a space, and so on).
    static func unescape(_ field: Substring) -> String {
        guard field.contains("\\") else { return String(field) }
        var bytes: [UInt8] = []
        let utf8 = Array(field.utf8)
        var i = 0
        while i < utf8.count {
            if utf8[i] == UInt8(ascii: "\\"), i + 3 < utf8.count,
                let value = UInt8(String(decoding: utf8[(i + 1)...(i + 3)], as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                i += 4
            } else {
                bytes.append(utf8[i])
                i += 1
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// The whole of a small text file (procfs, sysfs), or nil if it cannot be read.
func readTextFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 {
            if errno == EINTR { continue }
            return nil
        }
        if n == 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

// MARK: - The filesystem

/// The files of one mount and the FUSE request handlers. Reached from the C callbacks through
/// `fuse_req_userdata`; every field is immutable or behind the mutex.
final class FuseFilesystem: Sendable {
    struct File {
        let name: String
        let device: any VolumeIO
    }

    struct Table {
        var inodeByName: [String: fuse_ino_t] = [:]
        var files: [fuse_ino_t: File] = [:]
        /// Inode numbers are never reused within a mount, so an old handle cannot reach a new file.
        var nextInode: fuse_ino_t = FuseFilesystem.firstFileInode
    }

    static let rootInode: fuse_ino_t = 1
    static let firstFileInode: fuse_ino_t = 16
    /// Entry and attribute validity in seconds: 0, so that sizes and removals show at once.
    static let timeout: Double = 0

    let table = Mutex(Table())
    let onError: (@Sendable (_ name: String, _ error: any Error) -> Void)?
    let createdSeconds: Int

    init(onError: (@Sendable (_ name: String, _ error: any Error) -> Void)?) {
        self.onError = onError
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        self.createdSeconds = now.tv_sec
    }

    func add(name: String, device: any VolumeIO) {
        table.withLock { table in
            if let old = table.inodeByName[name] { table.files[old] = nil }
            let inode = table.nextInode
            table.nextInode += 1
            table.inodeByName[name] = inode
            table.files[inode] = File(name: name, device: device)
        }
    }

    func remove(name: String) {
        table.withLock { table in
            if let inode = table.inodeByName.removeValue(forKey: name) { table.files[inode] = nil }
        }
    }

    var names: [String] {
        table.withLock { Array($0.inodeByName.keys) }.sorted()
    }

    func file(_ inode: fuse_ino_t) -> File? {
        table.withLock { $0.files[inode] }
    }

    // MARK: Attributes

    func directoryAttributes() -> stat {
        var attributes = stat()
        attributes.st_ino = ino_t(FuseFilesystem.rootInode)
        attributes.st_mode = S_IFDIR | 0o755
        attributes.st_nlink = 2
        stamp(&attributes)
        return attributes
    }

    func fileAttributes(_ inode: fuse_ino_t, size: UInt64) -> stat {
        var attributes = stat()
        attributes.st_ino = ino_t(inode)
        attributes.st_mode = S_IFREG | 0o600
        attributes.st_nlink = 1
        attributes.st_size = off_t(clamping: size)
        attributes.st_blksize = 4096
        attributes.st_blocks = blkcnt_t(clamping: (size + 511) / 512)
        stamp(&attributes)
        return attributes
    }

    private func stamp(_ attributes: inout stat) {
        attributes.st_uid = 0
        attributes.st_gid = 0
        attributes.st_atim.tv_sec = createdSeconds
        attributes.st_mtim.tv_sec = createdSeconds
        attributes.st_ctim.tv_sec = createdSeconds
    }

    /// The errno for an error of a device: ENOSPC when the store is full, else EIO.
    func errorCode(_ error: any Error, file: File) -> Int32 {
        onError?(file.name, error)
        if let error = error as? StoreError, error.code == .noSpace { return ENOSPC }
        return EIO
    }

    // MARK: Requests (each answers `request` exactly once)

    func lookup(_ request: fuse_req_t?, parent: fuse_ino_t, name: UnsafePointer<CChar>?) {
        guard parent == FuseFilesystem.rootInode, let name else {
            _ = fuse_reply_err(request, ENOENT)
            return
        }
        let found: (fuse_ino_t, File)? = table.withLock { table in
            guard let inode = table.inodeByName[String(cString: name)], let file = table.files[inode] else {
                return nil
            }
            return (inode, file)
        }
        guard let (inode, file) = found else {
            _ = fuse_reply_err(request, ENOENT)
            return
        }
        var entry = fuse_entry_param()
        entry.ino = inode
        entry.generation = 1
        entry.attr = fileAttributes(inode, size: file.device.sizeBytes)
        entry.attr_timeout = FuseFilesystem.timeout
        entry.entry_timeout = FuseFilesystem.timeout
        _ = fuse_reply_entry(request, &entry)
    }

    func getattr(_ request: fuse_req_t?, inode: fuse_ino_t) {
        var attributes: stat
        if inode == FuseFilesystem.rootInode {
            attributes = directoryAttributes()
        } else if let file = file(inode) {
            attributes = fileAttributes(inode, size: file.device.sizeBytes)
        } else {
            _ = fuse_reply_err(request, ENOENT)
            return
        }
        _ = fuse_reply_attr(request, &attributes, FuseFilesystem.timeout)
    }

    func setattr(_ request: fuse_req_t?, inode: fuse_ino_t, attributes: UnsafeMutablePointer<stat>?, toSet: Int32) {
        guard inode != FuseFilesystem.rootInode else {
            _ = fuse_reply_err(request, EPERM)
            return
        }
        guard let file = file(inode) else {
            _ = fuse_reply_err(request, ENOENT)
            return
        }
        let size = file.device.sizeBytes
        // Ownership and mode are fixed; times are accepted and ignored (touch works).
        let refused = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID
        if toSet & refused != 0 {
            _ = fuse_reply_err(request, EPERM)
            return
        }
        if toSet & FUSE_SET_ATTR_SIZE != 0, let attributes, UInt64(clamping: attributes.pointee.st_size) != size
            || attributes.pointee.st_size < 0
        {
            _ = fuse_reply_err(request, EPERM)
            return
        }
        var current = fileAttributes(inode, size: size)
        _ = fuse_reply_attr(request, &current, FuseFilesystem.timeout)
    }

    func open(_ request: fuse_req_t?, inode: fuse_ino_t, info: UnsafeMutablePointer<fuse_file_info>?) {
        if inode == FuseFilesystem.rootInode {
            _ = fuse_reply_err(request, EISDIR)
            return
        }
        guard file(inode) != nil, let info else {
            _ = fuse_reply_err(request, ENOENT)
            return
        }
        info.pointee.direct_io = 1
        info.pointee.keep_cache = 0
        info.pointee.fh = inode
        _ = fuse_reply_open(request, info)
    }

    func read(_ request: fuse_req_t?, inode: fuse_ino_t, size: Int, offset: off_t) {
        guard let file = file(inode) else {
            _ = fuse_reply_err(request, EIO)
            return
        }
        let end = file.device.sizeBytes
        guard offset >= 0 else {
            _ = fuse_reply_err(request, EINVAL)
            return
        }
        let start = UInt64(offset)
        let count = start >= end ? 0 : Int(min(UInt64(size), end - start))
        if count == 0 {
            _ = fuse_reply_buf(request, nil, 0)
            return
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
        defer { buffer.deallocate() }
        do {
            try file.device.read(at: start, into: buffer)
        } catch {
            _ = fuse_reply_err(request, errorCode(error, file: file))
            return
        }
        _ = fuse_reply_buf(request, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), count)
    }

    func write(
        _ request: fuse_req_t?, inode: fuse_ino_t, bytes: UnsafePointer<CChar>?, size: Int, offset: off_t,
        info: UnsafeMutablePointer<fuse_file_info>?
    ) {
        guard let file = file(inode) else {
            _ = fuse_reply_err(request, EIO)
            return
        }
        guard offset >= 0, size == 0 || bytes != nil else {
            _ = fuse_reply_err(request, EINVAL)
            return
        }
        let end = file.device.sizeBytes
        let start = UInt64(offset)
        if size == 0 {
            _ = fuse_reply_write(request, 0)
            return
        }
        guard start < end else {
            _ = fuse_reply_err(request, EFBIG)
            return
        }
        let count = Int(min(UInt64(size), end - start))
        // The kernel passes the file's open flags with O_DSYNC/O_SYNC added for RWF_DSYNC/RWF_SYNC.
        let fua = (info?.pointee.flags ?? 0) & (O_DSYNC | O_SYNC) != 0
        do {
            try file.device.write(at: start, from: UnsafeRawBufferPointer(start: bytes, count: count), fua: fua)
        } catch {
            _ = fuse_reply_err(request, errorCode(error, file: file))
            return
        }
        _ = fuse_reply_write(request, count)
    }

    /// fsync, fdatasync and flush (every close of a descriptor).
    func sync(_ request: fuse_req_t?, inode: fuse_ino_t) {
        guard let file = file(inode) else {
            _ = fuse_reply_err(request, inode == FuseFilesystem.rootInode ? 0 : EIO)
            return
        }
        do {
            try file.device.flush()
        } catch {
            _ = fuse_reply_err(request, errorCode(error, file: file))
            return
        }
        _ = fuse_reply_err(request, 0)
    }

    func readdir(_ request: fuse_req_t?, inode: fuse_ino_t, size: Int, offset: off_t) {
        guard inode == FuseFilesystem.rootInode else {
            _ = fuse_reply_err(request, ENOTDIR)
            return
        }
        // Offsets are stable cookies: 1 for ".", 2 for "..", the inode number for a file (inode
        // numbers grow and are never reused, so listing in inode order resumes correctly).
        var entries: [(name: String, inode: fuse_ino_t, cookie: off_t, mode: mode_t)] = [
            (".", FuseFilesystem.rootInode, 1, S_IFDIR), ("..", FuseFilesystem.rootInode, 2, S_IFDIR),
        ]
        let files = table.withLock { table in table.files.map { (inode: $0.key, name: $0.value.name) } }
        for file in files.sorted(by: { $0.inode < $1.inode }) {
            entries.append((file.name, file.inode, off_t(file.inode), S_IFREG))
        }
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(size, 1))
        defer { buffer.deallocate() }
        var used = 0
        for entry in entries where entry.cookie > offset {
            var attributes = stat()
            attributes.st_ino = ino_t(entry.inode)
            attributes.st_mode = entry.mode
            let needed = entry.name.withCString {
                fuse_add_direntry(request, buffer + used, size - used, $0, &attributes, entry.cookie)
            }
            if needed > size - used { break }
            used += needed
        }
        _ = fuse_reply_buf(request, buffer, used)
    }

    // MARK: The C callbacks

    /// The filesystem behind a request (the userdata given to fuse_session_new).
    static func of(_ request: fuse_req_t?) -> FuseFilesystem {
        Unmanaged<FuseFilesystem>.fromOpaque(fuse_req_userdata(request)!).takeUnretainedValue()
    }

    static func operations() -> fuse_lowlevel_ops {
        var ops = fuse_lowlevel_ops()
        ops.`init` = { _, connection in
            guard let connection else { return }
            // Large requests; no writeback cache (writes must reach the device in order and at once).
            connection.pointee.max_write = UInt32(FuseExport.maxRequestBytes)
            connection.pointee.want &= ~UInt32(FUSE_CAP_WRITEBACK_CACHE)
            // Several requests in flight for one asynchronous direct I/O (what loop devices do).
            if connection.pointee.capable & UInt32(FUSE_CAP_ASYNC_DIO) != 0 {
                connection.pointee.want |= UInt32(FUSE_CAP_ASYNC_DIO)
            }
            connection.pointee.max_background = 64
            connection.pointee.congestion_threshold = 48
        }
        ops.lookup = { request, parent, name in FuseFilesystem.of(request).lookup(request, parent: parent, name: name) }
        ops.getattr = { request, inode, _ in FuseFilesystem.of(request).getattr(request, inode: inode) }
        ops.setattr = { request, inode, attributes, toSet, _ in
            FuseFilesystem.of(request).setattr(request, inode: inode, attributes: attributes, toSet: toSet)
        }
        ops.open = { request, inode, info in FuseFilesystem.of(request).open(request, inode: inode, info: info) }
        ops.read = { request, inode, size, offset, _ in
            FuseFilesystem.of(request).read(request, inode: inode, size: size, offset: offset)
        }
        ops.write = { request, inode, bytes, size, offset, info in
            FuseFilesystem.of(request).write(
                request, inode: inode, bytes: bytes, size: size, offset: offset, info: info)
        }
        ops.flush = { request, inode, _ in FuseFilesystem.of(request).sync(request, inode: inode) }
        ops.fsync = { request, inode, _, _ in FuseFilesystem.of(request).sync(request, inode: inode) }
        ops.release = { request, _, _ in _ = fuse_reply_err(request, 0) }
        ops.readdir = { request, inode, size, offset, _ in
            FuseFilesystem.of(request).readdir(request, inode: inode, size: size, offset: offset)
        }
        ops.fallocate = { request, _, _, _, _, _ in _ = fuse_reply_err(request, EOPNOTSUPP) }
        return ops
    }
}

// MARK: - The libfuse session

/// A mounted libfuse session and the thread running its multi-threaded loop.
///
/// `@unchecked Sendable`: it holds the `fuse_session` pointer, which libfuse lets any thread use
/// for `fuse_session_exit`/`fuse_session_fd`; it is created by `start` and consumed once by
/// `stop` (FuseExport keeps it in a Mutex and takes it out before stopping), so no two threads
/// ever tear it down.
struct FuseSession: @unchecked Sendable {
    static let fstype = "fuse.snf-store"
    static let umountNoFollow: Int32 = 8  // UMOUNT_NOFOLLOW, not exported by Glibc
    static let force = Int32(MNT_FORCE)
    static let detach = Int32(MNT_DETACH)

    let session: OpaquePointer
    let thread: pthread_t
    let userdata: Unmanaged<FuseFilesystem>

    static func start(filesystem: FuseFilesystem, mountpoint: String) throws -> FuseSession {
        let userdata = Unmanaged.passRetained(filesystem)
        var ops = FuseFilesystem.operations()
        let arguments = ["snf-store", "-o", "fsname=snf-store,subtype=snf-store,default_permissions"]
        var cArguments: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { cArguments.forEach { free($0) } }
        let created: OpaquePointer? = cArguments.withUnsafeMutableBufferPointer { argv in
            var args = fuse_args(argc: Int32(argv.count), argv: argv.baseAddress, allocated: 0)
            defer { fuse_opt_free_args(&args) }
            return fuse_session_new(&args, &ops, MemoryLayout<fuse_lowlevel_ops>.size, userdata.toOpaque())
        }
        guard let session = created else {
            userdata.release()
            throw StoreError(.io, "cannot create the FUSE session for \(mountpoint) (libfuse said why on stderr)")
        }
        guard fuse_session_mount(session, mountpoint) == 0 else {
            fuse_session_destroy(session)
            userdata.release()
            throw StoreError(
                .io, "cannot mount the FUSE export at \(mountpoint) (libfuse printed the reason on stderr)")
        }
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, FuseSession.loop, UnsafeMutableRawPointer(session))
        guard result == 0 else {
            _ = umount2(mountpoint, detach | umountNoFollow)
            fuse_session_unmount(session)
            fuse_session_destroy(session)
            userdata.release()
            throw StoreError(.io, "cannot start the FUSE thread for \(mountpoint): \(Errno(result))")
        }
        return FuseSession(session: session, thread: thread, userdata: userdata)
    }

    /// The session thread: runs libfuse's multi-threaded loop until the connection ends.
    static let loop: @convention(c) (UnsafeMutableRawPointer?) -> UnsafeMutableRawPointer? = { argument in
        let session = OpaquePointer(argument!)
        // Inherited by the worker threads libfuse starts from here. Failure (no CAP_SYS_RESOURCE)
        // only loses the protection against reclaim deadlocks.
        _ = snf_set_io_flusher()
        _ = snf_set_thread_name("snf-fuse")
        let config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_clone_fd(config, 0)
        fuse_loop_cfg_set_max_threads(config, 32)
        fuse_loop_cfg_set_idle_threads(config, 4)
        _ = snf_fuse_session_loop_mt(session, config)
        fuse_loop_cfg_destroy(config)
        return nil
    }

    /// Ends the connection, waits for the loop to finish and frees the session.
    func stop(mountpoint: String) {
        // No fuse_session_exit first: the loop must keep answering until the kernel ends the
        // connection, which makes it return by itself. A plain unmount does that when nothing
        // holds a file open. Otherwise abort the connection (MNT_FORCE calls FUSE's umount_begin)
        // and detach the mount.
        if umount2(mountpoint, Self.umountNoFollow) != 0 && errno == EBUSY {
            _ = umount2(mountpoint, Self.force | Self.detach | Self.umountNoFollow)
        }
        // The loop only returns once the kernel has ended the connection (the device then polls
        // POLLERR). If it has not (the mount was detached behind our back while files were open),
        // the threads keep serving those files: leave them running rather than hang.
        var descriptor = pollfd(fd: fuse_session_fd(session), events: 0, revents: 0)
        let ended = poll(&descriptor, 1, 0) == 1 && descriptor.revents & Int16(POLLERR) != 0
        guard ended else {
            pthread_detach(thread)
            return
        }
        pthread_join(thread, nil)
        fuse_session_unmount(session)  // closes the device; the mount is already gone
        fuse_session_destroy(session)
        userdata.release()
    }
}
