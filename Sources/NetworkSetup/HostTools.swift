// The host as snf-network sees it: interfaces in /sys, sysctls in /proc/sys, and the tools it
// runs (ip, nft, dnsmasq, radvd, ovs-vsctl), always as an argv array, never through a shell.

import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

enum HostTools {
    /// Runs `tool` (a bare name looked up in the system directories); with `check`, throws
    /// `failed` with the tool's last stderr line when it exits non-zero. `what` names it in errors;
    /// `reapGroup: false` lets a daemon that detached itself live on.
    @discardableResult
    static func run(
        _ tool: String, _ arguments: [String], stdin: String = "", check: Bool = true, what: String? = nil,
        reapGroup: Bool = true
    ) throws(NetworkError) -> ToolOutput {
        let path: String
        do {
            path = try ChildProcess.locate(tool)
        } catch {
            throw .failed("\(tool) is not installed" + (what.map { " (needed for \($0))" } ?? ""))
        }
        let output: ToolOutput
        do {
            output = try ChildProcess.run(
                path, arguments, stdin: Array(stdin.utf8), timeoutSeconds: 30, outputLimit: 16 << 20, what: what ?? tool,
                reapGroup: reapGroup)
        } catch {
            throw .failed("\(error)")
        }
        if check && output.exitCode != 0 {
            let tail = output.stderrTail.split(separator: "\n").last.map(String.init) ?? "exit status \(output.exitCode.map(String.init) ?? "signal")"
            throw .failed((what.map { "\($0) did not start" } ?? "\(tool) \(arguments.prefix(6).joined(separator: " "))") + ": \(tail)")
        }
        return output
    }

    static func isInstalled(_ tool: String) -> Bool { (try? ChildProcess.locate(tool)) != nil }

    static func interfaceExists(_ name: String) -> Bool { access("/sys/class/net/\(name)", F_OK) == 0 }
    static func isBridge(_ name: String) -> Bool { access("/sys/class/net/\(name)/bridge", F_OK) == 0 }

    /// The bridge (or other master) `name` is enslaved to, if any.
    static func master(of name: String) -> String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/sys/class/net/\(name)/master", &buffer, buffer.count - 1)
        guard n > 0 else { return nil }
        let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return target.split(separator: "/").last.map(String.init)
    }

    /// Writes a sysctl through /proc/sys (e.g. `net/ipv4/conf/tap0/proxy_arp`).
    static func setSysctl(_ key: String, _ value: String) throws(NetworkError) {
        let path = "/proc/sys/" + key
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .failed("cannot open \(path): \(ChildProcess.errnoText())") }
        defer { close(fd) }
        let bytes = Array((value + "\n").utf8)
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == bytes.count else { throw .failed("cannot write \(value) to \(path): \(ChildProcess.errnoText())") }
    }

    /// The number of routing table `name` (a number, or a name in rt_tables), nil if unknown.
    static func routingTable(_ name: String) -> Int? {
        if name.allSatisfy({ $0.isASCII && $0.isNumber }) { return Int(name).flatMap { $0 > 0 && $0 <= Int(UInt32.max) ? $0 : nil } }
        var files = ["/etc/iproute2/rt_tables", "/usr/share/iproute2/rt_tables", "/usr/lib/iproute2/rt_tables"]
        for dir in ["/etc/iproute2/rt_tables.d", "/usr/share/iproute2/rt_tables.d"] {
            if let d = opendir(dir) {
                while let entry = readdir(d) {
                    let file = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
                    if file.hasSuffix(".conf") { files.append(dir + "/" + file) }
                }
                closedir(d)
            }
        }
        for file in files {
            guard let text = try? readConfigurationText(file) else { continue }
            for line in text.split(separator: "\n") {
                let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard fields.count >= 2, !fields[0].hasPrefix("#"), fields[1] == name, let number = Int(fields[0]) else { continue }
                return number
            }
        }
        return nil
    }

    /// The device of the default route in `table` (`inet6` or `inet`), if it has one: the uplink.
    static func defaultRouteDevice(table: Int, family: String) -> String? {
        guard let output = try? run("ip", ["-family", family, "route", "show", "table", String(table), "default"], check: false),
            output.exitCode == 0
        else { return nil }
        let words = output.stdoutText.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let at = words.firstIndex(of: "dev"), at + 1 < words.count else { return nil }
        return String(words[at + 1])
    }

    /// Reads a whole small file; nil when it does not exist.
    static func readFile(_ path: String) -> String? { try? readConfigurationText(path) }

    /// Writes `text` to `path` atomically (temporary file, fsync, rename), mode `mode`.
    static func writeFileAtomically(_ path: String, _ text: String, mode: mode_t = 0o644) throws(NetworkError) {
        let temporary = path + ".new"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw .failed("cannot create \(temporary): \(ChildProcess.errnoText())") }
        let bytes = Array(text.utf8)
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let message = ChildProcess.errnoText()
                close(fd)
                unlink(temporary)
                throw .failed("cannot write \(temporary): \(message)")
            }
            done += n
        }
        _ = fchmod(fd, mode)
        guard fsync(fd) == 0, close(fd) == 0 else {
            unlink(temporary)
            throw .failed("cannot write \(temporary): \(ChildProcess.errnoText())")
        }
        guard rename(temporary, path) == 0 else {
            let message = ChildProcess.errnoText()
            unlink(temporary)
            throw .failed("cannot rename \(temporary) to \(path): \(message)")
        }
    }

    /// Creates `path` and its parents (mode 0755) if they are missing.
    static func makeDirectories(_ path: String) throws(NetworkError) {
        var current = ""
        for part in path.split(separator: "/") {
            current += "/" + part
            if mkdir(current, 0o755) != 0 && errno != EEXIST {
                throw .failed("cannot create \(current): \(ChildProcess.errnoText())")
            }
        }
    }

    static func remove(_ path: String) { unlink(path) }
}
