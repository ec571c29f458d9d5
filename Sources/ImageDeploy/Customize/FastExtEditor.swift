// The fast customization path: ext2/3/4 root filesystems on msdos/GPT disks, edited with
// util-linux and e2fsprogs tools that run in the Sandbox, each on a private device node of a
// loop device over the disk or over one partition. Nothing is mounted: file edits go through
// debugfs, which resolves paths (and symlinks) inside the image's filesystem.

#if canImport(Glibc)
import NodeSupport
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import FoundationEssentials

public final class FastExtEditor: DiskEditor {
    public let name = "fast-ext"
    /// The disk: a block device or a regular file.
    public let disk: String
    public let sandbox: Sandbox
    private let readOnly: Bool
    /// Size of the disk in 512-byte sectors.
    public let diskSectors: UInt64
    /// The sandbox's node for the whole disk.
    private var diskNode: String? = nil
    private var diskLoop: String? = nil
    /// Partition number → (loop device, node, start, sectors).
    private var partitionNodes: [Int: (loop: String, node: String, start: UInt64, sectors: UInt64)] = [:]
    private var cachedTable: PartitionTable? = nil
    /// The partition whose filesystem file edits go to (openRoot).
    private var root: Int? = nil
    /// Partitions e2fsck has checked in this session.
    private var checked: Set<Int> = []
    private var closed = false

    /// GPT type of Linux swap.
    static let gptSwapType = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"

    /// Opens `disk` for editing; tools run as `sandboxUser`, each for at most `timeoutSeconds`.
    public init(disk: String, sandboxUser: String = "nobody", timeoutSeconds: Int = 120, readOnly: Bool = false) throws {
        self.disk = disk
        self.readOnly = readOnly
        var st = stat()
        guard stat(disk, &st) == 0 else { throw CustomizationError("cannot stat \(disk): \(FastProcess.errnoText())") }
        let kind = st.st_mode & S_IFMT
        guard kind == S_IFREG || kind == S_IFBLK else { throw CustomizationError("\(disk) is not a block device or a regular file") }
        let fd = open(disk, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CustomizationError("cannot open \(disk): \(FastProcess.errnoText())") }
        let size = lseek(fd, 0, SEEK_END)
        Glibc.close(fd)
        guard size > 0 else { throw CustomizationError("\(disk) is empty") }
        diskSectors = UInt64(size) / 512
        sandbox = try Sandbox(user: sandboxUser, timeoutSeconds: timeoutSeconds)
        do {
            let loop = try sandbox.attachLoop(file: disk, size: diskSectors * 512, readOnly: readOnly)
            diskLoop = loop
            diskNode = try sandbox.makeNode(of: loop, name: "disk")
        } catch {
            try? sandbox.close()
            throw error
        }
    }

    deinit { try? close() }

    /// Whether the fast path can customize `disk`: an msdos or GPT label and a root filesystem
    /// (ROOT_PARTITION, or the last Linux one) of type ext2, ext3 or ext4. Works read-only.
    public static func canHandle(
        disk: String, rootPartition: Int? = nil, sandboxUser: String = "nobody", timeoutSeconds: Int = 120
    ) throws -> Bool {
        let editor = try FastExtEditor(disk: disk, sandboxUser: sandboxUser, timeoutSeconds: timeoutSeconds, readOnly: true)
        defer { try? editor.close() }
        return try editor.canCustomize(rootPartition: rootPartition)
    }

    /// The same check on this editor's disk (reads only), so that a caller that will customize
    /// with this editor sets up its sandbox and loop devices once.
    public func canCustomize(rootPartition: Int?) throws -> Bool {
        guard (try? partitionTable()) != nil else { return false }
        let plan = CustomizationPlan(tasks: [], hostname: "", rootPartition: rootPartition)
        guard let root = try? TaskRunner.findRoot(self, plan: plan) else { return false }
        guard let type = try filesystemType(partition: root) else { return false }
        return ["ext2", "ext3", "ext4"].contains(type)
    }

    // MARK: Tools

    private func node() throws -> String {
        guard !closed, let diskNode else { throw CustomizationError("the fast-ext editor is closed") }
        return diskNode
    }

    /// Runs a tool in the sandbox; throws with its stderr unless it exits with one of `accept`.
    @discardableResult
    private func tool(_ name: String, _ arguments: [String], stdin: [UInt8] = [], accept: Set<Int32> = [0]) throws -> ToolOutput {
        let output = try sandbox.run(name, arguments, stdin: stdin)
        guard let code = output.exitCode, accept.contains(code) else {
            let status = output.exitCode.map { "exit status \($0)" } ?? "signal \(output.signal ?? 0)"
            throw CustomizationError("\(name) failed (\(status)): \(output.stderrTail)")
        }
        return output
    }

    /// The sandbox node of partition `number` (a loop device over exactly that partition),
    /// made on first use and again after the partition changed.
    private func partitionNode(_ number: Int) throws -> String {
        let table = try partitionTable()
        guard let partition = table.partitions.first(where: { $0.number == number }) else {
            throw CustomizationError("partition \(number) does not exist")
        }
        if let existing = partitionNodes[number] {
            if existing.start == partition.start && existing.sectors == partition.sectors { return existing.node }
            try dropPartitionNode(number)
        }
        let loop = try sandbox.attachLoop(file: disk, offset: partition.start * 512, size: partition.sectors * 512, readOnly: readOnly)
        do {
            let node = try sandbox.makeNode(of: loop, name: "part\(number)")
            partitionNodes[number] = (loop, node, partition.start, partition.sectors)
            return node
        } catch {
            try? sandbox.detachLoop(loop)
            throw error
        }
    }

    private func dropPartitionNode(_ number: Int) throws {
        guard let existing = partitionNodes.removeValue(forKey: number) else { return }
        sandbox.removePath(existing.node)
        try sandbox.detachLoop(existing.loop)
    }

    // MARK: Unmounted phase

    private struct SfdiskDump: Decodable {
        struct Table: Decodable {
            var label: String
            var partitions: [Entry]?
            var sectorsize: Int?
        }
        struct Entry: Decodable {
            var node: String
            var start: UInt64
            var size: UInt64
            var type: String
        }
        var partitiontable: Table
    }

    public func partitionTable() throws -> PartitionTable {
        if let cachedTable { return cachedTable }
        let node = try node()
        let output = try tool("sfdisk", ["--json", node])
        let dump: SfdiskDump
        do {
            dump = try JSONDecoder().decode(SfdiskDump.self, from: Data(output.stdout))
        } catch {
            throw CustomizationError("cannot parse sfdisk --json output: \(error)")
        }
        guard let label = PartitionTable.Label(rawValue: dump.partitiontable.label) else {
            throw CustomizationError("unsupported partition table label \(dump.partitiontable.label) (only msdos and gpt)")
        }
        if let size = dump.partitiontable.sectorsize, size != 512 {
            throw CustomizationError("unsupported sector size \(size)")
        }
        var partitions: [PartitionTable.Partition] = []
        for entry in dump.partitiontable.partitions ?? [] {
            guard entry.node.hasPrefix(node) else { throw CustomizationError("unexpected partition node \(entry.node)") }
            var suffix = Substring(entry.node.dropFirst(node.count))
            if suffix.hasPrefix("p") { suffix = suffix.dropFirst() }
            guard let number = Int(suffix), number > 0 else { throw CustomizationError("unexpected partition node \(entry.node)") }
            guard entry.size > 0, entry.start.addingReportingOverflow(entry.size).partialValue <= diskSectors,
                !entry.start.addingReportingOverflow(entry.size).overflow
            else {
                throw CustomizationError("partition \(number) does not fit on the disk")
            }
            partitions.append(.init(number: number, start: entry.start, sectors: entry.size, type: entry.type.lowercased()))
        }
        let table = PartitionTable(label: label, partitions: partitions, diskSectors: diskSectors)
        cachedTable = table
        return table
    }

    /// sfdisk options for changing the table: no questions, no kernel rereads (the sandbox may
    /// not, and the node is private anyway), no signature wiping.
    private static let sfdiskWrite = ["--force", "--no-reread", "--no-tell-kernel", "--wipe", "never", "--wipe-partitions", "never"]

    public func resizePartition(_ number: Int, endSector: UInt64) throws {
        let table = try partitionTable()
        guard let partition = table.partitions.first(where: { $0.number == number }) else {
            throw CustomizationError("partition \(number) does not exist")
        }
        guard endSector >= partition.start, endSector < diskSectors else {
            throw CustomizationError("partition \(number) cannot end at sector \(endSector)")
        }
        let node = try node()
        try dropPartitionNode(number)
        cachedTable = nil
        if table.label == .gpt {
            try tool("sfdisk", ["--relocate", "gpt-bak-std", "--no-reread", "--no-tell-kernel", node])
        }
        let script = "\(partition.start),\(endSector - partition.start + 1)\n"
        try tool("sfdisk", FastExtEditor.sfdiskWrite + ["-N", String(number), node], stdin: Array(script.utf8))
        let after = try partitionTable()
        guard let changed = after.partitions.first(where: { $0.number == number }),
            changed.start == partition.start, changed.start + changed.sectors - 1 == endSector
        else { throw CustomizationError("sfdisk did not resize partition \(number) as asked") }
    }

    public func addPartition(_ number: Int, start: UInt64, sectors: UInt64, swap: Bool) throws {
        let table = try partitionTable()
        guard !table.partitions.contains(where: { $0.number == number }) else {
            throw CustomizationError("partition \(number) already exists")
        }
        guard sectors > 0, start + sectors <= diskSectors else { throw CustomizationError("partition \(number) would not fit") }
        let node = try node()
        cachedTable = nil
        if table.label == .gpt {
            try tool("sfdisk", ["--relocate", "gpt-bak-std", "--no-reread", "--no-tell-kernel", node])
        }
        let type = swap ? (table.label == .gpt ? FastExtEditor.gptSwapType : "82") : (table.label == .gpt ? "0fc63daf-8483-4772-8e79-3d69d8477de4" : "83")
        let script = "\(start),\(sectors),\(type)\n"
        try tool("sfdisk", FastExtEditor.sfdiskWrite + ["-N", String(number), node], stdin: Array(script.utf8))
        let after = try partitionTable()
        guard let added = after.partitions.first(where: { $0.number == number }), added.start == start, added.sectors == sectors else {
            throw CustomizationError("sfdisk did not add partition \(number) as asked")
        }
    }

    public func filesystemType(partition number: Int) throws -> String? {
        let node = try partitionNode(number)
        // Exit 2: nothing recognised.
        let output = try tool("blkid", ["-p", "-o", "value", "-s", "TYPE", node], accept: [0, 2])
        let type = output.stdoutText.trimmingTrailingNewlines
        return output.exitCode == 0 && !type.isEmpty ? type : nil
    }

    /// e2fsck in preen mode (-f to force a full check): exit 0 (clean) or 1 (fixed) are fine.
    private func check(_ number: Int, force: Bool) throws {
        let node = try partitionNode(number)
        try tool("e2fsck", (force ? ["-f", "-p"] : ["-p"]) + [node], accept: [0, 1])
        if force { checked.insert(number) }
    }

    public func growFilesystem(partition number: Int) throws {
        try check(number, force: true)
        try tool("resize2fs", [try partitionNode(number)])
    }

    public func makeSwap(partition number: Int) throws -> String {
        let uuid = FastExtEditor.randomUUID()
        try tool("mkswap", ["-U", uuid, try partitionNode(number)])
        return uuid
    }

    static func randomUUID() -> String {
        var rng = SystemRandomNumberGenerator()
        var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &rng) }
        bytes[6] = bytes[6] & 0x0f | 0x40
        bytes[8] = bytes[8] & 0x3f | 0x80
        let hex = bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }
        return [hex[0..<4], hex[4..<6], hex[6..<8], hex[8..<10], hex[10..<16]].map { $0.joined() }.joined(separator: "-")
    }

    // MARK: Mounted phase (debugfs)

    public func openRoot(partition number: Int) throws {
        guard let type = try filesystemType(partition: number), ["ext2", "ext3", "ext4"].contains(type) else {
            throw CustomizationError("the fast path handles ext2/3/4 root filesystems only (partition \(number))")
        }
        // Replays a journal left by an unclean shutdown (debugfs writes around it otherwise).
        if !checked.contains(number) { try check(number, force: false) }
        root = number
    }

    public func closeRoot() throws {
        // Every debugfs run closed the filesystem already.
        root = nil
    }

    private func rootNode() throws -> String {
        guard let root else { throw CustomizationError("the root filesystem is not open") }
        return try partitionNode(root)
    }

    /// Checks a guest path for debugfs's command line: absolute, no empty, "." or ".."
    /// components, printable ASCII without spaces, quotes, backslashes or "#".
    static func checkPath(_ path: String) throws {
        let components = path.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        let ok =
            path.hasPrefix("/") && path.utf8.count < 4096
            && path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7f && $0 != 0x22 && $0 != 0x27 && $0 != 0x5c && $0 != 0x23 }
            && (path == "/" || components.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." })
        guard ok else { throw CustomizationError("refusing the guest path \"\(GuestEdits.printable(path))\"") }
    }

    static func split(_ path: String) -> (parent: String, name: String) {
        let slash = path.lastIndex(of: "/")!
        let parent = String(path[..<slash])
        return (parent.isEmpty ? "/" : parent, String(path[path.index(after: slash)...]))
    }

    /// Runs debugfs on the root filesystem: one request (-R), or a script of commands on stdin
    /// with -w. debugfs exits 0 even when a command fails, so anything on stderr beyond its
    /// version banner is an error, except lines `allow` accepts.
    @discardableResult
    private func debugfs(request: String? = nil, script: [String] = [], allow: (String) -> Bool = { _ in false }) throws -> ToolOutput {
        let node = try rootNode()
        let arguments: [String]
        if let request {
            arguments = ["-R", request, node]
        } else {
            guard !readOnly else { throw CustomizationError("the disk is open read-only") }
            arguments = ["-w", "-f", "-", node]
        }
        let input = script.isEmpty ? [] : Array((script.joined(separator: "\n") + "\n").utf8)
        let output = try tool("debugfs", arguments, stdin: input)
        let problems = output.stderrText.split(separator: "\n").filter { line in
            !line.hasPrefix("debugfs 1.") && !line.allSatisfy({ $0 == " " || $0 == "\t" }) && !allow(String(line))
        }
        guard problems.isEmpty else {
            throw CustomizationError("debugfs: " + problems.suffix(5).joined(separator: "; "))
        }
        return output
    }

    /// One directory entry as `ls -p` prints it.
    struct Entry: Equatable {
        var name: String
        var mode: UInt32
        var uid: UInt32
        var gid: UInt32
    }

    /// Parses `ls -p` output: `/inode/mode/uid/gid/name/size/` per entry. Names cannot hold
    /// "/", so each name ends at the next "/" even when it contains a newline.
    static func parseListing(_ bytes: [UInt8]) throws -> [Entry] {
        var entries: [Entry] = []
        var index = 0
        func field() throws -> [UInt8] {
            guard index < bytes.count else { throw CustomizationError("truncated debugfs listing") }
            let start = index
            while index < bytes.count && bytes[index] != 0x2f { index += 1 }
            guard index < bytes.count else { throw CustomizationError("truncated debugfs listing") }
            defer { index += 1 }
            return Array(bytes[start..<index])
        }
        func number(_ raw: [UInt8], radix: Int = 10) throws -> UInt32 {
            guard let value = UInt32(String(decoding: raw, as: UTF8.self), radix: radix) else {
                throw CustomizationError("malformed debugfs listing")
            }
            return value
        }
        while index < bytes.count {
            if bytes[index] == 10 {
                index += 1
                continue
            }
            guard bytes[index] == 0x2f else { throw CustomizationError("malformed debugfs listing") }
            index += 1
            _ = try field()  // inode
            let mode = try number(try field(), radix: 8)
            let uid = try number(try field())
            let gid = try number(try field())
            let name = String(decoding: try field(), as: UTF8.self)
            _ = try field()  // size, empty for directories
            guard index == bytes.count || bytes[index] == 10 else { throw CustomizationError("malformed debugfs listing") }
            entries.append(Entry(name: name, mode: mode, uid: uid, gid: gid))
        }
        return entries
    }

    /// The entries of directory `path` (following symlinks inside the image), nil if it does
    /// not exist or is not a directory.
    private func list(_ path: String) throws -> [Entry]? {
        var missing = false
        let output = try debugfs(request: "ls -p \(path)") { line in
            if line.hasSuffix("File not found by ext2_lookup ") || line.hasSuffix("File not found by ext2_lookup")
                || line.hasSuffix("Ext2 inode is not a directory ") || line.hasSuffix("Ext2 inode is not a directory")
            {
                missing = true
                return true
            }
            return false
        }
        return missing ? nil : try FastExtEditor.parseListing(output.stdout)
    }

    public func info(_ path: String) throws -> GuestFileInfo? {
        try FastExtEditor.checkPath(path)
        let (parent, name) = FastExtEditor.split(path)
        guard let entries = try list(parent) else { return nil }
        let wanted = path == "/" ? "." : name
        guard let entry = entries.first(where: { $0.name == wanted }) else { return nil }
        return GuestFileInfo(mode: entry.mode, uid: entry.uid, gid: entry.gid, isDirectory: entry.mode & 0o170000 == 0o040000)
    }

    public func readFile(_ path: String) throws -> [UInt8]? {
        guard let info = try info(path) else { return nil }
        guard info.mode & 0o170000 == 0o100000 else {
            throw CustomizationError("\(path) is not a regular file (refusing to read through a symlink)")
        }
        return try debugfs(request: "cat \(path)").stdout
    }

    public func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) throws {
        try FastExtEditor.checkPath(path)
        guard path != "/" else { throw CustomizationError("cannot write /") }
        var script: [String] = []
        if let info = try info(path) {
            guard info.mode & 0o170000 == 0o100000 else {
                throw CustomizationError("\(path) exists and is not a regular file (not writing through it)")
            }
            script.append("rm \(path)")
        } else {
            guard let parent = try info(FastExtEditor.split(path).parent), parent.isDirectory else {
                throw CustomizationError("the directory of \(path) does not exist")
            }
        }
        let input = try sandbox.makeInputFile(bytes)
        defer { sandbox.removePath(input) }
        script += [
            "write \(input) \(path)",
            "sif \(path) mode 0\(String(0o100000 | (mode & 0o7777), radix: 8))",
            "sif \(path) uid \(uid)",
            "sif \(path) gid \(gid)",
        ]
        try debugfs(script: script)
    }

    public func makeDirectory(_ path: String, mode: UInt32, uid: UInt32, gid: UInt32) throws {
        try FastExtEditor.checkPath(path)
        if let info = try info(path) {
            guard info.isDirectory else { throw CustomizationError("\(path) exists and is not a directory") }
            return
        }
        try debugfs(script: [
            "mkdir \(path)",
            "sif \(path) mode 0\(String(0o040000 | (mode & 0o7777), radix: 8))",
            "sif \(path) uid \(uid)",
            "sif \(path) gid \(gid)",
        ])
    }

    public func removeFile(_ path: String) throws {
        guard let info = try info(path) else { return }
        guard !info.isDirectory else { throw CustomizationError("\(path) is a directory") }
        try debugfs(script: ["rm \(path)"])
    }

    public func listDirectory(_ path: String) throws -> [String] {
        try FastExtEditor.checkPath(path)
        return (try list(path) ?? []).map(\.name).filter { $0 != "." && $0 != ".." }
    }

    // MARK: Cleanup

    public func close() throws {
        guard !closed else { return }
        closed = true
        root = nil
        partitionNodes.removeAll()
        diskNode = nil
        diskLoop = nil
        try sandbox.close()
    }
}

/// Opens `disk` with the fast-ext editor and runs `plan` on it.
public func customizeFast(
    disk: String, plan: CustomizationPlan, progress: any ProgressSink, sandboxUser: String = "nobody", timeoutSeconds: Int = 120
) throws {
    let editor = try FastExtEditor(disk: disk, sandboxUser: sandboxUser, timeoutSeconds: timeoutSeconds)
    do {
        try TaskRunner(plan: plan, progress: progress).run(on: editor)
    } catch {
        try? editor.close()
        throw error
    }
    try editor.close()
}
