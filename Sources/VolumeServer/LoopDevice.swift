import BlockStore
import CFuse3

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Loop devices over regular files, set up with ioctls on /dev/loop-control and /dev/loopN
/// (no `losetup`). Needs root.
public enum LoopDevice {
    /// What ``detach(_:)`` did.
    public enum DetachOutcome: Sendable, Equatable {
        /// The device had a backing file and has none now.
        case detached
        /// The device had no backing file (already detached, or never attached).
        case notAttached
        /// The device is still open elsewhere: the kernel detaches it (autoclear) when the last
        /// user closes it.
        case deferred
    }

    /// How often ``attach(file:)`` asks for a free device when others keep taking it first.
    static let attachAttempts = 32

    /// Attaches a free loop device to `file` read-write and returns its path, `/dev/loopN`.
    ///
    /// Asks the kernel for direct I/O to the file (`LO_FLAGS_DIRECT_IO`); a kernel that refuses
    /// leaves the device buffered (see ``usesDirectIO(_:)``). No autoclear, no partition scan.
    /// Retries with another device if a concurrent process configured the free one first.
    public static func attach(file: String) throws -> String {
        let backing = openRetrying(file, O_RDWR)
        guard backing >= 0 else { throw failure("cannot open \(file) to attach a loop device to it") }
        defer { close(backing) }
        let control = openRetrying("/dev/loop-control", O_RDWR)
        guard control >= 0 else { throw failure("cannot open /dev/loop-control to attach \(file)") }
        defer { close(control) }

        for _ in 0..<attachAttempts {
            let number = snf_loop_ctl_get_free(control)
            guard number >= 0 else { throw failure("cannot get a free loop device for \(file)") }
            let device = "/dev/loop\(number)"
            let fd = openDevice(device, O_RDWR)
            guard fd >= 0 else { throw failure("cannot open \(device) to attach \(file)") }
            defer { close(fd) }
            let directIO = UInt32(LO_FLAGS_DIRECT_IO)
            var result = snf_loop_configure(fd, backing, directIO, 0)
            if result != 0 && errno == EINVAL {
                result = snf_loop_configure(fd, backing, 0, 0)  // a kernel that rejects the flag outright
            }
            if result != 0 {
                if errno == EBUSY { continue }  // another process configured it first
                throw failure("cannot attach \(device) to \(file)")
            }
            // Kernels that cannot do direct I/O to this file drop the flag silently; ask once more
            // on its own, and stay buffered if that fails too.
            var deviceNumber: UInt64 = 0
            var inode: UInt64 = 0
            var flags: UInt32 = 0
            if snf_loop_get_status(fd, &deviceNumber, &inode, &flags) == 0 && flags & directIO == 0 {
                _ = snf_loop_set_direct_io(fd, 1)
            }
            return device
        }
        throw StoreError(
            .io, "cannot attach a loop device to \(file): other processes took \(attachAttempts) free devices first")
    }

    /// Every loop device whose backing file is `file`, as `/dev/loopN`, in number order.
    ///
    /// When `file` exists, only devices on that very file (same device and inode) count, not
    /// devices left on an older file of the same path (such as a file the FUSE export removed and
    /// added again). When it does not exist, devices whose backing file had this path count,
    /// including those the kernel shows as `<path> (deleted)`.
    public static func devices(backing file: String) -> [String] {
        var identity = stat()
        let exists = stat(file, &identity) == 0
        var resolved: String? = nil
        if let real = realpath(file, nil) {
            resolved = String(cString: real)
            free(real)
        }
        var found: [(Int, String)] = []
        for name in loopNames() {
            guard let backing = backingFile(ofName: name) else { continue }
            var candidates = [file]
            if let resolved { candidates.append(resolved) }
            if !exists { candidates += candidates.map { $0 + " (deleted)" } }
            guard candidates.contains(backing) else { continue }
            let device = "/dev/" + name
            if exists {
                let fd = openDevice(device, O_RDONLY)
                guard fd >= 0 else { continue }
                defer { close(fd) }
                var deviceNumber: UInt64 = 0
                var inode: UInt64 = 0
                var flags: UInt32 = 0
                guard snf_loop_get_status(fd, &deviceNumber, &inode, &flags) == 0,
                    deviceNumber == UInt64(identity.st_dev), inode == UInt64(identity.st_ino)
                else { continue }
            }
            found.append((Int(name.dropFirst(4)) ?? Int.max, device))
        }
        return found.sorted { $0.0 < $1.0 }.map(\.1)
    }

    /// The backing file of `device` as the kernel shows it, or nil if it has none.
    public static func backingFile(of device: String) -> String? {
        backingFile(ofName: name(of: device))
    }

    /// Whether `device` does direct I/O to its backing file (false when buffered or detached).
    public static func usesDirectIO(_ device: String) -> Bool {
        readTextFile("/sys/block/\(name(of: device))/loop/dio")?.hasPrefix("1") ?? false
    }

    /// Detaches `device` (`LOOP_CLR_FD`); succeeds if it is already detached.
    ///
    /// The kernel detaches at the last close: if another process still has the device open (a
    /// mounted filesystem, a VM, a passing udev probe), it is left to detach itself when that
    /// user closes it. This waits up to half a second for short-lived users, then reports
    /// ``DetachOutcome/deferred``.
    @discardableResult
    public static func detach(_ device: String) throws -> DetachOutcome {
        let backing = backingFile(of: device)
        // Read-only: closing a device opened for writing makes udev probe it again.
        let fd = openRetrying(device, O_RDONLY)
        if fd < 0 {
            if errno == ENOENT || errno == ENXIO { return .notAttached }
            throw failure("cannot open \(device) to detach it")
        }
        if snf_loop_clear_fd(fd) != 0 {
            let code = errno
            close(fd)
            if code == ENXIO { return .notAttached }
            throw failure("cannot detach \(device)", code)
        }
        close(fd)
        // (A different backing file means another process attached the freed device already.)
        for _ in 0..<50 {
            let now = backingFile(of: device)
            if now == nil || now != backing { return .detached }
            usleep(10_000)
        }
        return .deferred
    }

    /// Makes `device` take the current size of its backing file (`LOOP_SET_CAPACITY`), after the
    /// volume grew. The backing file is stat'ed first so that a FUSE file's cached size is fresh.
    public static func refreshCapacity(_ device: String) throws {
        if let backing = backingFile(of: device) {
            var attributes = stat()
            _ = stat(backing, &attributes)
        }
        let fd = openRetrying(device, O_RDONLY)
        guard fd >= 0 else { throw failure("cannot open \(device) to update its size") }
        defer { close(fd) }
        guard snf_loop_set_capacity(fd) == 0 else { throw failure("cannot update the size of \(device)") }
    }

    // MARK: - Helpers

    /// `loopN` for `/dev/loopN` (or `loopN`).
    static func name(of device: String) -> String {
        device.split(separator: "/").last.map(String.init) ?? device
    }

    static func backingFile(ofName name: String) -> String? {
        guard var text = readTextFile("/sys/block/\(name)/loop/backing_file") else { return nil }
        if text.hasSuffix("\n") { text.removeLast() }
        return text.isEmpty ? nil : text
    }

    /// Names of the loop block devices (`loop0`, `loop1`, ...) from /sys/block.
    static func loopNames() -> [String] {
        guard let directory = opendir("/sys/block") else { return [] }
        defer { closedir(directory) }
        var names: [String] = []
        while let entry = readdir(directory) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
            }
            if name.hasPrefix("loop"), name.dropFirst(4).allSatisfy(\.isNumber), name.count > 4 {
                names.append(name)
            }
        }
        return names
    }

    static func openRetrying(_ path: String, _ flags: Int32) -> Int32 {
        while true {
            let fd = open(path, flags | O_CLOEXEC)
            if fd >= 0 || errno != EINTR { return fd }
        }
    }

    /// Opens a loop device node; one just created by LOOP_CTL_GET_FREE may take a moment to appear.
    static func openDevice(_ device: String, _ flags: Int32) -> Int32 {
        for _ in 0..<100 {
            let fd = openRetrying(device, flags)
            if fd >= 0 || errno != ENOENT { return fd }
            usleep(10_000)
        }
        return openRetrying(device, flags)
    }

    static func failure(_ what: String, _ code: Int32 = errno) -> StoreError {
        StoreError(.io, "\(what): \(Errno(code))", cause: Errno(code))
    }
}
