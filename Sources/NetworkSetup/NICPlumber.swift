// Bringing one NIC up or down: under a host-wide lock, `up` first undoes whatever an earlier `up`
// left for the interface (from the state it saved), saves the new state, then applies: the link,
// the bridge or OVS port or the routes, rules and neighbour proxies, one nft transaction, the
// DHCP and RA servers, the nfdhcpd binding file. If any step fails, everything for that
// interface is undone. `down` undoes by name and by the saved state, ignores what is already
// gone, and so may run any number of times.

import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public struct NICPlumber: Sendable {
    public var config: NetworkConfig

    public init(config: NetworkConfig) { self.config = config }

    // MARK: State

    func statePath(_ interface: String) -> String { config.nicDirectory + "/" + interface }

    /// Saves what `up` applied for `nic`: its environment and the uplink found for its neighbour proxy.
    func saveState(_ nic: NICRequest, uplink6: String?) throws(NetworkError) {
        try HostTools.makeDirectories(config.nicDirectory)
        var lines = nic.environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        if let uplink6 { lines.append("SNF_UPLINK6=\(uplink6)") }
        try HostTools.writeFileAtomically(statePath(nic.interface), lines.joined(separator: "\n") + "\n", mode: 0o600)
    }

    /// The saved state of `interface`: its NIC environment (plus SNF_* keys), nil when none.
    public func loadState(_ interface: String) -> [String: String]? {
        guard let text = HostTools.readFile(statePath(interface)) else { return nil }
        var env: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            env[String(line[..<eq])] = String(line[line.index(after: eq)...])
        }
        return env
    }

    /// The interfaces with saved state.
    public func recordedInterfaces() -> [String] {
        guard let dir = opendir(config.nicDirectory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
            if NICRequest.isInterfaceName(name), !name.hasSuffix(".new"), name != ".", name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    /// Runs `body` holding the host-wide lock (NIC scripts of several instances may run at once).
    func locked<T>(_ body: () throws(NetworkError) -> T) throws(NetworkError) -> T {
        try HostTools.makeDirectories(config.stateDirectory)
        let fd = open(config.lockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .failed("cannot open \(config.lockFile): \(ChildProcess.errnoText())") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw .failed("cannot lock \(config.lockFile): \(ChildProcess.errnoText())") }
        }
        return try body()
    }

    // MARK: Up

    /// Checks what must hold on the host before anything changes: the interface, the bridge, the
    /// routing table, the tools.
    func preflight(_ nic: NICRequest) throws(NetworkError) -> Int? {
        guard HostTools.interfaceExists(nic.interface) else { throw .failed("interface \(nic.interface) does not exist") }
        var table: Int? = nil
        switch nic.mode {
        case .routed:
            guard let number = HostTools.routingTable(nic.link) else {
                throw .bad("LINK \(nic.link) names no routing table (not a number, not in /etc/iproute2/rt_tables)")
            }
            guard ![253, 254, 255].contains(number) else { throw .bad("LINK \(nic.link) is a system routing table") }
            table = number
            if AddressServers.servesDHCP(nic, config), !HostTools.isInstalled("dnsmasq") {
                throw .failed("dnsmasq is not installed (DHCP for routed NICs; set dhcp = none in \(NetworkConfig.defaultFile) to go without)")
            }
            if AddressServers.servesRA(nic, config), !HostTools.isInstalled("radvd") {
                throw .failed("radvd is not installed (router advertisements for routed NICs; set dhcp = none to go without)")
            }
        case .bridged:
            guard HostTools.interfaceExists(nic.link), HostTools.isBridge(nic.link) else {
                throw .bad("LINK \(nic.link) is not a bridge on this host")
            }
        case .openvswitch:
            guard HostTools.isInstalled("ovs-vsctl") else { throw .bad("MODE openvswitch, but Open vSwitch (ovs-vsctl) is not installed") }
            guard (try? HostTools.run("ovs-vsctl", ["br-exists", nic.link], check: false))?.exitCode == 0 else {
                throw .bad("LINK \(nic.link) is not an Open vSwitch bridge on this host")
            }
        }
        guard HostTools.isInstalled("nft") else { throw .failed("nft (nftables) is not installed") }
        guard HostTools.isInstalled("ip") else { throw .failed("ip (iproute2) is not installed") }
        return table
    }

    /// Brings `nic` up. Throws `badInput` before anything changed, or `failed` after undoing
    /// everything for the interface.
    public func up(_ nic: NICRequest, xen: Bool = false) throws(NetworkError) {
        try locked { () throws(NetworkError) in
            let table = try preflight(nic)
            collectGone(except: nic.interface)
            // The up transaction below replaces the interface's chains itself.
            cleanup(interface: nic.interface, fallback: nic.environment, filters: false)
            let uplink6 = table.flatMap { nic.network.subnet6 != nil ? HostTools.defaultRouteDevice(table: $0, family: "inet6") : nil }
            try saveState(nic, uplink6: uplink6)
            do throws(NetworkError) {
                try apply(nic, table: table, uplink6: uplink6, xen: xen)
            } catch {
                cleanup(interface: nic.interface, fallback: nic.environment)
                throw error
            }
        }
    }

    func apply(_ nic: NICRequest, table: Int?, uplink6: String?, xen: Bool) throws(NetworkError) {
        let dev = nic.interface
        switch nic.mode {
        case .routed:
            let table = String(table!)
            try HostTools.setSysctl("net/ipv4/conf/\(dev)/proxy_arp", "1")
            try HostTools.setSysctl("net/ipv4/conf/\(dev)/rp_filter", "0")
            if access("/proc/sys/net/ipv6/conf/\(dev)", F_OK) == 0 {
                try HostTools.setSysctl("net/ipv6/conf/\(dev)/accept_ra", "0")
            }
            var v4: [String] = []
            if !xen { v4.append("link set dev \(dev) address \(config.tapConstantMAC)") }
            v4.append("link set dev \(dev) up")
            if AddressServers.servesDHCP(nic, config) {
                v4.append("address replace \(config.dhcpServerIP)/32 dev \(dev) scope link")
            }
            v4.append("route replace \(nic.ip!)/32 dev \(dev) table \(table)")
            try HostTools.run("ip", ["-batch", "-"], stdin: v4.joined(separator: "\n") + "\n")
            if routedNICs(table: Int(table)!, except: dev).isEmpty {
                try addMarkRules(table: table)
            }
            if let eui64 = nic.eui64 {
                var v6 = ["route replace \(eui64)/128 dev \(dev) table \(table)"]
                if let uplink6 { v6.append("neigh replace proxy \(eui64) dev \(uplink6)") }
                try HostTools.run("ip", ["-6", "-batch", "-"], stdin: v6.joined(separator: "\n") + "\n")
            }
        case .bridged:
            try HostTools.run("ip", ["-batch", "-"], stdin: "link set dev \(dev) master \(nic.link)\nlink set dev \(dev) up\n")
        case .openvswitch:
            var port = ["--", "--if-exists", "del-port", dev, "--", "add-port", nic.link, dev]
            if let access = nic.vlan?.access { port.append("tag=\(access)") }
            if let trunks = nic.vlan?.trunks, !trunks.isEmpty { port.append("trunks=\(trunks.map(String.init).joined(separator: ","))") }
            try HostTools.run("ovs-vsctl", port)
            try HostTools.run("ip", ["link", "set", "dev", dev, "up"])
        }
        let mark = nic.mode == .routed ? table.map { UInt32($0) } : nil
        try HostTools.run("nft", ["-f", "-"], stdin: FilterPlan.upTransaction(interface: dev, nic: nic, macMask: config.macMask, routeMark: mark))
        try AddressServers.start(nic, config)
        if nic.mode == .bridged { try refreshBridgeDHCP(nic.link, excluding: nil) }
        if nic.wantsNfdhcpdBinding {
            try HostTools.makeDirectories(config.nfdhcpdDirectory)
            try HostTools.writeFileAtomically(config.nfdhcpdDirectory + "/" + dev, AddressServers.nfdhcpdBinding(nic))
        }
    }

    /// The routing policy rules of table `table`, IPv4 and IPv6: packets marked `table` (by their
    /// NIC's ingress chain) are routed by it. One pair per table, whatever the number of NICs.
    func addMarkRules(table: String) throws(NetworkError) {
        for family in ["-4", "-6"] {
            let out = try HostTools.run("ip", [family, "rule", "add", "fwmark", table, "lookup", table], check: false)
            guard out.exitCode == 0 || out.stderrText.contains("File exists") else {
                throw .failed("ip \(family) rule add fwmark \(table) lookup \(table): \(out.stderrTail)")
            }
        }
    }

    /// The recorded routed NICs on routing table `table`, but `except`.
    func routedNICs(table: Int, except: String) -> [String] {
        recordedInterfaces().filter { dev in
            guard dev != except, let state = loadState(dev), state["MODE"] == NICMode.routed.rawValue, let link = state["LINK"] else { return false }
            return HostTools.routingTable(link) == table
        }
    }

    /// Restarts the dnsmasq of `bridge` for the bridged NICs recorded on it that want DHCP
    /// (without `excluding`, which is going down).
    func refreshBridgeDHCP(_ bridge: String, excluding: String?) throws(NetworkError) {
        var nics: [NICRequest] = []
        for dev in recordedInterfaces() where dev != excluding {
            guard let state = loadState(dev), state["MODE"] == NICMode.bridged.rawValue, state["LINK"] == bridge,
                let nic = try? NICRequest(environment: state), AddressServers.servesDHCP(nic, config)
            else { continue }
            nics.append(nic)
        }
        try AddressServers.refreshBridge(bridge, nics: nics, config)
    }

    /// The chains in our nft table (empty when it does not exist).
    func filterChains() throws(NetworkError) -> Set<String> {
        let output = try HostTools.run("nft", ["list", "chains", "netdev"], check: false)
        guard output.exitCode == 0 else { throw .failed("nft list chains netdev: \(output.stderrTail)") }
        return FilterPlan.parseChains(output.stdoutText)
    }

    // MARK: Down

    /// Takes `interface` down: undoes what `up` applied (from its saved state, else from
    /// `environment` when it describes a NIC), ignoring what is already gone.
    public func down(interface: String, environment: [String: String] = [:]) throws(NetworkError) {
        guard NICRequest.isInterfaceName(interface) else { throw .bad("INTERFACE \(interface.debugDescription) is not a network interface name") }
        try locked { () throws(NetworkError) in
            if let problem = cleanup(interface: interface, fallback: environment) { throw .failed(problem) }
        }
    }

    /// Undoes everything for `interface`; returns the first problem that left something behind
    /// (a failed nft transaction), nil when the interface is clean.
    @discardableResult
    func cleanup(interface dev: String, fallback: [String: String], filters: Bool = true) -> String? {
        let saved = loadState(dev)
        // `up` saves the state before it changes anything, and `down` removes it only once all is
        // undone: with no state, nothing of ours is left but, at most, the filter chains.
        if saved == nil && !filters { return nil }
        var env = saved ?? fallback
        env["INTERFACE"] = dev
        let nic = try? NICRequest(environment: env)
        var problem: String? = nil

        AddressServers.stop(interface: dev, config)
        if filters {
            do throws(NetworkError) {
            if let script = FilterPlan.downTransaction(interface: dev, existing: try filterChains()) {
                try HostTools.run("nft", ["-f", "-"], stdin: script)
            }
        } catch {
            problem = error.message
        }
        }
        // One `ip -force -batch` per family (errors for what is already gone are ignored): a
        // policy rule naming the interface (snf-network 0.16 and Ganeti's own kvm-ifup leave
        // one), then what the saved state says, and the table's mark rules if this was its last NIC.
        var v4 = ["rule del iif \(dev)"]
        var v6 = v4
        if let nic, nic.mode == .routed {
            if let table = HostTools.routingTable(nic.link), let ip = nic.ip {
                v4.append("route del \(ip)/32 table \(table)")
                if let eui64 = nic.eui64 { v6.append("route del \(eui64)/128 table \(table)") }
                if routedNICs(table: table, except: dev).isEmpty {
                    v4.append("rule del fwmark \(table) lookup \(table)")
                    v6.append("rule del fwmark \(table) lookup \(table)")
                }
            }
            if let eui64 = nic.eui64, let uplink6 = env["SNF_UPLINK6"], NICRequest.isInterfaceName(uplink6) {
                v6.append("neigh del proxy \(eui64) dev \(uplink6)")
            }
            if HostTools.interfaceExists(dev) {
                v4.append("address del \(config.dhcpServerIP)/32 dev \(dev)")
            }
        }
        _ = try? HostTools.run("ip", ["-force", "-batch", "-"], stdin: v4.joined(separator: "\n") + "\n", check: false)
        _ = try? HostTools.run("ip", ["-6", "-force", "-batch", "-"], stdin: v6.joined(separator: "\n") + "\n", check: false)
        if let nic, nic.mode == .bridged {
            if HostTools.interfaceExists(dev), HostTools.master(of: dev) == nic.link {
                // Unfiltered, it must not stay on the bridge.
                _ = try? HostTools.run("ip", ["link", "set", "dev", dev, "nomaster"], check: false)
            }
            if AddressServers.servesDHCP(nic, config) || HostTools.readFile(AddressServers.dnsmasqPid(config, AddressServers.bridgeKey(nic.link))) != nil {
                do throws(NetworkError) {
                    try refreshBridgeDHCP(nic.link, excluding: dev)
                } catch {
                    problem = problem ?? error.message
                }
            }
        }
        if nic?.mode == .openvswitch, HostTools.isInstalled("ovs-vsctl") {
            _ = try? HostTools.run("ovs-vsctl", ["--if-exists", "del-port", dev], check: false)
        }
        HostTools.remove(config.nfdhcpdDirectory + "/" + dev)
        if problem == nil { HostTools.remove(statePath(dev)) }
        return problem
    }

    // MARK: Hooks

    /// After an instance stopped, was removed or migrated away: `down` for each NIC recorded for
    /// `instance` whose interface is gone (on a migration target the taps exist, and stay).
    /// Returns the interfaces taken down.
    public func downStale(instance: String?) throws(NetworkError) -> [String] {
        var done: [String] = []
        var problems: [String] = []
        for dev in recordedInterfaces() {
            guard let state = loadState(dev) else { continue }
            if let instance, state["INSTANCE"] != instance { continue }
            if HostTools.interfaceExists(dev) { continue }
            do {
                try down(interface: dev)
                done.append(dev)
            } catch {
                problems.append("\(dev): \(error.message)")
            }
        }
        if let first = problems.first { throw .failed(first) }
        return done
    }

    /// Takes down, best effort, every recorded NIC whose interface is gone: what a failed start or
    /// migration left behind (Ganeti runs no post hook then), a hot-removed NIC, a missed hook.
    /// Called with the lock held.
    func collectGone(except current: String) {
        for dev in recordedInterfaces() where dev != current && !HostTools.interfaceExists(dev) {
            cleanup(interface: dev, fallback: [:])
        }
    }

    /// `down` for every recorded NIC.
    public func downAll() throws(NetworkError) -> [String] {
        var done: [String] = []
        for dev in recordedInterfaces() {
            try down(interface: dev)
            done.append(dev)
        }
        return done
    }
}
