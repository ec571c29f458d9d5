import Testing

@testable import NetworkSetup

/// The environment the real Ganeti 3.0 gave /etc/ganeti/kvm-vif-bridge for a routed NIC on a
/// Ganeti network (shared/ganeti/env/kvm-ifup-routed.env), plus IPv6 and a profile tag.
let ganetiRouted: [String: String] = [
    "HOME": "/root", "INSTANCE": "kvm1.ganeti.test", "INTERFACE": "tap0", "INTERFACE_INDEX": "0",
    "INTERFACE_UUID": "f8dfaef9-adea-4424-b48f-f91ead9fea9b", "IP": "10.250.78.2", "LANG": "C.UTF-8", "LC_ALL": "C",
    "LINK": "100", "MAC": "aa:00:00:22:aa:ea", "MODE": "routed", "NETWORK_GATEWAY": "10.250.78.1", "NETWORK_NAME": "net1",
    "NETWORK_SUBNET": "10.250.78.0/24", "NETWORK_TAGS": "nettag1", "NETWORK_UUID": "738b5589-07e0-4120-a65b-677c1d2e576e",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin:/sbin:/usr/sbin", "PWD": "/", "SHLVL": "2", "TAGS": "t1 t2", "VLAN": "",
]

func request(_ changes: [String: String?]) throws(NetworkError) -> NICRequest {
    var env = ganetiRouted
    for (key, value) in changes { env[key] = value }
    return try NICRequest(environment: env)
}

func badInput(_ changes: [String: String?]) -> String? {
    do {
        _ = try request(changes)
        return nil
    } catch {
        return error.kind == .badInput ? error.message : "not badInput: \(error.message)"
    }
}

@Suite struct RequestTests {
    @Test func realGanetiEnvironment() throws {
        let nic = try request([:])
        #expect(nic.interface == "tap0")
        #expect(nic.mode == .routed)
        #expect(nic.link == "100")
        #expect(nic.ip?.description == "10.250.78.2")
        #expect(nic.network.gateway?.description == "10.250.78.1")
        #expect(nic.network.tags == ["nettag1"])
        #expect(nic.instanceTags == ["t1", "t2"])
        #expect(nic.vlan == nil)  // VLAN= (empty) as Ganeti passes it
        #expect(nic.profile == nil)
        #expect(nic.hostname == "kvm1")
        #expect(nic.eui64 == nil)
        // Only the NIC variables are kept (saved with the state), nothing of the caller's own.
        #expect(nic.environment["HOME"] == nil && nic.environment["PATH"] == nil)
        #expect(try NICRequest(environment: ganetiRouted, interface: "tap7").interface == "tap7")
    }

    @Test func badInputIsOneClearSentence() {
        let cases: [([String: String?], String)] = [
            (["IP": nil], "IP is missing"),
            (["IP": "10.250.78"], "not an IPv4 address"),
            (["IP": "10.250.79.2"], "not in NETWORK_SUBNET"),
            (["MAC": nil], "MAC is missing"),
            (["MAC": "aa:00:00:22:aa"], "not a MAC address"),
            (["MAC": "01:00:5e:00:00:01"], "not a unicast"),
            (["LINK": nil], "LINK is missing"),
            (["LINK": "100;rm"], "not a routing table"),
            (["LINK": "main"], "system routing table"),
            (["MODE": nil], "MODE is missing"),
            (["MODE": "ext"], "not one of routed, bridged, openvswitch"),
            (["MODE": "bridged", "LINK": "../x"], "not a bridge name"),
            (["INTERFACE": nil], "INTERFACE is missing"),
            (["INTERFACE": "tap0/../x"], "not a network interface name"),
            (["INTERFACE": "a-very-long-interface-name"], "not a network interface name"),
            (["INSTANCE": "vm 1"], "not an instance"),
            (["NETWORK_SUBNET": "10.250.78.0/33"], "not an IPv4 network"),
            (["NETWORK_GATEWAY": "10.250.77.1"], "not in NETWORK_SUBNET"),
            (["NETWORK_SUBNET6": "2001:db8::/48"], "not a /64"),
            (["NETWORK_SUBNET6": "2001:db8::x/64"], "not an IPv6 network"),
            (["TAGS": "synnefo:network:0:protectd"], "unknown firewall profile"),
            (["TAGS": "synnefo:network:f8dfaef9-adea-4424-b48f-f91ead9fea9b:open"], "unknown firewall profile"),
            (["VLAN": ".100"], "only openvswitch"),
            (["TAGS": "a\nb"], "line break"),
        ]
        for (changes, expected) in cases {
            let message = badInput(changes)
            #expect(message?.contains(expected) == true, "\(changes): \(message ?? "accepted")")
            #expect(message?.contains("\n") != true)
        }
    }

    @Test func profileTags() throws {
        #expect(try request(["TAGS": "synnefo:network:0:protected"]).profile == .protected)
        #expect(try request(["TAGS": "synnefo:network:f8dfaef9-adea-4424-b48f-f91ead9fea9b:limited"]).profile == .limited)
        #expect(try request(["TAGS": "synnefo:network:eth-public:limited", "INTERFACE_NAME": "eth-public"]).profile == .limited)
        // The last tag naming this NIC wins; tags for other NICs are not ours to judge.
        #expect(try request(["TAGS": "synnefo:network:0:protected synnefo:network:0:unprotected"]).profile == .unprotected)
        #expect(try request(["TAGS": "synnefo:network:1:protected synnefo:network:1:whatever"]).profile == nil)
        #expect(try request(["TAGS": "other:tag synnefo:network:0:limited"]).profile == .limited)
    }

    @Test func vlan() {
        #expect(VLANSpec(".100") == VLANSpec(access: 100, trunks: []))
        #expect(VLANSpec(":10:20") == VLANSpec(access: nil, trunks: [10, 20]))
        #expect(VLANSpec(".5:10:20") == VLANSpec(access: 5, trunks: [10, 20]))
        for bad in ["100", ".", ".x", ":", ".5000", ".1;2", ":1::2"] { #expect(VLANSpec(bad) == nil, "\(bad)") }
    }

    @Test func ipv6Network() throws {
        let nic = try request(["NETWORK_SUBNET6": "2001:db8:99::/64", "NETWORK_GATEWAY6": "2001:db8:99::1"])
        #expect(nic.eui64?.description == "2001:db8:99:0:a800:ff:fe22:aaea")
        #expect(nic.linkLocal.description == "fe80::a800:ff:fe22:aaea")
    }
}

extension VLANSpec {
    init(access: Int?, trunks: [Int]) {
        self = VLANSpec(".1")!
        self.access = access
        self.trunks = trunks
    }
}
