import Testing

@testable import ImageDeploy

struct EnvironmentTests {
    @Test func parsesTheRealCreateEnvironment() throws {
        let env = try OSEnvironment(Fixtures.osCreate, scope: .instance)
        #expect(env.instanceName == "inst2.ganeti.test")
        #expect(env.hypervisor == .fake)
        #expect(env.variant == "default")
        #expect(env.disks == [InstanceDisk(index: 0, path: "/dev/loop0", sizeMiB: 64, access: "rw")])
        #expect(env.nicCount == 1)
        #expect(env.nics["NIC_0_MAC"] == "aa:00:00:17:c0:be")
        #expect(env.osParameters == ["a": "b", "flavor": "x"])
        #expect(try env.firstDiskPath() == "/dev/loop0")
        // The toy OS's parameters are not snf-image's.
        #expect(throws: DeployError.self) { try ImageParameters(env.osParameters) }
    }

    @Test func rejectsWrongOrMissingVariables() {
        func fails(_ change: (inout [String: String]) -> Void, scope: OSEnvironment.Scope = .instance) -> Bool {
            var environment = Fixtures.osCreate
            change(&environment)
            do {
                _ = try OSEnvironment(environment, scope: scope)
                return false
            } catch let error as DeployError {
                return error.kind == .badInput
            } catch { return false }
        }
        #expect(fails { $0["OS_API_VERSION"] = "15" })
        #expect(fails { $0["OS_API_VERSION"] = nil })
        #expect(fails { $0["HYPERVISOR"] = "lxc" })
        #expect(fails { $0["INSTANCE_NAME"] = nil })
        #expect(fails { $0["DISK_COUNT"] = "x" })
        #expect(fails { $0["DISK_0_SIZE"] = "1G" })
        #expect(!fails({ $0["INSTANCE_NAME"] = nil }, scope: .core))
        for hv in ["kvm", "xen-pvm", "xen-hvm", "fake"] { #expect(!fails { $0["HYPERVISOR"] = hv }) }
    }

    @Test func unsetIsNotEmpty() throws {
        var environment = Fixtures.osCreate
        environment["OSP_A"] = nil
        environment["OSP_FLAVOR"] = nil
        environment["OSP_AUTH_KEYS"] = ""
        let env = try OSEnvironment(environment, scope: .core)
        let parameters = try ImageParameters(env.osParameters)
        #expect(parameters.authorizedKeys == "")
        #expect(parameters.password == nil)
    }

    @Test func userspaceOnlyDiskIsRefused() throws {
        var environment = Fixtures.osCreate
        environment["DISK_0_PATH"] = nil
        environment["DISK_0_URI"] = "kvm:nbd:unix:/run/x.sock"
        let env = try OSEnvironment(environment, scope: .instance)
        #expect(env.disks[0].uri == "kvm:nbd:unix:/run/x.sock")
        #expect(throws: DeployError.self) { try env.firstDiskPath() }
    }
}

struct ParameterTests {
    func badInput(_ body: () throws -> Void) -> Bool {
        do {
            try body()
            return false
        } catch let error as DeployError {
            return error.kind == .badInput
        } catch { return false }
    }

    @Test func parametersListComesFromTheTable() {
        let lines = ImageParameters.parametersList.split(separator: "\n")
        #expect(lines.count == ImageParameters.definitions.count)
        #expect(lines.map { String($0.split(separator: " ")[0]) } == ImageParameters.definitions.map(\.name))
        #expect(ImageConfig.osFiles.map(\.name) == ["ganeti_api_version", "variants.list", "parameters.list"])
        #expect(ImageConfig.osFiles[0].content == "20\n")
    }

    @Test func validation() throws {
        let good = ["img_id": "debian", "img_format": "diskdump"]
        try ImageParameters(good).validate(requireImage: true)
        #expect(badInput { try ImageParameters(["img_id": "debian"]).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(["img_format": "diskdump"]).validate(requireImage: true) })
        try ImageParameters(["img_format": "diskdump"]).validate(requireImage: false)
        #expect(badInput { try ImageParameters(good.merging(["img_format": "extdump"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_format": "qcow2"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_passwd": "x", "img_passwd_hash": "$6$a$b"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_passwd": ""]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_passwd_hash": "plain"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_passwd_hash": "$6$a:b$c"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_properties": "[1]"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_properties": "{\"SWAP\": \"x\"}"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_id": "../etc/passwd"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_id": "snf-store://bad name"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { try ImageParameters(good.merging(["img_id": "ftp://x/y"]) { $1 }).validate(requireImage: true) })
        #expect(badInput { _ = try ImageParameters(["img_personality": "[]"]) })
    }

    @Test func locators() throws {
        #expect(try ImageLocator("snf-store://debian-12") == .store(try .init("debian-12")))
        #expect(try ImageLocator("local://deb.img") == .local("deb.img"))
        #expect(try ImageLocator("file://deb.img") == .local("deb.img"))
        #expect(try ImageLocator("deb.img") == .local("deb.img"))
        #expect(try ImageLocator("https://example.org/deb.img") == .http("https://example.org/deb.img"))
        for bad in ["local://a/b", "local://..", "..", ".", "local://", "a\u{0}b", "pithos://x/y", ""] {
            #expect(throws: DeployError.self, "\(bad)") { try ImageLocator(bad) }
        }
    }

    @Test func propertiesMergeCaseInsensitively() throws {
        let parameters = try ImageParameters([
            "img_properties": #"{"osfamily": "linux", "Users": "root user", "ROOT_PARTITION": 2, "DO_SYNC": true, "SWAP": null}"#,
            "inst_properties": #"{"USERS": "admin"}"#,
        ])
        let properties = try parameters.properties()
        #expect(properties.values == ["OSFAMILY": "linux", "USERS": "admin", "ROOT_PARTITION": "2", "DO_SYNC": "true"])
        #expect(try properties.users() == ["admin"])
        #expect(try properties.rootPartition() == 2)
        #expect(properties["do_sync"] == "true")
    }

    @Test func configURLOverridesParameters() throws {
        let given = try ImageParameters(["img_id": "old", "img_format": "diskdump", "config_url": "http://config/x"])
        var fetched: [String] = []
        let merged = try given.applyingConfigURL { url in
            fetched.append(url)
            return #"{"IMG_ID": "snf-store://new", "img_properties": {"USERS": "u1"}, "Auth_Keys": "ssh-ed25519 AAAA"}"#
        }
        #expect(fetched == ["http://config/x"])
        #expect(merged.imageID == "snf-store://new")
        #expect(merged.authorizedKeys == "ssh-ed25519 AAAA")
        #expect(try merged.properties().users() == ["u1"])
        #expect(badInput { _ = try given.applyingConfigURL { _ in #"{"img_personality": "[]"}"# } })
        #expect(badInput { _ = try given.applyingConfigURL { _ in "not json" } })
        #expect(badInput { _ = try given.applyingConfigURL { _ in "[]" } })
        // Without config_url nothing is fetched.
        _ = try ImageParameters(["img_id": "x"]).applyingConfigURL { _ in Issue.record("fetched"); return "{}" }
    }

    @Test func json() throws {
        #expect(try JSONValue.parse(#" {"a": [1, -2.5e3, true, null, "x\u00e9\n\ud83d\ude00"]} "#)
            == .object([("a", .array([.number("1"), .number("-2.5e3"), .bool(true), .null, .string("xé\n😀")]))]))
        for bad in ["", "{", "{\"a\" 1}", "[1,]", "01", "\"\\x\"", "{} x", "\"\u{1}\""] {
            #expect(throws: JSONError.self, "\(bad.debugDescription)") { try JSONValue.parse(bad) }
        }
    }
}

struct PropertyTests {
    @Test func booleans() {
        for word in ["yes", "true", "on", "1", "set", "YES", "True", " on "] {
            #expect(ImageProperties.parseBoolean(word, name: "X") == (true, nil) as (Bool, String?), "\(word)")
        }
        for word in ["no", "false", "off", "0", "unset", "NO", "Off"] {
            #expect(ImageProperties.parseBoolean(word, name: "X") == (false, nil) as (Bool, String?), "\(word)")
        }
        let empty = ImageProperties.parseBoolean("", name: "X")
        #expect(empty.value == false && empty.warning != nil)
        let other = ImageProperties.parseBoolean("maybe", name: "X")
        #expect(other.value == true && other.warning != nil)
        #expect(ImageProperties().boolean("MISSING") == (false, nil) as (Bool, String?))
    }

    @Test func swap() throws {
        #expect(try ImageProperties.parseSwap("2:512") == SwapRequest(partition: 2, mebibytes: 512))
        #expect(try ImageProperties.parseSwap(" 4:1 ") == SwapRequest(partition: 4, mebibytes: 1))
        for bad in ["", "2", "c", "2:", ":512", "0:512", "5:512", "2:0", "2:-1", "2:1.5", "a:b", "2:512:1", "2:99999999999"] {
            #expect(throws: DeployError.self, "\(bad.debugDescription)") { try ImageProperties.parseSwap(bad) }
        }
    }

    @Test func usersAndMethods() throws {
        #expect(try ImageProperties().users() == ["root"])
        #expect(try ImageProperties(["USERS": "root  user_1 a-b"]).users() == ["root", "user_1", "a-b"])
        for bad in ["Root", "1user", "user;rm", "a/b", "", "-x"] {
            #expect(throws: DeployError.self, "\(bad)") { try ImageProperties(["USERS": bad]).users() }
        }
        #expect(try ImageProperties().hashingMethod() == .sha512)
        #expect(try ImageProperties(["PASSWD_HASHING_METHOD": "MD5"]).hashingMethod().cryptPrefix == "$1$")
        #expect(try ImageProperties(["PASSWD_HASHING_METHOD": "blowfish"]).hashingMethod().cryptPrefix == "$2b$")
        #expect(throws: DeployError.self) { try ImageProperties(["PASSWD_HASHING_METHOD": "sha1"]).hashingMethod() }
        #expect(try ImageProperties(["OSFAMILY": "Linux"]).osFamily() == .linux)
        #expect(throws: DeployError.self) { try ImageProperties(["OSFAMILY": "plan9"]).osFamily() }
        #expect(throws: DeployError.self) { try ImageProperties(["ROOT_PARTITION": "0"]).rootPartition() }
    }
}

struct PlannerTests {
    func plan(_ properties: [String: String], _ parameters: [String: String] = [:], hostname: String = "vm1.example.org")
        throws -> TaskPlanner.Outcome
    {
        try TaskPlanner.plan(
            hostname: hostname, parameters: ImageParameters(parameters), properties: ImageProperties(properties),
            hashPassword: { password, method in "\(method.cryptPrefix)salt$\(password.count)" })
    }

    @Test func defaultPlan() throws {
        let outcome = try plan([:])
        #expect(outcome.plan.tasks == [.fixPartitionTable, .filesystemResizeUnmounted, .assignHostname, .changeMachineId, .deleteSSHKeys])
        #expect(outcome.plan.hostname == "vm1.example.org")
        #expect(outcome.plan.users == ["root"])
        #expect(outcome.plan.passwordHash == nil)
        #expect(outcome.warnings.isEmpty)
    }

    @Test func passwordIsHashedWithTheChosenMethod() throws {
        let outcome = try plan(["PASSWD_HASHING_METHOD": "sha256", "USERS": "root admin", "SWAP": "2:256"], ["img_passwd": "secret"])
        #expect(outcome.plan.tasks.contains(.changePassword))
        #expect(outcome.plan.tasks.contains(.addSwap))
        #expect(outcome.plan.passwordHash == "$5$salt$6")
        #expect(outcome.plan.users == ["root", "admin"])
        #expect(outcome.plan.swap == SwapRequest(partition: 2, mebibytes: 256))
        let hashed = try plan([:], ["img_passwd_hash": "$6$abc$def"])
        #expect(hashed.plan.passwordHash == "$6$abc$def")
        let keys = try plan([:], ["auth_keys": ""])
        #expect(keys.plan.tasks.contains(.changePassword) && keys.plan.authorizedKeys == "" && keys.plan.passwordHash == nil)
    }

    @Test func exclusions() throws {
        #expect(try plan(["EXCLUDE_ALL_TASKS": "yes"], ["img_passwd": "x"]).plan.tasks.isEmpty)
        #expect(try plan(["EXCLUDE_MOUNTED_TASKS": "1"]).plan.tasks == [.fixPartitionTable, .filesystemResizeUnmounted])
        #expect(try plan(["EXCLUDE_FilesystemResize_TASKS": "on"]).plan.tasks.first == .fixPartitionTable)
        #expect(try !plan(["exclude_filesystemresize_tasks": "on"]).plan.tasks.contains(.filesystemResizeUnmounted))
        #expect(try !plan(["EXCLUDE_TASK_DeleteSSHKeys": "yes"]).plan.tasks.contains(.deleteSSHKeys))
        #expect(try plan(["EXCLUDE_TASK_DeleteSSHKeys": "no"]).plan.tasks.contains(.deleteSSHKeys))
        #expect(try plan(["EXCLUDE_TASK_ConfigureNetwork": "yes"]).warnings.isEmpty)
        #expect(try plan(["EXCLUDE_TASK_Nonsense": "yes"]).warnings.count == 1)
        #expect(try plan(["EXCLUDE_ALL_TASKS": "perhaps"]).warnings.count == 1)
    }

    @Test func onlyLinuxIsCustomized() throws {
        #expect(throws: DeployError.self) { try plan(["OSFAMILY": "windows"]) }
        #expect(try plan(["OSFAMILY": "windows", "EXCLUDE_ALL_TASKS": "yes"]).plan.tasks.isEmpty)
        #expect(try plan(["OSFAMILY": "linux"]).plan.tasks.count == 5)
    }

    @Test func badValuesFailEvenWithoutTasks() {
        #expect(throws: DeployError.self) { try plan(["EXCLUDE_ALL_TASKS": "yes", "SWAP": "9:1"]) }
        #expect(throws: DeployError.self) { try plan(["USERS": "x;y"]) }
        #expect(throws: DeployError.self) { try plan([:], hostname: "bad host") }
        #expect(throws: DeployError.self) { try plan([:], hostname: "-x.example") }
    }
}
