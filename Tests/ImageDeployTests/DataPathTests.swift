import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing

@testable import ImageDeploy

let mebibyte = 1 << 20

func writeFile(_ path: String, _ bytes: [UInt8]) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

/// Collects a source's chunks.
func drain(_ source: any ImageSource) throws -> (bytes: [UInt8], chunks: [Int]) {
    var bytes: [UInt8] = []
    var chunks: [Int] = []
    try source.stream { offset, chunk in
        #expect(offset == UInt64(bytes.count))
        bytes += chunk
        chunks.append(chunk.count)
    }
    return (bytes, chunks)
}

struct ProgressTests {
    @Test func jsonShape() {
        let t = 1795423373.0542641
        #expect(ProgressEvent.info("Starting image copy...").json(timestamp: t)
            == #"{"type":"image-info","timestamp":1795423373.054264,"messages":["Starting image copy..."]}"#)
        #expect(ProgressEvent.copyProgress(position: 1, total: 3).json(timestamp: t)
            == #"{"type":"image-copy-progress","timestamp":1795423373.054264,"position":1,"total":3,"progress":33.33}"#)
        #expect(ProgressEvent.copyProgress(position: 0, total: 0).json(timestamp: t).hasSuffix(#""progress":0.00}"#))
        #expect(ProgressEvent.copyProgress(position: 2, total: 3).json(timestamp: t).hasSuffix(#""progress":66.67}"#))
        #expect(ProgressEvent.taskStart(.fixPartitionTable).json(timestamp: t)
            == #"{"type":"image-helper","subtype":"task-start","timestamp":1795423373.054264,"task":"FixPartitionTable"}"#)
        #expect(ProgressEvent.taskEnd(.deleteSSHKeys).json(timestamp: t)
            == #"{"type":"image-helper","subtype":"task-end","timestamp":1795423373.054264,"task":"DeleteSSHKeys"}"#)
        #expect(ProgressEvent.warning("w \"q\"").json(timestamp: t)
            == #"{"type":"image-helper","subtype":"warning","timestamp":1795423373.054264,"messages":["w \"q\""]}"#)
        #expect(ProgressEvent.helperError("e").json(timestamp: t)
            == #"{"type":"image-helper","subtype":"error","timestamp":1795423373.054264,"messages":["e"]}"#)
        #expect(ProgressEvent.error("bad\nthing").json(timestamp: t)
            == #"{"type":"image-error","timestamp":1795423373.054264,"messages":["bad\nthing"]}"#)
    }

    @Test func destinations() throws {
        #expect(try MonitorDestination("none") == MonitorDestination.none)
        #expect(try MonitorDestination("fd:5") == .fileDescriptor(5))
        #expect(try MonitorDestination("file:/var/log/x") == .file("/var/log/x"))
        #expect(try MonitorDestination("unix:/run/m.sock") == .unixSocket("/run/m.sock"))
        for bad in ["fd:x", "file:relative", "tcp:1.2.3.4", "/x"] {
            #expect(throws: DeployError.self) { try MonitorDestination(bad) }
        }
    }

    @Test func fileMonitorAppendsLines() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-progress")
        let path = dir + "/monitor"
        try writeFile(path, Array("earlier\n".utf8))
        let sink = MonitorProgressSink(destination: .file(path), logToStandardError: false, clock: { 10.5 })
        sink.emit(.info("a"))
        sink.emit(.taskStart(.assignHostname))
        let lines = String(decoding: try readFile(path), as: UTF8.self).split(separator: "\n")
        #expect(lines == ["earlier", #"{"type":"image-info","timestamp":10.500000,"messages":["a"]}"#,
                          #"{"type":"image-helper","subtype":"task-start","timestamp":10.500000,"task":"AssignHostname"}"#])
    }

    @Test func socketMonitorAndADeadOne() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-progress")
        let path = dir + "/m.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(bound == 0 && listen(listener, 4) == 0)
        let sink = MonitorProgressSink(destination: .unixSocket(path), logToStandardError: false)
        let connection = accept(listener, nil, nil)
        try #require(connection >= 0)
        sink.emit(.info("hello"))
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(connection, &buffer, buffer.count, 0)
        let text = String(decoding: buffer[0..<max(0, n)], as: UTF8.self)
        #expect(text.hasPrefix(#"{"type":"image-info","#) && text.hasSuffix("\"messages\":[\"hello\"]}\n"))
        // The monitor goes away: emitting goes on without it (no SIGPIPE, no error).
        close(connection)
        close(listener)
        for i in 0..<50 { sink.emit(.copyProgress(position: UInt64(i), total: 50)) }
        // A monitor that is not there at all.
        let none = MonitorProgressSink(destination: .unixSocket(dir + "/absent.sock"), logToStandardError: false)
        none.emit(.info("nobody listens"))
    }
}

struct SourceTests {
    @Test func localFile() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-local")
        let image = TestData.random(9 * mebibyte + 123, seed: 1)
        try writeFile(dir + "/img", image)
        let source = try LocalImageSource(directory: dir, name: "img")
        #expect(source.sizeBytes == UInt64(image.count))
        let (bytes, chunks) = try drain(source)
        #expect(bytes == image)
        #expect(chunks == [4 * mebibyte, 4 * mebibyte, mebibyte + 123])

        // snf-image's legacy name: NAME.<format>.
        try writeFile(dir + "/legacy.diskdump", [1, 2, 3])
        #expect(try LocalImageSource(directory: dir, name: "legacy").sizeBytes == 3)

        // Symlinks, directories, names with '/' or '..' are refused.
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/img")
        try FileManager.default.createDirectory(atPath: dir + "/sub", withIntermediateDirectories: false)
        for bad in ["link", "sub", "missing", "../img", "..", "sub/x"] {
            #expect(throws: DeployError.self, "\(bad)") { try LocalImageSource(directory: dir, name: bad) }
        }
    }

    @Test func storeMap() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-store")
        let root = dir + "/store"
        _ = try PosixBackend.initialize(root: root)
        let store = BlockStore(backend: try PosixBackend(root: root))
        var image = TestData.random(6 * mebibyte + 5, seed: 2)
        // A zero block in the middle.
        for i in 0..<(4 * mebibyte) { image[i] = 0 }
        try store.importMap(named: try MapName("img"), from: MemorySource(image))
        let config = ImageConfig(store: .init(root: root, run: dir + "/run"))
        let source = try ImageSources.open(.store(try MapName("img")), config: config)
        #expect(source.sizeBytes == UInt64(image.count))
        let (bytes, chunks) = try drain(source)
        #expect(bytes == image)
        #expect(chunks == [4 * mebibyte, 2 * mebibyte + 5])
        #expect(throws: DeployError.self) { try ImageSources.open(.store(try MapName("absent")), config: config) }
        _ = try store.cloneVolume(from: try MapName("img"), named: try MapName("vol"))
        #expect(throws: DeployError.self) { try ImageSources.open(.store(try MapName("vol")), config: config) }
    }

    @Test(.enabled(if: Tool.available("python3") && Tool.available("curl")))
    func http() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-http")
        let image = TestData.random(5 * mebibyte + 77, seed: 3)
        try writeFile(dir + "/img", image)
        let server = try HTTPServer(directory: dir)
        defer { server.stop() }
        let source = try HTTPImageSource(url: server.url + "/img")
        #expect(source.sizeBytes == UInt64(image.count))
        let (bytes, chunks) = try drain(source)
        #expect(bytes == image)
        #expect(chunks == [4 * mebibyte, mebibyte + 77])
        #expect(throws: DeployError.self) { try HTTPImageSource(url: server.url + "/missing") }
        #expect(HTTPImageSource.contentLength("HTTP/1.1 302 Found\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 42\r\n") == 42)
        #expect(HTTPImageSource.contentLength("HTTP/1.1 302 Found\r\nContent-Length: 5\r\n\r\nHTTP/1.1 200 OK\r\n") == nil)
    }
}

/// `python3 -m http.server` on 127.0.0.1 and a free port, serving `directory`.
final class HTTPServer {
    let process = Process()
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    init(directory: String) throws {
        // A port the kernel picks, freed just before the server binds it.
        let probe = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                _ = bind(probe, pointer, length)
                return getsockname(probe, pointer, &length)
            }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        close(probe)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", directory, String(port)]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        for _ in 0..<200 {
            if (try? Tool.run("curl", ["-fsS", "-o", "/dev/null", url + "/"])) != nil { return }
            usleep(25_000)
        }
        stop()
        throw DeployError.failure("python3 -m http.server did not start on port \(port)")
    }

    func stop() {
        if process.isRunning {
            // SIGKILL: the test runner's blocked signals are inherited, SIGTERM may wait forever.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

struct CopierTests {
    @Test func copiesAndSkipsOnlyZerosThatAreAlreadyThere() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-copy")
        let block = 4 * mebibyte
        // Image: data, zeros, zeros, data (partial).
        var image = [UInt8](repeating: 0, count: 3 * block + 1000)
        image.replaceSubrange(0..<block, with: TestData.random(block, seed: 4))
        image.replaceSubrange((3 * block)..<image.count, with: TestData.random(1000, seed: 5))
        try writeFile(dir + "/img", image)
        // Disk: garbage in block 1 (where the image has zeros), zeros in block 2, a tail past the image.
        var disk = [UInt8](repeating: 0, count: 5 * block)
        disk.replaceSubrange(block..<(block + 4096), with: [UInt8](repeating: 0xee, count: 4096))
        disk.replaceSubrange((4 * block)..<(4 * block + 10), with: [UInt8](repeating: 0x77, count: 10))
        try writeFile(dir + "/disk", disk)

        let progress = RecordingProgressSink()
        let outcome = try DiskCopier().copy(from: try LocalImageSource(directory: dir, name: "img"), toDisk: dir + "/disk", progress: progress)
        let result = try readFile(dir + "/disk")
        #expect(result.count == disk.count)  // never truncated
        #expect(Array(result[0..<image.count]) == image)
        #expect(Array(result[(4 * block)..<(4 * block + 10)]) == [UInt8](repeating: 0x77, count: 10))
        #expect(outcome.bytes == UInt64(image.count))
        // Block 2 was already zero: not written. Block 1 held garbage: written.
        #expect(outcome.writtenBytes == UInt64(image.count - block))
        #expect(progress.events.last == .copyProgress(position: UInt64(image.count), total: UInt64(image.count)))
    }

    @Test func refusesAnImageLargerThanTheDisk() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-copy")
        try writeFile(dir + "/img", [UInt8](repeating: 1, count: 2 * mebibyte))
        try writeFile(dir + "/disk", [UInt8](repeating: 9, count: mebibyte))
        let error = #expect(throws: DeployError.self) {
            try DiskCopier().copy(from: try LocalImageSource(directory: dir, name: "img"), toDisk: dir + "/disk", progress: RecordingProgressSink())
        }
        #expect(error?.kind == .badInput)
        #expect(error?.message.contains("larger than the disk") == true)
        #expect(try readFile(dir + "/disk") == [UInt8](repeating: 9, count: mebibyte))
        #expect(throws: DeployError.self) {
            try DiskCopier().copy(from: try LocalImageSource(directory: dir, name: "img"), toDisk: dir + "/absent", progress: RecordingProgressSink())
        }
    }

    @Test func deploymentWithoutCustomization() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-deploy")
        let image = TestData.random(3 * mebibyte, seed: 6)
        try writeFile(dir + "/img", image)
        try writeFile(dir + "/disk", [UInt8](repeating: 0, count: 8 * mebibyte))
        let config = ImageConfig(imageDirectory: dir, store: .init(root: dir + "/nostore", run: dir + "/run"))
        let progress = RecordingProgressSink()
        var customized: [CustomizationPlan] = []
        let deployment = Deployment(
            config: config, customizer: { path, plan, _, _ in
                #expect(path == dir + "/disk")
                customized.append(plan)
            }, hashPassword: { _, m in m.cryptPrefix + "x$y" })
        let parameters = try ImageParameters(["img_id": "local://img", "img_format": "diskdump", "img_passwd": "pw"])
        let report = try deployment.run(DeployRequest(instanceName: "vm1", diskPath: dir + "/disk", parameters: parameters), progress: progress)
        #expect(!report.cloned)
        #expect(Array(try readFile(dir + "/disk").prefix(image.count)) == image)
        #expect(customized.count == 1 && customized[0].passwordHash == "$6$x$y")
        #expect(progress.events.contains(.info("Image copy finished.")))

        let excluded = try ImageParameters(["img_id": "img", "img_format": "diskdump", "img_properties": #"{"EXCLUDE_ALL_TASKS": "yes"}"#])
        _ = try deployment.run(DeployRequest(instanceName: "vm1", diskPath: dir + "/disk", parameters: excluded), progress: progress)
        #expect(customized.count == 1)

        // A failure ends with an image-error event.
        let missing = try ImageParameters(["img_id": "absent", "img_format": "diskdump"])
        #expect(throws: DeployError.self) {
            try deployment.run(DeployRequest(instanceName: "vm1", diskPath: dir + "/disk", parameters: missing), progress: progress)
        }
        guard case .error = progress.events.last else {
            Issue.record("no image-error event")
            return
        }
    }
}
