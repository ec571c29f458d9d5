// GuestfsEditor: the general customization path, through libguestfs.
//
// Every filesystem libguestfs knows is parsed inside its appliance VM (no network, the disk as its
// only drive); nothing is ever mounted in the host's kernel. Guest paths are resolved by the
// appliance's daemon inside the mounted guest filesystem, so guest symlinks cannot lead to the
// host; writes through a symlink at the last component are refused anyway.
//
// One appliance launch per editor (30-40 s under TCG, about 3 s with KVM); the whole session runs
// under a time limit enforced by killing the appliance (see GuestfsWatchdog).

import CGuestfs

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

public final class GuestfsEditor: DiskEditor {
    public let name = "libguestfs"
    /// The disk image or device on the host.
    public let disk: String
    /// The disk inside the appliance ("/dev/sda").
    public let device: String
    /// The session's time limit, from `init`.
    public let timeoutSeconds: Int
    /// How long the appliance took to launch, in seconds.
    public let launchSeconds: Double

    private var g: OpaquePointer?
    private let watchdog: GuestfsWatchdog
    private var rootMounted = false
    private var labelCache: String?

    /// GPT partition type GUIDs (lower case, as `PartitionTable.Partition.type`).
    public static let gptLinuxSwap = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"
    public static let gptLinuxData = "0fc63daf-8483-4772-8e79-3d69d8477de4"
    /// Largest chunk sent in one guestfs_write / guestfs_write_append (the protocol's messages
    /// are limited to a few MiB).
    static let writeChunk = 2 << 20

    /// Creates the handle, adds `disk` (raw, read-write) and launches the appliance. The whole
    /// session (launch included) must end within `timeoutSeconds`, or the appliance is killed and
    /// every call fails from then on.
    ///
    /// The handle ignores LIBGUESTFS_* variables. TCG is forced when the host's KVM is known not
    /// to boot the appliance (/sys/module/kvm_pvm: nested KVM under a PVM hypervisor), or when
    /// SNF_GUESTFS_FORCE_TCG=1 (=0 never forces it); SNF_GUESTFS_DEBUG=1 turns on libguestfs's
    /// verbose and trace output (stderr).
    public init(disk: String, timeoutSeconds: Int) throws {
        self.disk = disk
        self.timeoutSeconds = timeoutSeconds
        var st = stat()
        guard stat(disk, &st) == 0 else {
            throw CustomizationError("libguestfs: \(disk): \(String(cString: strerror(errno)))")
        }
        guard let h = cguestfs_create_flags(CGUESTFS_CREATE_NO_ENVIRONMENT) else {
            throw CustomizationError("libguestfs: cannot create a handle: \(String(cString: strerror(errno)))")
        }
        // Errors are reported through CustomizationError, not printed by the library.
        guestfs_set_error_handler(h, nil, nil)

        func fail(_ what: String) -> CustomizationError {
            let text = guestfs_last_error(h).map { String(cString: $0) } ?? "unknown error"
            return CustomizationError("libguestfs: \(what): \(text)")
        }
        var handleOwned = true
        defer { if handleOwned { guestfs_close(h) } }

        if Self.wantsTCG() {
            let setting = strdup("force_tcg")
            defer { free(setting) }
            var settings: [UnsafeMutablePointer<CChar>?] = [setting, nil]
            guard guestfs_set_backend_settings(h, &settings) == 0 else { throw fail("set_backend_settings") }
        }
        if Self.environment("SNF_GUESTFS_DEBUG") == "1" {
            _ = guestfs_set_verbose(h, 1)
            _ = guestfs_set_trace(h, 1)
        }
        guard guestfs_set_network(h, 0) == 0 else { throw fail("set_network") }
        var opts = guestfs_add_drive_opts_argv()
        opts.bitmask = CGUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK | CGUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK
        opts.readonly = 0
        let added: Int32 = "raw".withCString { raw in
            opts.format = raw
            return guestfs_add_drive_opts_argv(h, disk, &opts)
        }
        guard added == 0 else { throw fail("add_drive \(disk)") }
        guard let sockdir = guestfs_get_sockdir(h) else { throw fail("get_sockdir") }
        let socketDirectory = String(cString: sockdir)
        free(sockdir)

        let watchdog = GuestfsWatchdog(socketDirectory: socketDirectory, seconds: timeoutSeconds)
        watchdog.arm()
        let clock = ContinuousClock()
        let started = clock.now
        guard guestfs_launch(h) == 0 else {
            watchdog.disarm()
            if watchdog.fired {
                throw CustomizationError("libguestfs: the appliance did not launch within \(timeoutSeconds) s (killed)")
            }
            throw fail("launch")
        }
        if watchdog.fired {
            // Launched, but only after the limit (nothing was running yet to be killed).
            watchdog.disarm()
            throw CustomizationError("libguestfs: the appliance did not launch within \(timeoutSeconds) s")
        }
        let elapsed = clock.now - started
        launchSeconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let pid = guestfs_get_pid(h)
        if pid > 0 { watchdog.setPid(pid) }
        self.watchdog = watchdog

        guard let devices = guestfs_list_devices(h) else { throw fail("list_devices") }
        let first = devices[0].map { String(cString: $0) }
        cguestfs_free_strings(devices)
        guard let first else { throw CustomizationError("libguestfs: the appliance sees no disk") }
        device = first
        // Modes given to mkdir/chmod are taken as they are.
        guard guestfs_umask(h, 0) != -1 else { throw fail("umask") }
        handleOwned = false
        g = h
    }

    deinit {
        watchdog.disarm()
        if let g { guestfs_close(g) }
    }

    /// Whether this editor can work on `disk`: libguestfs and its appliance are installed (the
    /// appliance is not launched) and the disk exists.
    public static func canHandle(disk: String) -> Bool {
        var st = stat()
        guard stat(disk, &st) == 0, let h = cguestfs_create_flags(CGUESTFS_CREATE_NO_ENVIRONMENT) else { return false }
        defer { guestfs_close(h) }
        guestfs_set_error_handler(h, nil, nil)
        guard let path = guestfs_get_path(h) else { return false }
        let base = String(cString: path)
        // A supermin appliance (built on first launch) or a fixed one.
        for candidate in ["supermin.d", "appliance", "README.fixed", "root"] {
            var cst = stat()
            if stat("\(base)/\(candidate)", &cst) == 0 { return true }
        }
        return false
    }

    static func wantsTCG() -> Bool {
        switch environment("SNF_GUESTFS_FORCE_TCG") {
        case "1": return true
        case "0": return false
        default:
            var st = stat()
            return stat("/sys/module/kvm_pvm", &st) == 0
        }
    }

    static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }

    /// Ends the session as if its time limit had expired: the appliance is killed (tests).
    func expireForTesting() { watchdog.expire() }

    // MARK: - Plumbing

    /// The live handle, or an error when the editor is closed or its time limit expired.
    private func handle() throws -> OpaquePointer {
        guard let g else { throw CustomizationError("libguestfs: the editor is closed") }
        if watchdog.fired { throw timedOut() }
        return g
    }

    private func timedOut() -> CustomizationError {
        CustomizationError("libguestfs: the session did not finish within \(timeoutSeconds) s (appliance killed)")
    }

    private func failure(_ what: String) -> CustomizationError {
        if watchdog.fired { return timedOut() }
        let text = g.flatMap { guestfs_last_error($0) }.map { String(cString: $0) } ?? "unknown error"
        return CustomizationError("libguestfs: \(what): \(text)")
    }

    /// Checks an int-returning call (-1 is an error) and returns its value.
    @discardableResult
    private func check(_ what: @autoclosure () -> String, _ call: (OpaquePointer) -> Int32) throws -> Int32 {
        let h = try handle()
        let r = call(h)
        if r == -1 { throw failure(what()) }
        return r
    }

    /// A boolean query (is_dir, exists...): 1/0, -1 is an error.
    private func test(_ what: @autoclosure () -> String, _ call: (OpaquePointer) -> Int32) throws -> Bool {
        try check(what(), call) == 1
    }

    /// A call returning a string that the caller frees.
    private func string(_ what: @autoclosure () -> String, _ call: (OpaquePointer) -> UnsafeMutablePointer<CChar>?) throws -> String {
        let h = try handle()
        guard let p = call(h) else { throw failure(what()) }
        defer { free(p) }
        return String(cString: p)
    }

    /// A call returning a NULL-terminated list of strings that the caller frees.
    private func strings(
        _ what: @autoclosure () -> String, _ call: (OpaquePointer) -> UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
    ) throws -> [String] {
        let h = try handle()
        guard let list = call(h) else { throw failure(what()) }
        defer { cguestfs_free_strings(list) }
        var out: [String] = []
        var i = 0
        while let s = list[i] {
            out.append(String(cString: s))
            i += 1
        }
        return out
    }

    /// The device of partition `number` inside the appliance ("/dev/sda1").
    private func partitionDevice(_ number: Int) throws -> String {
        guard number >= 1 && number <= 128 else { throw CustomizationError("libguestfs: no partition number \(number)") }
        let needsP = device.last.map { $0.isNumber } ?? false
        return "\(device)\(needsP ? "p" : "")\(number)"
    }

    private func requireUnmounted(_ what: String) throws {
        if rootMounted { throw CustomizationError("libguestfs: \(what) needs the root filesystem closed") }
    }

    private func requireRoot() throws {
        if !rootMounted { throw CustomizationError("libguestfs: the root filesystem is not open") }
    }

    /// An absolute guest path that C can carry.
    private func guestPath(_ path: String) throws -> String {
        guard path.hasPrefix("/"), !path.utf8.contains(0) else {
            throw CustomizationError("libguestfs: bad guest path \(path.debugDescription)")
        }
        return path
    }

    // MARK: - Unmounted phase

    public func partitionTable() throws -> PartitionTable {
        let dev = device
        let kind = try labelKind()
        let label: PartitionTable.Label
        switch kind {
        case "msdos": label = .msdos
        case "gpt": label = .gpt
        default: throw CustomizationError("libguestfs: unsupported partition table \(kind.debugDescription) on \(dev)")
        }
        let diskSectors = try blockdevSectors()
        var partitions: [PartitionTable.Partition] = []
        for (number, startByte, sizeBytes, _) in try listPartitions() {
            let type: String
            switch label {
            case .msdos:
                let id = try check("part_get_mbr_id \(dev) \(number)") { guestfs_part_get_mbr_id($0, dev, Int32(number)) }
                let hex = String(id, radix: 16)
                type = hex.count < 2 ? "0" + hex : hex
            case .gpt:
                type = try string("part_get_gpt_type \(dev) \(number)") { guestfs_part_get_gpt_type($0, dev, Int32(number)) }
                    .lowercased()
            }
            partitions.append(.init(number: number, start: startByte / 512, sectors: sizeBytes / 512, type: type))
        }
        return PartitionTable(label: label, partitions: partitions, diskSectors: diskSectors)
    }

    private func blockdevSectors() throws -> UInt64 {
        let h = try handle()
        let dev = device
        let n = guestfs_blockdev_getsz(h, dev)
        if n < 0 { throw failure("blockdev_getsz \(dev)") }
        return UInt64(n)
    }

    /// (number, start byte, size in bytes, end byte inclusive), in the order parted lists them.
    private func listPartitions() throws -> [(Int, UInt64, UInt64, UInt64)] {
        let h = try handle()
        let dev = device
        guard let list = guestfs_part_list(h, dev) else { throw failure("part_list \(dev)") }
        defer { guestfs_free_partition_list(list) }
        return UnsafeBufferPointer(start: list.pointee.val, count: Int(list.pointee.len)).map {
            (Int($0.part_num), $0.part_start, $0.part_size, $0.part_end)
        }
    }

    /// part_get_parttype, asked once (each parted run costs about half a second under TCG; the
    /// editor never changes the label).
    private func labelKind() throws -> String {
        if let labelCache { return labelCache }
        let dev = device
        let kind = try string("part_get_parttype \(dev)") { guestfs_part_get_parttype($0, dev) }
        labelCache = kind
        return kind
    }

    public func resizePartition(_ number: Int, endSector: UInt64) throws {
        try requireUnmounted("resizing a partition")
        let dev = device
        _ = try partitionDevice(number)
        if try labelKind() == "gpt" {
            // Moves the backup GPT header to the end of the (grown) disk.
            try check("part_expand_gpt \(dev)") { guestfs_part_expand_gpt($0, dev) }
        }
        try check("part_resize \(dev) \(number) \(endSector)") {
            guestfs_part_resize($0, dev, Int32(number), Int64(endSector))
        }
        guard let p = try listPartitions().first(where: { $0.0 == number }) else {
            throw CustomizationError("libguestfs: partition \(number) is gone after part_resize")
        }
        let end = (p.3 + 1) / 512 - 1
        guard end == endSector else {
            throw CustomizationError("libguestfs: partition \(number) ends at sector \(end), not \(endSector)")
        }
    }

    public func addPartition(_ number: Int, start: UInt64, sectors: UInt64, swap: Bool) throws {
        try requireUnmounted("adding a partition")
        guard sectors > 0 else { throw CustomizationError("libguestfs: an empty partition") }
        let dev = device
        _ = try partitionDevice(number)
        let kind = try labelKind()
        guard kind == "msdos" || kind == "gpt" else {
            throw CustomizationError("libguestfs: unsupported partition table \(kind.debugDescription) on \(dev)")
        }
        if try listPartitions().contains(where: { $0.0 == number }) {
            throw CustomizationError("libguestfs: partition \(number) already exists")
        }
        let end = start + sectors - 1
        try check("part_add \(dev) p \(start) \(end)") { guestfs_part_add($0, dev, "p", Int64(start), Int64(end)) }
        // parted numbers the new partition itself (the lowest free slot): make sure it is the one
        // asked for, at the place asked for, or undo it.
        guard let added = try listPartitions().first(where: { $0.1 == start * 512 }) else {
            throw CustomizationError("libguestfs: the new partition is not at sector \(start)")
        }
        guard added.0 == number, added.2 == sectors * 512 else {
            try check("part_del \(dev) \(added.0)") { guestfs_part_del($0, dev, Int32(added.0)) }
            throw CustomizationError(
                "libguestfs: the new partition got number \(added.0) and \(added.2 / 512) sectors, not \(number) and \(sectors)")
        }
        if kind == "msdos" {
            let id: Int32 = swap ? 0x82 : 0x83
            try check("part_set_mbr_id \(dev) \(number)") { guestfs_part_set_mbr_id($0, dev, Int32(number), id) }
        } else {
            let guid = swap ? Self.gptLinuxSwap : Self.gptLinuxData
            try check("part_set_gpt_type \(dev) \(number)") {
                guestfs_part_set_gpt_type($0, dev, Int32(number), guid.uppercased())
            }
        }
    }

    public func filesystemType(partition number: Int) throws -> String? {
        let part = try partitionDevice(number)
        let type = try string("vfs_type \(part)") { guestfs_vfs_type($0, part) }
        return type.isEmpty ? nil : type
    }

    public func growFilesystem(partition number: Int) throws {
        try requireUnmounted("growing a filesystem")
        let part = try partitionDevice(number)
        guard let type = try filesystemType(partition: number) else {
            throw CustomizationError("libguestfs: no filesystem on \(part)")
        }
        switch type {
        case "ext2", "ext3", "ext4":
            var opts = guestfs_e2fsck_argv()
            // -f -y, as snf-image does ("correct" (-p) and "forceall" (-y) exclude each other).
            opts.bitmask = CGUESTFS_E2FSCK_FORCEALL_BITMASK
            opts.forceall = 1
            try check("e2fsck \(part)") { guestfs_e2fsck_argv($0, part, &opts) }
            try check("resize2fs \(part)") { guestfs_resize2fs($0, part) }
        case "xfs":
            try withMounted(part) {
                var opts = guestfs_xfs_growfs_argv()
                opts.bitmask = CGUESTFS_XFS_GROWFS_DATASEC_BITMASK
                opts.datasec = 1
                try check("xfs_growfs \(part)") { guestfs_xfs_growfs_argv($0, "/", &opts) }
            }
        case "btrfs":
            try withMounted(part) {
                var opts = guestfs_btrfs_filesystem_resize_argv()
                opts.bitmask = 0  // no size: the largest possible
                try check("btrfs_filesystem_resize \(part)") { guestfs_btrfs_filesystem_resize_argv($0, "/", &opts) }
            }
        default:
            throw CustomizationError("libguestfs: growing a \(type) filesystem is not supported (\(part))")
        }
    }

    /// Mounts `part` at the appliance's / for `body` (filesystems that grow online).
    private func withMounted(_ part: String, _ body: () throws -> Void) throws {
        try check("mount \(part)") { guestfs_mount($0, part, "/") }
        do {
            try body()
        } catch {
            _ = try? check("umount_all") { guestfs_umount_all($0) }
            throw error
        }
        try check("sync") { guestfs_sync($0) }
        try check("umount \(part)") { guestfs_umount($0, "/") }
    }

    public func makeSwap(partition number: Int) throws -> String {
        try requireUnmounted("mkswap")
        let part = try partitionDevice(number)
        let uuid = Self.randomUUID()
        var opts = guestfs_mkswap_opts_argv()
        opts.bitmask = CGUESTFS_MKSWAP_OPTS_UUID_BITMASK
        try uuid.withCString { u in
            opts.uuid = u
            try check("mkswap \(part)") { guestfs_mkswap_opts_argv($0, part, &opts) }
        }
        let readBack = try string("vfs_uuid \(part)") { guestfs_vfs_uuid($0, part) }
        guard readBack.lowercased() == uuid else {
            throw CustomizationError("libguestfs: mkswap \(part): UUID \(readBack), not \(uuid)")
        }
        return uuid
    }

    /// A random (version 4) UUID, lower case.
    static func randomUUID() -> String {
        var rng = SystemRandomNumberGenerator()
        var b = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        b[6] = (b[6] & 0x0f) | 0x40
        b[8] = (b[8] & 0x3f) | 0x80
        let hex = b.map { byte -> String in
            let s = String(byte, radix: 16)
            return s.count == 1 ? "0" + s : s
        }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }

    // MARK: - Mounted phase

    public func openRoot(partition number: Int) throws {
        try requireUnmounted("opening the root filesystem")
        let part = try partitionDevice(number)
        try check("mount \(part) /") { guestfs_mount($0, part, "/") }
        rootMounted = true
    }

    public func readFile(_ path: String) throws -> [UInt8]? {
        try requireRoot()
        let p = try guestPath(path)
        guard try test("exists \(p)", { guestfs_exists($0, p) }) else { return nil }
        var fileOpts = guestfs_is_file_opts_argv()
        fileOpts.bitmask = CGUESTFS_IS_FILE_OPTS_FOLLOWSYMLINKS_BITMASK
        fileOpts.followsymlinks = 1
        guard try test("is_file \(p)", { guestfs_is_file_opts_argv($0, p, &fileOpts) }) else {
            throw CustomizationError("libguestfs: \(p) is not a regular file")
        }
        let h = try handle()
        var size = 0
        guard let data = guestfs_read_file(h, p, &size) else { throw failure("read_file \(p)") }
        defer { free(data) }
        return Array(UnsafeRawBufferPointer(start: data, count: size))
    }

    public func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) throws {
        try requireRoot()
        let p = try guestPath(path)
        try refuseSymlink(p)
        var dirOpts = guestfs_is_dir_opts_argv()
        if try test("is_dir \(p)", { guestfs_is_dir_opts_argv($0, p, &dirOpts) }) {
            throw CustomizationError("libguestfs: \(p) is a directory")
        }
        // guestfs_write truncates an existing file (O_TRUNC) and creates a missing one; larger
        // contents go in chunks, the first one truncating.
        try bytes.withUnsafeBufferPointer { all in
            var offset = 0
            repeat {
                let n = min(Self.writeChunk, all.count - offset)
                let chunk = UnsafeRawPointer(all.baseAddress.map { $0 + offset } ?? UnsafePointer(bitPattern: 1)!)
                    .assumingMemoryBound(to: CChar.self)
                if offset == 0 {
                    try check("write \(p)") { guestfs_write($0, p, chunk, n) }
                } else {
                    try check("write_append \(p)") { guestfs_write_append($0, p, chunk, n) }
                }
                offset += n
            } while offset < all.count
        }
        // chown first: it clears the set-id bits that chmod then sets.
        try check("chown \(p)") { guestfs_chown($0, Int32(bitPattern: uid), Int32(bitPattern: gid), p) }
        try check("chmod \(p)") { guestfs_chmod($0, Int32(mode & 0o7777), p) }
    }

    private func refuseSymlink(_ p: String) throws {
        if try test("is_symlink \(p)", { guestfs_is_symlink($0, p) }) {
            throw CustomizationError("libguestfs: \(p) is a symbolic link; refusing to write through it")
        }
    }

    public func makeDirectory(_ path: String, mode: UInt32, uid: UInt32, gid: UInt32) throws {
        try requireRoot()
        let p = try guestPath(path)
        var dirOpts = guestfs_is_dir_opts_argv()
        dirOpts.bitmask = CGUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS_BITMASK
        dirOpts.followsymlinks = 1
        if try test("is_dir \(p)", { guestfs_is_dir_opts_argv($0, p, &dirOpts) }) { return }
        try refuseSymlink(p)
        try check("mkdir_mode \(p)") { guestfs_mkdir_mode($0, p, Int32(mode & 0o7777)) }
        try check("chown \(p)") { guestfs_chown($0, Int32(bitPattern: uid), Int32(bitPattern: gid), p) }
        try check("chmod \(p)") { guestfs_chmod($0, Int32(mode & 0o7777), p) }
    }

    public func removeFile(_ path: String) throws {
        try requireRoot()
        let p = try guestPath(path)
        try check("rm_f \(p)") { guestfs_rm_f($0, p) }
    }

    public func listDirectory(_ path: String) throws -> [String] {
        try requireRoot()
        let p = try guestPath(path)
        var dirOpts = guestfs_is_dir_opts_argv()
        dirOpts.bitmask = CGUESTFS_IS_DIR_OPTS_FOLLOWSYMLINKS_BITMASK
        dirOpts.followsymlinks = 1
        guard try test("is_dir \(p)", { guestfs_is_dir_opts_argv($0, p, &dirOpts) }) else { return [] }
        return try strings("ls \(p)") { guestfs_ls($0, p) }
    }

    /// lstat of `path` (a symlink is described, not followed): permission bits (mode & 0o7777),
    /// owner, whether it is a directory; nil when nothing is there.
    public func info(_ path: String) throws -> GuestFileInfo? {
        try requireRoot()
        let p = try guestPath(path)
        if try !test("exists \(p)", { guestfs_exists($0, p) }),
            try !test("is_symlink \(p)", { guestfs_is_symlink($0, p) })
        {
            return nil
        }
        let h = try handle()
        guard let st = guestfs_lstatns(h, p) else { throw failure("lstatns \(p)") }
        defer { guestfs_free_statns(st) }
        let mode = UInt32(truncatingIfNeeded: st.pointee.st_mode)
        return GuestFileInfo(
            mode: mode, uid: UInt32(truncatingIfNeeded: st.pointee.st_uid),
            gid: UInt32(truncatingIfNeeded: st.pointee.st_gid), isDirectory: mode & 0o170000 == 0o040000)
    }

    public func closeRoot() throws {
        guard rootMounted else { return }
        try check("sync") { guestfs_sync($0) }
        try check("umount_all") { guestfs_umount_all($0) }
        rootMounted = false
    }

    /// Unmounts, shuts the appliance down (which flushes the disk) and closes the handle. Safe to
    /// call twice. After the time limit expired the appliance is already dead: the handle is just
    /// closed.
    public func close() throws {
        guard let h = g else { return }
        g = nil
        rootMounted = false
        defer { guestfs_close(h) }
        if watchdog.fired { return }
        let ok = guestfs_umount_all(h) != -1 && guestfs_shutdown(h) != -1
        let text = ok ? nil : (guestfs_last_error(h).map { String(cString: $0) } ?? "unknown error")
        watchdog.disarm()
        if let text { throw CustomizationError("libguestfs: shutdown: \(text)") }
    }
}
