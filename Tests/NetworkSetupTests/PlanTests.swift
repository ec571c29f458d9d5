import Testing

@testable import NetworkSetup

@Suite struct PlanTests {
    let mask = MACAddress("ff:ff:f0:00:00:00")!

    @Test func chainNamesAreSafeAndDistinct() {
        #expect(FilterPlan.chains(of: "tap0").ingress == "in_74617030")
        #expect(FilterPlan.chains(of: "gnt.com.0") != FilterPlan.chains(of: "gnt_com_0"))
        #expect(FilterPlan.chains(of: "gnt.com.0").egress.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" })
    }

    @Test func upTransaction() throws {
        let nic = try request(["NETWORK_SUBNET6": "2001:db8:99::/64", "TAGS": "synnefo:network:0:protected"])
        let script = FilterPlan.upTransaction(interface: "tap0", nic: nic, macMask: mask, routeMark: 100)
        let lines = script.split(separator: "\n").map(String.init)
        // The routing mark comes first, so even packets accepted early are routed by table 100.
        #expect(lines[lines.firstIndex(of: "flush chain netdev snf_network in_74617030")! + 1] == "add rule netdev snf_network in_74617030 meta mark set 100")
        #expect(lines.first == "add table netdev snf_network")
        // Add (a no-op when it exists), flush, refill: the same script whatever was there.
        let add = "add chain netdev snf_network in_74617030 { type filter hook ingress device \"tap0\" priority 0; policy accept; }"
        #expect(lines.firstIndex(of: add)! + 1 == lines.firstIndex(of: "flush chain netdev snf_network in_74617030")!)
        #expect(lines.contains("add rule netdev snf_network in_74617030 ether saddr != aa:00:00:22:aa:ea drop"))
        #expect(lines.contains("add rule netdev snf_network in_74617030 ip saddr != 10.250.78.2 drop"))
        #expect(lines.contains("add rule netdev snf_network in_74617030 ip6 saddr 2001:db8:99:0:a800:ff:fe22:aaea accept"))
        #expect(lines.contains("add rule netdev snf_network out_74617030 jump protected"))
        #expect(lines.contains("flush chain netdev snf_network protected"))
        #expect(lines.contains("add rule netdev snf_network protected drop"))
        // No anonymous sets in a NIC's chains (nft loads every set before each transaction).
        for line in lines where line.hasPrefix("add rule netdev snf_network in_") { #expect(!line.contains("{"), "\(line)") }
        // Without a profile the egress chain goes.
        let open = FilterPlan.upTransaction(interface: "tap0", nic: try request([:]), macMask: mask)
        #expect(open.hasSuffix("delete chain netdev snf_network out_74617030\n"))
    }

    @Test func downTransaction() {
        // The last NIC: the whole table goes.
        #expect(FilterPlan.downTransaction(interface: "tap0", existing: ["protected", "limited", "in_74617030"]) == "delete table netdev snf_network\n")
        // Others remain: only this NIC's chains go.
        let script = FilterPlan.downTransaction(interface: "tap0", existing: ["protected", "in_74617030", "out_74617030", "in_74617031"])!
        #expect(script == "delete chain netdev snf_network in_74617030\ndelete chain netdev snf_network out_74617030\n")
        // Nothing of ours: nothing to do.
        #expect(FilterPlan.downTransaction(interface: "tap0", existing: []) == nil)
        #expect(FilterPlan.downTransaction(interface: "tap0", existing: ["protected", "in_74617031"]) == nil)
    }

    @Test func privateFiltered() throws {
        let nic = try request(["MODE": "bridged", "LINK": "br0", "NETWORK_TAGS": "private-filtered"])
        let rules = FilterPlan.egressRules(nic, macMask: mask)
        #expect(rules == ["ether saddr & ff:ff:f0:00:00:00 != aa:00:00:00:00:00 drop"])
    }

    @Test func parseListing() {
        // `nft list chains netdev`: every netdev table's chains; only ours count.
        let listing = """
            table netdev other {
            \tchain in_74617031 {
            \t\ttype filter hook ingress device "eth0" priority filter; policy accept;
            \t}
            }
            table netdev snf_network {
            \tchain protected {
            \t}
            \tchain in_74617030 {
            \t\ttype filter hook ingress device "tap0" priority filter; policy accept;
            \t}
            }
            """
        #expect(FilterPlan.parseChains(listing) == ["protected", "in_74617030"])
    }

    @Test func dhcpAndRAConfiguration() throws {
        let nic = try request(["NETWORK_SUBNET6": "2001:db8:99::/64"])
        var config = NetworkConfig()
        config.stateDirectory = "/run/x"
        let dnsmasq = AddressServers.dnsmasqConfiguration(nic, config)
        for line in ["port=0", "interface=tap0", "dhcp-range=10.250.78.0,static,255.255.255.0,12h", "shared-network=tap0,10.250.78.2",
            "dhcp-host=aa:00:00:22:aa:ea,10.250.78.2,kvm1,12h", "dhcp-option=option:router,10.250.78.1", "pid-file=/run/x/dhcp/dnsmasq-tap0.pid"]
        {
            #expect(dnsmasq.split(separator: "\n").contains(Substring(line)), "\(line)")
        }
        let radvd = AddressServers.radvdConfiguration(nic)
        #expect(radvd.contains("prefix 2001:db8:99::/64 {"))
        #expect(radvd.contains("AdvAutonomous on;"))
        #expect(AddressServers.servesDHCP(nic, config) && AddressServers.servesRA(nic, config))
        config.dhcp = .none
        #expect(!AddressServers.servesDHCP(nic, config))
        #expect(!AddressServers.servesDHCP(try request(["MODE": "bridged", "LINK": "br0"]), NetworkConfig()))
    }

    @Test func bridgedDHCPServesOnlyTaggedNetworks() throws {
        let config = NetworkConfig()
        let plain = try request(["MODE": "bridged", "LINK": "br0"])
        #expect(!AddressServers.servesDHCP(plain, config))
        let a = try request(["MODE": "bridged", "LINK": "br0", "NETWORK_TAGS": "dhcp"])
        let b = try request(["MODE": "bridged", "LINK": "br0", "NETWORK_TAGS": "dhcp", "INTERFACE": "tap1", "MAC": "aa:00:00:22:aa:eb", "IP": "10.250.78.3", "INSTANCE": "vm2.example.org"])
        #expect(AddressServers.servesDHCP(a, config))
        let text = AddressServers.bridgeConfiguration(bridge: "br0", nics: [a, b], config)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.filter { $0.hasPrefix("dhcp-range=") } == ["dhcp-range=set:s0,10.250.78.0,static,255.255.255.0,12h"])
        #expect(lines.contains("dhcp-host=aa:00:00:22:aa:eb,10.250.78.3,vm2,12h"))
        #expect(lines.contains("dhcp-option=tag:s0,option:router,10.250.78.1"))
        #expect(lines.contains("interface=br0"))
    }

    @Test func nfdhcpdBinding() throws {
        let nic = try request(["NETWORK_SUBNET6": "2001:db8:99::/64", "NETWORK_TAGS": "nfdhcpd"])
        let text = AddressServers.nfdhcpdBinding(nic)
        #expect(text.contains("INDEV=tap0\nIP=10.250.78.2\nMAC=aa:00:00:22:aa:ea\nHOSTNAME=kvm1.ganeti.test\nTAGS=\"nfdhcpd\"\n"))
        #expect(text.contains("EUI64=2001:db8:99:0:a800:ff:fe22:aaea"))
    }
}
