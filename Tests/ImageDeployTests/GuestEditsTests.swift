import Testing

@testable import ImageDeploy

struct GuestEditsTests {
    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }
    func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    @Test func linesRoundTripByteForByte() {
        for sample in ["", "a", "a\n", "a\nb", "a\n\nb\n", "\n", "\n\n", "x\r\ny\r\n"] {
            #expect(GuestLines(bytes(sample)).bytes == bytes(sample))
        }
    }

    @Test func hostsReplacesThe127011LineOnly() {
        let original = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian12-tiny\n::1\t\tlocalhost ip6-localhost ip6-loopback\n"
        #expect(
            text(GuestEdits.hosts(bytes(original), hostname: "vm1.example.org"))
                == "127.0.0.1\tlocalhost\n127.0.1.1\tvm1.example.org vm1\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
        #expect(
            text(GuestEdits.hosts(bytes(original), hostname: "vm1"))
                == "127.0.0.1\tlocalhost\n127.0.1.1\tvm1\n::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    }

    @Test func hostsAddsALineAfterLocalhostAndDropsOldDuplicates() {
        #expect(
            text(GuestEdits.hosts(bytes("# c\n127.0.0.1 localhost\n::1 localhost"), hostname: "a.b"))
                == "# c\n127.0.0.1 localhost\n127.0.1.1\ta.b a\n::1 localhost")
        #expect(text(GuestEdits.hosts(bytes("127.0.0.1 localhost"), hostname: "a")) == "127.0.0.1 localhost\n127.0.1.1\ta\n")
        #expect(text(GuestEdits.hosts(bytes("::1 x\n"), hostname: "a")) == "127.0.1.1\ta\n::1 x\n")
        #expect(text(GuestEdits.hosts(bytes(""), hostname: "a")) == "127.0.1.1\ta\n")
        #expect(text(GuestEdits.hosts(nil, hostname: "a")) == "127.0.0.1\tlocalhost\n127.0.1.1\ta\n")
        #expect(
            text(GuestEdits.hosts(bytes(" 127.0.1.1 old\n#127.0.1.1 keep\n127.0.1.1\told2\n"), hostname: "new"))
                == "127.0.1.1\tnew\n#127.0.1.1 keep\n")
    }

    @Test func hostnames() throws {
        #expect(text(GuestEdits.hostnameFile("vm1.example.org")) == "vm1\n")
        #expect(text(GuestEdits.hostnameFile("vm1")) == "vm1\n")
        try GuestEdits.validateHostname("snf-12.example.org")
        for bad in ["", "a..b", "-a", "a-", "a b", "a\nb", "a_b", ".a", String(repeating: "a", count: 64)] {
            #expect(throws: CustomizationError.self) { try GuestEdits.validateHostname(bad) }
        }
    }

    @Test func shadowReplacesHashAndLastChangeOnly() throws {
        let original = "root:*:19700:0:99999:7:::\nuser:!:19700:0:99999:7:::\n"
        let edited = try GuestEdits.shadow(bytes(original), user: "user", hash: "$6$s$h", today: 20000)
        #expect(text(edited) == "root:*:19700:0:99999:7:::\nuser:$6$s$h:20000:0:99999:7:::\n")
        let added = try GuestEdits.shadow(bytes("root:*:1::::::"), user: "bob", hash: "$6$s$h", today: 5)
        #expect(text(added) == "root:*:1::::::\nbob:$6$s$h:5:0:99999:7:::\n")
        let short = try GuestEdits.shadow(bytes("root\n"), user: "root", hash: "$1$x$y", today: 5)
        #expect(text(short) == "root:$1$x$y:5\n")
        #expect(throws: CustomizationError.self) { try GuestEdits.shadow(bytes(original), user: "root", hash: "a:b", today: 1) }
        #expect(throws: CustomizationError.self) { try GuestEdits.shadow(bytes(original), user: "root", hash: "a\nb", today: 1) }
    }

    @Test func passwdEntries() throws {
        let passwd = bytes("root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1001:Test User,,,:/home/user:/bin/bash\nbad:x:y:0::/:/bin/sh\n")
        #expect(try GuestEdits.passwdEntry(passwd, user: "user") == .init(name: "user", uid: 1000, gid: 1001, home: "/home/user"))
        #expect(try GuestEdits.passwdEntry(passwd, user: "nobody") == nil)
        #expect(try GuestEdits.passwdEntry(passwd, user: "use") == nil)
        #expect(throws: CustomizationError.self) { try GuestEdits.passwdEntry(passwd, user: "bad") }
        try GuestEdits.validateHome("/home/user", user: "u")
        for bad in ["home", "/", "/home/../etc", "/home/./x", "/home/a\nb", "/a\u{7f}"] {
            #expect(throws: CustomizationError.self) { try GuestEdits.validateHome(bad, user: "u") }
        }
    }

    @Test func fstabSwapLineIsAddedOnce() {
        let once = GuestEdits.fstabAddingSwap(bytes("UUID=r / ext4 defaults 0 1"), uuid: "abc")
        #expect(text(once) == "UUID=r / ext4 defaults 0 1\nUUID=abc none swap sw 0 0\n")
        #expect(GuestEdits.fstabAddingSwap(once, uuid: "abc") == once)
        #expect(GuestEdits.fstabAddingSwap(bytes("UUID=abc\tnone  swap sw 0 0"), uuid: "abc") == bytes("UUID=abc\tnone  swap sw 0 0"))
        #expect(text(GuestEdits.fstabAddingSwap(nil, uuid: "x")) == "UUID=x none swap sw 0 0\n")
    }

    @Test func authorizedKeysMerge() throws {
        let keys = "ssh-ed25519 AAAA1 a@b\n\n# comment\n  ssh-rsa BBBB2 c@d  \r\n"
        #expect(try text(#require(try GuestEdits.authorizedKeys(nil, adding: keys))) == "ssh-ed25519 AAAA1 a@b\nssh-rsa BBBB2 c@d\n")
        #expect(
            try text(#require(try GuestEdits.authorizedKeys(bytes("ssh-rsa BBBB2 c@d"), adding: keys)))
                == "ssh-rsa BBBB2 c@d\nssh-ed25519 AAAA1 a@b\n")
        #expect(try GuestEdits.authorizedKeys(bytes("ssh-rsa BBBB2 c@d\nssh-ed25519 AAAA1 a@b\n"), adding: keys) == nil)
        #expect(throws: CustomizationError.self) { try GuestEdits.authorizedKeys(nil, adding: "ssh-rsa A\u{1b}[2J") }
    }

    @Test func sshHostKeys() {
        let names = ["ssh_host_rsa_key", "ssh_host_rsa_key.pub", "ssh_host_ed25519_key", "sshd_config", "moduli", "ssh_host_key.pub", "ssh_host_x_key.bak"]
        #expect(GuestEdits.sshHostKeyNames(names) == ["ssh_host_ed25519_key", "ssh_host_rsa_key", "ssh_host_rsa_key.pub"])
    }

    @Test func debugfsListingParses() throws {
        let listing = bytes("/13/040755/0/0/.//\n/2/040755/0/0/..//\n/14/100644/0/0/fstab/71/\n/16/100640/0/42/gshadow/61/\n/40/100600/5/6/a\nb/3/\n/41/120777/0/0/link/7/\n\n")
        let entries = try FastExtEditor.parseListing(listing)
        #expect(entries.map(\.name) == [".", "..", "fstab", "gshadow", "a\nb", "link"])
        #expect(entries[3] == .init(name: "gshadow", mode: 0o100640, uid: 0, gid: 42))
        #expect(entries[4].uid == 5 && entries[4].gid == 6)
        #expect(throws: CustomizationError.self) { try FastExtEditor.parseListing(bytes("/1/100644/0/0/x")) }
    }

    @Test func guestPathsForDebugfs() throws {
        for good in ["/", "/etc/hosts", "/home/user/.ssh/authorized_keys", "/a-b_c.d+e@f:g"] { try FastExtEditor.checkPath(good) }
        for bad in ["etc", "/etc/", "//etc", "/a b", "/a\"b", "/a'b", "/a\\b", "/a\nb", "/a/../b", "/a/./b", "/a#b", "/é"] {
            #expect(throws: CustomizationError.self) { try FastExtEditor.checkPath(bad) }
        }
    }
}

struct PasswordHashTests {
    @Test func hashesVerifyForEveryMethod() throws {
        for (method, prefix) in [("sha512", "$6$"), ("", "$6$"), ("SHA256", "$5$"), ("md5", "$1$"), ("blowfish", "$2b$"), ("yescrypt", "$y$")] {
            let hash = try PasswordHasher.hash("correct horse", method: method)
            #expect(hash.hasPrefix(prefix), "\(method): \(hash)")
            #expect(PasswordHasher.verify("correct horse", hash: hash))
            #expect(!PasswordHasher.verify("wrong horse", hash: hash))
            try GuestEdits.validatePasswordHash(hash)
        }
        // Fresh salt every time.
        #expect(try PasswordHasher.hash("x", method: "sha512") != PasswordHasher.hash("x", method: "sha512"))
        #expect(throws: CustomizationError.self) { try PasswordHasher.hash("x", method: "des") }
    }

    /// Vectors from `openssl passwd -6/-5/-1 -salt abcdefgh 'p@ss word'`.
    @Test func matchesOpenSSL() throws {
        let vectors = [
            "$6$abcdefgh$JyuVhva.Ss8BW6un4sZ/HUV2eIApDzZV9z2TprwN9ERSnvLoT/FvYpXhyFDZackuPE4X/KWscOUxZGXHxegGK1",
            "$5$abcdefgh$0w0PH1QNpX/Md4phOLqLRXLkF2ZjDjaJMUmWFSczcn9",
            "$1$abcdefgh$d84nhW9tvfUOzY3ri9ot7.",
        ]
        for vector in vectors {
            #expect(try PasswordHasher.crypt("p@ss word", setting: vector) == vector)
            #expect(PasswordHasher.verify("p@ss word", hash: vector))
        }
    }
}
