// /etc/snf/network.conf (or the file SNF_NETWORK_CONF names): `key = value` lines, `#` comments.

import NodeSupport

public struct NetworkConfig: Sendable, Equatable {
    /// Per-NIC state (`nic/<interface>`), the DHCP and RA servers' files, the lock.
    public var stateDirectory = "/run/snf-network"
    /// One line per up, down and hook run.
    public var logFile = "/var/log/ganeti/snf-network.log"
    /// Where the nfdhcpd binding files go (networks tagged `nfdhcpd`).
    public var nfdhcpdDirectory = "/var/lib/nfdhcpd"
    /// `dnsmasq` (DHCPv4 by dnsmasq, RAs by radvd, for routed NICs) or `none`.
    public var dhcp = DHCPServer.dnsmasq
    /// The host's address on every routed tap (a /32, link scope): the DHCP server's identifier.
    public var dhcpServerIP = IPv4Address("169.254.0.1")!
    /// DNS servers handed out by DHCP (none by default).
    public var nameservers: [IPv4Address] = []
    /// The host-side MAC of every routed tap (the guest's gateway MAC).
    public var tapConstantMAC = MACAddress("cc:47:52:4e:45:54")!
    /// Bits of the MAC that name a private network (network tag `private-filtered`).
    public var macMask = MACAddress("ff:ff:f0:00:00:00")!

    public enum DHCPServer: String, Sendable, Equatable { case dnsmasq, none }

    public static let defaultFile = "/etc/snf/network.conf"

    public init() {}

    /// The configuration from `SNF_NETWORK_CONF` or the default file; defaults when it does not exist.
    public static func load(environment: [String: String]) throws(NetworkError) -> NetworkConfig {
        let file = environment["SNF_NETWORK_CONF"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultFile
        let text: String?
        do {
            text = try readConfigurationText(file)
        } catch {
            throw .bad("\(error)")
        }
        guard let text else { return NetworkConfig() }
        return try parse(text, file: file)
    }

    static func parse(_ text: String, file: String) throws(NetworkError) -> NetworkConfig {
        var config = NetworkConfig()
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = (rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
                .trimmingCharacters(in: " \t\r")
            if line.isEmpty { continue }
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].trimmingCharacters(in: " \t")
            let value = parts.count == 2 ? parts[1].trimmingCharacters(in: " \t") : ""
            let at = "\(file) line \(number + 1)"
            guard parts.count == 2, !value.isEmpty else { throw .bad("\(at): expected `key = value`, got \(line.debugDescription)") }
            func path() throws(NetworkError) -> String {
                guard value.hasPrefix("/"), !value.split(separator: "/").contains("..") else {
                    throw .bad("\(at): \(key) must be an absolute path without `..`, got \(value.debugDescription)")
                }
                return value
            }
            switch key {
            case "state_dir": config.stateDirectory = try path()
            case "log_file": config.logFile = try path()
            case "nfdhcpd_dir": config.nfdhcpdDirectory = try path()
            case "dhcp":
                guard let server = DHCPServer(rawValue: value) else { throw .bad("\(at): dhcp must be dnsmasq or none, got \(value.debugDescription)") }
                config.dhcp = server
            case "dhcp_server_ip":
                guard let ip = IPv4Address(value) else { throw .bad("\(at): dhcp_server_ip is not an IPv4 address: \(value.debugDescription)") }
                config.dhcpServerIP = ip
            case "nameservers":
                var list: [IPv4Address] = []
                for item in value.split(whereSeparator: { $0 == "," || $0 == " " }) {
                    guard let ip = IPv4Address(String(item)) else { throw .bad("\(at): nameservers holds \(String(item).debugDescription), not an IPv4 address") }
                    list.append(ip)
                }
                config.nameservers = list
            case "tap_constant_mac":
                guard let mac = MACAddress(value.lowercased()), !mac.isMulticast else { throw .bad("\(at): tap_constant_mac is not a unicast MAC: \(value.debugDescription)") }
                config.tapConstantMAC = mac
            case "mac_mask":
                guard let mac = MACAddress(value.lowercased()) else { throw .bad("\(at): mac_mask is not a MAC-style mask: \(value.debugDescription)") }
                config.macMask = mac
            default:
                throw .bad("\(at): unknown key \(key.debugDescription) (state_dir, log_file, nfdhcpd_dir, dhcp, dhcp_server_ip, nameservers, tap_constant_mac, mac_mask)")
            }
        }
        return config
    }

    var nicDirectory: String { stateDirectory + "/nic" }
    var lockFile: String { stateDirectory + "/lock" }
}

extension StringProtocol {
    func trimmingCharacters(in set: String) -> String {
        let chars = Set(set)
        var s = Substring(self)
        while let first = s.first, chars.contains(first) { s = s.dropFirst() }
        while let last = s.last, chars.contains(last) { s = s.dropLast() }
        return String(s)
    }
}
