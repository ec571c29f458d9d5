// Runs a customization plan over any DiskEditor. Every decision (which partition grows, where the
// swap goes, which partition is root) and every text edit happens here, in Swift, so the fast
// path and libguestfs give the same result; the editors only provide primitives.
//
// Conventions this relies on from the editors (see DiskEditor):
//   - info() does not follow a symlink at the last component (lstat), and its `mode` carries the
//     file type bits (S_IFMT) as well as the permission bits.
//   - writeFile refuses to write through a symlink at the last component.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public struct TaskRunner {
    public let plan: CustomizationPlan
    public let progress: any ProgressSink
    /// Days since the epoch written as the "last change" of changed passwords.
    public var today: Int

    /// Sectors per MiB: partitions start and end on 1 MiB boundaries.
    static let alignment: UInt64 = 2048

    public init(plan: CustomizationPlan, progress: any ProgressSink) {
        self.plan = plan
        self.progress = progress
        today = GuestEdits.daysSinceEpoch(Int(time(nil)))
    }

    /// State across tasks of one run.
    private final class RunState {
        var root: Int? = nil
        var rootOpen = false
    }

    /// Runs the plan's tasks in order: taskStart, the work, taskEnd; on a failure, helperError and
    /// a CustomizationError naming the task (the root filesystem is closed first).
    public func run(on editor: any DiskEditor) throws {
        let state = RunState()
        for task in plan.tasks {
            progress.emit(.taskStart(task))
            do {
                if task.isUnmounted && state.rootOpen {
                    state.rootOpen = false
                    try editor.closeRoot()
                }
                try perform(task, on: editor, state: state)
            } catch {
                if state.rootOpen {
                    state.rootOpen = false
                    try? editor.closeRoot()
                }
                let message = (error as? CustomizationError)?.message ?? "\(error)"
                progress.emit(.helperError(message))
                throw CustomizationError(message, task: task)
            }
            progress.emit(.taskEnd(task))
        }
        if state.rootOpen {
            state.rootOpen = false
            do {
                try editor.closeRoot()
            } catch {
                let message = "closing the root filesystem: " + ((error as? CustomizationError)?.message ?? "\(error)")
                progress.emit(.helperError(message))
                throw CustomizationError(message, task: plan.tasks.last)
            }
        }
    }

    private func perform(_ task: CustomizationTask, on editor: any DiskEditor, state: RunState) throws {
        switch task {
        case .fixPartitionTable: try fixPartitionTable(editor)
        case .filesystemResizeUnmounted: try resizeFilesystem(editor)
        case .addSwap: try addSwap(editor, state)
        case .assignHostname: try assignHostname(editor, state)
        case .changeMachineId: try changeMachineId(editor, state)
        case .changePassword: try changePassword(editor, state)
        case .deleteSSHKeys: try deleteSSHKeys(editor, state)
        }
    }

    // MARK: Partitions

    /// The new layout FixPartitionTable makes: the partition to grow and its new end, and the
    /// swap partition to add.
    struct Layout: Equatable {
        var grow: (number: Int, endSector: UInt64)?
        var swap: (number: Int, start: UInt64, sectors: UInt64)?
        static func == (a: Layout, b: Layout) -> Bool {
            a.grow?.number == b.grow?.number && a.grow?.endSector == b.grow?.endSector && a.swap?.number == b.swap?.number
                && a.swap?.start == b.swap?.start && a.swap?.sectors == b.swap?.sectors
        }
    }

    /// The last sector a partition may end on: the last usable one (GPT keeps 33 sectors for
    /// the backup header and entries), rounded down so that the next would start on a MiB
    /// boundary. MBR entries hold 32-bit sectors.
    static func lastAlignedSector(_ table: PartitionTable) throws -> UInt64 {
        var usableEnd = table.label == .gpt ? table.diskSectors &- 34 : table.diskSectors &- 1
        if table.label == .msdos { usableEnd = min(usableEnd, UInt64(UInt32.max)) }
        guard table.diskSectors > 2 * alignment, usableEnd < table.diskSectors else {
            throw CustomizationError("the disk is too small (\(table.diskSectors) sectors)")
        }
        return (usableEnd + 1) / alignment * alignment - 1
    }

    /// The partition FixPartitionTable grows: the last one on the disk (by start sector), not
    /// counting the swap partition of the plan.
    static func partitionToGrow(_ table: PartitionTable, swap: SwapRequest?) throws -> PartitionTable.Partition {
        let candidates = table.partitions.filter { $0.number != swap?.partition }
        guard let last = candidates.max(by: { $0.start < $1.start }) else {
            throw CustomizationError("the disk has no partitions")
        }
        return last
    }

    /// Decides FixPartitionTable's changes for `table` (pure, for tests).
    static func plannedLayout(_ table: PartitionTable, swap: SwapRequest?) throws -> Layout {
        for partition in table.partitions where partition.sectors == 0 || partition.start + partition.sectors > table.diskSectors {
            throw CustomizationError("partition \(partition.number) does not fit on the disk")
        }
        let last = try partitionToGrow(table, swap: swap)
        if table.label == .msdos && last.number > 4 {
            throw CustomizationError("the last partition (\(last.number)) is a logical partition: growing it is not supported")
        }
        let lastEnd = last.start + last.sectors - 1
        var end = try lastAlignedSector(table)
        var layout = Layout()
        if let swap {
            guard swap.mebibytes > 0 else { throw CustomizationError("SWAP size must be positive") }
            let maxNumber = table.label == .msdos ? 4 : 128
            guard (1...maxNumber).contains(swap.partition) else {
                throw CustomizationError(
                    "swap partition number \(swap.partition) is not supported on a \(table.label.rawValue) label (1-\(maxNumber))")
            }
            let sectors = swap.mebibytes * alignment
            guard sectors <= end + 1 else { throw CustomizationError("the disk has no room for \(swap.mebibytes) MiB of swap") }
            let start = end + 1 - sectors
            if let existing = table.partitions.first(where: { $0.number == swap.partition }) {
                // A second run over the same disk: fine if it is the swap partition we would make.
                guard existing.start == start && existing.sectors == sectors else {
                    throw CustomizationError("partition \(swap.partition) already exists")
                }
            } else {
                layout.swap = (swap.partition, start, sectors)
            }
            guard start > lastEnd else {
                throw CustomizationError(
                    "no room for \(swap.mebibytes) MiB of swap after partition \(last.number) (it ends at sector \(lastEnd))")
            }
            end = start - 1
        }
        if end > lastEnd { layout.grow = (last.number, end) }
        return layout
    }

    private func fixPartitionTable(_ editor: any DiskEditor) throws {
        let table = try editor.partitionTable()
        let layout = try TaskRunner.plannedLayout(table, swap: plan.swap)
        if let grow = layout.grow {
            progress.emit(.info("Growing partition \(grow.number) to end at sector \(grow.endSector)"))
            try editor.resizePartition(grow.number, endSector: grow.endSector)
        }
        if let swap = layout.swap {
            progress.emit(.info("Adding swap partition \(swap.number) (\(swap.sectors / TaskRunner.alignment) MiB)"))
            try editor.addPartition(swap.number, start: swap.start, sectors: swap.sectors, swap: true)
        }
        if layout.grow == nil && layout.swap == nil {
            progress.emit(.info("The partition table needs no change"))
        }
    }

    private func resizeFilesystem(_ editor: any DiskEditor) throws {
        let table = try editor.partitionTable()
        let partition = try TaskRunner.partitionToGrow(table, swap: plan.swap)
        let type = try editor.filesystemType(partition: partition.number)
        guard let type, ["ext2", "ext3", "ext4"].contains(type) else {
            progress.emit(.warning("Not growing the filesystem on partition \(partition.number): \(type ?? "unknown type")"))
            return
        }
        try editor.growFilesystem(partition: partition.number)
    }

    /// The root partition: ROOT_PARTITION, or the last partition (by start) holding a Linux
    /// root filesystem type.
    static let rootFilesystemTypes: Set<String> = ["ext2", "ext3", "ext4", "xfs", "btrfs"]

    static func findRoot(_ editor: any DiskEditor, plan: CustomizationPlan) throws -> Int {
        let table = try editor.partitionTable()
        if let number = plan.rootPartition {
            guard table.partitions.contains(where: { $0.number == number }) else {
                throw CustomizationError("ROOT_PARTITION \(number) does not exist")
            }
            return number
        }
        var found: PartitionTable.Partition? = nil
        for partition in table.partitions.sorted(by: { $0.start < $1.start }) where partition.number != plan.swap?.partition {
            if let type = try editor.filesystemType(partition: partition.number), rootFilesystemTypes.contains(type) {
                found = partition
            }
        }
        guard let found else { throw CustomizationError("no Linux root filesystem found (set ROOT_PARTITION)") }
        return found.number
    }

    private func openRoot(_ editor: any DiskEditor, _ state: RunState) throws {
        guard !state.rootOpen else { return }
        let root = try state.root ?? TaskRunner.findRoot(editor, plan: plan)
        state.root = root
        try editor.openRoot(partition: root)
        state.rootOpen = true
    }

    // MARK: Files

    static let regularFile: UInt32 = 0o100000
    static let typeMask: UInt32 = 0o170000

    /// Replaces a file's contents, keeping its mode and owner; a new file gets the defaults.
    /// Refuses a path that exists but is not a regular file.
    private func replaceFile(_ editor: any DiskEditor, _ path: String, _ bytes: [UInt8], mode: UInt32, uid: UInt32 = 0, gid: UInt32 = 0) throws {
        if let info = try editor.info(path) {
            guard info.mode & TaskRunner.typeMask == TaskRunner.regularFile else {
                throw CustomizationError("\(path) is not a regular file")
            }
            try editor.writeFile(path, bytes, mode: info.mode & 0o7777, uid: info.uid, gid: info.gid)
        } else {
            try editor.writeFile(path, bytes, mode: mode, uid: uid, gid: gid)
        }
    }

    private func addSwap(_ editor: any DiskEditor, _ state: RunState) throws {
        guard let swap = plan.swap else {
            progress.emit(.info("No SWAP requested"))
            return
        }
        let table = try editor.partitionTable()
        guard table.partitions.contains(where: { $0.number == swap.partition }) else {
            throw CustomizationError("swap partition \(swap.partition) does not exist (was FixPartitionTable excluded?)")
        }
        let uuid = try editor.makeSwap(partition: swap.partition)
        try openRoot(editor, state)
        let fstab = try editor.readFile("/etc/fstab")
        let updated = GuestEdits.fstabAddingSwap(fstab, uuid: uuid)
        if updated != fstab { try replaceFile(editor, "/etc/fstab", updated, mode: 0o644) }
    }

    private func assignHostname(_ editor: any DiskEditor, _ state: RunState) throws {
        try GuestEdits.validateHostname(plan.hostname)
        try openRoot(editor, state)
        try replaceFile(editor, "/etc/hostname", GuestEdits.hostnameFile(plan.hostname), mode: 0o644)
        let hosts = try editor.readFile("/etc/hosts")
        let updated = GuestEdits.hosts(hosts, hostname: plan.hostname)
        if updated != hosts { try replaceFile(editor, "/etc/hosts", updated, mode: 0o644) }
    }

    private func changeMachineId(_ editor: any DiskEditor, _ state: RunState) throws {
        try openRoot(editor, state)
        // Empty, not removed: systemd then makes a new id at first boot.
        if let info = try editor.info("/etc/machine-id"), info.mode & TaskRunner.typeMask != TaskRunner.regularFile {
            throw CustomizationError("/etc/machine-id is not a regular file")
        }
        try editor.writeFile("/etc/machine-id", [], mode: 0o444, uid: 0, gid: 0)
        // The D-Bus copy: removed when it is a file of its own (usually a symlink to the above).
        if let info = try editor.info("/var/lib/dbus/machine-id"), info.mode & TaskRunner.typeMask == TaskRunner.regularFile {
            try editor.removeFile("/var/lib/dbus/machine-id")
        }
    }

    private func changePassword(_ editor: any DiskEditor, _ state: RunState) throws {
        try openRoot(editor, state)
        guard let passwd = try editor.readFile("/etc/passwd") else { throw CustomizationError("the image has no /etc/passwd") }
        var entries: [GuestEdits.PasswdEntry] = []
        for user in plan.users {
            guard let entry = try GuestEdits.passwdEntry(passwd, user: user) else {
                throw CustomizationError("user \(user) does not exist in /etc/passwd")
            }
            entries.append(entry)
        }
        if let hash = plan.passwordHash {
            guard let original = try editor.readFile("/etc/shadow") else { throw CustomizationError("the image has no /etc/shadow") }
            var shadow = original
            for user in plan.users {
                shadow = try GuestEdits.shadow(shadow, user: user, hash: hash, today: today)
            }
            if shadow != original { try replaceFile(editor, "/etc/shadow", shadow, mode: 0o640) }
        }
        if let keys = plan.authorizedKeys {
            for entry in entries {
                try GuestEdits.validateHome(entry.home, user: entry.name)
                guard let home = try editor.info(entry.home), home.isDirectory else {
                    throw CustomizationError("the home directory \(entry.home) of \(entry.name) does not exist")
                }
                let sshDirectory = entry.home + "/.ssh"
                if let info = try editor.info(sshDirectory) {
                    guard info.isDirectory else { throw CustomizationError("\(sshDirectory) is not a directory") }
                } else {
                    try editor.makeDirectory(sshDirectory, mode: 0o700, uid: entry.uid, gid: entry.gid)
                }
                let path = sshDirectory + "/authorized_keys"
                let existing = try editor.readFile(path)
                if let updated = try GuestEdits.authorizedKeys(existing, adding: keys) {
                    if let info = try editor.info(path), info.mode & TaskRunner.typeMask != TaskRunner.regularFile {
                        throw CustomizationError("\(path) is not a regular file")
                    }
                    try editor.writeFile(path, updated, mode: 0o600, uid: entry.uid, gid: entry.gid)
                }
            }
        }
    }

    private func deleteSSHKeys(_ editor: any DiskEditor, _ state: RunState) throws {
        try openRoot(editor, state)
        for name in GuestEdits.sshHostKeyNames(try editor.listDirectory("/etc/ssh")) {
            try editor.removeFile("/etc/ssh/" + name)
        }
    }
}
