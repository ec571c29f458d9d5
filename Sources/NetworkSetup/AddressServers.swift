// Addresses for the guest: DHCPv4 from dnsmasq (a static lease: the NIC's Ganeti IP for its MAC,
// the network's gateway, the instance's host name) and, behind routed taps, router advertisements
// from radvd (the network's /64, autonomous, so SLAAC gives the EUI-64 address).
// Routed NICs: one dnsmasq and one radvd per tap, each with its own configuration and pid file
// under the state directory, so starting or stopping one NIC never disturbs another.
// Bridged NICs on networks tagged `dhcp`: one dnsmasq per bridge serving every such NIC on it,
// rewritten and restarted when one comes or goes (the bridge's own router sends the RAs).
// dnsmasq answers only the MACs it was given (static ranges), never anyone else on the bridge.
// Also the nfdhcpd binding file, for operators who run nfdhcpd instead.

import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

enum AddressServers {
    static func directory(_ config: NetworkConfig) -> String { config.stateDirectory + "/dhcp" }
    static func dnsmasqConf(_ config: NetworkConfig, _ interface: String) -> String { directory(config) + "/dnsmasq-\(interface).conf" }
    static func dnsmasqPid(_ config: NetworkConfig, _ interface: String) -> String { directory(config) + "/dnsmasq-\(interface).pid" }
    static func radvdConf(_ config: NetworkConfig, _ interface: String) -> String { directory(config) + "/radvd-\(interface).conf" }
    static func radvdPid(_ config: NetworkConfig, _ interface: String) -> String { directory(config) + "/radvd-\(interface).pid" }

    static func bridgeKey(_ bridge: String) -> String { "br-" + bridge }

    /// The network tag that asks for DHCP on a bridged network.
    static let bridgedDHCPTag = "dhcp"

    /// Whether `nic` gets DHCPv4 from us: a routed NIC on a network with a subnet, or a bridged
    /// one on such a network tagged `dhcp`.
    static func servesDHCP(_ nic: NICRequest, _ config: NetworkConfig) -> Bool {
        guard config.dhcp == .dnsmasq, nic.ip != nil, nic.network.subnet != nil else { return false }
        switch nic.mode {
        case .routed: return true
        case .bridged: return nic.network.tags.contains(bridgedDHCPTag)
        case .openvswitch: return false
        }
    }

    static func servesRA(_ nic: NICRequest, _ config: NetworkConfig) -> Bool {
        config.dhcp == .dnsmasq && nic.mode == .routed && nic.network.subnet6 != nil
    }

    /// dnsmasq's configuration for `nic`: DHCP only (port=0: no DNS), on the tap alone.
    static func dnsmasqConfiguration(_ nic: NICRequest, _ config: NetworkConfig) -> String {
        let subnet = nic.network.subnet!
        var lines = [
            "# written by snf-network for \(nic.interface) (instance \(nic.instance)); do not edit",
            "port=0",
            "interface=\(nic.interface)",
            "bind-interfaces",
            "dhcp-authoritative",
            "leasefile-ro",
            "dhcp-range=\(subnet.address),static,\(subnet.netmask),12h",
            // The tap's own address (dhcp_server_ip) is not in the subnet: serve the subnet there.
            "shared-network=\(nic.interface),\(nic.ip!)",
            "dhcp-host=\(nic.mac),\(nic.ip!),\(nic.hostname),12h",
            "pid-file=\(dnsmasqPid(config, nic.interface))",
            "log-facility=\(directory(config))/dnsmasq-\(nic.interface).log",
        ]
        if let gateway = nic.network.gateway {
            lines.append("dhcp-option=option:router,\(gateway)")
        } else {
            lines.append("dhcp-option=option:router")
        }
        if config.nameservers.isEmpty {
            lines.append("dhcp-option=option:dns-server")
        } else {
            lines.append("dhcp-option=option:dns-server,\(config.nameservers.map(\.description).joined(separator: ","))")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// radvd's configuration for `nic`: the network's /64, not on-link (every packet goes through
    /// the host, which routes it), autonomous (SLAAC).
    static func radvdConfiguration(_ nic: NICRequest) -> String {
        """
        # written by snf-network for \(nic.interface) (instance \(nic.instance)); do not edit
        interface \(nic.interface) {
            AdvSendAdvert on;
            IgnoreIfMissing on;
            MinRtrAdvInterval 30;
            MaxRtrAdvInterval 100;
            prefix \(nic.network.subnet6!) {
                AdvOnLink off;
                AdvAutonomous on;
                AdvRouterAddr off;
            };
        };

        """
    }

    /// dnsmasq's configuration for the bridged NICs `nics` (all on `bridge`, all served).
    static func bridgeConfiguration(bridge: String, nics: [NICRequest], _ config: NetworkConfig) -> String {
        let key = bridgeKey(bridge)
        var lines = [
            "# written by snf-network for the bridged NICs on \(bridge); do not edit",
            "port=0",
            "interface=\(bridge)",
            "bind-interfaces",
            "dhcp-authoritative",
            "leasefile-ro",
            "pid-file=\(dnsmasqPid(config, key))",
            "log-facility=\(directory(config))/dnsmasq-\(key).log",
        ]
        var subnets: [IPv4Network] = []
        for nic in nics {
            let subnet = nic.network.subnet!
            guard !subnets.contains(subnet) else { continue }
            let tag = "s\(subnets.count)"
            subnets.append(subnet)
            lines += [
                "dhcp-range=set:\(tag),\(subnet.address),static,\(subnet.netmask),12h",
                "shared-network=\(bridge),\(nic.ip!)",
                "dhcp-option=tag:\(tag),option:router" + (nic.network.gateway.map { ",\($0)" } ?? ""),
            ]
        }
        for nic in nics { lines.append("dhcp-host=\(nic.mac),\(nic.ip!),\(nic.hostname),12h") }
        lines.append("dhcp-option=option:dns-server" + config.nameservers.map { ",\($0)" }.joined())
        return lines.joined(separator: "\n") + "\n"
    }

    /// Makes the dnsmasq of `bridge` serve exactly `nics` (stopped, and the bridge's server
    /// address removed, when there are none).
    static func refreshBridge(_ bridge: String, nics: [NICRequest], _ config: NetworkConfig) throws(NetworkError) {
        let key = bridgeKey(bridge)
        stop(interface: key, config)
        guard !nics.isEmpty else {
            if HostTools.interfaceExists(bridge) {
                _ = try? HostTools.run("ip", ["address", "del", "\(config.dhcpServerIP)/32", "dev", bridge], check: false)
            }
            return
        }
        try HostTools.makeDirectories(directory(config))
        try HostTools.run("ip", ["address", "replace", "\(config.dhcpServerIP)/32", "dev", bridge, "scope", "link"])
        let conf = dnsmasqConf(config, key)
        try HostTools.writeFileAtomically(conf, bridgeConfiguration(bridge: bridge, nics: nics, config))
        try daemon("dnsmasq", ["--conf-file=\(conf)"], what: "dnsmasq for bridge \(bridge)")
    }

    /// Starts dnsmasq and radvd as the routed `nic` needs them (after stopping any left for its
    /// interface). Bridged NICs go through `refreshBridge`.
    static func start(_ nic: NICRequest, _ config: NetworkConfig) throws(NetworkError) {
        stop(interface: nic.interface, config)
        guard nic.mode == .routed else { return }
        guard servesDHCP(nic, config) || servesRA(nic, config) else { return }
        try HostTools.makeDirectories(directory(config))
        if servesDHCP(nic, config) {
            let conf = dnsmasqConf(config, nic.interface)
            try HostTools.writeFileAtomically(conf, dnsmasqConfiguration(nic, config))
            try daemon("dnsmasq", ["--conf-file=\(conf)"], what: "dnsmasq for \(nic.interface)")
        }
        if servesRA(nic, config) {
            let conf = radvdConf(config, nic.interface)
            try HostTools.writeFileAtomically(conf, radvdConfiguration(nic))
            try daemon("radvd", ["--config", conf, "--pidfile", radvdPid(config, nic.interface)], what: "radvd for \(nic.interface)")
        }
    }

    /// Starts a daemon that detaches itself; its startup errors come back as a non-zero exit.
    /// Its stdout and stderr are pipes read until it exits; the detached daemon never sees
    /// Ganeti's output pipe (a clean spawn), so Ganeti does not wait for it.
    static func daemon(_ tool: String, _ arguments: [String], what: String) throws(NetworkError) {
        try HostTools.run(tool, arguments, what: what, reapGroup: false)
    }

    /// Stops the dnsmasq and radvd of `interface`, if running (both signalled, then both
    /// awaited), and removes their files.
    static func stop(interface: String, _ config: NetworkConfig) {
        let daemons = [(dnsmasqPid(config, interface), dnsmasqConf(config, interface)), (radvdPid(config, interface), radvdConf(config, interface))]
        let signalled = daemons.compactMap { signalDaemon(pidFile: $0.0, conf: $0.1) }
        awaitExit(signalled)
        for (pidFile, conf) in daemons {
            HostTools.remove(pidFile)
            HostTools.remove(conf)
        }
        HostTools.remove(directory(config) + "/dnsmasq-\(interface).log")
    }

    /// Sends SIGTERM to the process in `pidFile` if, and only if, its command line names `conf`
    /// (a pid reused by another process is left alone); returns its pid.
    static func signalDaemon(pidFile: String, conf: String) -> pid_t? {
        guard let text = HostTools.readFile(pidFile), let pid = pid_t(text.trimmingCharacters(in: " \n\t")), pid > 1 else { return nil }
        guard let cmdline = HostTools.readFile("/proc/\(pid)/cmdline"), cmdline.contains(conf) else { return nil }
        kill(pid, SIGTERM)
        return pid
    }

    /// Waits up to 2 s for `pids` to exit (SIGKILL after 1 s).
    static func awaitExit(_ pids: [pid_t]) {
        var left = pids
        for attempt in 0..<1000 where !left.isEmpty {
            left = left.filter { pid in
                guard kill(pid, 0) == 0 else { return false }
                if let stat = HostTools.readFile("/proc/\(pid)/stat"), stat.contains(") Z ") { return false }
                return true
            }
            if attempt == 500 { for pid in left { kill(pid, SIGKILL) } }
            if !left.isEmpty { usleep(2_000) }
        }
    }

    /// The nfdhcpd binding file (`<nfdhcpd_dir>/<interface>`), in nfdhcpd's KEY=VALUE format.
    static func nfdhcpdBinding(_ nic: NICRequest) -> String {
        var lines = [
            "INDEV=\(nic.mode == .routed ? nic.interface : nic.link)",
            "IP=\(nic.ip.map(\.description) ?? "")",
            "MAC=\(nic.mac)",
            "HOSTNAME=\(nic.instance)",
            "TAGS=\"\(nic.network.tags.joined(separator: " "))\"",
            "GATEWAY=\(nic.network.gateway.map(\.description) ?? "")",
            "SUBNET=\(nic.network.subnet.map(\.description) ?? "")",
            "GATEWAY6=\(nic.network.gateway6.map(\.description) ?? "")",
            "SUBNET6=\(nic.network.subnet6.map(\.description) ?? "")",
            "EUI64=\(nic.eui64.map(\.description) ?? "")",
        ]
        lines.append("")
        return lines.joined(separator: "\n")
    }
}
