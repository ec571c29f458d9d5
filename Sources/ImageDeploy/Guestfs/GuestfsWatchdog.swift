// The time limit of a libguestfs editor session.
//
// A libguestfs call blocks its thread and holds the handle's lock, so the limit cannot be enforced
// through the handle. Instead a timer kills the appliance's hypervisor process: the blocked call
// then fails ("appliance closed the connection") and every later call is refused.
//
// Before launch returns, the hypervisor's pid is not known to us; it is found in /proc as the
// process whose command line names this handle's private socket directory (the direct backend
// passes `-chardev socket,path=<sockdir>/guestfsd.sock`), so another editor's appliance in the
// same process is never touched. After launch, `guestfs_get_pid` gives it directly.

import Dispatch
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

final class GuestfsWatchdog: Sendable {
    private struct State {
        var fired = false
        var disarmed = false
        var pid: pid_t?
    }

    /// The handle's socket directory (unique per handle).
    let socketDirectory: String
    let seconds: Int
    private let state = Mutex(State())

    init(socketDirectory: String, seconds: Int) {
        self.socketDirectory = socketDirectory
        self.seconds = seconds
    }

    /// Starts the timer.
    func arm() {
        DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(max(seconds, 0))) { [self] in
            fire()
        }
    }

    /// Whether the time limit expired (and the appliance was killed).
    var fired: Bool { state.withLock { $0.fired } }

    /// Records the hypervisor's pid once it is known.
    func setPid(_ pid: pid_t) { state.withLock { $0.pid = pid } }

    /// Stops the timer from doing anything (the session is over).
    func disarm() { state.withLock { $0.disarmed = true } }

    /// Ends the session now, as if the time limit had expired (tests).
    func expire() { fire() }

    /// Marks the session as over and kills the hypervisor. Before launch has started it (supermin
    /// may still be building the appliance) there is nothing to kill yet: look again shortly,
    /// until something is killed or the session ends.
    private func fire() {
        let pid: pid_t?? = state.withLock { s in
            if s.disarmed { return nil }
            s.fired = true
            return .some(s.pid)
        }
        guard let known = pid else { return }
        if let known, known > 0 {
            kill(known, SIGKILL)
            return
        }
        let found = Self.hypervisors(naming: socketDirectory)
        for p in found { kill(p, SIGKILL) }
        if found.isEmpty {
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(200)) { [self] in fire() }
        }
    }

    /// The processes whose command line contains `needle` and whose first word names qemu.
    static func hypervisors(naming needle: String) -> [pid_t] {
        guard !needle.isEmpty, let dir = opendir("/proc") else { return [] }
        defer { closedir(dir) }
        let me = getpid()
        let wanted = Array(needle.utf8)
        var found: [pid_t] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard let pid = pid_t(name), pid != me else { continue }
            guard let cmdline = readSmallFile("/proc/\(pid)/cmdline") else { continue }
            let argv0 = cmdline.prefix { $0 != 0 }
            guard contains(Array(argv0), Array("qemu".utf8)), contains(cmdline, wanted) else { continue }
            found.append(pid)
        }
        return found
    }

    private static func contains(_ hay: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty, hay.count >= needle.count else { return false }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
            if hay[i..<(i + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    private static func readSmallFile(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while out.count < 1 << 20 {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }
}
