import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing

@Suite("Local directory: block writes from aligned buffers")
struct DirectWriteTests {
    /// How many of the file's first `count` bytes' pages are in the page cache.
    static func residentPages(_ path: String, count: Int) throws -> Int {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw POSIXError(.ENOENT) }
        defer { close(fd) }
        guard let map = mmap(nil, count, PROT_READ, MAP_SHARED, fd, 0), map != MAP_FAILED else {
            throw POSIXError(.EIO)
        }
        defer { munmap(map, count) }
        let pages = (count + 4095) / 4096
        var vector = [UInt8](repeating: 0, count: pages)
        guard mincore(map, count, &vector) == 0 else { throw POSIXError(.EIO) }
        return vector.filter { $0 & 1 == 1 }.count
    }

    /// The type of the file system holding `path`, from the longest mount point above it.
    static func fileSystemType(of path: String) throws -> String {
        let mounts = try String(contentsOfFile: "/proc/self/mounts", encoding: .utf8)
        var best = ("", "")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count >= 3 else { continue }
            let point = String(fields[1])
            let under = point == "/" || path == point || path.hasPrefix(point + "/")
            if under && point.count >= best.0.count { best = (point, String(fields[2])) }
        }
        return best.1
    }

    @Test func alignedBlocksBypassThePageCacheAndAreWhole() throws {
        let root = try TemporaryDirectory.make(prefix: "snf-store-direct")
        // tmpfs is the page cache itself: nothing to bypass there.
        let onTmpfs = try Self.fileSystemType(of: root) == "tmpfs"
        try PosixBackend.initialize(root: root)
        let backend = try PosixBackend(root: root)
        let store = BlockStore(backend: backend)
        let length = BlockStore.blockSizeBytes - 100
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: BlockStore.blockSizeBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var bytes = TestData.random(length, seed: 90)
        bytes[length - 1] = 7
        buffer.copyBytes(from: bytes)
        let id = try store.putBlock(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        let path = "\(root)/blocks/\(id.hex.prefix(2))/\(id.hex)"
        let aligned = length & ~4095
        if !onTmpfs {
            #expect(try Self.residentPages(path, count: aligned) == 0, "the aligned part went around the page cache")
        }
        #expect(try backend.get(.block, id.hex) == bytes)
        #expect(try store.check().isSound)

        // An unaligned buffer of the same bytes: the same block (stored once), through the cache.
        let again = try bytes.withUnsafeBytes { try store.putBlock($0) }
        #expect(again == id)
        #expect(try backend.list(.block, prefix: "").count == 1)
    }
}
