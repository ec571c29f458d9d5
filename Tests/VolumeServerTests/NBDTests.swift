import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing

@testable import VolumeServer

/// The NBD server against the real client: qemu-img and qemu-io (Debian qemu-utils).
@Suite(.enabled(if: Tool.available("qemu-io") && Tool.available("qemu-img")))
struct NBDTests {
    @Test func qemuReadsAndWritesAClone() throws {
        let dir = try TemporaryDirectory.make(prefix: "nbd")
        try PosixBackend.initialize(root: dir + "/store")
        let backend = try PosixBackend(root: dir + "/store")
        let store = BlockStore(backend: backend)
        let image = TestData.random(10 * 1024 * 1024 + 123, seed: 7)
        let imagePath = dir + "/image.raw"
        try Data(image).write(to: URL(fileURLWithPath: imagePath))
        try store.importMap(named: TestData.name("img"), from: FileSource(path: imagePath))
        try store.cloneVolume(from: TestData.name("img"), named: TestData.name("vol"), sizeBytes: 32 * 1024 * 1024)

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

/// Runs external programs for the tests.
enum Tool {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func available(_ name: String) -> Bool {
        ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + name) }
    }

    @discardableResult
    static func run(_ name: String, _ arguments: [String]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/" + name)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0, !text.contains("failed") else {
            throw Failure(description: "\(name) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(text)")
        }
        return text
    }
}
