import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The daemon's control protocol, client side.
///
/// One request per connection: a line of space-separated words (`attach NAME`, `detach NAME`,
/// `snapshot NAME SNAPSHOT`, `grow NAME BYTES`, `open NAME exclusive|shared`, `close NAME`,
/// `status`), answered by `ok` and payload lines, or `error <code> <one sentence>`. Names are
/// validated ``BlockStore/MapName``s, so they never hold spaces or newlines.
public struct ControlClient: Sendable {
    public let config: NodeConfig
    /// The executable to start as the daemon (`snf-store`); `/proc/self/exe` by default.
    public var executable: String

    public init(config: NodeConfig, executable: String = "/proc/self/exe") {
        self.config = config
        self.executable = executable
    }

    /// A reply: its payload lines, or the daemon's error.
    public enum Reply: Sendable, Equatable {
        case ok([String])
        case error(code: String, message: String)

        /// The payload; the daemon's error as a ``StoreError`` with its code's category (bad input,
        /// busy, or any other failure).
        public func payload() throws -> [String] {
            switch self {
            case .ok(let lines): return lines
            case .error(let code, let message):
                let badInput = ["invalidName", "invalidArgument", "notFound", "alreadyExists", "wrongKind", "outOfRange"].contains(code)
                throw StoreError(badInput ? .invalidArgument : code == "busy" ? .busy : .io, message)
            }
        }
    }

    /// Sends `words` to a running daemon; nil when none is running.
    public func sendIfRunning(_ words: [String]) throws -> Reply? {
        guard let fd = try UnixSocket.connect(to: config.controlSocket) else { return nil }
        defer { close(fd) }
        return try exchange(fd, words)
    }

    /// Sends a request about volume `name` (`detach`): to the running daemon; when none runs but
    /// `name` is still recorded as attached (the daemon was killed), starts one, which serves the
    /// volume again from that record and then handles the request, so that its loop device, FUSE
    /// mount and record go away instead of coming back at the next start. Nil when neither.
    public func sendForAttached(_ words: [String], name: String) throws -> Reply? {
        if let reply = try sendIfRunning(words) { return reply }
        guard access(config.attachedDirectory + "/" + name, F_OK) == 0 else { return nil }
        return try send(words)
    }

    /// Sends `words`, starting the daemon first when none is running.
    public func send(_ words: [String]) throws -> Reply {
        var lastProblem = "it did not start"
        for attempt in 0..<3 {
            if let fd = try UnixSocket.connect(to: config.controlSocket) {
                defer { close(fd) }
                do {
                    if let reply = try exchange(fd, words) { return reply }
                    lastProblem = "it closed the connection without answering"
                } catch let error as ServerError {
                    lastProblem = error.message
                }
                // A daemon that was exiting when we connected: start a new one.
            }
            try startDaemon()
            try waitForDaemon(timeoutSeconds: attempt == 0 ? 15 : 30)
        }
        throw ServerError("the snf-store daemon for \(config.run) is not answering (\(lastProblem)); see \(config.logFile)")
    }

    private func exchange(_ fd: Int32, _ words: [String]) throws -> Reply? {
        let request = Array((words.joined(separator: " ") + "\n").utf8)
        guard request.withUnsafeBytes({ UnixSocket.sendAll(fd, $0) }) else { return nil }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == ECONNRESET { return nil }
                throw ServerError.errno("read the reply of the daemon at", config.controlSocket)
            }
            if n == 0 { break }
            bytes += chunk[0..<n]
        }
        guard !bytes.isEmpty else { return nil }
        var lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        guard let first = lines.first else { return nil }
        if first == "ok" { return .ok(Array(lines.dropFirst())) }
        if first.hasPrefix("error ") {
            let rest = first.dropFirst(6)
            let parts = rest.split(separator: " ", maxSplits: 1)
            return .error(code: String(parts.first ?? "io"), message: parts.count > 1 ? String(parts[1]) : "")
        }
        throw ServerError("the daemon at \(config.controlSocket) sent an unexpected reply: \(first.debugDescription)")
    }

    /// Starts `snf-store serve` in its own session, its output appended to the log file.
    func startDaemon() throws {
        try makeRunDirectory(config.run)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, config.logFile, O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // POSIX_SPAWN_SETSID (glibc): its own session, so it outlives the caller's job and terminal.
        posix_spawnattr_setflags(&attributes, 0x80)
        let arguments = ["snf-store", "serve", "--root", config.root, "--run", config.run]
        let environment = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"]
        var argv = arguments.map { strdup($0) } + [nil]
        var envp = environment.map { strdup($0) } + [nil]
        defer {
            for p in argv { free(p) }
            for p in envp { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, &argv, &envp)
        guard rc == 0 else {
            throw ServerError("cannot start the snf-store daemon (\(executable)): \(String(cString: strerror(rc)))")
        }
        // Reap it if it exits at once (another daemon already runs); otherwise it is reparented to
        // init when we exit.
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    private func waitForDaemon(timeoutSeconds: Int) throws {
        for _ in 0..<(timeoutSeconds * 50) {
            if let fd = try UnixSocket.connect(to: config.controlSocket) {
                close(fd)
                return
            }
            usleep(20_000)
        }
    }
}

/// Creates the runtime directory (and its parents) with mode 0700.
func makeRunDirectory(_ path: String) throws {
    var prefix = ""
    for part in path.split(separator: "/") {
        prefix += "/" + part
        if mkdir(prefix, 0o700) != 0 && errno != EEXIST {
            throw ServerError.errno("create the directory", prefix)
        }
    }
}
