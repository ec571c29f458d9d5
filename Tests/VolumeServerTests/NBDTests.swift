import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing

@testable import VolumeServer

/// The NBD server against the real client: qemu-img and qemu-io (Debian qemu-utils).
@Suite(.enabled(if: Tool.available("qemu-io") && Tool.available("qemu-img")))
struct NBDTests {
    /// A new store holding `img` (random bytes) and `vol`, a clone of it of `volumeBytes`.
    static func cloneOfAnImage(prefix: String, imageBytes: Int, seed: UInt64, volumeBytes: UInt64) throws
        -> (dir: String, store: BlockStore, backend: PosixBackend, image: [UInt8])
    {
        let dir = try TemporaryDirectory.make(prefix: prefix)
        try PosixBackend.initialize(root: dir + "/store")
        let backend = try PosixBackend(root: dir + "/store")
        let store = BlockStore(backend: backend)
        let image = TestData.random(imageBytes, seed: seed)
        let imagePath = dir + "/image.raw"
        try Data(image).write(to: URL(fileURLWithPath: imagePath))
        try store.importMap(named: TestData.name("img"), from: FileSource(path: imagePath))
        try store.cloneVolume(from: TestData.name("img"), named: TestData.name("vol"), sizeBytes: volumeBytes)
        return (dir, store, backend, image)
    }

    @Test func qemuReadsAndWritesAClone() throws {
        let (dir, store, backend, image) = try NBDTests.cloneOfAnImage(prefix: "nbd", imageBytes: 10 * 1024 * 1024 + 123, seed: 7, volumeBytes: 32 * 1024 * 1024)

        let device = try VolumeDevice(store: store, backend: backend, name: TestData.name("vol"))
        let socket = dir + "/vol.sock"
        let server = try NBDServer(socketPath: socket, device: device, readOnly: false, exportName: "vol")
        defer { server.stop() }

        // The whole disk through NBD: the image, then zeros.
        let out = dir + "/out.raw"
        try Tool.run("qemu-img", ["convert", "-f", "raw", "-O", "raw", "nbd:unix:\(socket)", out])
        let read = try [UInt8](Data(contentsOf: URL(fileURLWithPath: out)))
        #expect(read.count == 32 * 1024 * 1024)
        #expect(Array(read.prefix(image.count)) == image)
        #expect(read.dropFirst(image.count).allSatisfy { $0 == 0 })

        // Writes across a block boundary, with flush and FUA, then zeroes.
        try Tool.run("qemu-io", [
            "-f", "raw", "nbd:unix:\(socket)",
            "-c", "write -P 0xab 4190000 20000",
            "-c", "write -P 0xcd -f 20M 65536",
            "-c", "flush",
            "-c", "write -z 1048576 4096",
            "-c", "read -P 0xab 4190000 20000",
            "-c", "read -P 0 1048576 4096",
        ])
        var expected = image + [UInt8](repeating: 0, count: 32 * 1024 * 1024 - image.count)
        for i in 4_190_000..<4_210_000 { expected[i] = 0xab }
        for i in (20 << 20)..<((20 << 20) + 65536) { expected[i] = 0xcd }
        for i in 1_048_576..<(1_048_576 + 4096) { expected[i] = 0 }
        server.stop()
        try device.close()

        let exported = dir + "/exported.raw"
        try store.export(TestData.name("vol"), to: FileSink(path: exported))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: exported))) == expected)
        #expect(try store.check().isSound)
        // The image is untouched.
        try store.export(TestData.name("img"), to: FileSink(path: dir + "/img-after.raw"))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: dir + "/img-after.raw"))) == image)
    }

    /// Small aligned reads of read-only blocks bypass the page cache (O_DIRECT): into aligned and
    /// unaligned buffers, and at the short end of the image's last block.
    @Test func smallReadsOfImageBlocksMatchTheImage() throws {
        let (_, store, backend, image) = try NBDTests.cloneOfAnImage(prefix: "nbd-direct", imageBytes: 9 * 1024 * 1024 + 321, seed: 11, volumeBytes: 16 * 1024 * 1024)
        let device = try VolumeDevice(store: store, backend: backend, name: TestData.name("vol"))
        defer { try? device.close() }
        let padded = image + [UInt8](repeating: 0, count: 16 * 1024 * 1024 - image.count)
        let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 4096 + 16, alignment: 4096)
        defer { raw.deallocate() }
        for (offset, count) in [(0, 4096), (4096 * 1000, 65536), (8 * 1024 * 1024 + 4096, 8192),
                                (9 * 1024 * 1024, 4096), (9 * 1024 * 1024 - 4096, 8192), (4 * 1024 * 1024 - 4096, 8192)] {
            for shift in [0, 16] {
                let piece = UnsafeMutableRawBufferPointer(rebasing: raw[shift..<(shift + count)])
                try device.read(at: UInt64(offset), into: piece)
                #expect(Array(piece) == Array(padded[offset..<(offset + count)]), "offset \(offset) count \(count) shift \(shift)")
            }
        }
    }

    @Test func snapshotsAreReadOnlyExports() throws {
        let dir = try TemporaryDirectory.make(prefix: "nbd-ro")
        try PosixBackend.initialize(root: dir + "/store")
        let backend = try PosixBackend(root: dir + "/store")
        let store = BlockStore(backend: backend)
        try store.createVolume(named: TestData.name("vol"), sizeBytes: 8 << 20)
        let device = try VolumeDevice(store: store, backend: backend, name: TestData.name("vol"))
        let pattern = [UInt8](repeating: 0x5a, count: 8192)
        try pattern.withUnsafeBytes { try device.write(at: 4096, from: $0, fua: false) }
        try device.snapshot(as: TestData.name("vol.snap"))
        try [UInt8](repeating: 0x11, count: 8192).withUnsafeBytes { try device.write(at: 4096, from: $0, fua: true) }
        try device.close()

        let snap = try VolumeDevice(store: store, backend: backend, name: TestData.name("vol.snap"))
        #expect(!snap.isWritable)
        let socket = dir + "/snap.sock"
        let server = try NBDServer(socketPath: socket, device: snap, readOnly: true, exportName: "vol.snap")
        defer { server.stop() }
        try Tool.run("qemu-io", ["-r", "-f", "raw", "nbd:unix:\(socket)", "-c", "read -P 0x5a 4096 8192"])
        #expect(throws: Tool.Failure.self) {
            try Tool.run("qemu-io", ["-f", "raw", "nbd:unix:\(socket)", "-c", "write 0 4096"])
        }
    }
}

/// Copy-on-write of a block with data: pending until a flush, made final when the writer died,
/// dropped after a (simulated) power failure.
@Suite struct PendingCopyTests {
    struct Fixture {
        let store: BlockStore
        let backend: PosixBackend
        let image: [UInt8]
        let volumeDirectory: String
    }

    func fixture() throws -> Fixture {
        let dir = try TemporaryDirectory.make(prefix: "pending")
        try PosixBackend.initialize(root: dir + "/store")
        let backend = try PosixBackend(root: dir + "/store")
        let store = BlockStore(backend: backend)
        let image = TestData.random(8 << 20, seed: 99)
        try Data(image).write(to: URL(fileURLWithPath: dir + "/image.raw"))
        try store.importMap(named: TestData.name("img"), from: FileSource(path: dir + "/image.raw"))
        let record = try store.cloneVolume(from: TestData.name("img"), named: TestData.name("vol"))
        return Fixture(store: store, backend: backend, image: image, volumeDirectory: dir + "/store/volumes/" + record.volume!.hex)
    }

    func files(_ f: Fixture) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: f.volumeDirectory)) ?? []).sorted()
    }

    func read(_ f: Fixture, at offset: UInt64, count: Int) throws -> [UInt8] {
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        defer { try? device.close() }
        var out = [UInt8](repeating: 1, count: count)
        try out.withUnsafeMutableBytes { try device.read(at: offset, into: $0) }
        return out
    }

    let patch = [UInt8](repeating: 0xee, count: 4096)

    @Test func aFlushMakesTheCopyFinal() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        try patch.withUnsafeBytes { try device.write(at: 4096, from: $0, fua: false) }
        #expect(files(f).count == 1 && files(f)[0].contains(".partial-"), "\(files(f))")
        try device.flush()
        #expect(files(f) == ["0000000000000001_0000000000000000"])
        try device.close()
        #expect(try read(f, at: 0, count: 12288) == Array(f.image[0..<4096]) + patch + Array(f.image[8192..<12288]))
        #expect(try f.store.check().isSound)
    }

    @Test func aKilledWriterLosesNothing() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        try patch.withUnsafeBytes { try device.write(at: 4096, from: $0, fua: false) }
        device.abandon()
        // Same boot: the copy is in the page cache; opening the volume makes it final.
        #expect(try read(f, at: 0, count: 12288) == Array(f.image[0..<4096]) + patch + Array(f.image[8192..<12288]))
        #expect(files(f) == ["0000000000000001_0000000000000000"])
        #expect(try f.store.check().isSound)
    }

    @Test func aPowerFailureDropsTheUnflushedCopy() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        try patch.withUnsafeBytes { try device.write(at: 4096, from: $0, fua: false) }
        device.abandon()
        // Pretend the machine rebooted: the copy carries another boot's id (its content could be
        // anything after a power failure, so it must not be used).
        let pending = files(f)[0]
        let bootID = pending.dropFirst(33).split(separator: "-")[1]
        let name = pending.replacingOccurrences(of: String(bootID), with: String(repeating: "0", count: bootID.count))
        try FileManager.default.moveItem(atPath: f.volumeDirectory + "/" + pending, toPath: f.volumeDirectory + "/" + name)
        #expect(try read(f, at: 0, count: 12288) == Array(f.image[0..<12288]))
        #expect(files(f).isEmpty)
        #expect(try f.store.check().isSound)
    }

    @Test func garbageCollectionSettlesCopiesOfRemovedVolumes() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        try patch.withUnsafeBytes { try device.write(at: 4096, from: $0, fua: false) }
        device.abandon()
        try f.store.remove(TestData.name("vol"))
        _ = try f.store.collectGarbage(graceSeconds: 0)
        #expect(files(f).isEmpty)
    }

    @Test func aSequentialWriteOfAWholeBlockCopiesNothing() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        let data = TestData.random(4 << 20, seed: 1234)
        // In 1 MiB pieces, last one first: partial until the block is whole, then pending.
        for piece in [3, 0, 2, 1] {
            try data[(piece << 20)..<((piece + 1) << 20)].withUnsafeBytes {
                try device.write(at: UInt64(piece << 20), from: $0, fua: false)
            }
            #expect(files(f).count == 1 && files(f)[0].contains(piece == 1 ? ".pending-" : ".partial-"), "\(files(f))")
        }
        device.abandon()
        var expected = f.image
        expected.replaceSubrange(0..<(4 << 20), with: data)
        #expect(try read(f, at: 0, count: 8 << 20) == expected)
        #expect(try f.store.check().isSound)
    }

    /// Large aligned overwrites of a private block bypass the page cache (O_DIRECT) and stay
    /// coherent with small buffered writes before and after them, live and after a kill.
    @Test func directOverwritesMixWithBufferedWrites() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        let aligned = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { aligned.deallocate() }
        var expected = f.image
        func write(_ offset: Int, _ bytes: UnsafeRawBufferPointer) throws {
            try device.write(at: UInt64(offset), from: bytes, fua: false)
            expected.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        }
        // Block 0 becomes a private block of this epoch (a whole-block write, then a flush).
        try TestData.random(4 << 20, seed: 5).withUnsafeBytes { try write(0, $0) }
        try device.flush()
        // A dirty 4 KiB page, a 1 MiB direct write over it, then buffered writes inside and
        // across its edge (one misaligned), and a direct write into an unaligned buffer's copy.
        try [UInt8](repeating: 0x11, count: 4096).withUnsafeBytes { try write((1 << 20) + 8192, $0) }
        for i in 0..<aligned.count { aligned[i] = UInt8(truncatingIfNeeded: i &* 7) }
        try write(1 << 20, UnsafeRawBufferPointer(aligned))
        try [UInt8](repeating: 0x22, count: 4096).withUnsafeBytes { try write((1 << 20) + 65536, $0) }
        try [UInt8](repeating: 0x33, count: 10_000).withUnsafeBytes { try write((2 << 20) - 5000, $0) }
        try TestData.random(256 << 10, seed: 6).withUnsafeBytes { try write(3 << 20, $0) }
        var live = [UInt8](repeating: 0, count: 8 << 20)
        try live.withUnsafeMutableBytes { try device.read(at: 0, into: $0) }
        #expect(live == expected)
        device.abandon()
        #expect(try read(f, at: 0, count: 8 << 20) == expected)
        #expect(try f.store.check().isSound)
    }

    @Test func unalignedWritesKeepTheOriginAroundThemAfterAKill() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        let bytes = [UInt8](repeating: 0x42, count: 100)
        // Across the first two granules, and inside the last granule of the second block.
        try bytes.withUnsafeBytes { try device.write(at: 65_500, from: $0, fua: false) }
        try bytes.withUnsafeBytes { try device.write(at: (8 << 20) - 1000, from: $0, fua: false) }
        var expected = f.image
        expected.replaceSubrange(65_500..<65_600, with: bytes)
        expected.replaceSubrange(((8 << 20) - 1000)..<((8 << 20) - 900), with: bytes)
        // Reads merge the copy and the origin while partial...
        var live = [UInt8](repeating: 0, count: 8 << 20)
        try live.withUnsafeMutableBytes { try device.read(at: 0, into: $0) }
        #expect(live == expected)
        // ...and opening the volume after the writer died completes the copies from the origin.
        device.abandon()
        #expect(files(f).allSatisfy { $0.contains(".partial-") } && files(f).count == 2)
        #expect(try read(f, at: 0, count: 8 << 20) == expected)
        #expect(files(f).count == 2 && files(f).allSatisfy { !$0.contains(".") })
        #expect(try f.store.check().isSound)
    }

    @Test func aSnapshotCompletesPartialCopies() throws {
        let f = try fixture()
        let device = try VolumeDevice(store: f.store, backend: f.backend, name: TestData.name("vol"))
        try patch.withUnsafeBytes { try device.write(at: 3 << 20, from: $0, fua: false) }
        try device.snapshot(as: TestData.name("snap"))
        try [UInt8](repeating: 1, count: 4096).withUnsafeBytes { try device.write(at: 3 << 20, from: $0, fua: false) }
        try device.close()
        var expected = f.image
        expected.replaceSubrange((3 << 20)..<((3 << 20) + 4096), with: patch)
        let exported = try TemporaryDirectory.make(prefix: "snap") + "/snap.raw"
        try f.store.export(TestData.name("snap"), to: FileSink(path: exported))
        #expect(try [UInt8](Data(contentsOf: URL(fileURLWithPath: exported))) == expected)
        #expect(try f.store.check().isSound)
    }
}
