import BlockStoreTesting
import Foundation
import Testing

@testable import ImageDeploy

/// The two customization paths give the same result: the same plan is run over the tiny image
/// by the sandboxed fast ext editor and by libguestfs, and both disks are then read back through
/// libguestfs (never mounted on the host) and compared: partition table, filesystem size, and
/// every file the plan touches, with modes and owners.
@Suite(
    "Fast path and libguestfs agree", .serialized,
    .enabled(
        if: FastFixture.canRun && ProcessInfo.processInfo.environment["SNF_TEST_GUESTFS"] != "0"
            && GuestfsEditor.canHandle(disk: "/dev/null"),
        "needs root, loop devices, e2fsprogs and libguestfs (SNF_TEST_GUESTFS=0 skips)"))
struct EquivalenceTests {
    /// What one disk looks like after customization, as libguestfs reads it.
    struct Result: Equatable, CustomStringConvertible {
        var partitions: [PartitionTable.Partition] = []
        var label: PartitionTable.Label = .msdos
        var rootType: String?
        var swapType: String?
        var files: [String: String] = [:]
        var infos: [String: GuestFileInfo] = [:]
        var sshEntries: [String] = []
        var description: String {
            "label \(label), partitions \(partitions), root \(rootType ?? "-"), swap \(swapType ?? "-"), files \(files.keys.sorted()), infos \(infos), ssh \(sshEntries)"
        }
    }

    static let paths = [
        "/etc/hostname", "/etc/hosts", "/etc/shadow", "/etc/fstab", "/etc/machine-id", "/root/.ssh/authorized_keys",
        "/home/user/.ssh/authorized_keys", "/etc/passwd",
    ]

    /// Reads `disk` back through a fresh libguestfs session (`editor` when given: reuse it).
    static func readBack(_ editor: GuestfsEditor) throws -> Result {
        var result = Result()
        let table = try editor.partitionTable()
        result.label = table.label
        result.partitions = table.partitions
        result.rootType = try editor.filesystemType(partition: 1)
        result.swapType = try editor.filesystemType(partition: 2)
        try editor.openRoot(partition: 1)
        for path in paths {
            if let bytes = try editor.readFile(path) {
                var text = String(decoding: bytes, as: UTF8.self)
                // The swap UUID is new on every mkswap: compare the line's shape.
                text = text.replacingOccurrences(
                    of: #"UUID=[0-9a-f-]{36} none swap"#, with: "UUID=<swap> none swap", options: .regularExpression)
                result.files[path] = text
            }
            result.infos[path] = try editor.info(path)
        }
        result.sshEntries = try editor.listDirectory("/etc/ssh").sorted()
        try editor.closeRoot()
        return result
    }

    @Test(.timeLimit(.minutes(10)))
    func bothPathsGiveTheSameDisk() throws {
        ApplianceLock.shared.lock()
        defer { ApplianceLock.shared.unlock() }
        let dir = try TemporaryDirectory.make(prefix: "equivalence")
        let fastDisk = try FastFixture.msdosDisk(dir)
        let guestfsDisk = dir + "/guestfs.raw"
        try FastFixture.makeDisk(guestfsDisk, size: 256 << 20, bytes: FastFixture.readAll(fastDisk)[..<(65 << 20)], offset: 0)

        let plan = CustomizationPlan(
            tasks: CustomizationTask.allCases, hostname: "vm-alpha.example.org", users: ["root", "user"],
            passwordHash: try PasswordHasher.hash("same for both", method: "sha512"),
            authorizedKeys: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEquivalenceTestKeyEquivalenceTestKey0 test@equivalence\n",
            swap: SwapRequest(partition: 2, mebibytes: 32))
        let events = MountWatchingSink(watching: dir)
        var runner = TaskRunner(plan: plan, progress: events)
        runner.today = 20_000

        let fast = try FastExtEditor(disk: fastDisk)
        try runner.run(on: fast)
        try fast.close()

        // One appliance customizes its disk and reads it back; a second reads the fast path's.
        let viaGuestfs: Result
        do {
            let editor = try GuestfsEditor(disk: guestfsDisk, timeoutSeconds: 300)
            defer { try? editor.close() }
            try runner.run(on: editor)
            viaGuestfs = try EquivalenceTests.readBack(editor)
        }
        let viaFast: Result
        do {
            let editor = try GuestfsEditor(disk: fastDisk, timeoutSeconds: 300)
            defer { try? editor.close() }
            viaFast = try EquivalenceTests.readBack(editor)
        }

        #expect(viaFast == viaGuestfs)
        #expect(viaFast.files["/etc/hostname"] == "vm-alpha\n")
        #expect(viaFast.files["/etc/shadow"]?.contains("root:\(plan.passwordHash!):20000:") == true)
        #expect(viaFast.files["/etc/fstab"]?.contains("UUID=<swap> none swap sw 0 0") == true)
        #expect(viaFast.files["/etc/machine-id"] == "")
        #expect(viaFast.rootType == "ext4" && viaFast.swapType == "swap")
        #expect(!viaFast.sshEntries.contains { $0.hasPrefix("ssh_host_") })
        #expect(viaFast.partitions.count == 2)
        // Both ran every task, in the same order.
        let order = events.events.compactMap { event -> CustomizationTask? in
            if case .taskEnd(let task) = event { return task }
            return nil
        }
        #expect(order == CustomizationTask.allCases + CustomizationTask.allCases)
        // Neither path mounted anything in the host's kernel (checked at every task event).
        #expect(events.mountChanges.isEmpty, "the host's mount table changed: \(events.mountChanges)")
    }
}

/// One libguestfs appliance at a time in the test process: two launched at once (suites run in
/// parallel) made the second launch fail on this 2-core machine.
enum ApplianceLock {
    static let shared = NSLock()
}
