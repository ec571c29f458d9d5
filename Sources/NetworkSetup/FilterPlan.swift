// The nftables side: one `netdev` table whose base chains hang on each NIC's own device, an
// ingress chain (what the guest may send: anti-spoofing) and, when needed, an egress chain (what
// may reach the guest: the firewall profile and private-network MAC filtering). A packet only
// ever walks the chains of its own device, so the cost per packet does not grow with the number
// of NICs on the host. Every change is one `nft -f` transaction: it applies whole or not at all.

public enum FilterPlan {
    public static let table = "snf_network"
    static let sharedChains: Set<String> = ["protected", "limited"]

    /// The chain names of `interface`: `in_`/`out_` plus the name in hex (interface names may hold
    /// `.`, `:` and `-`, which nft identifiers may not; hex keeps them distinct and reversible).
    public static func chains(of interface: String) -> (ingress: String, egress: String) {
        let hex = interface.utf8.map(hex2).joined()
        return ("in_" + hex, "out_" + hex)
    }

    /// The chain names `nft list table netdev snf_network` prints (empty when there is no table).
    public static func parseChains(_ listing: String) -> Set<String> {
        var result: Set<String> = []
        for line in listing.split(separator: "\n") {
            let words = line.split(separator: " ", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: "\t") }
            if words.count >= 3, words[0] == "chain", words[2] == "{" { result.insert(words[1]) }
        }
        return result
    }

    /// The rules of the shared profile chains.
    static func profileRules() -> [String] {
        let t = "netdev \(table)"
        return [
            "add chain \(t) protected",
            "flush chain \(t) protected",
            // ARP and everything else that is not IP.
            "add rule \(t) protected meta protocol != { ip, ip6 } accept",
            // TCP that is not a new connection (a SYN without ACK): replies to the guest's own.
            "add rule \(t) protected meta l4proto tcp tcp flags & (syn | ack) != syn accept",
            // DNS replies, and DHCP and DHCPv6 replies.
            "add rule \(t) protected meta l4proto udp udp sport 53 accept",
            "add rule \(t) protected meta l4proto udp udp sport 67 udp dport 68 accept",
            "add rule \(t) protected meta l4proto udp udp sport 547 udp dport 546 accept",
            "add rule \(t) protected meta l4proto { icmp, ipv6-icmp } accept",
            "add rule \(t) protected drop",
            "add chain \(t) limited",
            "flush chain \(t) limited",
            "add rule \(t) limited meta l4proto tcp tcp dport { 22, 3389 } accept",
            "add rule \(t) limited jump protected",
        ]
    }

    /// What the guest behind `nic` may send (ingress of its interface).
    static func ingressRules(_ nic: NICRequest) -> [String] {
        var rules = [
            "ether saddr != \(nic.mac) drop",
            "arp saddr ether != \(nic.mac) drop",
        ]
        if let ip = nic.ip {
            rules += [
                "arp saddr ip != { 0.0.0.0, \(ip) } drop",
                // A DHCP client has no address yet.
                "ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
                "ip saddr != \(ip) drop",
                // Duplicate address detection and MLD before the link-local address is up.
                "ip6 saddr :: meta l4proto ipv6-icmp accept",
                "ip6 saddr != { fe80::/64\(nic.eui64.map { ", \($0)" } ?? "") } drop",
            ]
        }
        // A guest is never a router or a DHCP server for its neighbours.
        rules += [
            "meta l4proto ipv6-icmp icmpv6 type nd-router-advert drop",
            "meta l4proto udp udp sport { 67, 547 } drop",
        ]
        return rules
    }

    /// What may reach the guest (egress of its interface); empty when nothing is filtered.
    static func egressRules(_ nic: NICRequest, macMask: MACAddress) -> [String] {
        var rules: [String] = []
        if nic.isPrivateFiltered {
            rules.append("ether saddr & \(macMask) != \(nic.mac.masked(by: macMask)) drop")
        }
        switch nic.profile {
        case .protected: rules.append("jump protected")
        case .limited: rules.append("jump limited")
        case .unprotected, nil: break
        }
        return rules
    }

    /// The transaction that makes the table hold exactly `nic`'s chains for `interface` (or none,
    /// when `nic` is nil: the `down` case), given the chains that exist now. When no NIC is left,
    /// the table goes too, so the ruleset is exactly what it was before the first `up`.
    public static func transaction(interface: String, nic: NICRequest?, existing: Set<String>, macMask: MACAddress) -> String {
        let t = "netdev \(table)"
        let (ingress, egress) = chains(of: interface)
        var lines = ["add table \(t)"]
        guard let nic else {
            let others = existing.subtracting(sharedChains).subtracting([ingress, egress])
            if others.isEmpty {
                lines.append("delete table \(t)")
            } else {
                for chain in [ingress, egress] where existing.contains(chain) { lines.append("delete chain \(t) \(chain)") }
            }
            return lines.joined(separator: "\n") + "\n"
        }
        lines += profileRules()
        func base(_ chain: String, _ hook: String, _ rules: [String]) {
            if existing.contains(chain) {
                lines.append("flush chain \(t) \(chain)")
            } else {
                lines.append("add chain \(t) \(chain) { type filter hook \(hook) device \"\(interface)\" priority 0; policy accept; }")
            }
            for rule in rules { lines.append("add rule \(t) \(chain) \(rule)") }
        }
        base(ingress, "ingress", ingressRules(nic))
        let out = egressRules(nic, macMask: macMask)
        if out.isEmpty {
            if existing.contains(egress) { lines.append("delete chain \(t) \(egress)") }
        } else {
            base(egress, "egress", out)
        }
        return lines.joined(separator: "\n") + "\n"
    }
}
