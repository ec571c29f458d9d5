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

    /// The names of the chains in our table, from `nft list chains netdev` (which lists every
    /// netdev table's chains, without their rules: much faster than listing the table).
    public static func parseChains(_ listing: String) -> Set<String> {
        var result: Set<String> = []
        var inOurs = false
        for line in listing.split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 3, words[0] == "table" {
                inOurs = words[1] == "netdev" && words[2] == Substring(table)
            } else if inOurs, words.count >= 3, words[0] == "chain", words[2] == "{" {
                result.insert(String(words[1]))
            }
        }
        return result
    }

    /// The shared profile chains (written when the table is made).
    static func profileRules() -> [String] {
        let t = "netdev \(table)"
        return [
            "add chain \(t) protected",
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
            "add rule \(t) limited meta l4proto tcp tcp dport { 22, 3389 } accept",
            "add rule \(t) limited jump protected",
        ]
    }

    /// What the guest behind `nic` may send (ingress of its interface). No anonymous sets: nft
    /// loads every set of the table before each transaction, so per-NIC sets would make each
    /// `up` slower the more NICs the host has.
    static func ingressRules(_ nic: NICRequest, routeMark: UInt32? = nil) -> [String] {
        var rules: [String] = []
        // A routed NIC's packets carry its routing table as their mark: one `ip rule fwmark T
        // lookup T` per table then routes every NIC on it (not one rule per tap, which every
        // packet would walk in turn).
        if let routeMark { rules.append("meta mark set \(routeMark)") }
        rules += [
            "ether saddr != \(nic.mac) drop",
            // A guest is never a router or a DHCP server for its neighbours.
            "meta l4proto ipv6-icmp icmpv6 type nd-router-advert drop",
            "meta l4proto udp udp sport 67 drop",
            "meta l4proto udp udp sport 547 drop",
            "arp saddr ether != \(nic.mac) drop",
        ]
        if let ip = nic.ip {
            rules += [
                // ARP probes (duplicate address detection) have no sender address yet.
                "arp saddr ip 0.0.0.0 accept",
                "arp saddr ip != \(ip) drop",
                // A DHCP client has no address yet.
                "ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept",
                "ip saddr != \(ip) drop",
                "ip6 saddr fe80::/64 accept",
            ]
            if let eui64 = nic.eui64 { rules.append("ip6 saddr \(eui64) accept") }
            rules += [
                // Duplicate address detection and MLD before the link-local address is up.
                "ip6 saddr :: meta l4proto ipv6-icmp accept",
                "meta protocol ip6 drop",
            ]
        }
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

    /// The transaction that makes the table hold exactly `nic`'s chains for `interface`. It needs
    /// no listing first: `add` of a table or chain that exists with the same definition is a
    /// no-op, so each chain is added, flushed and refilled; an egress chain that is not needed
    /// is added and deleted (the interface exists during `up`). The shared profile chains are
    /// rewritten too (a few rules), so an upgraded binary's profiles take effect.
    public static func upTransaction(interface: String, nic: NICRequest, macMask: MACAddress, routeMark: UInt32? = nil) -> String {
        let t = "netdev \(table)"
        let (ingress, egress) = chains(of: interface)
        var lines = ["add table \(t)"]
        for chain in sharedChains.sorted() { lines += ["add chain \(t) \(chain)", "flush chain \(t) \(chain)"] }
        lines += profileRules().filter { $0.hasPrefix("add rule") }
        func base(_ chain: String, _ hook: String) -> [String] {
            ["add chain \(t) \(chain) { type filter hook \(hook) device \"\(interface)\" priority 0; policy accept; }", "flush chain \(t) \(chain)"]
        }
        lines += base(ingress, "ingress")
        lines += ingressRules(nic, routeMark: routeMark).map { "add rule \(t) \(ingress) \($0)" }
        let out = egressRules(nic, macMask: macMask)
        lines += base(egress, "egress")
        if out.isEmpty {
            lines.append("delete chain \(t) \(egress)")
        } else {
            lines += out.map { "add rule \(t) \(egress) \($0)" }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// The transaction that removes `interface`'s chains, given the chains that exist now; when
    /// no NIC is left, the table goes too, so the ruleset is exactly what it was before the
    /// first `up`. Nil when there is nothing to do.
    public static func downTransaction(interface: String, existing: Set<String>) -> String? {
        let t = "netdev \(table)"
        let (ingress, egress) = chains(of: interface)
        guard !existing.isEmpty else { return nil }
        let others = existing.subtracting(sharedChains).subtracting([ingress, egress])
        if others.isEmpty { return "delete table \(t)\n" }
        let mine = [ingress, egress].filter { existing.contains($0) }
        guard !mine.isEmpty else { return nil }
        return mine.map { "delete chain \(t) \($0)" }.joined(separator: "\n") + "\n"
    }
}
