import NodeSupport
import BlockStoreTesting
import Testing

@testable import ImageDeploy

#if canImport(Glibc)
import Glibc
#endif

/// Host-side helpers for the root tests: the tiny test image, disks made from it, and checks
/// that read the results without mounting anything (debugfs/dumpe2fs with `?offset=`, sfdisk).
enum FastFixture {
    static var canRun: Bool {
        geteuid() == 0 && access("/dev/loop-control", R_OK | W_OK) == 0
            && ["losetup", "sfdisk", "debugfs", "e2fsck", "resize2fs", "mkswap", "blkid", "unshare", "setpriv", "dumpe2fs", "mkfs.ext4"]
            .allSatisfy { (try? FastProcess.locate($0)) != nil }
    }

    static let repository: String = {
        var parts = #filePath.split(separator: "/", omittingEmptySubsequences: false)
        parts.removeLast(3)
        return parts.joined(separator: "/")
    }()

    /// Runs a host tool (as root, no sandbox); throws unless it exits 0.
    @discardableResult
    static func host(_ name: String, _ arguments: [String], stdin: [UInt8] = []) throws -> ToolOutput {
        let output = try FastProcess.run(
            try FastProcess.locate(name), arguments, stdin: stdin, timeoutSeconds: 120, outputLimit: 64 << 20, what: name)
        guard output.exitCode == 0 else {
            throw CustomizationError("\(name) \(arguments.joined(separator: " ")): exit \(output.exitCode ?? -1): \(output.stderrTail)")
        }
        return output
    }

    /// debian12-tiny.raw, built once per test process.
    static let tinyImage: Result<String, CustomizationError> = {
        do {
            let dir = try TemporaryDirectory.make(prefix: "fast-image")
            try host("bash", [repository + "/scripts/images/build-test-image", "-v", "tiny", dir])
            return .success(dir + "/debian12-tiny.raw")
        } catch {
            return .failure(error as? CustomizationError ?? CustomizationError("\(error)"))
        }
    }()

    static func readAll(_ path: String) throws -> [UInt8] {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { throw CustomizationError("cannot open \(path)") }
        defer { close(fd) }
        let size = Int(lseek(fd, 0, SEEK_END))
        var bytes = [UInt8](repeating: 0, count: size)
        guard pread(fd, &bytes, size, 0) == size else { throw CustomizationError("short read of \(path)") }
        return bytes
    }

    /// A sparse file of `size` bytes holding `bytes` at `offset`.
    static func makeDisk(_ path: String, size: Int, bytes: ArraySlice<UInt8>, offset: Int) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else { throw CustomizationError("cannot create \(path)") }
        defer { close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw CustomizationError("cannot size \(path)") }
        let written = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == bytes.count else { throw CustomizationError("short write to \(path)") }
    }

    /// The tiny image (msdos, ext4 at 1 MiB) on a 256 MiB sparse disk.
    static func msdosDisk(_ dir: String) throws -> String {
        let image = try readAll(tinyImage.get())
        let disk = dir + "/msdos.raw"
        try makeDisk(disk, size: 256 << 20, bytes: image[...], offset: 0)
        return disk
    }

    /// The same filesystem on a GPT disk whose label was written for an 80 MiB disk (so the
    /// backup header sits in the middle of the 256 MiB disk until FixPartitionTable moves it).
    static func gptDisk(_ dir: String) throws -> String {
        let image = try readAll(tinyImage.get())
        let disk = dir + "/gpt.raw"
        try makeDisk(disk, size: 80 << 20, bytes: image[(1 << 20)...], offset: 1 << 20)
        let script = "label: gpt\nstart=2048, size=129024, type=0fc63daf-8483-4772-8e79-3d69d8477de4\n"
        try host("sfdisk", ["--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "never", disk], stdin: Array(script.utf8))
        guard truncate(disk, 256 << 20) == 0 else { throw CustomizationError("cannot grow \(disk)") }
        return disk
    }

    /// Puts a file into the filesystem at byte `offset` of `disk` (test setup only).
    static func put(_ disk: String, offset: Int, path: String, _ text: String, dir: String) throws {
        let source = dir + "/put-source"
        try makeDisk(source, size: text.utf8.count, bytes: Array(text.utf8)[...], offset: 0)
        try host("debugfs", ["-w", "-R", "write \(source) \(path)", "\(disk)?offset=\(offset)"])
        unlink(source)
    }

    static func cat(_ disk: String, offset: Int, _ path: String) throws -> String {
        try host("debugfs", ["-R", "cat \(path)", "\(disk)?offset=\(offset)"]).stdoutText
    }

    static func listing(_ disk: String, offset: Int, _ path: String) throws -> [FastExtEditor.Entry] {
        try FastExtEditor.parseListing(host("debugfs", ["-R", "ls -p \(path)", "\(disk)?offset=\(offset)"]).stdout)
    }

    static func partitions(_ disk: String) throws -> PartitionTable {
        let editorless = try host("sfdisk", ["--json", disk]).stdoutText
        // A small parse of what the checks need: start, size, type per partition.
        var partitions: [PartitionTable.Partition] = []
        var number = 0
        for line in editorless.split(separator: "\n") where line.contains("\"node\"") || line.contains("\"start\"") || line.contains("\"size\"") || line.contains("\"type\"") {
            let value = line.split(separator: ":", maxSplits: 1).last!.trimmingCharacters(in: " \",")
            if line.contains("\"node\"") {
                number += 1
                partitions.append(.init(number: number, start: 0, sectors: 0, type: ""))
            } else if line.contains("\"start\"") {
                partitions[number - 1].start = UInt64(value)!
            } else if line.contains("\"size\"") {
                partitions[number - 1].sectors = UInt64(value)!
            } else {
                partitions[number - 1].type = value.lowercased()
            }
        }
        return PartitionTable(label: editorless.contains("\"gpt\"") ? .gpt : .msdos, partitions: partitions, diskSectors: 0)
    }
}

extension Substring {
    func trimmingCharacters(in set: String) -> String {
        var text = self
        while let first = text.first, set.contains(first) { text = text.dropFirst() }
        while let last = text.last, set.contains(last) { text = text.dropLast() }
        return String(text)
    }
}

@Suite("FastExtEditor", .serialized, .enabled(if: FastFixture.canRun, "needs root, loop devices, util-linux and e2fsprogs"))
struct FastExtEditorTests {
    static let hash = try! PasswordHasher.hash("s3cret pass", method: "sha512")

    /// The whole plan on a disk; then every result checked from the host without mounting.
    func runWholePlan(label: PartitionTable.Label) throws {
        let dir = try TemporaryDirectory.make(prefix: "fast-\(label)")
        let disk = label == .gpt ? try FastFixture.gptDisk(dir) : try FastFixture.msdosDisk(dir)
        let fs = 2048 * 512
        for name in ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"] {
            try FastFixture.put(disk, offset: fs, path: "/etc/ssh/\(name)", "key \(name)\n", dir: dir)
        }
        try FastFixture.put(disk, offset: fs, path: "/etc/machine-id", "0123456789abcdef0123456789abcdef\n", dir: dir)
        #expect(try FastExtEditor.canHandle(disk: disk))

        var plan = TaskRunnerTests.fullPlan()
        plan.passwordHash = FastExtEditorTests.hash
        let log = EventLog()
        let clock = ContinuousClock()
        let elapsed = try clock.measure {
            try customizeFast(disk: disk, plan: plan, progress: log, sandboxUser: "nobody", timeoutSeconds: 60)
        }
        print("fast-ext whole plan on the tiny image (\(label)): \(elapsed)")
        let ends = log.all.compactMap { if case .taskEnd(let t) = $0 { t } else { nil } }
        #expect(ends == CustomizationTask.allCases)

        // Partition table: root grown up to the swap partition, 32 MiB of swap at the end.
        let table = try FastFixture.partitions(disk)
        let lastMiB: UInt64 = label == .gpt ? 522240 : 524288
        #expect(table.partitions.count == 2)
        #expect(table.partitions[0].start == 2048 && table.partitions[0].start + table.partitions[0].sectors == lastMiB - 65536)
        #expect(table.partitions[1].start == lastMiB - 65536 && table.partitions[1].sectors == 65536)
        #expect(table.partitions[1].type == (label == .gpt ? FastExtEditor.gptSwapType : "82"))
        if label == .gpt {
            let verify = try FastFixture.host("sfdisk", ["--verify", disk])
            #expect(verify.stdoutText.contains("No errors detected"), "\(verify.stdoutText) \(verify.stderrText)")
            #expect(!verify.stderrText.contains("backup"))
        }

        // Filesystem grown to its partition and clean.
        let header = try FastFixture.host("dumpe2fs", ["-h", "\(disk)?offset=\(fs)"]).stdoutText
        func field(_ name: String) -> UInt64? {
            header.split(separator: "\n").first { $0.hasPrefix(name + ":") }.flatMap { UInt64($0.split(separator: ":")[1].trimmingCharacters(in: " ")) }
        }
        let blocks = try #require(field("Block count"))
        let blockSize = try #require(field("Block size"))
        #expect(blocks * blockSize == table.partitions[0].sectors * 512)
        try FastFixture.host("e2fsck", ["-fn", "\(disk)?offset=\(fs)"])

        // Swap signature with the UUID that went into fstab.
        let swapOffset = table.partitions[1].start * 512
        let probe = try FastFixture.host("blkid", ["-p", "-O", String(swapOffset), "-o", "export", disk]).stdoutText
        #expect(probe.contains("TYPE=swap"))
        let uuidLine = try #require(probe.split(separator: "\n").first { $0.hasPrefix("UUID=") })
        let fstab = try FastFixture.cat(disk, offset: fs, "/etc/fstab")
        #expect(fstab.hasSuffix("\(uuidLine) none swap sw 0 0\n"))
        #expect(fstab.hasPrefix("UUID=5e1f0000-0000-4000-8000-000000000001\t/\text4"))

        // Files.
        #expect(try FastFixture.cat(disk, offset: fs, "/etc/hostname") == "vm1\n")
        #expect(
            try FastFixture.cat(disk, offset: fs, "/etc/hosts")
                == "127.0.0.1\tlocalhost\n127.0.1.1\tvm1.example.org vm1\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
        let shadow = try FastFixture.cat(disk, offset: fs, "/etc/shadow")
        let today = Int(time(nil)) / 86400
        #expect(shadow.contains("root:\(FastExtEditorTests.hash):\(today):0:99999:7:::\n"))
        #expect(shadow.contains("user:\(FastExtEditorTests.hash):\(today):0:99999:7:::\n"))
        #expect(shadow.contains("daemon:*:19700:0:99999:7:::\n"))
        let etc = try FastFixture.listing(disk, offset: fs, "/etc")
        #expect(etc.first { $0.name == "shadow" }.map { ($0.mode, $0.gid) }! == (0o100640, 42))
        #expect(etc.first { $0.name == "machine-id" }?.mode == 0o100444)
        #expect(try FastFixture.cat(disk, offset: fs, "/etc/machine-id") == "")
        #expect(try FastFixture.listing(disk, offset: fs, "/etc/ssh").map(\.name).sorted() == [".", "..", "sshd_config", "sshd_config.d"])
        for (home, uid) in [("/root", UInt32(0)), ("/home/user", UInt32(1000))] {
            #expect(try FastFixture.cat(disk, offset: fs, "\(home)/.ssh/authorized_keys").contains(TaskRunnerTests.keys))
            let ssh = try FastFixture.listing(disk, offset: fs, "\(home)/.ssh")
            let keys = try #require(ssh.first { $0.name == "authorized_keys" })
            #expect(keys.mode == 0o100600 && keys.uid == uid && keys.gid == uid)
            let dot = try #require(ssh.first { $0.name == "." })
            #expect(dot.mode & 0o777 == 0o700 && dot.uid == uid)
        }

        // A second run is harmless: nothing duplicated, same layout. (Not AddSwap: mkswap makes a
        // new UUID every time, so a second AddSwap adds a second line.)
        plan.tasks.removeAll { $0 == .addSwap }
        try customizeFast(disk: disk, plan: plan, progress: EventLog(), sandboxUser: "nobody", timeoutSeconds: 60)
        #expect(try FastFixture.cat(disk, offset: fs, "/etc/hosts").split(separator: "\n").filter { $0.hasPrefix("127.0.1.1") }.count == 1)
        #expect(try FastFixture.cat(disk, offset: fs, "/root/.ssh/authorized_keys") == TaskRunnerTests.keys)
        #expect(try FastFixture.cat(disk, offset: fs, "/etc/fstab") == fstab)
        #expect(try FastFixture.partitions(disk) == table)
        try FastFixture.host("e2fsck", ["-fn", "\(disk)?offset=\(fs)"])
    }

    @Test func wholePlanOnMsdos() throws { try runWholePlan(label: .msdos) }
    @Test func wholePlanOnGPT() throws { try runWholePlan(label: .gpt) }

    @Test func leavesNothingBehind() throws {
        let dir = try TemporaryDirectory.make(prefix: "fast-clean")
        let disk = try FastFixture.msdosDisk(dir)
        let editor = try FastExtEditor(disk: disk)
        let sandboxDirectory = editor.sandbox.directory
        try editor.openRoot(partition: 1)
        #expect(try editor.readFile("/etc/hostname") == Array("debian12-tiny\n".utf8))
        #expect(try editor.readFile("/etc/nothing") == nil)
        #expect(try editor.info("/etc/nothing/deeper") == nil)
        #expect(try editor.listDirectory("/nothing") == [])
        #expect(try FastFixture.host("losetup", ["-j", disk]).stdoutText != "")
        try editor.close()
        try editor.close()
        #expect(access(sandboxDirectory, F_OK) != 0)
        #expect(try FastFixture.host("losetup", ["-j", disk]).stdoutText == "")
    }

    @Test func refusesSymlinksAndOddPaths() throws {
        let dir = try TemporaryDirectory.make(prefix: "fast-links")
        let disk = try FastFixture.msdosDisk(dir)
        try FastFixture.host("debugfs", ["-w", "-R", "symlink /etc/evil /etc/shadow", "\(disk)?offset=\(2048 * 512)"])
        let editor = try FastExtEditor(disk: disk)
        defer { try? editor.close() }
        try editor.openRoot(partition: 1)
        #expect(try editor.info("/etc/evil")?.mode == 0o120777)
        #expect(throws: CustomizationError.self) { try editor.writeFile("/etc/evil", [1], mode: 0o644, uid: 0, gid: 0) }
        #expect(throws: CustomizationError.self) { try editor.readFile("/etc/evil") }
        #expect(throws: CustomizationError.self) { try editor.writeFile("/etc/a b", [1], mode: 0o644, uid: 0, gid: 0) }
        #expect(throws: CustomizationError.self) { try editor.writeFile("/etc/../x", [1], mode: 0o644, uid: 0, gid: 0) }
        #expect(throws: CustomizationError.self) { try editor.writeFile("/nodir/x", [1], mode: 0o644, uid: 0, gid: 0) }
        // Removing the link removes the link, not its target.
        try editor.removeFile("/etc/evil")
        #expect(try editor.info("/etc/evil") == nil)
        #expect(try editor.info("/etc/shadow") != nil)
    }

    @Test func canHandleOnlyExtOnMsdosOrGPT() throws {
        let dir = try TemporaryDirectory.make(prefix: "fast-can")
        #expect(try FastExtEditor.canHandle(disk: FastFixture.gptDisk(dir)))
        let blank = dir + "/blank.raw"
        try FastFixture.makeDisk(blank, size: 16 << 20, bytes: [], offset: 0)
        #expect(try !FastExtEditor.canHandle(disk: blank))
        let vfat = dir + "/vfat.raw"
        try FastFixture.makeDisk(vfat, size: 16 << 20, bytes: [], offset: 0)
        try FastFixture.host("sfdisk", ["--quiet", vfat], stdin: Array("label: dos\nstart=2048, type=c\n".utf8))
        #expect(try !FastExtEditor.canHandle(disk: vfat))
    }
}

@Suite("Sandbox", .serialized, .enabled(if: FastFixture.canRun, "needs root, loop devices, unshare and setpriv"))
struct SandboxTests {
    @Test func runsAsTheSandboxUserWithACleanEnvironment() throws {
        let sandbox = try Sandbox()
        defer { try? sandbox.close() }
        let (uid, gid) = try Sandbox.resolve(user: "nobody")
        #expect(try sandbox.run("id", ["-u"]).stdoutText == "\(uid)\n")
        #expect(try sandbox.run("id", ["-G"]).stdoutText == "\(gid)\n")
        let env = try sandbox.run("env", []).stdoutText.split(separator: "\n").map(String.init).sorted()
        #expect(env == (FastProcess.cleanEnvironment + ["PWD=/"]).sorted())  // bwrap sets PWD after its --chdir
        let status = try sandbox.run("cat", ["/proc/self/status"]).stdoutText
        #expect(status.contains("NoNewPrivs:\t1"))
        #expect(status.contains("CapEff:\t0000000000000000") && status.contains("CapBnd:\t0000000000000000"))
    }

    @Test func hasNoNetwork() throws {
        let sandbox = try Sandbox()
        defer { try? sandbox.close() }
        let links = try sandbox.run("ip", ["-o", "link"]).stdoutText.split(separator: "\n")
        #expect(links.count == 1 && links[0].contains(": lo:") && links[0].contains("DOWN"))
        // Nothing to connect to: the loopback is down and there is no other interface.
        let connect = try sandbox.run("bash", ["-c", "exec 3<>/dev/tcp/127.0.0.1/22"])
        #expect(connect.exitCode != 0)
    }

    @Test func cannotOpenOtherFilesOrDevices() throws {
        let dir = try TemporaryDirectory.make(prefix: "fast-sbx")
        let disk = try FastFixture.msdosDisk(dir)
        let sandbox = try Sandbox()
        defer { try? sandbox.close() }
        let loop = try sandbox.attachLoop(file: disk)
        let node = try sandbox.makeNode(of: loop, name: "disk")
        #expect(try sandbox.run("head", ["-c", "512", node]).stdout.count == 512)
        let shadow = try sandbox.run("cat", ["/etc/shadow"])
        #expect(shadow.exitCode != 0)  // not even there: the sandbox's root holds /usr only
        #expect(try sandbox.run("ls", ["/"]).stdoutText.split(separator: "\n").sorted() == ["bin", "dev", "lib", "lib64", "proc", "run", "sbin", "tmp", "usr"])
        let device = try sandbox.run("head", ["-c", "512", loop])
        #expect(device.exitCode != 0)
        let file = try sandbox.run("head", ["-c", "512", disk])
        #expect(file.exitCode != 0)
        // Only the sandbox's own processes are visible.
        let processes = try sandbox.run("ls", ["/proc"]).stdoutText.split(separator: "\n").filter { $0.allSatisfy(\.isNumber) }
        #expect(processes.count <= 3, "\(processes)")
        // Other sandboxes' directories are not there: the parent holds only this one.
        #expect(try sandbox.run("ls", ["/run/snf-image"]).stdoutText == String(sandbox.directory.split(separator: "/").last!) + "\n")
        let listing = try sandbox.run("ls", [sandbox.directory])
        #expect(listing.exitCode != 0)  // the private directory cannot be listed
    }

    @Test func timeLimitKillsTheWholeGroup() throws {
        let sandbox = try Sandbox(timeoutSeconds: 1)
        defer { try? sandbox.close() }
        let clock = ContinuousClock()
        let start = clock.now
        let error = try #require(throws: CustomizationError.self) { try sandbox.run("bash", ["-c", "sleep 30 & sleep 30"]) }
        #expect(error.message.contains("did not finish in 1 s"))
        #expect(clock.now - start < .seconds(5))
        // SIGKILL is delivered at once, but a loaded machine may list the dying processes for a
        // moment: they must be gone within seconds, long before the 30 s they asked for.
        var left = ""
        for _ in 0..<50 {
            left = try FastFixture.host("ps", ["-eo", "args"]).stdoutText
            if !left.contains("sleep 30") { break }
            usleep(100_000)
        }
        #expect(!left.contains("sleep 30"))
    }

    @Test func outputIsCapped() throws {
        let sandbox = try Sandbox()
        defer { try? sandbox.close() }
        sandbox.outputLimit = 100_000
        let error = try #require(throws: CustomizationError.self) { try sandbox.run("head", ["-c", "1000000", "/dev/zero"]) }
        #expect(error.message.contains("printed more than"))
        // Input goes in on stdin.
        #expect(try sandbox.run("cat", [], stdin: Array("hello".utf8)).stdoutText == "hello")
    }
}
