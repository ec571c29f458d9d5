import Synchronization
import Testing

@testable import ImageDeploy

/// Progress events, collected.
final class EventLog: ProgressSink {
    let events = Mutex<[ProgressEvent]>([])
    func emit(_ event: ProgressEvent) { events.withLock { $0.append(event) } }
    var all: [ProgressEvent] { events.withLock { $0 } }
}

/// A DiskEditor over an in-memory disk: a partition table, filesystem types and a file tree.
final class MemoryEditor: DiskEditor {
    let name = "memory"
    var table: PartitionTable
    var types: [Int: String]
    struct Node {
        var bytes: [UInt8]
        var mode: UInt32
        var uid: UInt32 = 0
        var gid: UInt32 = 0
    }
    var files: [String: Node] = ["/": Node(bytes: [], mode: 0o040755)]
    var grown: [Int] = []
    var openedRoot: Int? = nil

    init(table: PartitionTable, types: [Int: String]) {
        self.table = table
        self.types = types
    }

    func partitionTable() throws -> PartitionTable { table }
    func resizePartition(_ number: Int, endSector: UInt64) throws {
        let index = try #require(table.partitions.firstIndex { $0.number == number })
        table.partitions[index].sectors = endSector - table.partitions[index].start + 1
    }
    func addPartition(_ number: Int, start: UInt64, sectors: UInt64, swap: Bool) throws {
        table.partitions.append(.init(number: number, start: start, sectors: sectors, type: swap ? "82" : "83"))
    }
    func filesystemType(partition number: Int) throws -> String? { types[number] }
    func growFilesystem(partition number: Int) throws { grown.append(number) }
    func makeSwap(partition number: Int) throws -> String {
        types[number] = "swap"
        return "11111111-2222-4333-8444-555555555555"
    }
    func openRoot(partition number: Int) throws { openedRoot = number }
    func readFile(_ path: String) throws -> [UInt8]? { files[path].map(\.bytes) }
    func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) throws {
        if let old = files[path], old.mode & 0o170000 != 0o100000 { throw CustomizationError("not a file") }
        files[path] = Node(bytes: bytes, mode: 0o100000 | mode, uid: uid, gid: gid)
    }
    func makeDirectory(_ path: String, mode: UInt32, uid: UInt32, gid: UInt32) throws {
        if files[path] == nil { files[path] = Node(bytes: [], mode: 0o040000 | mode, uid: uid, gid: gid) }
    }
    func removeFile(_ path: String) throws { files[path] = nil }
    func listDirectory(_ path: String) throws -> [String] {
        files.keys.filter { $0.hasPrefix(path + "/") && !$0.dropFirst(path.count + 1).contains("/") }.map { String($0.dropFirst(path.count + 1)) }
    }
    func info(_ path: String) throws -> GuestFileInfo? {
        files[path].map { GuestFileInfo(mode: $0.mode, uid: $0.uid, gid: $0.gid, isDirectory: $0.mode & 0o170000 == 0o040000) }
    }
    func closeRoot() throws { openedRoot = nil }
    func close() throws {}

    func put(_ path: String, _ text: String, mode: UInt32 = 0o644, uid: UInt32 = 0, gid: UInt32 = 0) {
        files[path] = Node(bytes: Array(text.utf8), mode: 0o100000 | mode, uid: uid, gid: gid)
    }
    func text(_ path: String) -> String? { files[path].map { String(decoding: $0.bytes, as: UTF8.self) } }

    /// A 256 MiB msdos disk with one ext4 partition at 1 MiB of 63 MiB, holding a small Debian /etc.
    static func tiny(label: PartitionTable.Label = .msdos) -> MemoryEditor {
        let editor = MemoryEditor(
            table: PartitionTable(label: label, partitions: [.init(number: 1, start: 2048, sectors: 129024, type: "83")], diskSectors: 524288),
            types: [1: "ext4"])
        for dir in ["/etc", "/etc/ssh", "/root", "/home", "/var", "/var/lib", "/var/lib/dbus"] {
            editor.files[dir] = Node(bytes: [], mode: 0o040755)
        }
        editor.files["/home/user"] = Node(bytes: [], mode: 0o040755, uid: 1000, gid: 1000)
        editor.put("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n")
        editor.put("/etc/shadow", "root:*:19700:0:99999:7:::\nuser:!:19700:0:99999:7:::\n", mode: 0o640, gid: 42)
        editor.put("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\told\n")
        editor.put("/etc/hostname", "old\n")
        editor.put("/etc/fstab", "UUID=r / ext4 defaults 0 1\n")
        editor.put("/etc/machine-id", "0123456789abcdef0123456789abcdef\n")
        editor.put("/var/lib/dbus/machine-id", "0123456789abcdef0123456789abcdef\n")
        editor.put("/etc/ssh/ssh_host_rsa_key", "k", mode: 0o600)
        editor.put("/etc/ssh/ssh_host_rsa_key.pub", "k")
        editor.put("/etc/ssh/sshd_config", "x")
        return editor
    }
}

struct TaskRunnerTests {
    typealias Partition = PartitionTable.Partition

    @Test func layoutGrowsTheLastPartitionToTheLastMiB() throws {
        let msdos = PartitionTable(label: .msdos, partitions: [.init(number: 1, start: 2048, sectors: 129024, type: "83")], diskSectors: 524288)
        #expect(try TaskRunner.plannedLayout(msdos, swap: nil).grow! == (1, 524287))
        var gpt = msdos
        gpt.label = .gpt
        #expect(try TaskRunner.plannedLayout(gpt, swap: nil).grow! == (1, 522239))
        // A disk that is not a whole number of MiB.
        var odd = msdos
        odd.diskSectors = 524288 + 1000
        #expect(try TaskRunner.plannedLayout(odd, swap: nil).grow! == (1, 524287))
        // Already at the end: nothing to do.
        var full = msdos
        full.partitions[0].sectors = 524288 - 2048
        #expect(try TaskRunner.plannedLayout(full, swap: nil) == TaskRunner.Layout())
        // The last partition by start, not by number.
        let two = PartitionTable(
            label: .msdos,
            partitions: [.init(number: 1, start: 4096, sectors: 2048, type: "83"), .init(number: 2, start: 2048, sectors: 2048, type: "83")],
            diskSectors: 524288)
        #expect(try TaskRunner.plannedLayout(two, swap: nil).grow!.number == 1)
    }

    @Test func layoutWithSwap() throws {
        let msdos = PartitionTable(label: .msdos, partitions: [.init(number: 1, start: 2048, sectors: 129024, type: "83")], diskSectors: 524288)
        let layout = try TaskRunner.plannedLayout(msdos, swap: SwapRequest(partition: 2, mebibytes: 32))
        #expect(layout.grow! == (1, 458751))
        #expect(layout.swap! == (2, 458752, 65536))
        // Run again after the change: nothing more.
        var after = msdos
        after.partitions[0].sectors = 458751 - 2048 + 1
        after.partitions.append(.init(number: 2, start: 458752, sectors: 65536, type: "82"))
        #expect(try TaskRunner.plannedLayout(after, swap: SwapRequest(partition: 2, mebibytes: 32)) == TaskRunner.Layout())
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(msdos, swap: SwapRequest(partition: 1, mebibytes: 32)) }
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(msdos, swap: SwapRequest(partition: 5, mebibytes: 32)) }
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(msdos, swap: SwapRequest(partition: 2, mebibytes: 250)) }
        var gpt = msdos
        gpt.label = .gpt
        let gptLayout = try TaskRunner.plannedLayout(gpt, swap: SwapRequest(partition: 7, mebibytes: 32))
        #expect(gptLayout.swap! == (7, 522240 - 65536, 65536))
    }

    @Test func layoutRefusesLogicalPartitionsAndBadTables() {
        let logical = PartitionTable(
            label: .msdos,
            partitions: [.init(number: 2, start: 2048, sectors: 10000, type: "5"), .init(number: 5, start: 4096, sectors: 4096, type: "83")],
            diskSectors: 524288)
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(logical, swap: nil) }
        let outside = PartitionTable(label: .msdos, partitions: [.init(number: 1, start: 2048, sectors: 600000, type: "83")], diskSectors: 524288)
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(outside, swap: nil) }
        let empty = PartitionTable(label: .gpt, partitions: [], diskSectors: 524288)
        #expect(throws: CustomizationError.self) { try TaskRunner.plannedLayout(empty, swap: nil) }
    }

    static let keys = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample test@example\n"

    static func fullPlan(swap: SwapRequest? = SwapRequest(partition: 2, mebibytes: 32)) -> CustomizationPlan {
        CustomizationPlan(
            tasks: CustomizationTask.allCases, hostname: "vm1.example.org", users: ["root", "user"],
            passwordHash: "$6$abcdefgh$JyuVhva.Ss8BW6un4sZ/HUV2eIApDzZV9z2TprwN9ERSnvLoT/FvYpXhyFDZackuPE4X/KWscOUxZGXHxegGK1",
            authorizedKeys: keys, swap: swap)
    }

    @Test func wholePlanOnAMemoryDisk() throws {
        let editor = MemoryEditor.tiny()
        let log = EventLog()
        var runner = TaskRunner(plan: TaskRunnerTests.fullPlan(), progress: log)
        runner.today = 20000
        try runner.run(on: editor)

        let starts = log.all.compactMap { if case .taskStart(let t) = $0 { t } else { nil } }
        let ends = log.all.compactMap { if case .taskEnd(let t) = $0 { t } else { nil } }
        #expect(starts == CustomizationTask.allCases && ends == CustomizationTask.allCases)
        #expect(editor.table.partitions.map(\.number) == [1, 2])
        #expect(editor.table.partitions[0].start + editor.table.partitions[0].sectors == 458752)
        #expect(editor.grown == [1])
        #expect(editor.openedRoot == nil)
        #expect(editor.text("/etc/hostname") == "vm1\n")
        #expect(editor.text("/etc/hosts") == "127.0.0.1\tlocalhost\n127.0.1.1\tvm1.example.org vm1\n")
        #expect(editor.text("/etc/fstab") == "UUID=r / ext4 defaults 0 1\nUUID=11111111-2222-4333-8444-555555555555 none swap sw 0 0\n")
        #expect(editor.text("/etc/machine-id") == "")
        #expect(editor.files["/etc/machine-id"]?.mode == 0o100444)
        #expect(editor.files["/var/lib/dbus/machine-id"] == nil)
        let shadow = try #require(editor.text("/etc/shadow"))
        #expect(shadow.hasPrefix("root:$6$abcdefgh$JyuV") && shadow.contains(":20000:0:99999:7:::\nuser:$6$abcdefgh$"))
        #expect(editor.files["/etc/shadow"]?.mode == 0o100640 && editor.files["/etc/shadow"]?.gid == 42)
        #expect(editor.text("/root/.ssh/authorized_keys") == TaskRunnerTests.keys)
        #expect(editor.files["/home/user/.ssh"]?.mode == 0o040700 && editor.files["/home/user/.ssh"]?.uid == 1000)
        #expect(editor.files["/home/user/.ssh/authorized_keys"]?.mode == 0o100600)
        #expect(editor.files["/home/user/.ssh/authorized_keys"]?.uid == 1000)
        #expect(try editor.listDirectory("/etc/ssh") == ["sshd_config"])

        // A second run changes nothing more (no duplicate fstab or key lines, same layout).
        let before = editor.files.mapValues(\.bytes)
        try runner.run(on: editor)
        #expect(editor.files.mapValues(\.bytes) == before)
        #expect(editor.table.partitions.count == 2)
    }

    @Test func aFailureNamesTheTaskAndClosesTheRoot() throws {
        let editor = MemoryEditor.tiny()
        let log = EventLog()
        let plan = CustomizationPlan(tasks: [.assignHostname, .changePassword], hostname: "vm1", users: ["ghost"], passwordHash: "$6$x$y")
        let error = try #require(throws: CustomizationError.self) { try TaskRunner(plan: plan, progress: log).run(on: editor) }
        #expect(error.task == .changePassword)
        #expect(error.message.contains("ghost"))
        #expect(log.all.last == .helperError(error.message))
        #expect(!log.all.contains(.taskEnd(.changePassword)))
        #expect(editor.openedRoot == nil)
        #expect(editor.text("/etc/shadow")?.contains("$6$x$y") == false)
    }

    @Test func nonExtFilesystemsAreNotGrownButWarned() throws {
        let editor = MemoryEditor.tiny()
        editor.types[1] = "xfs"
        let log = EventLog()
        try TaskRunner(plan: CustomizationPlan(tasks: [.fixPartitionTable, .filesystemResizeUnmounted], hostname: "a"), progress: log).run(on: editor)
        #expect(editor.grown.isEmpty)
        #expect(log.all.contains { if case .warning = $0 { true } else { false } })
    }

    @Test func rootIsFoundOrTaken() throws {
        let editor = MemoryEditor.tiny()
        editor.table.partitions = [
            .init(number: 1, start: 2048, sectors: 2048, type: "83"), .init(number: 2, start: 4096, sectors: 4096, type: "83"),
            .init(number: 3, start: 8192, sectors: 4096, type: "83"),
        ]
        editor.types = [1: "ext2", 2: "ext4", 3: "vfat"]
        #expect(try TaskRunner.findRoot(editor, plan: CustomizationPlan(tasks: [], hostname: "a")) == 2)
        #expect(try TaskRunner.findRoot(editor, plan: CustomizationPlan(tasks: [], hostname: "a", rootPartition: 1)) == 1)
        #expect(throws: CustomizationError.self) { try TaskRunner.findRoot(editor, plan: CustomizationPlan(tasks: [], hostname: "a", rootPartition: 9)) }
        editor.types = [3: "vfat"]
        #expect(throws: CustomizationError.self) { try TaskRunner.findRoot(editor, plan: CustomizationPlan(tasks: [], hostname: "a")) }
    }

    @Test func symlinkedMachineIdInDbusIsKept() throws {
        let editor = MemoryEditor.tiny()
        editor.files["/var/lib/dbus/machine-id"] = .init(bytes: Array("/etc/machine-id".utf8), mode: 0o120777)
        try TaskRunner(plan: CustomizationPlan(tasks: [.changeMachineId], hostname: "a"), progress: EventLog()).run(on: editor)
        #expect(editor.files["/var/lib/dbus/machine-id"] != nil)
        #expect(editor.text("/etc/machine-id") == "")
    }
}
