import NodeSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import NetworkSetup

@Suite struct EntryTests {
    func parse(_ args: [String], _ env: [String: String] = [:]) -> NetworkCommand? {
        try? NetworkCommand.parse(arguments: args, environment: env)
    }

    @Test func entryPoints() {
        #expect(parse(["/etc/ganeti/kvm-vif-bridge"]) == .up(interface: nil))
        #expect(parse(["/etc/ganeti/kvm-vif-bridge", "tap3"]) == .up(interface: "tap3"))
        #expect(parse(["/etc/ganeti/network/routed/up", "tap0"]) == .up(interface: "tap0"))
        #expect(parse(["/etc/ganeti/network/routed/down", "tap0"]) == .down(interface: "tap0"))
        #expect(parse(["/usr/lib/ganeti/network/bridged/up"], ["ACTION": "down"]) == .down(interface: nil))
        #expect(parse(["/etc/xen/scripts/vif-custom", "online"]) == .xen(command: "online"))
        #expect(parse(["/etc/ganeti/hooks/instance-stop-post.d/snf-network"], ["GANETI_HOOKS_PATH": "instance-stop"]) == .hook)
        #expect(parse(["snf-network", "down", "--all"]) == .downAll)
        #expect(parse(["snf-network", "status"]) == .status)
        #expect(parse(["snf-network"]) == .help)
        #expect(parse(["snf-network", "frobnicate"]) == nil)
    }

    @Test func configuration() throws {
        let config = try NetworkConfig.parse("# comment\nstate_dir = /tmp/s\ndhcp = none\nnameservers = 192.0.2.53, 192.0.2.54\n", file: "f")
        #expect(config.stateDirectory == "/tmp/s")
        #expect(config.dhcp == .none)
        #expect(config.nameservers.map(\.description) == ["192.0.2.53", "192.0.2.54"])
        #expect(throws: NetworkError.self) { try NetworkConfig.parse("state_dir = relative\n", file: "f") }
        #expect(throws: NetworkError.self) { try NetworkConfig.parse("colour = blue\n", file: "f") }
        #expect(throws: NetworkError.self) { try NetworkConfig.parse("dhcp = isc\n", file: "f") }
    }

    @Test func xenNICFile() {
        // What Ganeti writes under /var/run/ganeti/xen-hypervisor/nic/<instance>/<index>.
        let text = "TAGS=a\\ b\\ synnefo:network:0:limited\nMAC=aa:00:00:12:34:56\nIP=10.0.0.5\nMODE=routed\nLINK=100\nNETWORK_NAME='net 1'\n"
        let env = XenVif.parseNICFile(text)
        #expect(env["TAGS"] == "a b synnefo:network:0:limited")
        #expect(env["NETWORK_NAME"] == "net 1")
        #expect(env["LINK"] == "100")
        #expect(XenVif.parseVifName("vif12.0")! == (12, 0))
        #expect(XenVif.parseVifName("tap0") == nil)
    }

    @Test func badInputExitsTwoWithOneLine() throws {
        // Its own configuration: the log line goes to a scratch file, never to the node's log.
        let dir = "/tmp/snf-network-entry-\(getpid())"
        mkdir(dir, 0o700)
        defer {
            unlink(dir + "/log")
            unlink(dir + "/network.conf")
            rmdir(dir)
        }
        let conf = "state_dir = \(dir)/state\nlog_file = \(dir)/log\n"
        let fd = open(dir + "/network.conf", O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = conf.utf8CString.withUnsafeBytes { write(fd, $0.baseAddress, $0.count - 1) }
        close(fd)
        var env = ganetiRouted
        env["SNF_NETWORK_CONF"] = dir + "/network.conf"
        env["MODE"] = "tunnel"
        let result = runSnfNetwork(arguments: ["snf-network", "up"], environment: env)
        #expect(result.status == 2)
        #expect(result.error?.hasPrefix("snf-network: MODE \"tunnel\"") == true)
        #expect(result.error?.contains("\n") == false)
        let log = try #require(try readConfigurationText(dir + "/log"))
        #expect(log.contains(" up tap0: FAILED: MODE \"tunnel\""))
    }
}
