import Testing

@testable import NetworkSetup

@Suite struct AddressTests {
    @Test func macParsing() {
        #expect(MACAddress("aa:00:00:12:34:56")?.description == "aa:00:00:12:34:56")
        #expect(MACAddress("AA:00:00:12:34:5") == nil)
        #expect(MACAddress("aa:00:00:12:34:56:78") == nil)
        #expect(MACAddress("aa-00-00-12-34-56") == nil)
        #expect(MACAddress("aa:00:00:12:34:5g") == nil)
        #expect(MACAddress("01:00:5e:00:00:01")!.isMulticast)
        #expect(MACAddress("aa:00:00:12:34:56")!.masked(by: MACAddress("ff:ff:f0:00:00:00")!).description == "aa:00:00:00:00:00")
    }

    @Test func ipv4() {
        #expect(IPv4Address("10.250.78.2")?.description == "10.250.78.2")
        for bad in ["10.250.78", "10.250.78.256", "010.1.1.1", "1.2.3.4 ", "", "1.2.3.4/32", "::1"] {
            #expect(IPv4Address(bad) == nil, "\(bad)")
        }
        let net = IPv4Network("10.250.78.0/24")!
        #expect(net.netmask.description == "255.255.255.0")
        #expect(net.contains(IPv4Address("10.250.78.200")!))
        #expect(!net.contains(IPv4Address("10.250.79.1")!))
        #expect(IPv4Network("10.250.78.1/24") == nil)  // host bits set
        #expect(IPv4Network("10.250.78.0/33") == nil)
        #expect(IPv4Network("10.250.78.0") == nil)
        #expect(IPv4Network("0.0.0.0/0") != nil)
    }

    @Test func ipv6AndEUI64() {
        let net = IPv6Network("2001:db8:99::/64")!
        let mac = MACAddress("aa:00:00:11:22:33")!
        // RFC 4291: flip the universal/local bit (aa -> a8) and insert ff:fe.
        #expect(net.eui64(mac).description == "2001:db8:99:0:a800:ff:fe11:2233")
        #expect(IPv6Network.linkLocal(mac).description == "fe80::a800:ff:fe11:2233")
        #expect(net.contains(net.eui64(mac)))
        #expect(!net.contains(IPv6Address("2001:db8:98::1")!))
        #expect(IPv6Network("2001:db8:99::1/64") == nil)
        #expect(IPv6Address("2001:db8::g") == nil)
        #expect(IPv6Address("2001:0db8:0000::0001")?.description == "2001:db8::1")
    }
}
