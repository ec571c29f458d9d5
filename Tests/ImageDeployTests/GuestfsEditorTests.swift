// GuestfsEditor against the real libguestfs appliance.
//
// Needs root, libguestfs with its appliance, sfdisk, debugfs, dumpe2fs and blkid. Each appliance
// launch costs 30-40 s under TCG, so the msdos test does everything through ONE editor; the GPT
// test (a second launch) runs only with SNF_TEST_GUESTFS=all. SNF_TEST_GUESTFS=0 skips them all.
// The results are checked from the host without mounting anything: sfdisk, debugfs and dumpe2fs
// on a copy of the partition, blkid on the swap partition's byte range.

import Foundation
import Testing

import BlockStoreTesting
@testable import ImageDeploy

#if canImport(Glibc)
    import Glibc
#endif

private enum GuestfsTestEnv {
    static let setting = ProcessInfo.processInfo.environment["SNF_TEST_GUESTFS"] ?? "1"
    static let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path
    static let buildScript = repoRoot + "/scripts/images/build-test-image"

    static var available: Bool {
        setting != "0" && getuid() == 0 && GuestfsEditor.canHandle(disk: "/dev/null")
            && ["sfdisk", "debugfs", "dumpe2fs", "blkid", "e2fsck", "truncate", "dd"].allSatisfy(Sh.available)
            && FileManager.default.isExecutableFile(atPath: buildScript)
    }
    static var gpt: Bool { available && setting == "all" }
}

/// External programs for the checks: stdout captured, stderr discarded, non-zero exit throws.
private enum Sh {
    struct Failure: Error, CustomStringConvertible { var description: String }
    static let dirs = ["/usr/sbin/", "/usr/bin/", "/sbin/", "/bin/"]

    static func available(_ name: String) -> Bool {
        dirs.contains { FileManager.default.isExecutableFile(atPath: $0 + name) }
    }

    @discardableResult
    static func run(_ name: String, _ arguments: [String], stdin: String? = nil) throws -> String {
        let path = name.hasPrefix("/") ? name : (dirs.first { FileManager.default.isExecutableFile(atPath: $0 + name) } ?? "") + name
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let input = Pipe()
        if stdin != nil { process.standardInput = input }
        try process.run()
        if let stdin {
            input.fileHandleForWriting.write(Data(stdin.utf8))
            try input.fileHandleForWriting.close()
        }
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let errData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(
                description: "\(name) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
                    + String(decoding: errData, as: UTF8.self))
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// Times each step and prints it (the numbers go in the report).
private struct Stopwatch {
    let clock = ContinuousClock()
    func time<T>(_ label: String, _ body: () throws -> T) rethrows -> T {
        let start = clock.now
        let result = try body()
        let d = clock.now - start
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        print("guestfs timing: \(label): \(String(format: "%.0f", ms)) ms")
        return result
    }
}

/// sfdisk --json of a disk image: (label, [(node number, start, size, type)], last-lba).
private struct HostTable: Decodable {
    struct Table: Decodable {
        var label: String
        var lastlba: UInt64?
        var partitions: [Part]
        enum CodingKeys: String, CodingKey { case label, lastlba, partitions }
    }
    struct Part: Decodable {
        var node: String
        var start: UInt64
        var size: UInt64
        var type: String
    }
    var partitiontable: Table

    static func read(_ disk: String) throws -> Table {
        try JSONDecoder().decode(HostTable.self, from: Data(try Sh.run("sfdisk", ["--json", disk]).utf8)).partitiontable
    }
}

@Suite(.serialized) struct GuestfsEditorTests {
    static let mib: UInt64 = 2048  // sectors
    static let diskSectors: UInt64 = 256 * mib

    /// The tiny test image (64 MiB, msdos, ext4 at sector 2048) in a fresh directory.
    private func tinyImage() throws -> (dir: String, raw: String) {
        let dir = try TemporaryDirectory.make(prefix: "guestfs")
        try Sh.run(GuestfsTestEnv.buildScript, ["-v", "tiny", dir])
        return (dir, dir + "/debian12-tiny.raw")
    }

    /// Partition `start`..+`sectors` of `disk` copied to its own (sparse) file.
    private func extract(_ disk: String, start: UInt64, sectors: UInt64, to path: String) throws {
        try Sh.run("dd", ["if=\(disk)", "of=\(path)", "bs=512", "skip=\(start)", "count=\(sectors)", "conv=sparse", "status=none"])
    }

    /// The partition layout both tests make: partition 1 grown up to 32 MiB before the end, a
    /// swap partition 2 in those 32 MiB (less the last MiB, which stays free as snf-image leaves it).
    static let swapStart = diskSectors - 32 * mib
    static let swapSectors = 31 * mib
    static let rootEnd = swapStart - 1

    @Test(.enabled(if: GuestfsTestEnv.available), .timeLimit(.minutes(10)))
    func msdosSessionThroughOneAppliance() throws {
        ApplianceLock.shared.lock()
        defer { ApplianceLock.shared.unlock() }
        let (dir, raw) = try tinyImage()
        let disk = dir + "/disk.raw"
        try Sh.run("cp", ["--sparse=always", raw, disk])
        try Sh.run("truncate", ["-s", "256M", disk])
        // A symlink for the refusal check, put there from the host with debugfs (userspace).
        let fs = dir + "/p1.ext4"
        try extract(disk, start: 2048, sectors: 129024, to: fs)
        try Sh.run("debugfs", ["-w", "-R", "symlink /etc/evil /etc/shadow", fs])
        try Sh.run("dd", ["if=\(fs)", "of=\(disk)", "bs=512", "seek=2048", "conv=notrunc,sparse", "status=none"])

        let sw = Stopwatch()
        let editor = try sw.time("create+launch") { try GuestfsEditor(disk: disk, timeoutSeconds: 600) }
        print("guestfs timing: launch alone: \(String(format: "%.1f", editor.launchSeconds)) s")
        defer { try? editor.close() }
        #expect(editor.name == "libguestfs")
        #expect(editor.device == "/dev/sda")

        let before = try sw.time("partitionTable") { try editor.partitionTable() }
        #expect(before.label == .msdos)
        #expect(before.diskSectors == Self.diskSectors)
        #expect(before.partitions == [.init(number: 1, start: 2048, sectors: 129024, type: "83")])

        try sw.time("resizePartition") { try editor.resizePartition(1, endSector: Self.rootEnd) }
        try sw.time("addPartition") {
            try editor.addPartition(2, start: Self.swapStart, sectors: Self.swapSectors, swap: true)
        }
        // A partition number parted would not give is refused and undone.
        #expect(throws: CustomizationError.self) {
            try editor.addPartition(4, start: Self.diskSectors - 1024, sectors: 512, swap: false)
        }
        let after = try editor.partitionTable()
        #expect(
            after.partitions == [
                .init(number: 1, start: 2048, sectors: Self.rootEnd - 2048 + 1, type: "83"),
                .init(number: 2, start: Self.swapStart, sectors: Self.swapSectors, type: "82"),
            ])

        #expect(try sw.time("filesystemType") { try editor.filesystemType(partition: 1) } == "ext4")
        #expect(try editor.filesystemType(partition: 2) == nil)
        try sw.time("growFilesystem (e2fsck -fy + resize2fs)") { try editor.growFilesystem(partition: 1) }
        let uuid = try sw.time("makeSwap") { try editor.makeSwap(partition: 2) }
        #expect(uuid.count == 36)
        #expect(try editor.filesystemType(partition: 2) == "swap")
        #expect(throws: CustomizationError.self) { try editor.growFilesystem(partition: 2) }

        // libguestfs's own error text reaches the CustomizationError.
        do {
            try editor.openRoot(partition: 9)
            Issue.record("mounted a partition that does not exist")
        } catch let error as CustomizationError {
            #expect(error.message.hasPrefix("libguestfs: mount /dev/sda9 /: ") && error.message.contains("sda9"), "\(error)")
        }
        try sw.time("openRoot") { try editor.openRoot(partition: 1) }
        #expect(throws: CustomizationError.self) { try editor.growFilesystem(partition: 1) }
        #expect(try sw.time("readFile") { try editor.readFile("/etc/hostname") } == Array("debian12-tiny\n".utf8))
        #expect(try editor.readFile("/etc/machine-id") == [])
        #expect(try editor.readFile("/etc/missing") == nil)
        #expect(throws: CustomizationError.self) { try editor.readFile("/etc") }
        #expect(throws: CustomizationError.self) { try editor.readFile("relative") }

        try sw.time("writeFile") { try editor.writeFile("/etc/hostname", Array("guestfs-test\n".utf8), mode: 0o644, uid: 0, gid: 0) }
        // Replacing a longer file with a shorter one leaves only the new bytes.
        try editor.writeFile("/etc/motd", [UInt8](repeating: 0x41, count: 5000), mode: 0o644, uid: 0, gid: 0)
        try editor.writeFile("/etc/motd", Array("hi\n".utf8), mode: 0o600, uid: 1000, gid: 1000)
        #expect(try editor.readFile("/etc/motd") == Array("hi\n".utf8))
        #expect(try editor.info("/etc/motd") == GuestFileInfo(mode: 0o100600, uid: 1000, gid: 1000, isDirectory: false))
        // Larger than one protocol message: written in chunks.
        let big = (0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 7) }
        try sw.time("writeFile 5 MiB") { try editor.writeFile("/big", big, mode: 0o640, uid: 0, gid: 0) }
        #expect(try sw.time("readFile 5 MiB") { try editor.readFile("/big") } == big)
        try sw.time("removeFile") { try editor.removeFile("/big") }
        #expect(try editor.readFile("/big") == nil)
        try editor.removeFile("/big")

        // No writes through a symlink at the last component; info describes the link itself.
        #expect(throws: CustomizationError.self) {
            try editor.writeFile("/etc/evil", Array("x".utf8), mode: 0o644, uid: 0, gid: 0)
        }
        #expect(try editor.info("/etc/evil") == GuestFileInfo(mode: 0o120777, uid: 0, gid: 0, isDirectory: false))

        try sw.time("makeDirectory") { try editor.makeDirectory("/etc/snf", mode: 0o750, uid: 1000, gid: 1000) }
        try editor.makeDirectory("/etc/snf", mode: 0o700, uid: 0, gid: 0)  // exists: no error, unchanged
        #expect(try sw.time("info") { try editor.info("/etc/snf") } == GuestFileInfo(mode: 0o40750, uid: 1000, gid: 1000, isDirectory: true))
        try editor.writeFile("/etc/snf/tool", Array("#!/bin/sh\n".utf8), mode: 0o4755, uid: 1000, gid: 1000)
        #expect(try editor.info("/etc/snf/tool")?.mode == 0o104755)
        #expect(try editor.info("/etc/shadow") == GuestFileInfo(mode: 0o100640, uid: 0, gid: 42, isDirectory: false))
        #expect(try editor.info("/etc/none") == nil)

        let etc = try sw.time("listDirectory") { try editor.listDirectory("/etc") }
        #expect(Set(["hostname", "passwd", "shadow", "motd", "snf", "evil", "ssh"]).isSubset(of: Set(etc)))
        #expect(!etc.contains(".") && !etc.contains(".."))
        #expect(try editor.listDirectory("/nonexistent") == [])
        try editor.removeFile("/etc/motd")
        #expect(try editor.readFile("/etc/motd") == nil)

        try sw.time("closeRoot") { try editor.closeRoot() }
        try sw.time("close (shutdown)") { try editor.close() }
        try editor.close()
        #expect(throws: CustomizationError.self) { try editor.partitionTable() }

        // From the host, nothing mounted.
        let table = try HostTable.read(disk)
        #expect(table.label == "dos")
        #expect(table.partitions.map { [$0.start, $0.size] } == [[2048, Self.rootEnd - 2048 + 1], [Self.swapStart, Self.swapSectors]])
        #expect(table.partitions.map(\.type) == ["83", "82"])
        let grown = dir + "/p1-after.ext4"
        try extract(disk, start: 2048, sectors: Self.rootEnd - 2048 + 1, to: grown)
        #expect(try Sh.run("debugfs", ["-R", "cat /etc/hostname", grown]) == "guestfs-test\n")
        let stat = try Sh.run("debugfs", ["-R", "stat /etc/snf/tool", grown])
        #expect(stat.contains("Mode:  04755") && stat.contains("User:  1000"))
        let header = try Sh.run("dumpe2fs", ["-h", grown])
        let blocks = header.split(separator: "\n").first { $0.hasPrefix("Block count:") }
            .flatMap { UInt64($0.split(separator: " ").last ?? "") }
        #expect(blocks == (Self.rootEnd - 2048 + 1) * 512 / 1024)
        try Sh.run("e2fsck", ["-fn", grown])
        let swapProbe = try Sh.run(
            "blkid", ["-p", "-o", "export", "-O", "\(Self.swapStart * 512)", "-S", "\(Self.swapSectors * 512)", disk])
        #expect(swapProbe.contains("TYPE=swap") && swapProbe.contains("UUID=\(uuid)"))
    }

    /// The time limit: an appliance that cannot launch in time is killed, and nothing is left.
    @Test(.enabled(if: GuestfsTestEnv.available), .timeLimit(.minutes(2)))
    func launchTimeLimitKillsTheAppliance() throws {
        ApplianceLock.shared.lock()
        defer { ApplianceLock.shared.unlock() }
        let (_, raw) = try tinyImage()
        let clock = ContinuousClock()
        let start = clock.now
        do {
            let editor = try GuestfsEditor(disk: raw, timeoutSeconds: 2)
            try editor.close()
            Issue.record("the appliance launched within 2 s: the time limit is not exercised")
        } catch let error as CustomizationError {
            #expect(error.message.contains("did not launch within 2 s"), "\(error)")
        }
        let elapsed = clock.now - start
        print("guestfs timing: launch killed after \(elapsed)")
        #expect(elapsed < .seconds(20))
        // No hypervisor of ours survives.
        #expect(GuestfsWatchdog.hypervisors(naming: raw).isEmpty)
    }

    /// The time limit expiring after launch: the appliance is killed, every later call fails,
    /// close does not. A second appliance launch, so only with SNF_TEST_GUESTFS=all.
    @Test(.enabled(if: GuestfsTestEnv.gpt), .timeLimit(.minutes(5)))
    func expiredSessionKillsTheAppliance() throws {
        ApplianceLock.shared.lock()
        defer { ApplianceLock.shared.unlock() }
        let (_, raw) = try tinyImage()
        let editor = try GuestfsEditor(disk: raw, timeoutSeconds: 600)
        #expect(try editor.partitionTable().label == .msdos)
        #expect(!GuestfsWatchdog.hypervisors(naming: raw).isEmpty)
        editor.expireForTesting()
        // SIGKILL is asynchronous: give the process a moment to go.
        var left = GuestfsWatchdog.hypervisors(naming: raw)
        for _ in 0..<20 where !left.isEmpty {
            usleep(100_000)
            left = GuestfsWatchdog.hypervisors(naming: raw)
        }
        #expect(left.isEmpty)
        do {
            _ = try editor.partitionTable()
            Issue.record("a call succeeded after the time limit")
        } catch let error as CustomizationError {
            #expect(error.message.contains("did not finish within 600 s"), "\(error)")
        }
        try editor.close()
        try editor.close()
    }

    /// GPT, on a disk grown after the table was written: the backup header is moved to the end.
    /// A second appliance launch, so only with SNF_TEST_GUESTFS=all.
    @Test(.enabled(if: GuestfsTestEnv.gpt), .timeLimit(.minutes(10)))
    func gptSessionMovesTheBackupHeader() throws {
        ApplianceLock.shared.lock()
        defer { ApplianceLock.shared.unlock() }
        let (dir, raw) = try tinyImage()
        let disk = dir + "/gpt.raw"
        try Sh.run("truncate", ["-s", "65M", disk])  // room for the backup GPT after the 64 MiB
        try Sh.run("sfdisk", ["-q", disk], stdin: "label: gpt\nstart=2048, size=129024, type=L\n")
        try Sh.run("dd", ["if=\(raw)", "of=\(disk)", "bs=512", "skip=2048", "seek=2048", "count=129024", "conv=notrunc,sparse", "status=none"])
        try Sh.run("truncate", ["-s", "256M", disk])

        let editor = try GuestfsEditor(disk: disk, timeoutSeconds: 600)
        print("guestfs timing: GPT launch: \(String(format: "%.1f", editor.launchSeconds)) s")
        defer { try? editor.close() }
        let before = try editor.partitionTable()
        #expect(before.label == .gpt)
        #expect(before.partitions == [.init(number: 1, start: 2048, sectors: 129024, type: GuestfsEditor.gptLinuxData)])
        try editor.resizePartition(1, endSector: Self.rootEnd)
        try editor.addPartition(2, start: Self.swapStart, sectors: Self.swapSectors, swap: true)
        #expect(try editor.partitionTable().partitions.map(\.type) == [GuestfsEditor.gptLinuxData, GuestfsEditor.gptLinuxSwap])
        try editor.growFilesystem(partition: 1)
        let uuid = try editor.makeSwap(partition: 2)
        try editor.openRoot(partition: 1)
        try editor.writeFile("/etc/hostname", Array("gpt-test\n".utf8), mode: 0o644, uid: 0, gid: 0)
        try editor.closeRoot()
        try editor.close()

        let table = try HostTable.read(disk)
        #expect(table.label == "gpt")
        // The backup header is in the disk's last sector, and the primary header points at it
        // (sgdisk -e also aligns the last usable sector down to 2048: 522240 here).
        let fd = open(disk, O_RDONLY)
        defer { close(fd) }
        var primary = [UInt8](repeating: 0, count: 512)
        var backup = [UInt8](repeating: 0, count: 512)
        #expect(pread(fd, &primary, 512, 512) == 512 && pread(fd, &backup, 512, off_t((Self.diskSectors - 1) * 512)) == 512)
        #expect(Array(backup[0..<8]) == Array("EFI PART".utf8))
        #expect(primary[32..<40].reversed().reduce(0) { $0 << 8 | UInt64($1) } == Self.diskSectors - 1)
        #expect(table.lastlba.map { $0 >= Self.swapStart + Self.swapSectors - 1 } == true)
        #expect(table.partitions.map { [$0.start, $0.size] } == [[2048, Self.rootEnd - 2048 + 1], [Self.swapStart, Self.swapSectors]])
        #expect(table.partitions.map { $0.type.lowercased() } == [GuestfsEditor.gptLinuxData, GuestfsEditor.gptLinuxSwap])
        let grown = dir + "/p1.ext4"
        try extract(disk, start: 2048, sectors: Self.rootEnd - 2048 + 1, to: grown)
        #expect(try Sh.run("debugfs", ["-R", "cat /etc/hostname", grown]) == "gpt-test\n")
        try Sh.run("e2fsck", ["-fn", grown])
        let swapProbe = try Sh.run(
            "blkid", ["-p", "-o", "export", "-O", "\(Self.swapStart * 512)", "-S", "\(Self.swapSectors * 512)", disk])
        #expect(swapProbe.contains("UUID=\(uuid)"))
    }
}
