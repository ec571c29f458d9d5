import BlockStoreTesting
import Foundation
import Testing

@testable import ImageDeploy

/// Records every event and, at each one, whether the host's mount table still is what it was
/// before the deploy: customization must never mount the guest's filesystem in the host kernel.
final class MountWatchingSink: ProgressSink, @unchecked Sendable {
    private let lock = NSLock()
    private let watched: String
    private let before: Set<String>
    private var stored: [ProgressEvent] = []
    private var changed: [String] = []

    /// Watches for mounts that touch `directory` (the test's own files): other suites running in
    /// the same process mount and unmount their own things, which is not this test's business.
    init(watching directory: String) {
        watched = directory.hasSuffix("/") ? directory : directory + "/"
        before = Set(MountWatchingSink.mountLines())
    }

    static func mountLines() -> [String] {
        ((try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// True when a mountinfo line mounts something from or onto `watched`: its mount point or
    /// source is under it, or its source is a loop device backed by a file under it.
    private func touchesWatched(_ line: String) -> Bool {
        let fields = line.split(separator: " ").map(String.init)
        guard fields.count > 4, let dash = fields.firstIndex(of: "-"), dash + 2 < fields.count else { return true }
        let mountPoint = fields[4]
        let source = fields[dash + 2]
        if (mountPoint + "/").hasPrefix(watched) || (source + "/").hasPrefix(watched) { return true }
        if source.hasPrefix("/dev/loop") {
            let name = String(source.dropFirst("/dev/".count))
            let backing = (try? String(contentsOfFile: "/sys/block/\(name)/loop/backing_file", encoding: .utf8)) ?? ""
            return backing.trimmingCharacters(in: .whitespacesAndNewlines).hasPrefix(watched)
        }
        return false
    }

    func emit(_ event: ProgressEvent) {
        let added = MountWatchingSink.mountLines().filter { !before.contains($0) && touchesWatched($0) }
        lock.withLock {
            stored.append(event)
            if !added.isEmpty { changed.append("\(event): \(added)") }
        }
    }
    var events: [ProgressEvent] { lock.withLock { stored } }
    /// The events at which something from the watched directory was mounted on the host.
    var mountChanges: [String] { lock.withLock { changed } }
    var tasksEnded: [CustomizationTask] {
        events.compactMap { if case .taskEnd(let task) = $0 { return task } else { return nil } }
    }
}

/// Bad input through the real deploy (copy, fast ext editor in its sandbox): shell
/// metacharacters are data, a corrupt partition table fails with one clear message, and the host's
/// mount table never changes.
@Suite("Deploy: bad input and isolation", .serialized, .enabled(if: FastFixture.canRun, "needs root, loop devices, util-linux, e2fsprogs"))
struct DeployIsolationTests {
    static func deployment(_ dir: String) -> Deployment {
        Deployment(
            config: ImageConfig(imageDirectory: dir, customizer: .fast, taskTimeoutSeconds: 120, store: .init(root: dir + "/nostore", run: dir + "/run")),
            customizer: StandardCustomization.customize, hashPassword: StandardCustomization.hashPassword)
    }

    /// The tiny image in `dir/img`, and a 128 MiB empty disk `dir/disk`.
    static func setUp(_ dir: String, image: [UInt8]? = nil) throws {
        try writeFile(dir + "/img", image ?? FastFixture.readAll(FastFixture.tinyImage.get()))
        try FastFixture.makeDisk(dir + "/disk", size: 128 << 20, bytes: [][...], offset: 0)
    }

    @Test func shellMetacharactersAreData() throws {
        let dir = try TemporaryDirectory.make(prefix: "deploy-meta")
        try DeployIsolationTests.setUp(dir)
        let trap = dir + "/pwned"
        let password = "p'w\"$(touch \(trap)-1);`touch \(trap)-2`|&;<>*? \\n"
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetaMetaMetaMetaMetaMetaMetaMetaMetaMetaMeta0 $(touch \(trap)-3);x"
        let parameters = try ImageParameters([
            "img_id": "img", "img_format": "diskdump", "img_passwd": password, "auth_keys": key,
            "img_properties": #"{"USERS": "root user", "NOTE": "$(touch \#(trap)-4); `id`"}"#,
        ])
        let sink = MountWatchingSink(watching: dir)
        let report = try DeployIsolationTests.deployment(dir).run(
            DeployRequest(instanceName: "meta.example.org", diskPath: dir + "/disk", parameters: parameters), progress: sink)
        #expect(!report.cloned)
        for n in 1...4 { #expect(access("\(trap)-\(n)", F_OK) != 0, "a metacharacter was interpreted (\(trap)-\(n) exists)") }
        // The literal password is what /etc/shadow holds, for both users; the key line as given.
        let shadow = try FastFixture.cat(dir + "/disk", offset: 1 << 20, "/etc/shadow")
        for user in ["root", "user"] {
            let line = shadow.split(separator: "\n").first { $0.hasPrefix(user + ":") }
            let hash = line.map { String($0.split(separator: ":", omittingEmptySubsequences: false)[1]) } ?? ""
            #expect(hash.hasPrefix("$6$") && PasswordHasher.verify(password, hash: hash), "\(user): \(hash)")
        }
        #expect(try FastFixture.cat(dir + "/disk", offset: 1 << 20, "/root/.ssh/authorized_keys").contains(key))
        #expect(sink.tasksEnded == report.plan.tasks)
        #expect(sink.mountChanges.isEmpty, "the host's mount table changed: \(sink.mountChanges)")
    }

    @Test func aCorruptPartitionTableFailsWithOneClearMessage() throws {
        let dir = try TemporaryDirectory.make(prefix: "deploy-corrupt")
        var image = try FastFixture.readAll(FastFixture.tinyImage.get())
        // Partition 1's first sector (MBR entry at 0x1be, LBA start at +8) far beyond the disk.
        for (i, byte) in [UInt8](arrayLiteral: 0x00, 0x00, 0x00, 0xf0).enumerated() { image[0x1be + 8 + i] = byte }
        try DeployIsolationTests.setUp(dir, image: image)
        let parameters = try ImageParameters(["img_id": "img", "img_format": "diskdump", "img_passwd": "x"])
        let sink = MountWatchingSink(watching: dir)
        let error = #expect(throws: (any Error).self) {
            try DeployIsolationTests.deployment(dir).run(
                DeployRequest(instanceName: "corrupt", diskPath: dir + "/disk", parameters: parameters), progress: sink)
        }
        let message = error.map { String(describing: $0) } ?? ""
        #expect(!message.isEmpty && !message.contains("\n"), "\(message)")
        #expect(message.contains("FixPartitionTable") || message.lowercased().contains("partition"), "\(message)")
        // The failure is reported as an image-error event, and nothing is left behind.
        #expect(sink.events.contains { if case .error = $0 { return true } else { return false } })
        #expect(sink.mountChanges.isEmpty)
        let loops = try FastFixture.host("losetup", ["--list", "--noheadings", "--output", "BACK-FILE"]).stdoutText
        #expect(!loops.contains(dir), "loop devices left: \(loops)")
    }

    /// The watcher is not vacuous: a mount of the test's own disk (a fixture we built, through a
    /// loop device) is seen, and an unrelated mount elsewhere is not.
    @Test func theMountWatcherSeesAMountOfTheWatchedDisk() throws {
        let dir = try TemporaryDirectory.make(prefix: "deploy-watcher")
        let other = try TemporaryDirectory.make(prefix: "deploy-watcher-other")
        try FastFixture.makeDisk(dir + "/fs", size: 8 << 20, bytes: [][...], offset: 0)
        _ = try FastFixture.host("mkfs.ext4", ["-q", "-F", dir + "/fs"])
        try FileManager.default.createDirectory(atPath: dir + "/mnt", withIntermediateDirectories: true)
        let sink = MountWatchingSink(watching: dir)
        _ = try FastFixture.host("mount", ["-t", "tmpfs", "none", other])
        sink.emit(.taskStart(.fixPartitionTable))
        _ = try? FastFixture.host("umount", [other])
        #expect(sink.mountChanges.isEmpty, "\(sink.mountChanges)")
        _ = try FastFixture.host("mount", ["-o", "loop,ro", dir + "/fs", dir + "/mnt"])
        sink.emit(.taskEnd(.fixPartitionTable))
        _ = try? FastFixture.host("umount", ["-d", dir + "/mnt"])
        #expect(sink.mountChanges.count == 1, "\(sink.mountChanges)")
    }

    @Test func anImageWithoutPartitionsFailsClearly() throws {
        let dir = try TemporaryDirectory.make(prefix: "deploy-nolabel")
        try DeployIsolationTests.setUp(dir, image: [UInt8](repeating: 0, count: 4 << 20) + [UInt8](repeating: 0x5a, count: 1 << 20))
        let parameters = try ImageParameters(["img_id": "img", "img_format": "diskdump"])
        let error = #expect(throws: (any Error).self) {
            try DeployIsolationTests.deployment(dir).run(
                DeployRequest(instanceName: "nolabel", diskPath: dir + "/disk", parameters: parameters), progress: RecordingProgressSink())
        }
        let message = error.map { String(describing: $0) } ?? ""
        #expect(!message.isEmpty && !message.contains("\n"), "\(message)")
    }
}
