import BlockStore
import BlockStoreTesting
import Synchronization
import Testing
import VolumeServer

#if canImport(Glibc)
import Glibc
#endif

/// An in-memory volume: bytes behind a mutex, counting flushes and FUA writes; can fail on demand.
final class MemoryVolume: VolumeIO {
    let bytes: Mutex<[UInt8]>
    let flushes = Atomic<Int>(0)
    let fuaWrites = Atomic<Int>(0)
    let writes = Atomic<Int>(0)
    /// Largest single write seen, to check that large requests reach the device whole.
    let largestWrite = Atomic<Int>(0)
    let reads = Atomic<Int>(0)
    let largestRead = Atomic<Int>(0)
    /// When set, every call throws this.
    let failure = Mutex<StoreError?>(nil)

    init(size: Int, pattern: Bool = true) {
        var initial = [UInt8](repeating: 0, count: size)
        if pattern {
            for i in 0..<size { initial[i] = MemoryVolume.patternByte(i) }
        }
        bytes = Mutex(initial)
    }

    static func patternByte(_ offset: Int) -> UInt8 {
        UInt8(truncatingIfNeeded: (offset &* 2_654_435_761) >> 13)
    }

    var sizeBytes: UInt64 { bytes.withLock { UInt64($0.count) } }

    func grow(to size: Int) {
        bytes.withLock { $0 += [UInt8](repeating: 0, count: size - $0.count) }
    }

    func snapshot(_ range: Range<Int>) -> [UInt8] {
        bytes.withLock { Array($0[range]) }
    }

    private func check() throws {
        if let error = failure.withLock({ $0 }) { throw error }
    }

    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try check()
        reads.add(1, ordering: .relaxed)
        largestRead.max(buffer.count, ordering: .relaxed)
        bytes.withLock { stored in
            precondition(Int(offset) + buffer.count <= stored.count, "read past the end")
            stored.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)...].prefix(buffer.count)))
            }
        }
    }

    func write(at offset: UInt64, from source: UnsafeRawBufferPointer, fua: Bool) throws {
        try check()
        bytes.withLock { stored in
            precondition(Int(offset) + source.count <= stored.count, "write past the end")
            stored.withUnsafeMutableBytes {
                let target = UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)...].prefix(source.count))
                target.copyMemory(from: source)
            }
        }
        writes.add(1, ordering: .relaxed)
        largestWrite.max(source.count, ordering: .relaxed)
        if fua { fuaWrites.add(1, ordering: .relaxed) }
    }

    func flush() throws {
        try check()
        flushes.add(1, ordering: .relaxed)
    }
}

/// O_DIRECT, which Swift's Glibc module does not export (it needs _GNU_SOURCE).
#if arch(arm64)
let O_DIRECT: Int32 = 0o200000
#else
let O_DIRECT: Int32 = 0o40000
#endif

/// fallocate(2), which Swift's Glibc module does not export (it needs _GNU_SOURCE).
func fallocate(_ fd: Int32, _ mode: Int32, _ offset: off_t, _ length: off_t) -> Int32 {
    typealias Function = @convention(c) (Int32, Int32, off_t, off_t) -> Int32
    let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "fallocate")!  // RTLD_DEFAULT
    return unsafeBitCast(symbol, to: Function.self)(fd, mode, offset, length)
}

/// pwritev2(2) with RWF_DSYNC, looked up at run time like fallocate.
func pwriteDataSync(_ fd: Int32, _ bytes: [UInt8], at offset: Int) -> Int {
    typealias Function = @convention(c) (Int32, UnsafePointer<iovec>, Int32, off_t, Int32) -> Int
    let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pwritev2")!  // RTLD_DEFAULT
    let rwfDataSync: Int32 = 2  // RWF_DSYNC
    var copy = bytes
    return copy.withUnsafeMutableBytes { buffer in
        var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
        return unsafeBitCast(symbol, to: Function.self)(fd, &vector, 1, off_t(offset), rwfDataSync)
    }
}

enum Environment {
    /// FUSE tests need root and /dev/fuse.
    static let canMount = getuid() == 0 && access("/dev/fuse", R_OK | W_OK) == 0
    /// Loop tests need that and /dev/loop-control.
    static let canLoop = canMount && access("/dev/loop-control", R_OK | W_OK) == 0
}

/// Mounts a FuseExport in a new temporary directory, runs `body`, and unmounts even if it throws.
func withExport<T>(_ body: (FuseExport) throws -> T) throws -> T {
    let directory = try TemporaryDirectory.make(prefix: "fuse")
    let export = try FuseExport(mountpoint: directory + "/mnt")
    defer { export.unmount() }
    return try body(export)
}

func withExport<T>(_ body: (FuseExport) async throws -> T) async throws -> T {
    let directory = try TemporaryDirectory.make(prefix: "fuse")
    let export = try FuseExport(mountpoint: directory + "/mnt")
    defer { export.unmount() }
    return try await body(export)
}

/// Whether /proc/self/mountinfo lists a mount at `path`.
func isMounted(_ path: String) -> Bool {
    FuseExportTestsSupport.mountpoints().contains(path)
}

enum FuseExportTestsSupport {
    /// Every mount point (any type) of this mount namespace.
    static func mountpoints() -> [String] {
        guard let file = fopen("/proc/self/mountinfo", "r") else { return [] }
        defer { fclose(file) }
        var result: [String] = []
        var line: UnsafeMutablePointer<CChar>? = nil
        var capacity = 0
        defer { free(line) }
        while getline(&line, &capacity, file) > 0 {
            let fields = String(cString: line!).split(separator: " ")
            if fields.count > 4 { result.append(String(fields[4])) }
        }
        return result
    }
}

/// A descriptor closed at deinit.
final class Descriptor {
    let fd: Int32
    let path: String

    init(_ path: String, _ flags: Int32) throws {
        let fd = open(path, flags | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXFailure("open \(path)", errno) }
        self.fd = fd
        self.path = path
    }

    deinit { close(fd) }

    /// pwrite, returning the count or throwing the errno.
    @discardableResult
    func write(_ bytes: [UInt8], at offset: Int) throws -> Int {
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n >= 0 else { throw POSIXFailure("pwrite \(path) at \(offset)", errno) }
        return n
    }

    /// pread of up to `count` bytes.
    func read(_ count: Int, at offset: Int) throws -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard n >= 0 else { throw POSIXFailure("pread \(path) at \(offset)", errno) }
        return Array(buffer[0..<n])
    }

    func sync() throws {
        guard fsync(fd) == 0 else { throw POSIXFailure("fsync \(path)", errno) }
    }
}

/// A failed system call in a test, with its errno.
struct POSIXFailure: Error, CustomStringConvertible {
    let what: String
    let code: Int32
    init(_ what: String, _ code: Int32) {
        self.what = what
        self.code = code
    }
    var description: String { "\(what): \(String(cString: strerror(code)))" }
}

/// Runs `body` expecting it to fail with errno `code`.
func expectErrno(_ code: Int32, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected \(String(cString: strerror(code))), got success", sourceLocation: sourceLocation)
    } catch let error as POSIXFailure {
        #expect(error.code == code, "\(error)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected \(error)", sourceLocation: sourceLocation)
    }
}

/// Bytes that differ from MemoryVolume's pattern.
func testBytes(_ count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) ^ 0x5A }
}
