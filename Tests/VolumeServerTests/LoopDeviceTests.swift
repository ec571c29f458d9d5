import BlockStore
import BlockStoreTesting
import Testing
import VolumeServer

#if canImport(Glibc)
import Glibc
#endif

/// Loop devices on FUSE files. Serialized: the tests attach and detach loop devices and count them.
@Suite("LoopDevice", .serialized, .enabled(if: Environment.canLoop, "needs root, /dev/fuse and /dev/loop-control"))
struct LoopDeviceTests {
    static let mib = 1 << 20

    @Test func blockIOThroughALoopDeviceReachesTheVolume() throws {
        let volume = MemoryVolume(size: 16 * Self.mib)
        try withExport { export in
            export.add(name: "vol", device: volume)
            let file = export.path(of: "vol")
            let device = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(device, file: file) }
            #expect(device.hasPrefix("/dev/loop"))
            #expect(LoopDevice.devices(backing: file) == [device])
            #expect(LoopDevice.backingFile(of: device) == file)
            #expect(LoopDevice.usesDirectIO(device), "direct I/O on the FUSE file")

            do {
                let loop = try Descriptor(device, O_RDWR | O_DIRECT)
                #expect(lseek(loop.fd, 0, SEEK_END) == off_t(16 * Self.mib))

                // Sector-aligned, crossing 4 MiB, larger than 1 MiB.
                let offset = 4 * Self.mib - 3 * 512
                let data = testBytes(Self.mib + 512 * 5, seed: 3)
                try alignedWrite(loop.fd, data, at: offset)
                #expect(volume.snapshot(offset..<(offset + data.count)) == data)
                #expect(try alignedRead(loop.fd, data.count, at: offset) == data)
                let untouched = 10 * Self.mib
                #expect(
                    try alignedRead(loop.fd, 4096, at: untouched)
                        == (untouched..<(untouched + 4096)).map(MemoryVolume.patternByte))

                // A flush of the block device is an fsync of the file.
                let before = volume.flushes.load(ordering: .relaxed)
                try loop.sync()
                #expect(volume.flushes.load(ordering: .relaxed) > before)

                // Growth shows after refreshCapacity.
                volume.grow(to: 20 * Self.mib)
                try LoopDevice.refreshCapacity(device)
                #expect(lseek(loop.fd, 0, SEEK_END) == off_t(20 * Self.mib))
                try alignedWrite(loop.fd, [UInt8](repeating: 0xEE, count: 4096), at: 20 * Self.mib - 4096)
                let tail = volume.snapshot((20 * Self.mib - 4096)..<(20 * Self.mib))
                #expect(tail == [UInt8](repeating: 0xEE, count: 4096))
            }

            #expect(try LoopDevice.detach(device) == .detached)
            #expect(LoopDevice.devices(backing: file) == [])
            #expect(LoopDevice.backingFile(of: device) == nil)
            #expect(try LoopDevice.detach(device) == .notAttached)
        }
    }

    @Test func devicesFindsOnlyLoopsOnTheSameFile() throws {
        try withExport { export in
            export.add(name: "vol", device: MemoryVolume(size: Self.mib))
            let file = export.path(of: "vol")
            let first = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(first, file: file) }
            let second = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(second, file: file) }
            #expect(first != second)
            #expect(Set(LoopDevice.devices(backing: file)) == [first, second])

            // The same path served by a new file: the old loops are not on it.
            export.remove(name: "vol")
            export.add(name: "vol", device: MemoryVolume(size: Self.mib))
            #expect(LoopDevice.devices(backing: file) == [])
            let third = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(third, file: file) }
            #expect(LoopDevice.devices(backing: file) == [third])

            // The old loops fail their I/O: their file was removed.
            let loop = try Descriptor(first, O_RDONLY | O_DIRECT)
            expectErrno(EIO) { _ = try alignedRead(loop.fd, 4096, at: 0) }
        }
    }

    @Test func detachWhileOpenIsDeferred() throws {
        try withExport { export in
            export.add(name: "vol", device: MemoryVolume(size: Self.mib))
            let file = export.path(of: "vol")
            let device = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(device, file: file) }
            var holder: Descriptor? = try Descriptor(device, O_RDONLY)
            #expect(try LoopDevice.detach(device) == .deferred)
            #expect(LoopDevice.backingFile(of: device) == file)
            _ = holder
            holder = nil
            #expect(waitUntil { LoopDevice.backingFile(of: device) == nil })
        }
    }

    @Test func unmountWithAnAttachedLoopDoesNotHang() throws {
        let directory = try TemporaryDirectory.make(prefix: "fuse")
        let export = try FuseExport(mountpoint: directory + "/mnt")
        defer { export.unmount() }
        export.add(name: "vol", device: MemoryVolume(size: Self.mib))
        let file = export.path(of: "vol")
        let device = try LoopDevice.attach(file: file)
        defer { detachIfStillOurs(device, file: file) }
        export.unmount()
        #expect(!isMounted(export.mountpoint))
        do {
            let loop = try Descriptor(device, O_RDONLY | O_DIRECT)
            #expect(throws: POSIXFailure.self) { _ = try alignedRead(loop.fd, 4096, at: 0) }
        }
        #expect(try LoopDevice.detach(device) == .detached)
    }

    /// Throughput of the FUSE file and of a loop device on it, with dd and an in-memory volume.
    /// Run with `SNF_FUSE_BENCH=1 swift test --filter LoopDeviceTests/throughput`.
    @Test(.enabled(if: getenv("SNF_FUSE_BENCH") != nil, "set SNF_FUSE_BENCH=1 to measure"))
    func throughput() throws {
        let size = 256 * Self.mib
        try withExport { export in
            let volume = MemoryVolume(size: size, pattern: false)
            export.add(name: "vol", device: volume)
            let file = export.path(of: "vol")
            let device = try LoopDevice.attach(file: file)
            defer { detachIfStillOurs(device, file: file) }
            print("loop device \(device), direct I/O: \(LoopDevice.usesDirectIO(device))")
            for target in [file, device] {
                print("write \(target):")
                let write = ["if=/dev/zero", "of=\(target)", "bs=1M", "count=256", "oflag=direct", "conv=notrunc"]
                #expect(run(["/bin/dd"] + write) == 0)
                let largestWrite = volume.largestWrite.load(ordering: .relaxed)
                print("  \(volume.writes.load(ordering: .relaxed)) writes so far, largest \(largestWrite)")
                print("read \(target):")
                #expect(run(["/bin/dd", "if=\(target)", "of=/dev/null", "bs=1M", "count=256", "iflag=direct"]) == 0)
                let largestRead = volume.largestRead.load(ordering: .relaxed)
                print("  \(volume.reads.load(ordering: .relaxed)) reads so far, largest \(largestRead)")
            }
        }
    }
}

/// Cleanup that cannot hit another process's device: detaches `device` only while `file` (or
/// the kernel's "`file` (deleted)") still backs it.
func detachIfStillOurs(_ device: String, file: String) {
    guard let backing = LoopDevice.backingFile(of: device), backing == file || backing == file + " (deleted)"
    else { return }
    _ = try? LoopDevice.detach(device)
}

/// pwrite through an aligned buffer (for O_DIRECT).
func alignedWrite(_ fd: Int32, _ bytes: [UInt8], at offset: Int) throws {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bytes.count, alignment: 4096)
    defer { buffer.deallocate() }
    buffer.copyBytes(from: bytes)
    let n = pwrite(fd, buffer.baseAddress, buffer.count, off_t(offset))
    guard n == bytes.count else { throw POSIXFailure("pwrite at \(offset) gave \(n)", errno) }
}

/// pread through an aligned buffer (for O_DIRECT).
func alignedRead(_ fd: Int32, _ count: Int, at offset: Int) throws -> [UInt8] {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
    defer { buffer.deallocate() }
    let n = pread(fd, buffer.baseAddress, count, off_t(offset))
    guard n >= 0 else { throw POSIXFailure("pread at \(offset)", errno) }
    return Array(buffer[0..<n])
}

/// Polls `condition` for up to two seconds.
func waitUntil(_ condition: () -> Bool) -> Bool {
    for _ in 0..<200 {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Runs a program (no shell) and returns its exit status.
func run(_ arguments: [String]) -> Int32 {
    var pid = pid_t()
    var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawn(&pid, arguments[0], nil, nil, &argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return status
}
