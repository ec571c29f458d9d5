import BlockStore
import BlockStoreTesting
import Synchronization
import Testing
import VolumeServer

#if canImport(Glibc)
import Glibc
#endif

@Suite("FuseExport", .enabled(if: Environment.canMount, "needs root and /dev/fuse"))
struct FuseExportTests {
    static let mib = 1 << 20

    @Test func readsAndWritesReachTheDevice() throws {
        let size = 9 * Self.mib + 1234
        let volume = MemoryVolume(size: size)
        try withExport { export in
            export.add(name: "vol", device: volume)
            let file = try Descriptor(export.path(of: "vol"), O_RDWR)

            // Odd offsets and sizes, small, above 128 KiB, crossing 4 MiB, 1 MiB and more.
            let cases: [(offset: Int, count: Int)] = [
                (7, 5), (4095, 2), (Self.mib + 3, 200 * 1024 + 17), (4 * Self.mib - 1000, 300_001),
                (5 * Self.mib + 1, Self.mib), (6 * Self.mib + 11, 3 * Self.mib - 77),
            ]
            for (index, item) in cases.enumerated() {
                let expected = (item.offset..<(item.offset + item.count)).map(MemoryVolume.patternByte)
                #expect(try file.read(item.count, at: item.offset) == expected, "read \(item)")
                let data = testBytes(item.count, seed: UInt8(index))
                #expect(try file.write(data, at: item.offset) == item.count)
                #expect(volume.snapshot(item.offset..<(item.offset + item.count)) == data, "write \(item)")
                #expect(try file.read(item.count, at: item.offset) == data, "read back \(item)")
            }
            #expect(volume.largestWrite.load(ordering: .relaxed) >= 1 << 20, "1 MiB writes arrive whole")
            #expect(volume.fuaWrites.load(ordering: .relaxed) == 0)

            // The end: short reads, failing or short writes, no growth.
            #expect(try file.read(10, at: size).isEmpty)
            #expect(try file.read(10, at: size + 5000).isEmpty)
            #expect(try file.read(100, at: size - 3) == volume.snapshot((size - 3)..<size))
            expectErrno(EFBIG) { try file.write([1, 2, 3], at: size) }
            #expect(try file.write([9, 9, 9, 9], at: size - 2) == 2)
            #expect(volume.snapshot((size - 2)..<size) == [9, 9])
            #expect(volume.sizeBytes == UInt64(size))
        }
    }

    @Test func fsyncAndCloseFlushAndSyncWritesAreFUA() throws {
        let volume = MemoryVolume(size: Self.mib)
        try withExport { export in
            export.add(name: "vol", device: volume)
            do {
                let file = try Descriptor(export.path(of: "vol"), O_RDWR)
                // At least: a child another test spawns meanwhile inherits this descriptor until
                // its exec closes it (O_CLOEXEC), and that close is a FUSE flush too.
                let before = volume.flushes.load(ordering: .relaxed)
                try file.write([1], at: 0)
                try file.sync()
                let afterSync = volume.flushes.load(ordering: .relaxed)
                #expect(afterSync >= before + 1)
                #expect(fdatasync(file.fd) == 0)
                #expect(volume.flushes.load(ordering: .relaxed) >= afterSync + 1)
            }
            let afterClose = volume.flushes.load(ordering: .relaxed)
            #expect(afterClose >= 3, "close flushes")

            let synced = try Descriptor(export.path(of: "vol"), O_RDWR | O_DSYNC)
            try synced.write([1, 2, 3], at: 100)
            #expect(volume.fuaWrites.load(ordering: .relaxed) == 1)

            let plain = try Descriptor(export.path(of: "vol"), O_RDWR)
            try plain.write([4], at: 200)
            #expect(volume.fuaWrites.load(ordering: .relaxed) == 1)
            #expect(pwriteDataSync(plain.fd, [5, 6], at: 300) == 2)
            #expect(volume.fuaWrites.load(ordering: .relaxed) == 2, "RWF_DSYNC is FUA")
            #expect(volume.snapshot(300..<302) == [5, 6])
        }
    }

    @Test func attributesFollowTheDevice() throws {
        let volume = MemoryVolume(size: 3 * Self.mib)
        try withExport { export in
            export.add(name: "vol", device: volume)
            var attributes = stat()
            #expect(stat(export.path(of: "vol"), &attributes) == 0)
            #expect(attributes.st_size == 3 * Self.mib)
            #expect(attributes.st_mode == S_IFREG | 0o600)
            #expect(attributes.st_uid == 0 && attributes.st_gid == 0)

            let file = try Descriptor(export.path(of: "vol"), O_RDWR)
            volume.grow(to: 5 * Self.mib)
            #expect(stat(export.path(of: "vol"), &attributes) == 0)
            #expect(attributes.st_size == 5 * Self.mib)
            #expect(fstat(file.fd, &attributes) == 0 && attributes.st_size == 5 * Self.mib)
            // The grown part is readable and writable through a handle opened before.
            #expect(try file.write([7, 7], at: 5 * Self.mib - 2) == 2)
            #expect(try file.read(4, at: 5 * Self.mib - 2) == [7, 7])

            // No size changes through the file, except to the same size.
            #expect(ftruncate(file.fd, off_t(5 * Self.mib)) == 0)
            #expect(ftruncate(file.fd, off_t(Self.mib)) == -1 && errno == EPERM)
            #expect(ftruncate(file.fd, off_t(6 * Self.mib)) == -1 && errno == EPERM)
            #expect(chmod(export.path(of: "vol"), 0o644) == -1 && errno == EPERM)
            #expect(fallocate(file.fd, 0, 0, 4096) == -1 && errno == EOPNOTSUPP)
            #expect(volume.sizeBytes == UInt64(5 * Self.mib))
        }
    }

    @Test func namesAppearAndDisappear() throws {
        let first = MemoryVolume(size: 4096)
        let second = MemoryVolume(size: 8192)
        try withExport { export in
            #expect(try directoryNames(export.mountpoint) == [])
            export.add(name: "a", device: first)
            export.add(name: "b", device: second)
            #expect(try directoryNames(export.mountpoint) == ["a", "b"])
            #expect(export.names == ["a", "b"])

            let open = try Descriptor(export.path(of: "a"), O_RDWR)
            export.remove(name: "a")
            expectErrno(ENOENT) { _ = try Descriptor(export.path(of: "a"), O_RDWR) }
            var attributes = stat()
            #expect(stat(export.path(of: "a"), &attributes) == -1 && errno == ENOENT)
            #expect(try directoryNames(export.mountpoint) == ["b"])
            // Handles opened before the removal fail from then on.
            expectErrno(EIO) { _ = try open.read(10, at: 0) }
            expectErrno(EIO) { try open.write([1], at: 0) }
            expectErrno(EIO) { try open.sync() }

            // Adding the name again makes a new file; the old handle still fails.
            export.add(name: "a", device: MemoryVolume(size: 4096))
            #expect(try Descriptor(export.path(of: "a"), O_RDONLY).read(4, at: 0).count == 4)
            expectErrno(EIO) { _ = try open.read(10, at: 0) }
            export.remove(name: "missing")
        }
    }

    @Test func deviceErrorsBecomeErrnos() throws {
        let volume = MemoryVolume(size: 65536)
        let seen = Mutex<[String]>([])
        let directory = try TemporaryDirectory.make(prefix: "fuse")
        let export = try FuseExport(mountpoint: directory + "/mnt") { name, error in
            seen.withLock { $0.append("\(name): \(error)") }
        }
        defer { export.unmount() }
        export.add(name: "vol", device: volume)
        let file = try Descriptor(export.path(of: "vol"), O_RDWR)
        volume.failure.withLock { $0 = StoreError(.noSpace, "the store is full") }
        expectErrno(ENOSPC) { try file.write([1], at: 0) }
        volume.failure.withLock { $0 = StoreError(.corrupt, "block 12 does not match its hash") }
        expectErrno(EIO) { _ = try file.read(1, at: 0) }
        expectErrno(EIO) { try file.sync() }
        #expect(seen.withLock { $0 } .first == "vol: the store is full")
        volume.failure.withLock { $0 = nil }
    }

    @Test func unmountLeavesNoMountAndIsIdempotent() throws {
        let directory = try TemporaryDirectory.make(prefix: "fuse")
        let export = try FuseExport(mountpoint: directory + "/a/b/../mnt/")
        #expect(export.mountpoint == directory + "/a/mnt")
        #expect(isMounted(export.mountpoint))
        #expect(FuseExport.mountpoints().contains(export.mountpoint))
        export.add(name: "vol", device: MemoryVolume(size: 4096))
        export.unmount()
        #expect(!isMounted(export.mountpoint))
        export.unmount()
        #expect(try directoryNames(export.mountpoint) == [])
    }

    @Test func unmountWithAnOpenFileAbortsTheConnection() throws {
        let directory = try TemporaryDirectory.make(prefix: "fuse")
        let export = try FuseExport(mountpoint: directory + "/mnt")
        defer { export.unmount() }
        export.add(name: "vol", device: MemoryVolume(size: 4096))
        let file = try Descriptor(export.path(of: "vol"), O_RDWR)
        export.unmount()
        #expect(!isMounted(export.mountpoint))
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(pread(file.fd, &buffer, 16, 0) == -1)
    }

    @Test func aStaleMountIsReplacedAndALiveOneRefused() throws {
        let directory = try TemporaryDirectory.make(prefix: "fuse")
        let path = directory + "/mnt"
        #expect(mkdir(path, 0o700) == 0)
        // What a killed server leaves: a fuse.snf-store mount whose device is closed.
        let fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)
        #expect(fd >= 0)
        let options = "fd=\(fd),rootmode=40000,user_id=0,group_id=0"
        #expect(mount("snf-store", path, "fuse.snf-store", UInt(MS_NOSUID | MS_NODEV), options) == 0)
        close(fd)
        #expect(isMounted(path))
        defer { _ = umount2(path, Int32(MNT_DETACH)) }

        let export = try FuseExport(mountpoint: path)
        defer { export.unmount() }
        #expect(FuseExportTestsSupport.mountpoints().filter { $0 == path }.count == 1)
        export.add(name: "vol", device: MemoryVolume(size: 4096))
        #expect(try Descriptor(export.path(of: "vol"), O_RDONLY).read(8, at: 0).count == 8)

        #expect(throws: StoreError.self) { try FuseExport(mountpoint: path) }
        export.unmount()
        #expect(!isMounted(path))
    }

    @Test func concurrentIO() async throws {
        let volume = MemoryVolume(size: 16 * Self.mib, pattern: false)
        try await withExport { export in
            export.add(name: "vol", device: volume)
            let path = export.path(of: "vol")
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<8 {
                    group.addTask {
                        let file = try Descriptor(path, O_RDWR)
                        let data = testBytes(2 * Self.mib, seed: UInt8(worker))
                        try file.write(data, at: worker * 2 * Self.mib)
                        #expect(try file.read(data.count, at: worker * 2 * Self.mib) == data)
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}

/// Names in a directory, sorted, without `.` and `..`.
func directoryNames(_ path: String) throws -> [String] {
    guard let directory = opendir(path) else { throw POSIXFailure("opendir \(path)", errno) }
    defer { closedir(directory) }
    var names: [String] = []
    while let entry = readdir(directory) {
        let name = withUnsafePointer(to: &entry.pointee.d_name) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}
