// Xen's vif script (`vif-custom`, which Ganeti's vif-ganeti hands over to): Xen runs it with
// `online`/`add` or `offline`/`remove` and `vif=vif<domid>.<devid>`, `XENBUS_PATH` in the
// environment. The NIC's parameters are in the file Ganeti writes for it,
// /var/run/ganeti/xen-hypervisor/nic/<instance>/<devid>, as shell `KEY=VALUE` lines. Xen's
// hotplug machinery waits for `hotplug-status` = `connected` in the xenstore.

import NodeSupport

public enum XenVif {
    public static let nicDirectory = "/var/run/ganeti/xen-hypervisor/nic"

    /// Reads one of Ganeti's Xen NIC files: `KEY=VALUE` lines, values optionally in single or
    /// double quotes, backslash escapes (TAGS="a\ b" or TAGS=a\ b).
    public static func parseNICFile(_ text: String) -> [String: String] {
        var env: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "="), !line.hasPrefix("#") else { continue }
            let key = String(line[..<eq]).trimmingCharacters(in: " \t")
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else { continue }
            var value = ""
            var quote: Character? = nil
            var escaped = false
            for ch in line[line.index(after: eq)...] {
                if escaped {
                    value.append(ch)
                    escaped = false
                } else if ch == "\\" && quote != "'" {
                    escaped = true
                } else if let q = quote {
                    if ch == q { quote = nil } else { value.append(ch) }
                } else if ch == "\"" || ch == "'" {
                    quote = ch
                } else {
                    value.append(ch)
                }
            }
            env[key] = value
        }
        return env
    }

    /// `vif<domid>.<devid>` into its numbers.
    public static func parseVifName(_ vif: String) -> (domid: Int, devid: Int)? {
        guard vif.hasPrefix("vif") else { return nil }
        let parts = vif.dropFirst(3).split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 2, let dom = Int(parts[0]), let dev = Int(parts[1]), dom >= 0, dev >= 0 else { return nil }
        return (dom, dev)
    }

    /// The instance name of domain `domid` (`xl domname`, without the `--incoming` or
    /// `--migratedaway` suffix a migrating domain carries).
    static func domainName(_ domid: Int) throws(NetworkError) -> String {
        let out = try HostTools.run("xl", ["domname", String(domid)])
        var name = out.stdoutText.trimmingCharacters(in: " \n\t")
        for suffix in ["--incoming", "--migratedaway"] where name.hasSuffix(suffix) { name = String(name.dropLast(suffix.count)) }
        guard !name.isEmpty else { throw .failed("xl domname \(domid) printed nothing") }
        return name
    }

    /// Runs the vif script for `command` with Xen's environment `env`.
    public static func run(command: String, env: [String: String], plumber: NICPlumber) throws(NetworkError) {
        guard let vif = env["vif"], let (domid, devid) = parseVifName(vif) else {
            throw .bad("vif is missing or not vif<domid>.<devid> (Xen runs vif-custom with it set)")
        }
        let xenbus = env["XENBUS_PATH"]
        func report(_ error: NetworkError?) {
            guard let xenbus else { return }
            if let error {
                _ = try? HostTools.run("xenstore-write", [xenbus + "/hotplug-error", error.message, xenbus + "/hotplug-status", "error"], check: false)
            } else {
                _ = try? HostTools.run("xenstore-write", [xenbus + "/hotplug-status", "connected"], check: false)
            }
        }
        switch command {
        case "online", "add":
            do {
                let instance = try domainName(domid)
                let file = "\(nicDirectory)/\(instance)/\(devid)"
                guard let text = HostTools.readFile(file) else { throw NetworkError.failed("Ganeti's NIC file \(file) is missing") }
                var nicEnv = parseNICFile(text)
                nicEnv["INTERFACE"] = vif
                nicEnv["INSTANCE"] = instance
                let nic = try NICRequest(environment: nicEnv)
                try plumber.up(nic, xen: true)
                report(nil)
            } catch let error as NetworkError {
                report(error)
                throw error
            } catch {
                let wrapped = NetworkError.failed("\(error)")
                report(wrapped)
                throw wrapped
            }
        case "offline", "remove":
            try plumber.down(interface: vif)
        default:
            throw .bad("unknown vif command \(command.debugDescription) (online, add, offline, remove)")
        }
    }
}
