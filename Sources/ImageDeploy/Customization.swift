// The contract between the customization plan and the two ways of carrying it out.
//
//   CustomizationPlan   what to do (pure data, from the OS parameters and image properties)
//   TaskRunner          runs a plan's tasks, in order, over any DiskEditor (shared by both paths,
//                       so both give the same result: every text edit is done here, in Swift)
//   DiskEditor          the primitives: partition table, filesystem resize, swap, file edits
//     FastExtEditor     ext2/3/4 on MBR/GPT, e2fsprogs/sfdisk run in a sandbox (unprivileged
//                       user, no network, only the disk's device node, a time limit)
//     GuestfsEditor     libguestfs: its appliance VM, every filesystem it knows
//
// Nothing here mounts a guest filesystem in the host's kernel.

/// One customization task, by its snf-image name (the `task` of progress events and the suffix
/// of `EXCLUDE_TASK_<Name>`), in the order they run.
public enum CustomizationTask: String, CaseIterable, Sendable, Codable {
    /// Grow the last partition to the end of the disk (GPT: move the backup header first); with
    /// `SWAP=<n>:<MiB>`, leave room for the swap partition at the end and create it.
    case fixPartitionTable = "FixPartitionTable"
    /// Grow the root filesystem to its partition (e2fsck -f, then resize2fs).
    case filesystemResizeUnmounted = "FilesystemResizeUnmounted"
    /// mkswap the swap partition and add it to /etc/fstab by UUID.
    case addSwap = "AddSwap"
    /// /etc/hostname and the 127.0.1.1 line of /etc/hosts.
    case assignHostname = "AssignHostname"
    /// Empty /etc/machine-id (systemd makes a new one at first boot).
    case changeMachineId = "ChangeMachineId"
    /// The password hash of every user in USERS in /etc/shadow, and their authorized_keys.
    case changePassword = "ChangePassword"
    /// Remove /etc/ssh/ssh_host_*_key{,.pub}.
    case deleteSSHKeys = "DeleteSSHKeys"

    /// Tasks that work on the unmounted disk (the rest edit files of the root filesystem).
    public var isUnmounted: Bool { self == .fixPartitionTable || self == .filesystemResizeUnmounted }
}

/// `SWAP=<partition number>:<MiB>`: a swap partition of that size at the end of the disk.
public struct SwapRequest: Sendable, Equatable, Codable {
    public var partition: Int
    public var mebibytes: UInt64
    public init(partition: Int, mebibytes: UInt64) {
        self.partition = partition
        self.mebibytes = mebibytes
    }
}

/// What a deploy does to the disk after the copy: decided on the host from the OS parameters and
/// the image properties, before any guest data is looked at.
public struct CustomizationPlan: Sendable, Equatable, Codable {
    /// The tasks to run, in order (already filtered by EXCLUDE_ALL_TASKS / EXCLUDE_TASK_*).
    public var tasks: [CustomizationTask]
    /// The instance name: the hostname written to /etc/hostname (first label) and /etc/hosts.
    public var hostname: String
    /// USERS (default ["root"]).
    public var users: [String]
    /// A crypt(3) string (`$6$salt$hash`) for every user in `users`, or nil to leave passwords.
    public var passwordHash: String?
    /// OpenSSH authorized_keys lines to add for every user in `users`, or nil.
    public var authorizedKeys: String?
    /// SWAP, or nil.
    public var swap: SwapRequest?
    /// ROOT_PARTITION, or nil to find it (the partition that holds /etc/fstab... in practice the
    /// last Linux partition).
    public var rootPartition: Int?

    public init(
        tasks: [CustomizationTask], hostname: String, users: [String] = ["root"], passwordHash: String? = nil,
        authorizedKeys: String? = nil, swap: SwapRequest? = nil, rootPartition: Int? = nil
    ) {
        self.tasks = tasks
        self.hostname = hostname
        self.users = users
        self.passwordHash = passwordHash
        self.authorizedKeys = authorizedKeys
        self.swap = swap
        self.rootPartition = rootPartition
    }
}

/// A partition table as read from the disk.
public struct PartitionTable: Sendable, Equatable {
    public enum Label: String, Sendable { case msdos = "dos", gpt }
    public struct Partition: Sendable, Equatable {
        /// 1-based partition number.
        public var number: Int
        /// First sector (512 bytes).
        public var start: UInt64
        /// Length in sectors.
        public var sectors: UInt64
        /// MBR type ("83", "82") or GPT type GUID, lower case.
        public var type: String
        public init(number: Int, start: UInt64, sectors: UInt64, type: String) {
            self.number = number
            self.start = start
            self.sectors = sectors
            self.type = type
        }
    }
    public var label: Label
    public var partitions: [Partition]
    /// Size of the disk in sectors.
    public var diskSectors: UInt64
    public init(label: Label, partitions: [Partition], diskSectors: UInt64) {
        self.label = label
        self.partitions = partitions
        self.diskSectors = diskSectors
    }
}

/// File metadata inside the guest filesystem, as lstat sees it (a symlink is not followed).
public struct GuestFileInfo: Sendable, Equatable {
    /// The whole st_mode: file type bits (S_IFMT) and permission bits.
    public var mode: UInt32
    public var uid: UInt32
    public var gid: UInt32
    public var isDirectory: Bool
    public init(mode: UInt32, uid: UInt32, gid: UInt32, isDirectory: Bool) {
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.isDirectory = isDirectory
    }
}

/// The primitives a customization path provides. Paths inside the guest are absolute and are
/// resolved inside the guest filesystem (never on the host); symlinks in the guest must not lead
/// out of it (both editors resolve them inside the image or refuse).
public protocol DiskEditor: AnyObject {
    /// A short name for logs: "fast-ext" or "libguestfs".
    var name: String { get }

    // Unmounted phase.
    func partitionTable() throws -> PartitionTable
    /// Moves the partition `number`'s end to `endSector` (inclusive); GPT: relocates the backup
    /// header to the end of the disk first.
    func resizePartition(_ number: Int, endSector: UInt64) throws
    /// Adds partition `number` over [start, start+sectors) of type Linux swap.
    func addPartition(_ number: Int, start: UInt64, sectors: UInt64, swap: Bool) throws
    /// The filesystem type on partition `number` ("ext4", "xfs", "swap"...), nil if none is known.
    func filesystemType(partition number: Int) throws -> String?
    /// Checks (e2fsck -f) and grows the filesystem on partition `number` to fill it.
    func growFilesystem(partition number: Int) throws
    /// mkswap on partition `number`; returns the new swap UUID.
    func makeSwap(partition number: Int) throws -> String

    // Mounted phase (the root filesystem, "mounted" inside the editor: never on the host).
    func openRoot(partition number: Int) throws
    /// The file's bytes, or nil when it does not exist.
    func readFile(_ path: String) throws -> [UInt8]?
    /// Creates or replaces a regular file.
    func writeFile(_ path: String, _ bytes: [UInt8], mode: UInt32, uid: UInt32, gid: UInt32) throws
    /// Creates a directory (parents must exist); no error if it exists.
    func makeDirectory(_ path: String, mode: UInt32, uid: UInt32, gid: UInt32) throws
    /// Removes a file; no error if it does not exist.
    func removeFile(_ path: String) throws
    /// Names in a directory (no "." or ".."); empty if it does not exist.
    func listDirectory(_ path: String) throws -> [String]
    func info(_ path: String) throws -> GuestFileInfo?
    /// Writes everything back (unmount / close the filesystem).
    func closeRoot() throws

    /// Releases everything (loop devices, sandbox, appliance). Safe to call twice.
    func close() throws
}

/// A customization failure: the message ends up as the last stderr line and in an `image-error`
/// or `image-helper` `error` event.
public struct CustomizationError: Error, CustomStringConvertible, Sendable {
    public var task: CustomizationTask?
    public var message: String
    public init(_ message: String, task: CustomizationTask? = nil) {
        self.message = message
        self.task = task
    }
    public var description: String { task.map { "\($0.rawValue): \(message)" } ?? message }
}

/// Where progress goes: the JSON monitor protocol (snf-image §10) and the human log.
public protocol ProgressSink: Sendable {
    func emit(_ event: ProgressEvent)
}

/// One progress message (snf-image's monitor protocol: one JSON object per line, each with
/// `type` and `timestamp`).
public enum ProgressEvent: Sendable, Equatable {
    /// `image-info`, `messages`.
    case info(String)
    /// `image-copy-progress`: `position`, `total`, `progress` (percent, 2 decimals).
    case copyProgress(position: UInt64, total: UInt64)
    /// `image-helper` `task-start`.
    case taskStart(CustomizationTask)
    /// `image-helper` `task-end`.
    case taskEnd(CustomizationTask)
    /// `image-helper` `warning`.
    case warning(String)
    /// `image-helper` `error`.
    case helperError(String)
    /// `image-error`.
    case error(String)
}
