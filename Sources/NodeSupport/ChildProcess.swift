// Running one external program: posix_spawn with an argv array (never a shell), a clean
// environment, its own process group, pipes for stdin/stdout/stderr, a time limit and caps on
// what it may print. snf-image's sandbox runs its tools through it, snf-network runs ip, nft and
// the DHCP and RA servers.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// What a program did: its exit status and what it printed.
public struct ToolOutput: Sendable, Equatable {
    /// The exit code, or nil when a signal ended it (see `signal`).
    public var exitCode: Int32?
    /// The signal that ended it, if any.
    public var signal: Int32?
    public var stdout: [UInt8]
    public var stderr: [UInt8]

    public var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
    public var stderrText: String { String(decoding: stderr, as: UTF8.self) }
    /// The last few non-empty stderr lines, for error messages.
    public var stderrTail: String {
        let lines = stderrText.split(separator: "\n", omittingEmptySubsequences: true)
        return lines.suffix(10).joined(separator: "\n")
    }
}

/// Why a child process could not be run to its end (not a non-zero exit: that is in ToolOutput).
public struct ChildProcessError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public enum ChildProcess {
    /// The environment every tool gets: nothing inherited from the caller.
    public static let cleanEnvironment = [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "LANG=C", "HOME=/", "DEBUGFS_PAGER=__none__",
        "E2FSPROGS_LIBMAGIC_SUPPRESS=1",
    ]

    /// Directories where tools are looked for, in order.
    public static let toolDirectories = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]

    /// The absolute path of the executable `name` in the system directories.
    public static func locate(_ name: String) throws -> String {
        guard !name.contains("/") else { throw ChildProcessError("tool names are bare names, not paths: \(name)") }
        for dir in toolDirectories {
            let path = dir + "/" + name
            var st = stat()
            if stat(path, &st) == 0 && st.st_mode & S_IFMT == S_IFREG && access(path, X_OK) == 0 { return path }
        }
        throw ChildProcessError("\(name) is not installed (looked in \(toolDirectories.joined(separator: ", ")))")
    }

    // glibc functions Swift's Glibc module does not show (they need _GNU_SOURCE), looked up once.
    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let pipe2Function: Pipe2? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "pipe2").map {
        unsafeBitCast($0, to: Pipe2.self)
    }
    /// posix_spawn_file_actions_addclosefrom_np (glibc 2.34): the child closes every descriptor
    /// from 3 up, so nothing another thread opened without O_CLOEXEC leaks into a tool.
    private static let closeFromAction: CloseFrom? = dlsym(
        UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np"
    ).map { unsafeBitCast($0, to: CloseFrom.self) }

    /// A close-on-exec pipe (pipe2 when available, else pipe + FD_CLOEXEC).
    private static func makePipe(_ fds: inout [Int32]) -> Int32 {
        if let pipe2Function { return fds.withUnsafeMutableBufferPointer { pipe2Function($0.baseAddress!, O_CLOEXEC) } }
        guard pipe(&fds) == 0 else { return -1 }
        for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        return 0
    }

    public static func monotonicNanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func errnoText(_ code: Int32 = errno) -> String { String(cString: strerror(code)) }

    /// Runs `executable` (an absolute path) with `arguments` (argv[1...]); `what` names it in
    /// errors. Throws when it cannot start, runs longer than `timeoutSeconds` (its whole process
    /// group is killed) or prints more than `outputLimit` bytes on stdout or stderr. A non-zero
    /// exit is not an error here: the caller decides.
    /// `environment` replaces `cleanEnvironment` when given. With `reapGroup` (the default) the
    /// child's whole process group is killed once it exited, so nothing it forked outlives the
    /// call; a daemon that detaches with setsid (dnsmasq, radvd) is in a group of its own anyway.
    public static func run(
        _ executable: String, _ arguments: [String], stdin input: [UInt8] = [], timeoutSeconds: Int,
        outputLimit: Int, what: String, environment: [String]? = nil, reapGroup: Bool = true
    ) throws -> ToolOutput {
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        var inPair: [Int32] = [-1, -1]
        guard makePipe(&outPipe) == 0 else { throw ChildProcessError("pipe: \(errnoText())") }
        guard makePipe(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            throw ChildProcessError("pipe: \(errnoText())")
        }
        // stdin is a socket so that writing to a program that exited fails with EPIPE instead of
        // raising SIGPIPE in this process (send with MSG_NOSIGNAL).
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &inPair) == 0 else {
            for fd in outPipe + errPipe { close(fd) }
            throw ChildProcessError("socketpair: \(errnoText())")
        }
        var parentFDs: [Int32] = [inPair[0], outPipe[0], errPipe[0]]
        let childFDs: [Int32] = [inPair[1], outPipe[1], errPipe[1]]
        defer { for fd in parentFDs where fd >= 0 { close(fd) } }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for (target, fd) in childFDs.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, Int32(target)) }
        if let closeFrom = closeFromAction { _ = closeFrom(&actions, 3) }

        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attr, 0)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attr, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM, SIGXFSZ] {
            sigaddset(&defaults, sig)
        }
        posix_spawnattr_setsigdefault(&attr, &defaults)

        let argv = ([executable] + arguments).map { strdup($0) }
        let envp = (environment ?? cleanEnvironment).map { strdup($0) }
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let spawned = (argv + [nil]).withUnsafeBufferPointer { argvBuffer in
            (envp + [nil]).withUnsafeBufferPointer { envBuffer in
                posix_spawn(&pid, executable, &actions, &attr, argvBuffer.baseAddress!, envBuffer.baseAddress!)
            }
        }
        for fd in childFDs { close(fd) }
        guard spawned == 0 else { throw ChildProcessError("cannot start \(what): \(errnoText(spawned))") }

        for fd in parentFDs { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        if input.isEmpty {
            close(parentFDs[0])
            parentFDs[0] = -1
        }

        let deadline = monotonicNanoseconds() + UInt64(max(timeoutSeconds, 1)) * 1_000_000_000
        var written = 0
        var outputs: [[UInt8]] = [[], []]
        var failure: String? = nil
        var buffer = [UInt8](repeating: 0, count: 65536)

        func killGroup() {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }

        io: while parentFDs[1] >= 0 || parentFDs[2] >= 0 {
            let now = monotonicNanoseconds()
            if now >= deadline {
                failure = "\(what) did not finish in \(timeoutSeconds) s"
                break io
            }
            var fds: [pollfd] = []
            var slots: [Int] = []
            if parentFDs[0] >= 0 {
                fds.append(pollfd(fd: parentFDs[0], events: Int16(POLLOUT), revents: 0))
                slots.append(0)
            }
            for slot in 1...2 where parentFDs[slot] >= 0 {
                fds.append(pollfd(fd: parentFDs[slot], events: Int16(POLLIN), revents: 0))
                slots.append(slot)
            }
            let waitMs = Int32(min((deadline - now) / 1_000_000 + 1, 1000))
            let ready = poll(&fds, nfds_t(fds.count), waitMs)
            if ready < 0 {
                if errno == EINTR { continue }
                failure = "poll: \(errnoText())"
                break io
            }
            for (index, entry) in fds.enumerated() where entry.revents != 0 {
                let slot = slots[index]
                if slot == 0 {
                    let count = input.withUnsafeBytes { raw in
                        send(entry.fd, raw.baseAddress! + written, raw.count - written, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
                    }
                    if count > 0 { written += count }
                    if (count < 0 && errno != EAGAIN && errno != EINTR) || written == input.count {
                        close(parentFDs[0])
                        parentFDs[0] = -1
                    }
                    continue
                }
                let count = read(entry.fd, &buffer, buffer.count)
                if count > 0 {
                    outputs[slot - 1].append(contentsOf: buffer[0..<count])
                    if outputs[slot - 1].count > outputLimit {
                        failure = "\(what) printed more than \(outputLimit) bytes"
                        break io
                    }
                } else if count == 0 || (errno != EAGAIN && errno != EINTR) {
                    close(parentFDs[slot])
                    parentFDs[slot] = -1
                }
            }
        }

        // Both outputs are closed (or we gave up): wait for the exit, still within the deadline.
        var status: Int32 = 0
        if failure == nil {
            while true {
                // Seen but not reaped yet, so the group id cannot be reused before the kill below.
                var info = siginfo_t()
                let result = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
                if result == 0 && info._sifields._sigchld.si_pid == pid { break }
                if result < 0 && errno != EINTR {
                    failure = "waitpid: \(errnoText())"
                    break
                }
                if monotonicNanoseconds() >= deadline {
                    failure = "\(what) did not finish in \(timeoutSeconds) s"
                    break
                }
                usleep(2000)
            }
            if failure == nil {
                // Nothing of the group may outlive the call (a tool that forked into the background).
                if reapGroup { kill(-pid, SIGKILL) }
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                let signal = status & 0x7f
                return ToolOutput(
                    exitCode: signal == 0 ? (status >> 8) & 0xff : nil, signal: signal == 0 ? nil : signal,
                    stdout: outputs[0], stderr: outputs[1])
            }
        }
        killGroup()
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        throw ChildProcessError(failure!)
    }
}
