import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing
import VolumeServer

@testable import ImageDeploy

/// Runs the built binaries (`snf-image`, `snf-store`, next to the test bundle).
enum Binary {
    static let directory: String = {
        URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent().path
    }()
    static var snfImage: String { directory + "/snf-image" }
    static var snfStore: String { directory + "/snf-store" }

    struct Result {
        var status: Int32
        var stdoutBytes: Data
        var stderr: String
        var stdout: String { String(decoding: stdoutBytes, as: UTF8.self) }
        var lastErrorLine: String { stderr.split(separator: "\n").last.map(String.init) ?? "" }
    }

    /// Runs `executable` with exactly `environment`; output through files (no pipe to fill).
    static func run(_ executable: String, _ arguments: [String], environment: [String: String]) throws -> Result {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-run")
        _ = FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        _ = FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
        try process.run()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus,
            stdoutBytes: try Data(contentsOf: URL(fileURLWithPath: dir + "/out")),
            stderr: try String(contentsOfFile: dir + "/err", encoding: .utf8))
    }

    /// The OS script `verb`: a symlink named so to snf-image, as in the OS directory.
    static func script(_ verb: String) throws -> String {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-os")
        try FileManager.default.createSymbolicLink(atPath: dir + "/" + verb, withDestinationPath: snfImage)
        return dir + "/" + verb
    }
}

@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: Binary.snfImage)))
struct BinaryTests {
    let core = ["OS_API_VERSION": "20", "OS_NAME": "snf-image", "OS_VARIANT": "default", "DEBUG_LEVEL": "0",
                "PATH": "/sbin:/bin:/usr/sbin:/usr/bin", "SNF_IMAGE_CONF": "/nonexistent", "SNF_STORE_CONF": "/nonexistent"]

    @Test func verifyExitStatuses() throws {
        let verify = try Binary.script("verify")
        func run(_ parameters: [String: String], _ arguments: [String] = ["parameters"], change: [String: String] = [:]) throws -> Binary.Result {
            var environment = core
            for (key, value) in parameters { environment["OSP_" + key.uppercased()] = value }
            environment.merge(change) { $1 }
            return try Binary.run(verify, arguments, environment: environment)
        }
        let good = ["img_id": "snf-store://debian-12", "img_format": "diskdump"]
        #expect(try run(good).status == 0)
        #expect(try run(good.merging(["img_properties": #"{"SWAP": "2:512", "USERS": "root"}"#]) { $1 }).status == 0)
        let bad = try run(good.merging(["img_format": "ntfsdump"]) { $1 })
        #expect(bad.status == 2)
        #expect(bad.lastErrorLine.hasPrefix("snf-image verify: img_format ntfsdump is not supported"))
        #expect(try run(["img_id": "x"]).status == 2)
        let malformed = try run(good.merging(["img_properties": #"{"SWAP": "2:512", "#]) { $1 })
        #expect(malformed.status == 2 && malformed.lastErrorLine.contains("img_properties"), "\(malformed.lastErrorLine)")
        #expect(try run(good.merging(["img_passwd": "a", "img_passwd_hash": "$6$a$b"]) { $1 }).status == 2)
        #expect(try run(good.merging(["img_properties": #"{"OSFAMILY": "windows"}"#]) { $1 }).status == 2)
        #expect(try run(good.merging(["flavor": "x"]) { $1 }).status == 2)
        #expect(try run(good, []).status == 2)
        #expect(try run(good, change: ["OS_VARIANT": "other"]).status == 2)
        #expect(try run(good, change: ["OS_API_VERSION": "15"]).status == 2)
        // config_url: the values are checked at create time.
        #expect(try run(["config_url": "http://config.invalid/x"]).status == 0)
    }

    @Test func osFilesRenameAndCreate() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-files")
        #expect(try Binary.run(Binary.snfImage, ["os-files", dir], environment: core).status == 0)
        #expect(try String(contentsOfFile: dir + "/ganeti_api_version", encoding: .utf8) == "20\n")
        #expect(try String(contentsOfFile: dir + "/variants.list", encoding: .utf8) == "default\n")
        #expect(try String(contentsOfFile: dir + "/parameters.list", encoding: .utf8) == ImageParameters.parametersList)
        #expect(try Binary.run(Binary.snfImage, ["os-files", dir + "/absent"], environment: core).status == 2)

        var rename = Fixtures.osCreate
        rename["OLD_INSTANCE_NAME"] = "old.example"
        #expect(try Binary.run(try Binary.script("rename"), [], environment: rename).status == 0)

        // create from the real Ganeti environment, onto a file disk, from a local image, with a
        // file monitor; then the same with a missing image (exit 1, image-error event).
        let image = TestData.random(2 * 1024 * 1024 + 3, seed: 9)
        try Data(image).write(to: URL(fileURLWithPath: dir + "/img"))
        try Data(count: 4 * 1024 * 1024).write(to: URL(fileURLWithPath: dir + "/disk"))
        try "image_dir = \(dir)\nmonitor = file:\(dir)/monitor\n".write(toFile: dir + "/image.conf", atomically: true, encoding: .utf8)
        var create = Fixtures.osCreate
        create["OSP_A"] = nil
        create["OSP_FLAVOR"] = nil
        create["DISK_0_PATH"] = dir + "/disk"
        create["OSP_IMG_ID"] = "img"
        create["OSP_IMG_FORMAT"] = "diskdump"
        create["OSP_IMG_PROPERTIES"] = #"{"EXCLUDE_ALL_TASKS": "yes"}"#
        create["SNF_IMAGE_CONF"] = dir + "/image.conf"
        create["SNF_STORE_CONF"] = "/nonexistent"
        let created = try Binary.run(try Binary.script("create"), [], environment: create)
        #expect(created.status == 0, "\(created.stderr)")
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/disk")).prefix(image.count)) == image)
        create["OSP_IMG_ID"] = "absent"
        let failed = try Binary.run(try Binary.script("create"), [], environment: create)
        #expect(failed.status == 1)
        #expect(failed.lastErrorLine.hasPrefix("snf-image create: the image absent is not in"))
        let monitor = try String(contentsOfFile: dir + "/monitor", encoding: .utf8).split(separator: "\n")
        #expect(monitor.contains { $0.contains(#""type":"image-copy-progress""#) && $0.contains(#""progress":100.00"#) })
        #expect(monitor.last?.hasPrefix(#"{"type":"image-error""#) == true)
    }

    @Test func exportAndImport() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-export")
        let content = TestData.random(3 * 1024 * 1024, seed: 10)
        try Data(content).write(to: URL(fileURLWithPath: dir + "/disk"))
        var export = Fixtures.osCreate
        export["EXPORT_DISK_PATH"] = dir + "/disk"
        export["EXPORT_INDEX"] = "0"
        let exported = try Binary.run(try Binary.script("export"), [], environment: export)
        #expect(exported.status == 0)
        #expect([UInt8](exported.stdoutBytes) == content)
        export["EXPORT_DISK_PATH"] = nil
        #expect(try Binary.run(try Binary.script("export"), [], environment: export).status == 2)
    }
}

/// The clone fast path against a real snf-store node daemon (root, /dev/fuse, loop devices).
@Suite(.serialized, .enabled(if: getuid() == 0 && access("/dev/fuse", W_OK) == 0 && access("/dev/loop-control", W_OK) == 0
    && FileManager.default.isExecutableFile(atPath: Binary.snfStore)))
struct CloneFastPathTests {
    @Test func untouchedCloneIsNotCopiedAgain() throws {
        let dir = try TemporaryDirectory.make(prefix: "snf-image-clone")
        let root = dir + "/store"
        let run = dir + "/run"
        _ = try PosixBackend.initialize(root: root)
        let store = BlockStore(backend: try PosixBackend(root: root))
        let image = TestData.random(9 * 1024 * 1024 + 4096, seed: 12)
        try store.importMap(named: try MapName("img"), from: MemorySource(image))
        try store.importMap(named: try MapName("other"), from: MemorySource(TestData.random(1024 * 1024, seed: 13)))
        _ = try store.cloneVolume(from: try MapName("img"), named: try MapName("vol"), sizeBytes: 32 * 1024 * 1024)
        let node = NodeConfig(root: root, run: run)
        let environment = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SNF_STORE_ROOT": root, "SNF_STORE_RUN": run,
                           "SNF_STORE_CONF": "/nonexistent", "VOL_NAME": "vol", "EXTP_ACCESS": "kernelspace"]
        let attach = try Binary.run(Binary.snfStore, ["provider", "attach"], environment: environment)
        try #require(attach.status == 0, "\(attach.stderr)")
        defer {
            _ = try? Binary.run(Binary.snfStore, ["provider", "detach"], environment: environment)
        }
        let device = String(attach.stdout.split(separator: "\n")[0])
        try #require(device.hasPrefix("/dev/loop"))

        #expect(CloneFastPath.attachedVolume(diskPath: device, store: node) == (try MapName("vol")))
        #expect(CloneFastPath.decide(diskPath: device, image: try MapName("img"), store: node) == .alreadyCloned(volume: "vol"))
        if case .alreadyCloned = CloneFastPath.decide(diskPath: device, image: try MapName("other"), store: node) {
            Issue.record("another image must be copied")
        }
        #expect(CloneFastPath.attachedVolume(diskPath: dir, store: node) == nil)

        // The deploy skips the copy and says so.
        let config = ImageConfig(imageDirectory: dir, store: node)
        let deployment = Deployment(config: config, customizer: { _, _, _, _ in Issue.record("no tasks") }, hashPassword: { _, _ in "" })
        let parameters = try ImageParameters(["img_id": "snf-store://img", "img_format": "diskdump", "img_properties": #"{"EXCLUDE_ALL_TASKS": "1"}"#])
        let progress = RecordingProgressSink()
        let report = try deployment.run(DeployRequest(instanceName: "vm1", diskPath: device, parameters: parameters), progress: progress)
        #expect(report.cloned && report.copy == nil)
        #expect(progress.events.contains { if case .info(let text) = $0 { return text.hasPrefix("Image copy skipped") } else { return false } })

        // Once the volume is written, it is copied (and then reads the image).
        let fd = open(device, O_RDWR)
        try #require(fd >= 0)
        var junk = [UInt8](repeating: 0x5a, count: 4096)
        #expect(pwrite(fd, &junk, junk.count, 0) == junk.count)
        fsync(fd)
        if case .alreadyCloned = CloneFastPath.decide(diskPath: device, image: try MapName("img"), store: node) {
            Issue.record("a written volume must be copied")
        }
        let copied = try deployment.run(DeployRequest(instanceName: "vm1", diskPath: device, parameters: parameters), progress: progress)
        #expect(!copied.cloned && copied.copy?.bytes == UInt64(image.count))
        var back = [UInt8](repeating: 0, count: image.count)
        #expect(pread(fd, &back, back.count, 0) == back.count)
        close(fd)
        #expect(back == image)
    }
}
