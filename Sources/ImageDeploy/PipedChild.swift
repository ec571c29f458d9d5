#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A child process started with `posix_spawnp` from an argument vector (never a shell), its
/// standard output on a pipe we read, standard input `/dev/null`, standard error inherited (it
/// goes to the OS log, before our own last line).
final class PipedChild {
    let pid: pid_t
    /// The read end of the child's standard output.
    private(set) var output: Int32
    let name: String
    private var reaped = false

    init(_ arguments: [String], environment: [String: String]? = nil) throws {
        precondition(!arguments.isEmpty)
        name = arguments[0]
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw DeployError.errno("create a pipe for", name) }
        // Close-on-exec: the child gets its end through dup2 only.
        _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
        _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // The child gets default signal handling (we ignore SIGPIPE; curl should not).
        var defaults = sigset_t()
        sigemptyset(&defaults)
        sigaddset(&defaults, SIGPIPE)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // And no blocked signals, whatever our mask (it is inherited across exec).
        var unblocked = sigset_t()
        sigemptyset(&unblocked)
        posix_spawnattr_setsigmask(&attributes, &unblocked)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))
        var argv = arguments.map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var spawned: pid_t = 0
        let rc: Int32
        if let environment {
            var envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
            defer { for p in envp { free(p) } }
            rc = posix_spawnp(&spawned, name, &actions, &attributes, &argv, &envp)
        } else {
            rc = posix_spawnp(&spawned, name, &actions, &attributes, &argv, environ)
        }
        close(fds[1])
        guard rc == 0 else {
            close(fds[0])
            throw DeployError.failure("cannot run \(name): \(String(cString: strerror(rc)))")
        }
        pid = spawned
        output = fds[0]
    }

    /// Reads up to `buffer.count` bytes, filling the buffer unless the output ends first.
    func readFull(_ buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = read(output, buffer.baseAddress! + done, buffer.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw DeployError.errno("read the output of", name)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Everything the child writes, up to `limit` bytes (more is an error).
    func readAll(limit: Int) throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = try chunk.withUnsafeMutableBytes { try readFull($0) }
            bytes += chunk[0..<n]
            guard bytes.count <= limit else {
                throw DeployError.failure("\(name) wrote more than \(limit) bytes")
            }
            if n < chunk.count { return bytes }
        }
    }

    /// Closes our end of the pipe and waits; returns the exit status (128+N for signal N).
    @discardableResult
    func wait() -> Int32 {
        if output >= 0 {
            close(output)
            output = -1
        }
        guard !reaped else { return -1 }
        reaped = true
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Kills the child (it may be blocked writing to us) and reaps it.
    func terminate() {
        if !reaped { kill(pid, SIGKILL) }
        wait()
    }

    deinit { if !reaped { terminate() } }
}

/// Runs `arguments` and returns its standard output; a non-zero exit is a failure naming `what`.
func runCapturingOutput(_ arguments: [String], what: String, limit: Int = 1 << 20) throws -> [UInt8] {
    let child = try PipedChild(arguments)
    let bytes: [UInt8]
    do {
        bytes = try child.readAll(limit: limit)
    } catch {
        child.terminate()
        throw error
    }
    let status = child.wait()
    guard status == 0 else { throw DeployError.failure("\(what) failed (\(arguments[0]) exited with status \(status))") }
    return bytes
}

/// curl's options for every request: fail on HTTP errors, quiet but show errors, follow
/// redirects, and only ever speak HTTP or HTTPS (also after a redirect).
let curlBaseArguments = ["curl", "-fsSL", "--proto", "=http,https", "--proto-redir", "=http,https"]
