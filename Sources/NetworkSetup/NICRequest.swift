// One NIC as Ganeti describes it to its NIC scripts (the KVM ifup hook, the 3.2 network/<mode>
// scripts, the Xen NIC file): parsed and checked in full before anything on the host changes.

/// Why snf-network stopped. `badInput` (exit 2): the request itself is wrong and nothing was
/// applied; `failed` (exit 1): applying failed and what was applied for the interface was undone.
public struct NetworkError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable { case badInput, failed }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public static func bad(_ message: String) -> NetworkError { NetworkError(.badInput, message) }
    public static func failed(_ message: String) -> NetworkError { NetworkError(.failed, message) }
    public var description: String { message }
}

public enum NICMode: String, Sendable, Equatable, CaseIterable {
    case routed, bridged, openvswitch
}

/// A firewall profile (instance tag `synnefo:network:<index|name|uuid>:<profile>`): what may
/// reach the guest through this NIC.
public enum FirewallProfile: String, Sendable, Equatable, CaseIterable {
    /// Replies only: TCP that is not a new connection, UDP from port 53 (DNS) and from DHCP
    /// servers, ICMP and ICMPv6, and everything that is not IP (ARP).
    case protected
    /// `protected`, plus new TCP connections to ports 22 (SSH) and 3389 (RDP).
    case limited
    /// Everything (the same as no tag).
    case unprotected
}

/// Ganeti's VLAN parameter: `.N` (access port), `:N:M...` (trunk), `.N:M...` (access N plus trunk).
public struct VLANSpec: Sendable, Equatable {
    public var access: Int?
    public var trunks: [Int]

    public init?(_ text: String) {
        guard !text.isEmpty else { return nil }
        var access: Int? = nil
        var rest = Substring(text)
        func number(_ s: Substring) -> Int? {
            guard !s.isEmpty, s.count <= 4, s.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(s), (0...4095).contains(n)
            else { return nil }
            return n
        }
        if rest.hasPrefix(".") {
            let end = rest.firstIndex(of: ":") ?? rest.endIndex
            guard let n = number(rest[rest.index(after: rest.startIndex)..<end]) else { return nil }
            access = n
            rest = rest[end...]
        }
        var trunks: [Int] = []
        if !rest.isEmpty {
            guard rest.hasPrefix(":") else { return nil }
            for part in rest.dropFirst().split(separator: ":", omittingEmptySubsequences: false) {
                guard let n = number(part) else { return nil }
                trunks.append(n)
            }
        }
        guard access != nil || !trunks.isEmpty else { return nil }
        self.access = access
        self.trunks = trunks
    }
}

/// The Ganeti network a NIC is on (`NETWORK_*`), when it is on one.
public struct NetworkInfo: Sendable, Equatable {
    public var name: String?
    public var uuid: String?
    public var subnet: IPv4Network?
    public var gateway: IPv4Address?
    public var subnet6: IPv6Network?
    public var gateway6: IPv6Address?
    public var macPrefix: String?
    public var tags: [String]
}

/// A NIC to bring up or down, as its NIC script's environment describes it.
public struct NICRequest: Sendable, Equatable {
    public var interface: String
    public var instance: String
    public var mac: MACAddress
    public var mode: NICMode
    public var link: String
    public var ip: IPv4Address?
    public var vlan: VLANSpec?
    public var instanceTags: [String]
    public var index: String?
    public var uuid: String?
    public var name: String?
    public var network: NetworkInfo
    /// From the instance tags that name this NIC; nil without such a tag.
    public var profile: FirewallProfile?
    /// The variables this request was read from, saved with the NIC's state so `down` can undo
    /// exactly this configuration later.
    public var environment: [String: String]

    /// The network tags that change what `up` does.
    public static let privateFilteredTag = "private-filtered"
    public static let nfdhcpdTag = "nfdhcpd"
    public static let profileTagPrefix = "synnefo:network:"

    /// The variables read from the NIC script's environment (all others are ignored).
    public static let variables = [
        "INTERFACE", "INSTANCE", "MAC", "MODE", "LINK", "IP", "VLAN", "TAGS", "INTERFACE_INDEX", "INTERFACE_UUID",
        "INTERFACE_NAME", "NETWORK_NAME", "NETWORK_UUID", "NETWORK_SUBNET", "NETWORK_GATEWAY", "NETWORK_SUBNET6",
        "NETWORK_GATEWAY6", "NETWORK_MAC_PREFIX", "NETWORK_TAGS",
    ]

    /// The SLAAC address of the guest on its network's IPv6 subnet, if the network has one.
    public var eui64: IPv6Address? { network.subnet6.map { $0.eui64(mac) } }
    public var linkLocal: IPv6Address { IPv6Network.linkLocal(mac) }
    public var isPrivateFiltered: Bool { network.tags.contains(Self.privateFilteredTag) }
    public var wantsNfdhcpdBinding: Bool { network.tags.contains(Self.nfdhcpdTag) }
    /// The host name the guest gets by DHCP: the first label of the instance name.
    public var hostname: String { String(instance.split(separator: ".").first ?? Substring(instance)) }

    /// Reads and checks a NIC from `environment`; `interface` (a command-line argument) wins
    /// over INTERFACE. Throws `badInput` with one clear sentence for the first problem found.
    public init(environment all: [String: String], interface argument: String? = nil) throws(NetworkError) {
        var env: [String: String] = [:]
        for key in Self.variables {
            if let value = all[key], !value.isEmpty { env[key] = value }
        }
        if let argument, !argument.isEmpty { env["INTERFACE"] = argument }
        for (key, value) in env where value.contains(where: { $0 == "\n" || $0 == "\r" || $0 == "\0" }) {
            throw .bad("\(key) contains a line break or NUL")
        }
        environment = env

        func required(_ key: String) throws(NetworkError) -> String {
            guard let value = env[key] else { throw .bad("\(key) is missing from the environment") }
            return value
        }
        interface = try required("INTERFACE")
        guard Self.isInterfaceName(interface) else { throw .bad("INTERFACE \(interface.debugDescription) is not a network interface name") }
        instance = try required("INSTANCE")
        guard Self.isHostName(instance) else { throw .bad("INSTANCE \(instance.debugDescription) is not an instance (host) name") }
        let macText = try required("MAC")
        guard let mac = MACAddress(macText.lowercased()) else { throw .bad("MAC \(macText.debugDescription) is not a MAC address (aa:bb:cc:dd:ee:ff)") }
        guard !mac.isMulticast, !mac.isZero else { throw .bad("MAC \(macText) is not a unicast address") }
        self.mac = mac
        let modeText = try required("MODE")
        guard let mode = NICMode(rawValue: modeText) else {
            throw .bad("MODE \(modeText.debugDescription) is not one of routed, bridged, openvswitch")
        }
        self.mode = mode
        link = try required("LINK")
        switch mode {
        case .routed:
            guard Self.isTableName(link) else { throw .bad("LINK \(link.debugDescription) is not a routing table (a number or a name in /etc/iproute2/rt_tables)") }
            guard !["0", "253", "254", "255", "main", "local", "default", "unspec"].contains(link) else {
                throw .bad("LINK \(link) is a system routing table; routed NICs need a table of their own")
            }
        case .bridged, .openvswitch:
            guard Self.isInterfaceName(link) else { throw .bad("LINK \(link.debugDescription) is not a bridge name") }
        }
        if let text = env["IP"] {
            guard let ip = IPv4Address(text) else { throw .bad("IP \(text.debugDescription) is not an IPv4 address") }
            self.ip = ip
        } else if mode == .routed {
            throw .bad("IP is missing from the environment (a routed NIC needs its address)")
        }
        if let text = env["VLAN"] {
            guard let vlan = VLANSpec(text) else { throw .bad("VLAN \(text.debugDescription) is not .N, :N[:M...] or .N:M[:...]") }
            guard mode == .openvswitch else { throw .bad("VLAN \(text) is set, but only openvswitch NICs take a VLAN") }
            self.vlan = vlan
        }
        instanceTags = (env["TAGS"] ?? "").split(separator: " ").map(String.init)
        index = env["INTERFACE_INDEX"]
        uuid = env["INTERFACE_UUID"]
        name = env["INTERFACE_NAME"]

        var network = NetworkInfo(name: env["NETWORK_NAME"], uuid: env["NETWORK_UUID"], macPrefix: env["NETWORK_MAC_PREFIX"], tags: [])
        if let text = env["NETWORK_SUBNET"] {
            guard let subnet = IPv4Network(text) else { throw .bad("NETWORK_SUBNET \(text.debugDescription) is not an IPv4 network (a.b.c.d/n)") }
            network.subnet = subnet
            if let ip, !subnet.contains(ip) { throw .bad("IP \(ip) is not in NETWORK_SUBNET \(subnet)") }
        }
        if let text = env["NETWORK_GATEWAY"] {
            guard let gateway = IPv4Address(text) else { throw .bad("NETWORK_GATEWAY \(text.debugDescription) is not an IPv4 address") }
            if let subnet = network.subnet, !subnet.contains(gateway) { throw .bad("NETWORK_GATEWAY \(gateway) is not in NETWORK_SUBNET \(subnet)") }
            if gateway == ip { throw .bad("IP \(gateway) is the network's gateway") }
            network.gateway = gateway
        }
        if let text = env["NETWORK_SUBNET6"] {
            guard let subnet6 = IPv6Network(text) else { throw .bad("NETWORK_SUBNET6 \(text.debugDescription) is not an IPv6 network (prefix/len)") }
            guard subnet6.prefixLength == 64 else { throw .bad("NETWORK_SUBNET6 \(subnet6) is not a /64 (SLAAC and EUI-64 need one)") }
            network.subnet6 = subnet6
        }
        if let text = env["NETWORK_GATEWAY6"] {
            guard let gateway6 = IPv6Address(text) else { throw .bad("NETWORK_GATEWAY6 \(text.debugDescription) is not an IPv6 address") }
            network.gateway6 = gateway6
        }
        network.tags = (env["NETWORK_TAGS"] ?? "").split(separator: " ").map(String.init)
        self.network = network
        profile = try Self.profile(tags: instanceTags, index: index, name: name, uuid: uuid)
    }

    /// The profile the instance tags give this NIC: tags `synnefo:network:<ident>:<profile>`
    /// whose ident is this NIC's index, name or UUID; the last one wins. A tag for this NIC with
    /// an unknown profile is an error (a typo must not leave a guest unfiltered).
    static func profile(tags: [String], index: String?, name: String?, uuid: String?) throws(NetworkError) -> FirewallProfile? {
        var result: FirewallProfile? = nil
        let idents = Set([index, name, uuid].compactMap { $0 })
        for tag in tags where tag.hasPrefix(profileTagPrefix) {
            let rest = tag.dropFirst(profileTagPrefix.count)
            guard let colon = rest.lastIndex(of: ":") else { continue }
            let ident = String(rest[..<colon])
            let word = String(rest[rest.index(after: colon)...])
            guard idents.contains(ident) else { continue }
            guard let profile = FirewallProfile(rawValue: word) else {
                throw .bad("instance tag \(tag.debugDescription) names an unknown firewall profile \(word.debugDescription) (protected, limited, unprotected)")
            }
            result = profile
        }
        return result
    }

    /// A Linux interface name: 1-15 bytes of letters, digits and `_ . : -`, not `.` or `..`.
    public static func isInterfaceName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...15).contains(bytes.count), name != ".", name != ".." else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: "-") }
    }

    /// A routing table: a number, or a name made of letters, digits, `_` and `-`.
    static func isTableName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: "-") }
    }

    static func isHostName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard (1...253).contains(bytes.count) else { return false }
        return bytes.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "_") }
    }

    static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
    }
}
