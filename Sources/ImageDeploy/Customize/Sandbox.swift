// The sandbox the fast path's tools run in (sfdisk, blkid, e2fsck, resize2fs, mkswap, debugfs):
// they parse untrusted guest data, so each runs as an unprivileged user (default `nobody`), in
// new network/IPC/UTS/PID/mount namespaces (no network at all: only a loopback that is down),
// with no capabilities and no_new_privs, a clean environment and a time limit; then, as that
// user, bubblewrap (`bwrap`) puts it in a user namespace whose root directory holds only /usr
// (read-only), a minimal /dev, its own /proc, an empty /tmp and the private directory: no host
// file outside /usr is visible, so a tool exploited by a crafted image has nothing to read.
// The only device it can open is the one node the parent made for it: a block special file in
// the private directory (`/run/snf-image/sbx-<random>`, mode 0711, unlistable), owned by the
// sandbox user with mode 0600, for a loop device over the disk or over one partition (offset and
// size limit).
//
// Everything made here (loop devices, nodes, input files, the directory) is removed by close(),
// which the owner calls on every path (deinit too, as a safety net).

#if canImport(Glibc)
import NodeSupport
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public final class Sandbox {
    /// The unprivileged user the tools run as.
    public let user: String
    public let uid: uid_t
    public let gid: gid_t
    /// The private directory holding the device nodes and input files.
    public let directory: String
    /// Time limit of each tool run.
    public let timeoutSeconds: Int
    /// Cap on what a tool may print on stdout or on stderr.
    public var outputLimit = 4 << 20

    private let unshare: String
    private let setpriv: String
    private let bwrap: String
    private let losetup: String
    private var loops: [String] = []
    private var paths: [String] = []
    private var closed = false

    /// Where the private directories go, first usable one wins: a directory on a filesystem
    /// mounted without `nodev` (device nodes must work there), owned by root, not writable by
    /// others.
    public static let defaultBaseDirectories = ["/run/snf-image", "/var/lib/snf-image/sandbox"]

    public init(user: String = "nobody", timeoutSeconds: Int = 120, baseDirectories: [String] = Sandbox.defaultBaseDirectories) throws {
        guard geteuid() == 0 else { throw CustomizationError("the sandbox needs root (to make loop devices and device nodes)") }
        guard timeoutSeconds > 0 else { throw CustomizationError("the sandbox time limit must be positive") }
        let (uid, gid) = try Sandbox.resolve(user: user)
        guard uid != 0 else { throw CustomizationError("the sandbox user \(user) is root") }
        self.user = user
        self.uid = uid
        self.gid = gid
        self.timeoutSeconds = timeoutSeconds
        unshare = try FastProcess.locate("unshare")
        setpriv = try FastProcess.locate("setpriv")
        bwrap = try FastProcess.locate("bwrap")
        losetup = try FastProcess.locate("losetup")

        var problems: [String] = []
        var made: String? = nil
        for base in baseDirectories {
            do {
                try Sandbox.prepareBase(base)
                made = try Sandbox.makePrivateDirectory(in: base)
                break
            } catch {
                problems.append("\(error)")
            }
        }
        guard let made else {
            throw CustomizationError("no directory for the sandbox's device nodes: \(problems.joined(separator: "; "))")
        }
        directory = made
    }

    deinit { try? close() }

    /// The uid and gid of `user` (getpwnam_r).
    public static func resolve(user: String) throws -> (uid_t, gid_t) {
        var entry = passwd()
        var result: UnsafeMutablePointer<passwd>? = nil
        var buffer = [CChar](repeating: 0, count: 16384)
        let status = getpwnam_r(user, &entry, &buffer, buffer.count, &result)
        guard status == 0, result != nil else { throw CustomizationError("sandbox user \(user) does not exist") }
        return (entry.pw_uid, entry.pw_gid)
    }

    private static func prepareBase(_ base: String) throws {
        if mkdir(base, 0o711) != 0 && errno != EEXIST {
            throw CustomizationError("cannot create \(base): \(FastProcess.errnoText())")
        }
        var st = stat()
        guard lstat(base, &st) == 0 else { throw CustomizationError("cannot stat \(base): \(FastProcess.errnoText())") }
        guard st.st_mode & S_IFMT == S_IFDIR, st.st_uid == 0, st.st_mode & 0o022 == 0 else {
            throw CustomizationError("\(base) is not a directory owned by root and writable only by it")
        }
        // Not listable by others: the sandbox user must not find other sandboxes' directories.
        if st.st_mode & 0o7777 != 0o711 && chmod(base, 0o711) != 0 {
            throw CustomizationError("cannot chmod \(base) to 0711: \(FastProcess.errnoText())")
        }
        var fs = statvfs()
        guard statvfs(base, &fs) == 0 else { throw CustomizationError("cannot statvfs \(base): \(FastProcess.errnoText())") }
        guard fs.f_flag & 4 == 0 else {  // ST_NODEV (not visible in Swift's Glibc module)
            throw CustomizationError("\(base) is on a filesystem mounted nodev")
        }
    }

    private static func makePrivateDirectory(in base: String) throws -> String {
        for _ in 0..<8 {
            let name = base + "/sbx-" + randomHex(16)
            if mkdir(name, 0o700) == 0 {
                guard chmod(name, 0o711) == 0 else {
                    let text = FastProcess.errnoText()
                    rmdir(name)
                    throw CustomizationError("cannot chmod \(name): \(text)")
                }
                return name
            }
            if errno != EEXIST { throw CustomizationError("cannot create \(name): \(FastProcess.errnoText())") }
        }
        throw CustomizationError("cannot create a private directory in \(base)")
    }

    static func randomHex(_ bytes: Int) -> String {
        var rng = SystemRandomNumberGenerator()
        var text = ""
        for _ in 0..<bytes {
            let byte = UInt8.random(in: 0...255, using: &rng)
            text += String(byte >> 4, radix: 16) + String(byte & 15, radix: 16)
        }
        return text
    }

    // MARK: Devices

    /// Attaches a new loop device to `file` (a regular file or a block device), over `size`
    /// bytes from `offset` when given; returns /dev/loopN. Detached by close() or detachLoop.
    public func attachLoop(file: String, offset: UInt64? = nil, size: UInt64? = nil, readOnly: Bool = false) throws -> String {
        try checkOpen()
        var arguments = ["--find", "--show"]
        if let offset { arguments += ["--offset", String(offset)] }
        if let size { arguments += ["--sizelimit", String(size)] }
        if readOnly { arguments.append("--read-only") }
        arguments.append(file)
        let output = try FastProcess.run(
            losetup, arguments, timeoutSeconds: timeoutSeconds, outputLimit: 65536, what: "losetup")
        let device = output.stdoutText.trimmingTrailingNewlines
        guard output.exitCode == 0, device.hasPrefix("/dev/loop"), !device.contains("\n") else {
            throw CustomizationError("losetup \(arguments.joined(separator: " ")) failed: \(output.stderrTail)")
        }
        loops.append(device)
        return device
    }

    /// Detaches a loop device made by attachLoop.
    public func detachLoop(_ device: String) throws {
        guard let index = loops.firstIndex(of: device) else { return }
        loops.remove(at: index)
        let output = try FastProcess.run(
            losetup, ["-d", device], timeoutSeconds: timeoutSeconds, outputLimit: 65536, what: "losetup -d")
        guard output.exitCode == 0 else { throw CustomizationError("losetup -d \(device) failed: \(output.stderrTail)") }
    }

    /// Makes `<directory>/<name>`, a block special file for the same device as `device`, owned
    /// by the sandbox user, mode 0600; returns its path.
    public func makeNode(of device: String, name: String) throws -> String {
        try checkOpen()
        try Sandbox.checkName(name)
        var st = stat()
        guard stat(device, &st) == 0 else { throw CustomizationError("cannot stat \(device): \(FastProcess.errnoText())") }
        guard st.st_mode & S_IFMT == S_IFBLK else { throw CustomizationError("\(device) is not a block device") }
        let path = directory + "/" + name
        guard mknod(path, S_IFBLK | 0o600, st.st_rdev) == 0 else {
            throw CustomizationError("cannot make the device node \(path): \(FastProcess.errnoText())")
        }
        paths.append(path)
        guard chown(path, uid, gid) == 0, chmod(path, 0o600) == 0 else {
            throw CustomizationError("cannot hand \(path) to \(user): \(FastProcess.errnoText())")
        }
        return path
    }

    /// Makes `<directory>/in-<random>` holding `bytes`, readable only by the sandbox user, for a
    /// tool to read (debugfs `write`); returns its path. Remove it with removePath.
    public func makeInputFile(_ bytes: [UInt8]) throws -> String {
        try checkOpen()
        let path = directory + "/in-" + Sandbox.randomHex(8)
        let fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0o400)
        guard fd >= 0 else { throw CustomizationError("cannot create \(path): \(FastProcess.errnoText())") }
        paths.append(path)
        defer { Glibc.close(fd) }
        var done = 0
        while done < bytes.count {
            let count = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { throw CustomizationError("cannot write \(path): \(FastProcess.errnoText())") }
            done += count
        }
        guard fchown(fd, uid, gid) == 0 else { throw CustomizationError("cannot chown \(path): \(FastProcess.errnoText())") }
        return path
    }

    /// Removes a node or input file made here.
    public func removePath(_ path: String) {
        guard let index = paths.firstIndex(of: path) else { return }
        paths.remove(at: index)
        unlink(path)
    }

    static func checkName(_ name: String) throws {
        guard !name.isEmpty, name.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x7a) || $0 == 0x2d }) else {
            throw CustomizationError("bad sandbox node name \(name)")
        }
    }

    // MARK: Running

    /// Runs the tool `name` (found in /usr/sbin, /usr/bin, /sbin, /bin) inside the sandbox.
    /// Only throws when it cannot run, times out or prints too much; the exit status is the
    /// caller's to judge.
    public func run(_ name: String, _ arguments: [String], stdin: [UInt8] = [], outputLimit: Int? = nil) throws -> ToolOutput {
        try checkOpen()
        let tool = try FastProcess.locate(name)
        let wrapper = [
            "--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--",
            setpriv, "--reuid", String(uid), "--regid", String(gid), "--clear-groups", "--no-new-privs",
            "--inh-caps=-all", "--bounding-set=-all", "--",
            // Unprivileged from here on: a user namespace with its own root directory that holds
            // only /usr (read-only), a minimal /dev, its own /proc, an empty /tmp and the private
            // directory. No host file outside /usr is visible.
            bwrap, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/sbin", "/sbin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--dev-bind", directory, directory, "--chdir", "/",
            "--", tool,
        ]
        return try FastProcess.run(
            unshare, wrapper + arguments, stdin: stdin, timeoutSeconds: timeoutSeconds,
            outputLimit: outputLimit ?? self.outputLimit, what: name)
    }

    // MARK: Cleanup

    /// Detaches every loop device, removes every node and file and the directory. Safe to call
    /// twice; tries everything and reports the first failure.
    public func close() throws {
        guard !closed else { return }
        closed = true
        var firstError: Error? = nil
        for path in paths.reversed() { unlink(path) }
        paths.removeAll()
        for device in loops.reversed() {
            do {
                let output = try FastProcess.run(
                    losetup, ["-d", device], timeoutSeconds: timeoutSeconds, outputLimit: 65536, what: "losetup -d")
                if output.exitCode != 0 && firstError == nil {
                    firstError = CustomizationError("losetup -d \(device) failed: \(output.stderrTail)")
                }
            } catch {
                if firstError == nil { firstError = error }
            }
        }
        loops.removeAll()
        if rmdir(directory) != 0 && firstError == nil {
            firstError = CustomizationError("cannot remove \(directory): \(FastProcess.errnoText())")
        }
        if let firstError { throw firstError }
    }

    private func checkOpen() throws {
        guard !closed else { throw CustomizationError("the sandbox is closed") }
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var text = Substring(self)
        while let last = text.last, last == "\n" || last == "\r" { text = text.dropLast() }
        return String(text)
    }
}
