// What snf-network was asked to do, from its argv[0] (the name Ganeti, Xen or the hooks runner
// called it by) and arguments: every entry point of the one binary.

import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public enum NetworkCommand: Equatable, Sendable {
    case up(interface: String?)
    case down(interface: String?)
    case downAll
    case xen(command: String)
    case hook
    case status
    case help

    public static let usage = """
        usage: snf-network up [IFACE]        bring a NIC up (Ganeti's NIC environment: INTERFACE, INSTANCE, MAC,
                                             MODE, LINK, IP, TAGS, NETWORK_*)
               snf-network down [IFACE]      take a NIC down (idempotent; needs only the interface)
               snf-network down --all        take every recorded NIC down
               snf-network hook              the Ganeti hook (GANETI_HOOKS_PATH set): down for the stopped,
                                             removed, migrated or modified instance's NICs whose interface is gone
               snf-network status            the recorded NICs
        Also installed as /etc/ganeti/kvm-vif-bridge (up), /etc/ganeti/network/<mode>/{up,down},
        /etc/xen/scripts/vif-custom and as a hook. Configuration: /etc/snf/network.conf (SNF_NETWORK_CONF).
        """

    /// The command for `arguments` (argv, argv[0] included) and `environment`.
    public static func parse(arguments: [String], environment: [String: String]) throws(NetworkError) -> NetworkCommand {
        let path = arguments.first ?? "snf-network"
        let components = path.split(separator: "/").map(String.init)
        let name = components.last ?? path
        let rest = Array(arguments.dropFirst())
        switch name {
        case "kvm-vif-bridge", "kvm-ifup-custom", "kvm-ifup":
            return .up(interface: rest.first)
        case "kvm-ifdown-custom", "kvm-ifdown":
            return .down(interface: rest.first)
        case "vif-custom":
            guard let command = rest.first else { throw .bad("vif-custom needs Xen's command (online, add, offline, remove)") }
            return .xen(command: command)
        case "up", "down":
            // Ganeti 3.2: /etc/ganeti/network/<mode>/{up,down}, ACTION=up|down, the tap as $1.
            let action = environment["ACTION"].flatMap { $0.isEmpty ? nil : $0 } ?? name
            switch action {
            case "up": return .up(interface: rest.first)
            case "down": return .down(interface: rest.first)
            default: throw .bad("ACTION \(action.debugDescription) is not up or down")
            }
        default:
            break
        }
        if environment["GANETI_HOOKS_PATH"] != nil && (rest.isEmpty || rest == ["hook"]) { return .hook }
        guard let verb = rest.first else { return .help }
        let operands = Array(rest.dropFirst())
        switch verb {
        case "up":
            guard operands.count <= 1 else { throw .bad("up takes at most one interface") }
            return .up(interface: operands.first)
        case "down":
            if operands == ["--all"] { return .downAll }
            guard operands.count <= 1 else { throw .bad("down takes at most one interface, or --all") }
            return .down(interface: operands.first)
        case "hook": return .hook
        case "status": return .status
        case "help", "--help", "-h": return .help
        default: throw .bad("unknown command \(verb.debugDescription)\n\(usage)")
        }
    }
}

/// Runs snf-network: returns the exit code and what to print (stdout text, one stderr line).
public func runSnfNetwork(arguments: [String], environment: [String: String]) -> (status: Int32, output: String, error: String?) {
    let started = ChildProcess.monotonicNanoseconds()
    var command: NetworkCommand? = nil
    var subject = ""
    var output = ""
    var config = NetworkConfig()
    do throws(NetworkError) {
        command = try NetworkCommand.parse(arguments: arguments, environment: environment)
        config = try NetworkConfig.load(environment: environment)
        let plumber = NICPlumber(config: config)
        switch command! {
        case .help:
            output = NetworkCommand.usage + "\n"
        case .up(let interface):
            subject = "up \(interface ?? environment["INTERFACE"] ?? "(no INTERFACE)")"
            let nic = try NICRequest(environment: environment, interface: interface)
            subject = "up \(nic.interface) instance=\(nic.instance) mode=\(nic.mode.rawValue) link=\(nic.link)"
                + (nic.ip.map { " ip=\($0)" } ?? "") + " mac=\(nic.mac)" + (nic.eui64.map { " ipv6=\($0)" } ?? "")
                + " profile=\(nic.profile?.rawValue ?? "none")"
            try plumber.up(nic)
        case .down(let interface):
            guard let dev = interface ?? environment["INTERFACE"].flatMap({ $0.isEmpty ? nil : $0 }) else {
                throw NetworkError.bad("INTERFACE is missing from the environment (or give the interface: snf-network down IFACE)")
            }
            subject = "down \(dev)"
            var env = environment
            env["INTERFACE"] = dev
            try plumber.down(interface: dev, environment: env)
        case .downAll:
            subject = "down --all"
            let done = try plumber.downAll()
            subject += " (\(done.joined(separator: " ")))"
        case .xen(let xenCommand):
            subject = "xen \(xenCommand) \(environment["vif"] ?? "?")"
            try XenVif.run(command: xenCommand, env: environment, plumber: plumber)
        case .hook:
            let path = environment["GANETI_HOOKS_PATH"] ?? ""
            let phase = environment["GANETI_HOOKS_PHASE"] ?? ""
            let instance = environment["GANETI_INSTANCE_NAME"]
            subject = "hook \(path)-\(phase) instance=\(instance ?? "?")"
            if phase == "post", ["instance-stop", "instance-remove", "instance-migrate", "instance-failover", "instance-modify"].contains(path) {
                let done = try plumber.downStale(instance: instance)
                subject += " down: \(done.isEmpty ? "nothing" : done.joined(separator: " "))"
            } else {
                subject += " (nothing to do)"
            }
        case .status:
            for dev in plumber.recordedInterfaces() {
                guard let state = plumber.loadState(dev) else { continue }
                let fields = ["INSTANCE", "MODE", "LINK", "IP", "MAC"].map { "\($0.lowercased())=\(state[$0] ?? "-")" }
                let present = HostTools.interfaceExists(dev) ? "present" : "gone"
                output += "\(dev) \(fields.joined(separator: " ")) interface=\(present)\n"
            }
        }
        log(config, command, subject, started: started, error: nil)
        return (0, output, nil)
    } catch {
        log(config, command, subject, started: started, error: error)
        return (error.kind == .badInput ? 2 : 1, output, "snf-network: \(error.message)")
    }
}

/// One line in the log file for every command that changes the host (not status or help).
func log(_ config: NetworkConfig, _ command: NetworkCommand?, _ subject: String, started: UInt64, error: NetworkError?) {
    if command == .status || command == .help { return }
    let ms = (ChildProcess.monotonicNanoseconds() - started) / 1_000_000
    var now = time(nil)
    var parts = tm()
    gmtime_r(&now, &parts)
    let stamp = String(
        format4(Int(parts.tm_year) + 1900) + "-" + format2(Int(parts.tm_mon) + 1) + "-" + format2(Int(parts.tm_mday)) + " "
            + format2(Int(parts.tm_hour)) + ":" + format2(Int(parts.tm_min)) + ":" + format2(Int(parts.tm_sec)))
    let outcome = error.map { "FAILED: \($0.message)" } ?? "ok"
    let line = "\(stamp) snf-network[\(getpid())] \(subject.isEmpty ? "\(command.map { "\($0)" } ?? "?")" : subject): \(outcome) (\(ms) ms)\n"
    let dir = String(config.logFile[..<(config.logFile.lastIndex(of: "/") ?? config.logFile.startIndex)])
    if !dir.isEmpty { try? HostTools.makeDirectories(dir) }
    let fd = open(config.logFile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o640)
    guard fd >= 0 else { return }
    writeAll(fd, line)
    close(fd)
}

private func format2(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
private func format4(_ n: Int) -> String { String(repeating: "0", count: max(0, 4 - String(n).count)) + String(n) }
