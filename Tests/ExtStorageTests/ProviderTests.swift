import BlockStore
import BlockStoreTesting
import Foundation
import Testing

/// The Ganeti ExtStorage verbs of the built binary, run with an environment like the one Ganeti
/// gives, and the node daemon they start: loop devices on FUSE, NBD sockets, restarts.
/// Needs root, /dev/fuse and loop devices (skipped otherwise), plus qemu-img/qemu-io for NBD.
@Suite(.serialized, .enabled(if: Node.canServe))
struct ProviderTests {
    @Test func lifeCycleOfACloneThroughLoopAndNBD() throws {
        let node = try Node()
        defer { node.cleanUp() }
        let image = randomData(9 * mebibyte + 4096, seed: 11)
        try node.cli.ok(["import", "img", try node.cli.file(image)])
        let vol = "4f1b6c2e-0d6a-4b55-9a57-1c2d3e4f5a6b.ext.disk0"

        // create: a thin clone sized VOL_SIZE MiB; a retry succeeds; a different size does not.
        try node.ok("create", vol, ["VOL_SIZE": "64", "EXTP_ORIGIN": "img"])
        try node.ok("create", vol, ["VOL_SIZE": "64", "EXTP_ORIGIN": "img"])
        #expect(try node.provider("create", vol, ["VOL_SIZE": "128", "EXTP_ORIGIN": "img"]).status == 2)
        try node.ok("setinfo", vol, ["VOL_METADATA": "originstname+inst1.ganeti.test"])

        // attach: line 1 a block device, line 2 the NBD URI; idempotent.
        let attach = try node.ok("attach", vol)
        let lines = attach.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2)
        let device = lines[0]
        #expect(device.hasPrefix("/dev/loop"))
        #expect(lines[1] == "kvm:nbd:unix:\(node.run)/nbd/\(vol).sock")
        #expect(try node.ok("attach", vol).stdout == attach.stdout)
        try node.ok("open", vol, ["VOL_OPEN_EXCLUSIVE": "True"])

        // The block device reads the image, then zeros.
        let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: device))
        let read = try head.read(upToCount: image.count + 8192)!
        try head.close()
        #expect(read.prefix(image.count) == image)
        #expect(read.dropFirst(image.count).allSatisfy { $0 == 0 })

        // Write through the loop device, read through NBD.
        let pattern = Data(repeating: 0xa5, count: 3 * mebibyte)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: device))
        try out.seek(toOffset: UInt64(2 * mebibyte))
        try out.write(contentsOf: pattern)
        try out.synchronize()
        try out.close()
        let socket = String(lines[1].dropFirst("kvm:nbd:unix:".count))
        try Tool.run("qemu-io", ["-r", "-f", "raw", "nbd:unix:\(socket)", "-c", "read -P 0xa5 2M 3M"])

        // Snapshot while attached (what gnt-backup export --noshutdown does), then write on.
        try node.ok("snapshot", vol, ["VOL_SNAPSHOT_NAME": vol + ".snap", "VOL_SNAPSHOT_SIZE": "64"])
        try node.ok("snapshot", vol, ["VOL_SNAPSHOT_NAME": vol + ".snap", "VOL_SNAPSHOT_SIZE": "64"])
        try Tool.run("qemu-io", ["-f", "raw", "nbd:unix:\(socket)", "-c", "write -P 0x3c 2M 1M", "-c", "flush"])
        // The snapshot is a read-only map that can be attached and cloned.
        let snapAttach = try node.ok("attach", vol + ".snap")
        let snapSocket = String(snapAttach.stdout.split(separator: "\n")[1].dropFirst("kvm:nbd:unix:".count))
        try Tool.run("qemu-io", ["-r", "-f", "raw", "nbd:unix:\(snapSocket)", "-c", "read -P 0xa5 2M 3M"])
        try node.ok("detach", vol + ".snap")
        try node.ok("remove", vol + ".snap")

        // Grow while attached: the loop device follows.
        try node.ok("grow", vol, ["VOL_SIZE": "64", "VOL_NEW_SIZE": "96"])
        try node.ok("grow", vol, ["VOL_SIZE": "64", "VOL_NEW_SIZE": "96"])
        let sectors = try String(contentsOfFile: "/sys/block/\(device.dropFirst(5))/size", encoding: .utf8)
        #expect(sectors.trimmingCharacters(in: .whitespacesAndNewlines) == String(96 * mebibyte / 512))

        let status = try json(try node.cli.ok(["status", "--run", node.run, "--json"]).stdout) as! [String: Any]
        let volumes = status["volumes"] as! [[String: Any]]
        #expect(volumes.count == 1)
        #expect((volumes[0]["bytesRead"] as! Int) > 0)
        #expect(volumes[0]["open"] as? String == "exclusive")
        // The admin CLI refuses to change an attached volume behind the daemon's back, at once.
        for arguments in [["rm", vol], ["export", vol, "/dev/null"], ["snapshot", vol, "s2"], ["grow", vol, "--size", "1G"]] {
            let refused = try node.cli.run(arguments + ["--run", node.run])
            #expect(refused.status == 1 && refused.stderr.contains("attached"), "\(arguments): \(refused.stderr)")
        }

        // detach tears everything down, and the idle daemon exits with its mount.
        try node.ok("detach", vol)
        try node.ok("detach", vol)
        try node.expectNothingServed()

        var expected = image + Data(count: 64 * mebibyte - image.count)
        expected.replaceSubrange((2 * mebibyte)..<(5 * mebibyte), with: pattern)
        expected.replaceSubrange((2 * mebibyte)..<(3 * mebibyte), with: Data(repeating: 0x3c, count: mebibyte))
        expected += Data(count: 32 * mebibyte)
        #expect(try node.cli.exported(vol) == expected)
        #expect(try node.cli.exported("img") == image)

        try node.ok("remove", vol)
        try node.ok("remove", vol)
        #expect(try node.cli.run(["info", vol]).status == 2)
        #expect(try node.cli.ok(["check"]).status == 0)
    }

    @Test func badInputFailsWithOneLineAndChangesNothing() throws {
        let node = try Node()
        defer { node.cleanUp() }
        try node.cli.ok(["import", "img", try node.cli.file(randomData(20 * mebibyte, seed: 3))])
        let before = try node.cli.inventory()
        let cases: [(String, String, [String: String], String)] = [
            ("create", "a/b.ext.disk0", ["VOL_SIZE": "64"], "'/'"),
            ("create", "x..y", ["VOL_SIZE": "64"], "'..'"),
            ("create", "../etc", ["VOL_SIZE": "64"], "VOL_NAME"),
            ("create", "vol1", ["VOL_SIZE": "64", "EXTP_ORIGIN": "no-such-image"], "no-such-image"),
            ("create", "vol1", ["VOL_SIZE": "8", "EXTP_ORIGIN": "img"], "20 MiB"),
            ("create", "vol1", ["VOL_SIZE": "lots"], "VOL_SIZE"),
            ("create", "vol1", [:], "VOL_SIZE"),
            ("attach", "removed-volume", [:], "removed-volume"),
            ("grow", "vol1", ["VOL_SIZE": "64", "VOL_NEW_SIZE": "96"], "vol1"),
            ("snapshot", "vol1", ["VOL_SNAPSHOT_NAME": "s/1"], "VOL_SNAPSHOT_NAME"),
        ]
        for (verb, vol, env, mention) in cases {
            let result = try node.provider(verb, vol, env)
            #expect(result.status != 0, "\(verb) \(vol) \(env) succeeded")
            let lines = result.stderr.split(separator: "\n")
            #expect(lines.count == 1, "\(verb) \(vol): \(result.stderr)")
            #expect(result.stderr.contains(mention), "\(verb) \(vol): \(result.stderr)")
            #expect(result.stdout.isEmpty)
        }
        #expect(try node.cli.inventory() == before)
        try node.expectNothingServed()
    }

    @Test func openIsExclusiveAcrossDaemons() throws {
        let node = try Node()
        defer { node.cleanUp() }
        try node.ok("create", "vol", ["VOL_SIZE": "16"])
        // A second node sharing the store: its own daemon (runtime directory).
        let other = node.run + "-other"
        try node.ok("open", "vol", ["VOL_OPEN_EXCLUSIVE": "True"])
        let refused = try node.provider("open", "vol", ["VOL_OPEN_EXCLUSIVE": "True", "SNF_STORE_RUN": other])
        #expect(refused.status == 1 && refused.stderr.contains("another node"), "\(refused.stderr)")
        // Live migration: both open shared.
        try node.ok("open", "vol", ["VOL_OPEN_EXCLUSIVE": "False"])
        try node.ok("open", "vol", ["VOL_OPEN_EXCLUSIVE": "False", "SNF_STORE_RUN": other])
        try node.ok("close", "vol")
        try node.ok("open", "vol", ["VOL_OPEN_EXCLUSIVE": "True", "SNF_STORE_RUN": other])
        try node.ok("close", "vol", ["SNF_STORE_RUN": other])
        try node.ok("close", "vol")
        try node.expectNothingServed()
    }

    @Test func killedDaemonRestartsWithoutLosingAcknowledgedWrites() throws {
        let node = try Node()
        defer { node.cleanUp() }
        // A clone, so that the writes copy blocks with data (pending copies until a flush).
        try node.cli.ok(["import", "img", try node.cli.file(randomData(12 * mebibyte, seed: 5))])
        try node.ok("create", "vol", ["VOL_SIZE": "32", "EXTP_ORIGIN": "img"])
        let lines = try node.ok("attach", "vol").stdout.split(separator: "\n").map(String.init)
        let socket = String(lines[1].dropFirst("kvm:nbd:unix:".count))
        // Acknowledged writes, no flush: they must survive the daemon being killed.
        try Tool.run("qemu-io", ["-f", "raw", "nbd:unix:\(socket)", "-c", "write -P 0x77 1M 5M", "-c", "write -P 0x78 10M 4096"])
        let pid = try node.daemonPID()
        kill(pid, SIGKILL)
        while kill(pid, 0) == 0 { usleep(10_000) }
        // Ganeti's next attach restarts the daemon, which serves the volume again.
        let again = try node.ok("attach", "vol").stdout.split(separator: "\n").map(String.init)
        #expect(again[1] == lines[1])
        #expect(try node.daemonPID() != pid)
        try Tool.run("qemu-io", ["-r", "-f", "raw", "nbd:unix:\(socket)", "-c", "read -P 0x77 1M 5M", "-c", "read -P 0x78 10M 4096"])
        let head = try FileHandle(forReadingFrom: URL(fileURLWithPath: again[0]))
        try head.seek(toOffset: UInt64(10 * mebibyte))
        #expect(try head.read(upToCount: 4096) == Data(repeating: 0x78, count: 4096))
        try head.close()
        try node.ok("detach", "vol")
        try node.ok("remove", "vol")
        try node.expectNothingServed()
    }

    /// Ganeti may detach or remove a disk after the daemon died: the loop device, FUSE mount and
    /// socket still go away, and the volume is not served again by the next daemon.
    @Test func detachAndRemoveAfterTheDaemonWasKilled() throws {
        let node = try Node()
        defer { node.cleanUp() }
        try node.cli.ok(["import", "img", try node.cli.file(randomData(5 * mebibyte, seed: 6))])
        for vol in ["a", "b"] {
            try node.ok("create", vol, ["VOL_SIZE": "16", "EXTP_ORIGIN": "img"])
            try node.ok("attach", vol)
        }
        let socket = node.run + "/nbd/a.sock"
        try Tool.run("qemu-io", ["-f", "raw", "nbd:unix:\(socket)", "-c", "write -P 0x42 0 1M"])
        let pid = try node.daemonPID()
        kill(pid, SIGKILL)
        while kill(pid, 0) == 0 { usleep(10_000) }
        try node.ok("detach", "a")
        try node.ok("detach", "a")
        try node.ok("remove", "b")
        try node.expectNothingServed()
        // The acknowledged write survived, and a new attach serves only what it is asked for.
        #expect(try node.cli.exported("a").prefix(mebibyte) == Data(repeating: 0x42, count: mebibyte))
        try node.ok("attach", "a")
        let status = try json(try node.cli.ok(["status", "--run", node.run, "--json"]).stdout) as! [String: Any]
        #expect((status["volumes"] as! [[String: Any]]).map { $0["name"] as? String } == ["a"], "\(status)")
        try node.ok("remove", "a")
        try node.expectNothingServed()
    }
}

/// A store and a daemon runtime directory for one test, and the provider run as Ganeti runs it.
struct Node {
    static let canServe: Bool = getuid() == 0 && access("/dev/fuse", W_OK) == 0 && access("/dev/loop-control", W_OK) == 0
        && Tool.available("qemu-io")

    let cli: CLI
    let run: String

    init() throws {
        cli = try CLI.withNewStore()
        run = String(cli.root.dropLast("/store".count)) + "/run"
    }

    /// Runs `snf-store provider VERB` with only the environment Ganeti would give (plus the store
    /// locations, which a node keeps in /etc/snf/store.conf).
    func provider(_ verb: String, _ volume: String, _ extra: [String: String] = [:]) throws -> CLI.Result {
        CLI.ignoreBrokenPipes
        var environment = [
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/root",
            "EXTP_PROVIDER": "snf-store", "EXTP_ACCESS": "kernelspace", "VOL_NAME": volume,
            "VOL_UUID": "d0523d1a-bc8d-47c7-bcad-7879219ac4e9",
            "SNF_STORE_ROOT": cli.root, "SNF_STORE_RUN": run, "SNF_STORE_CONF": "/nonexistent",
        ]
        environment.merge(extra) { _, new in new }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["provider", verb]
        process.environment = environment
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return CLI.collect(process, out, err)
    }

    @discardableResult
    func ok(_ verb: String, _ volume: String, _ extra: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) throws -> CLI.Result {
        let result = try provider(verb, volume, extra)
        try #require(result.status == 0, "\(verb) \(volume): \(result.stderr)", sourceLocation: sourceLocation)
        return result
    }

    func daemonPID() throws -> pid_t {
        let text = try String(contentsOfFile: run + "/serve.lock", encoding: .utf8)
        return pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))!
    }

    /// No daemon, socket, FUSE mount or loop device of this node is left.
    func expectNothingServed(sourceLocation: SourceLocation = #_sourceLocation) throws {
        // The daemon exits once idle; give it a moment.
        for _ in 0..<200 where FileManager.default.fileExists(atPath: run + "/control.sock") { usleep(25_000) }
        #expect(!FileManager.default.fileExists(atPath: run + "/control.sock"), sourceLocation: sourceLocation)
        let sockets = (try? FileManager.default.contentsOfDirectory(atPath: run + "/nbd")) ?? []
        #expect(sockets.isEmpty, "sockets left: \(sockets)", sourceLocation: sourceLocation)
        let mounts = try String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)
        #expect(!mounts.contains(run + "/fuse"), sourceLocation: sourceLocation)
        let loops = try FileManager.default.contentsOfDirectory(atPath: "/sys/block").filter { $0.hasPrefix("loop") }
        for loop in loops {
            let backing = (try? String(contentsOfFile: "/sys/block/\(loop)/loop/backing_file", encoding: .utf8)) ?? ""
            #expect(!backing.hasPrefix(run + "/"), "\(loop) still serves \(backing)", sourceLocation: sourceLocation)
        }
    }

    /// Stops a daemon a failed test left running, and its loop devices.
    func cleanUp() {
        if let pid = try? daemonPID(), kill(pid, 0) == 0 {
            kill(pid, SIGKILL)
            usleep(100_000)
        }
        if let loops = try? FileManager.default.contentsOfDirectory(atPath: "/sys/block") {
            for loop in loops where loop.hasPrefix("loop") {
                let backing = (try? String(contentsOfFile: "/sys/block/\(loop)/loop/backing_file", encoding: .utf8)) ?? ""
                if backing.hasPrefix(run + "/") { _ = try? Tool.run("losetup", ["-d", "/dev/\(loop)"]) }
            }
        }
        _ = try? Tool.run("umount", ["-l", run + "/fuse"])
    }
}
