import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where monitor messages go: `none`, `fd:N` (an inherited descriptor), `file:/path` (appended)
/// or `unix:/path` (a stream socket we connect to).
public enum MonitorDestination: Sendable, Equatable, CustomStringConvertible {
    case none
    case fileDescriptor(Int32)
    case file(String)
    case unixSocket(String)

    public init(_ text: String) throws {
        let value = text.snfTrimmed
        if value.isEmpty || value == "none" {
            self = .none
        } else if value.hasPrefix("fd:"), let fd = Int32(value.dropFirst(3)), fd >= 0 {
            self = .fileDescriptor(fd)
        } else if value.hasPrefix("file:/"), !value.utf8.contains(0) {
            self = .file(String(value.dropFirst(5)))
        } else if value.hasPrefix("unix:/"), !value.utf8.contains(0) {
            self = .unixSocket(String(value.dropFirst(5)))
        } else {
            throw DeployError.badInput("monitor \(text.debugDescription) is not none, fd:N, file:/PATH or unix:/PATH")
        }
    }

    public var description: String {
        switch self {
        case .none: return "none"
        case .fileDescriptor(let fd): return "fd:\(fd)"
        case .file(let path): return "file:" + path
        case .unixSocket(let path): return "unix:" + path
        }
    }
}

extension ProgressEvent {
    /// The snf-image §10 JSON object (one line, no newline) at `timestamp` (Unix seconds).
    public func json(timestamp: Double) -> String {
        let time = "\"timestamp\":" + formatTimestamp(timestamp)
        func messages(_ text: String) -> String { "\"messages\":[" + JSONValue.quote(text) + "]" }
        switch self {
        case .info(let text):
            return "{\"type\":\"image-info\",\(time),\(messages(text))}"
        case .copyProgress(let position, let total):
            let percent = total == 0 ? 0 : Double(position) / Double(total) * 100
            return "{\"type\":\"image-copy-progress\",\(time),\"position\":\(position),\"total\":\(total),\"progress\":\(formatPercent(percent))}"
        case .taskStart(let task):
            return "{\"type\":\"image-helper\",\"subtype\":\"task-start\",\(time),\"task\":\(JSONValue.quote(task.rawValue))}"
        case .taskEnd(let task):
            return "{\"type\":\"image-helper\",\"subtype\":\"task-end\",\(time),\"task\":\(JSONValue.quote(task.rawValue))}"
        case .warning(let text):
            return "{\"type\":\"image-helper\",\"subtype\":\"warning\",\(time),\(messages(text))}"
        case .helperError(let text):
            return "{\"type\":\"image-helper\",\"subtype\":\"error\",\(time),\(messages(text))}"
        case .error(let text):
            return "{\"type\":\"image-error\",\(time),\(messages(text))}"
        }
    }

    /// The human line for the OS log (standard error).
    public var logLine: String {
        switch self {
        case .info(let text): return "snf-image: " + text
        case .copyProgress(let position, let total):
            let percent = total == 0 ? 0 : Double(position) / Double(total) * 100
            return "snf-image: copied \(position) of \(total) bytes (\(formatPercent(percent))%)"
        case .taskStart(let task): return "snf-image: task \(task.rawValue) started"
        case .taskEnd(let task): return "snf-image: task \(task.rawValue) finished"
        case .warning(let text): return "snf-image: warning: " + text
        case .helperError(let text): return "snf-image: customization error: " + text
        case .error(let text): return "snf-image: error: " + text
        }
    }
}

/// A percentage with exactly two decimals (`12.35`); rounds half up.
func formatPercent(_ value: Double) -> String { formatTwoDecimals(max(0, min(value, 100))) }

/// A non-negative number with exactly two decimals.
func formatTwoDecimals(_ value: Double) -> String {
    let hundredths = Int64((max(0, value) * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100)." + (fraction < 10 ? "0" : "") + "\(fraction)"
}

/// Unix seconds with microseconds (`1795423373.054264`).
func formatTimestamp(_ value: Double) -> String {
    let micro = Int64((value * 1_000_000).rounded())
    let fraction = String(micro % 1_000_000)
    return "\(micro / 1_000_000)." + String(repeating: "0", count: 6 - fraction.count) + fraction
}

/// The current time, Unix seconds.
public func unixTimeNow() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// A ``ProgressSink`` for snf-image's monitor protocol: one JSON line per event to the monitor
/// destination, and a readable line on standard error (Ganeti keeps it in the OS log).
///
/// Thread-safe. A monitor that cannot be reached or goes away never fails the deploy: the sink
/// logs one warning and stops sending (SIGPIPE is ignored; sockets use MSG_NOSIGNAL).
public final class MonitorProgressSink: ProgressSink {
    private struct State {
        var fd: Int32
        var isSocket: Bool
        var ownsDescriptor: Bool
    }
    private let state: Mutex<State>
    private let logToStandardError: Bool
    private let clock: @Sendable () -> Double

    /// Opens `destination` (a failure is logged, not thrown: the deploy goes on without it).
    public init(destination: MonitorDestination, logToStandardError: Bool = true, clock: @escaping @Sendable () -> Double = unixTimeNow) {
        signal(SIGPIPE, SIG_IGN)
        self.logToStandardError = logToStandardError
        self.clock = clock
        var initial = State(fd: -1, isSocket: false, ownsDescriptor: false)
        switch destination {
        case .none:
            break
        case .fileDescriptor(let fd):
            if fcntl(fd, F_GETFD) >= 0 {
                initial.fd = fd
            } else {
                MonitorProgressSink.warn("monitor fd:\(fd) is not open; progress goes to the log only")
            }
        case .file(let path):
            let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0o640)
            if fd >= 0 {
                initial = State(fd: fd, isSocket: false, ownsDescriptor: true)
            } else {
                MonitorProgressSink.warn("cannot open the monitor file \(path): \(String(cString: strerror(errno))); progress goes to the log only")
            }
        case .unixSocket(let path):
            switch MonitorProgressSink.connect(path) {
            case .success(let fd): initial = State(fd: fd, isSocket: true, ownsDescriptor: true)
            case .failure(let error):
                MonitorProgressSink.warn("cannot connect to the monitor \(path): \(error.message); progress goes to the log only")
            }
        }
        state = Mutex(initial)
    }

    deinit {
        state.withLock { s in
            if s.ownsDescriptor && s.fd >= 0 { close(s.fd) }
        }
    }

    public func emit(_ event: ProgressEvent) {
        let line = event.json(timestamp: clock()) + "\n"
        state.withLock { s in
            if logToStandardError { writeFully(2, Array((event.logLine + "\n").utf8)) }
            guard s.fd >= 0 else { return }
            let bytes = Array(line.utf8)
            if !send(bytes, to: s.fd, socket: s.isSocket) {
                let reason = String(cString: strerror(errno))
                MonitorProgressSink.warn("the monitor stopped accepting progress (\(reason)); progress goes to the log only")
                if s.ownsDescriptor { close(s.fd) }
                s.fd = -1
            }
        }
    }

    private func send(_ bytes: [UInt8], to fd: Int32, socket: Bool) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buffer in
                socket
                    ? Glibc.send(fd, buffer.baseAddress! + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                    : write(fd, buffer.baseAddress! + offset, buffer.count - offset)
            }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return false }
            offset += n
        }
        return true
    }

    static func warn(_ text: String) {
        writeFully(2, Array(("snf-image: warning: " + text + "\n").utf8))
    }

    static func connect(_ path: String) -> Result<Int32, DeployError> {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { return .failure(.badInput("the socket path is too long")) }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return .failure(.errno("create a socket for", path)) }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let error = DeployError.failure(String(cString: strerror(errno)))
            close(fd)
            return .failure(error)
        }
        return .success(fd)
    }
}

/// A sink that keeps events in memory (tests, and callers that want to look at them).
public final class RecordingProgressSink: ProgressSink {
    private let recorded = Mutex<[ProgressEvent]>([])
    public init() {}
    public func emit(_ event: ProgressEvent) { recorded.withLock { $0.append(event) } }
    public var events: [ProgressEvent] { recorded.withLock { $0 } }
}

/// Writes all of `bytes` to `fd`, retrying on EINTR; gives up silently on other errors.
func writeFully(_ fd: Int32, _ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        offset += n
    }
}
