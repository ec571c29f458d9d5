import BlockStore
import BlockStoreTesting
import Foundation
import Testing

@Suite("snf-store admin CLI (the built binary)")
struct CLITests {
    @Test func initIsIdempotentAndOtherVerbsNeedAStore() throws {
        let root = try temporaryDirectory("snf-store-init") + "/store"
        let cli = CLI(root: root)
        let missing = try cli.run(["list"])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("no block store at ") && missing.stderr.contains("snf-store init"))
        #expect(try cli.run(["init"]).stdout.contains("initialized"))
        #expect(try cli.run(["init"]).stdout.contains("already exists"))
        #expect(try cli.run(["list"]).status == 0)
    }

    @Test func helpPrintsUsageAndExitsZero() throws {
        let cli = try CLI.withNewStore()
        for arguments in [["--help"], ["list", "--help"], ["attach", "--help"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: CLI.binary)
            process.arguments = arguments
            let out = Pipe()
            let err = Pipe()
            process.standardOutput = out
            process.standardError = err
            try process.run()
            let result = CLI.collect(process, out, err)
            #expect(result.status == 0, "\(arguments): \(result.stderr)")
            #expect(result.stdout.contains("USAGE:"), "\(arguments): \(result.stdout)")
        }
        _ = cli
    }

    @Test func rootComesFromTheOptionThenTheEnvironment() throws {
        let cli = try CLI.withNewStore()
        let env = ["PATH": "/usr/bin:/bin", "SNF_STORE_ROOT": cli.root]
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = ["create", "envvol", "--size", "1M"]
        process.environment = env
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        #expect(try cli.ok(["info", "envvol", "--json"]).stdout.contains("\"size\" : 1048576"))
        // --root wins over the environment.
        let other = try CLI.withNewStore()
        #expect(try other.run(["info", "envvol"], environment: env).status == 2)
    }

    @Test func imageCloneWriteSnapshotWorkflow() throws {
        let cli = try CLI.withNewStore()
        let image = randomData(2 * blockSize, seed: 1) + Data(count: blockSize) + randomData(12345, seed: 2)
        let imagePath = try cli.file(image)
        let imported = try cli.ok(["import", "debian", imagePath])
        #expect(imported.stdout.isEmpty, "progress and summaries go to stderr")
        #expect(imported.stderr.contains("imported debian"))

        let info = try #require(try json(cli.ok(["info", "debian", "--json"]).stdout) as? [String: Any])
        #expect(info["name"] as? String == "debian")
        #expect(info["kind"] as? String == "ro")
        #expect(info["size"] as? Int == image.count)
        #expect(info["blocks"] as? Int == 4)
        #expect(info["zero_blocks"] as? Int == 1)
        #expect(try cli.exported("debian") == image)

        // Export to a file keeps zero blocks as holes.
        let exportPath = try temporaryDirectory("snf-export") + "/out.img"
        try cli.ok(["export", "debian", exportPath])
        #expect(try Data(contentsOf: URL(fileURLWithPath: exportPath)) == image)

        let blocksBefore = try cli.inventory().filter { $0.hasPrefix("blocks/") }
        try cli.ok(["clone", "debian", "vm1.disk0", "--size", "20M"])
        #expect(try cli.inventory().filter { $0.hasPrefix("blocks/") } == blocksBefore, "a clone stores no block")
        let patch = randomData(3 * mebibyte, seed: 3)
        try cli.ok(["write", "vm1.disk0", "--offset", "\(blockSize - mebibyte)", try cli.file(patch)])
        try cli.ok(["write", "vm1.disk0", "--offset", "18M", "-"], stdin: Data("tail".utf8))
        var expected = image + Data(count: 20 * mebibyte - image.count)
        expected.replaceSubrange((blockSize - mebibyte)..<(blockSize + 2 * mebibyte), with: patch)
        expected.replaceSubrange((18 * mebibyte)..<(18 * mebibyte + 4), with: Data("tail".utf8))
        #expect(try cli.exported("vm1.disk0") == expected)
        #expect(try cli.exported("debian") == image, "the origin never changes")

        try cli.ok(["snapshot", "vm1.disk0", "vm1.snap1"])
        try cli.ok(["write", "vm1.disk0", "--offset", "0", "-"], stdin: Data("changed".utf8))
        #expect(try cli.exported("vm1.snap1") == expected, "a snapshot never changes")
        try cli.ok(["grow", "vm1.disk0", "--size", "24M"])
        let volumeInfo = try #require(try json(cli.ok(["info", "vm1.disk0", "--json"]).stdout) as? [String: Any])
        #expect(volumeInfo["kind"] as? String == "rw" && volumeInfo["size"] as? Int == 24 * mebibyte)
        #expect(volumeInfo["epoch"] as? Int == 2 && volumeInfo["origin"] as? String == "debian")

        let list = try #require(try json(cli.ok(["list", "--json"]).stdout) as? [[String: Any]])
        #expect(list.map { $0["name"] as? String } == ["debian", "vm1.disk0", "vm1.snap1"])
        #expect(try cli.ok(["list"]).stdout.contains("vm1.snap1"))

        try cli.ok(["rm", "debian"])
        #expect(try cli.exported("vm1.snap1") == expected, "a clone's data outlives its origin's name")
        let gc = try cli.ok(["gc", "--grace", "0"])
        #expect(gc.stdout.hasPrefix("freed "))
        let check = try cli.ok(["check"])
        #expect(check.stdout.hasPrefix("no problems"))
        #expect(try cli.exported("vm1.snap1") == expected)
    }

    @Test(arguments: Conformance.hashmapVectors.indices)
    func hashmapMatchesTheTestVectors(index: Int) throws {
        let vector = Conformance.hashmapVectors[index]
        let cli = try CLI.withNewStore()
        try cli.ok(["import", "v", try cli.file(Data(vector.content))])
        let hashmap = try #require(try json(cli.ok(["hashmap", "v"]).stdout) as? [String: Any])
        #expect(hashmap["block_size"] as? Int == 4_194_304)
        #expect(hashmap["block_hash"] as? String == "sha256")
        #expect(hashmap["bytes"] as? Int == vector.content.count)
        #expect(hashmap["hashes"] as? [String] == vector.hashes, "\(vector.name)")
        #expect(hashmap["top_hash"] as? String == vector.top, "\(vector.name)")
    }

    @Test func reimportingAnUnchangedFileDoesNotReadItAgain() throws {
        let cli = try CLI.withNewStore()
        let first = randomData(blockSize + 10, seed: 11)
        let path = try cli.file(first)
        // Only a file whose change time lies 2 s before the import is remembered.
        Thread.sleep(forTimeInterval: 2.2)
        #expect(!(try cli.ok(["import", "a", path]).stderr.contains("not read again")))
        #expect(try cli.ok(["import", "b", path]).stderr.contains("not read again"))
        #expect(!(try cli.ok(["import", "c", path, "--rehash"]).stderr.contains("not read again")))
        #expect(try cli.exported("b") == first)
        // The same size, new bytes: the change time moves, so the file is read.
        let second = randomData(blockSize + 10, seed: 12)
        try second.write(to: URL(fileURLWithPath: path))
        #expect(!(try cli.ok(["import", "d", path]).stderr.contains("not read again")))
        #expect(try cli.exported("d") == second)
        #expect(try cli.exported("a") == first)
    }

    @Test func streamsImportAndExport() throws {
        let cli = try CLI.withNewStore()
        let data = randomData(blockSize + 777, seed: 9)
        try cli.ok(["import", "piped", "-"], stdin: data)
        #expect(try cli.exported("piped") == data)
        let info = try #require(try json(cli.ok(["info", "piped", "--json"]).stdout) as? [String: Any])
        #expect(info["size"] as? Int == data.count)
    }

    /// Each case: arguments, and a phrase the one stderr line must contain.
    static let badInput: [([String], String)] = [
        (["info", "nothing"], "no map or volume named nothing"),
        (["export", "nothing", "-"], "no map or volume named nothing"),
        (["rm", "nothing"], "no map or volume named nothing"),
        (["clone", "nothing", "vol2"], "no map or volume named nothing"),
        (["info", "../etc"], "invalid name '../etc'"),
        (["create", "a/b", "--size", "1M"], "cannot contain '/'"),
        (["import", "..", "/dev/null"], "invalid name"),
        (["clone", "img", "small", "--size", "1000"], "needs at least"),
        (["clone", "img", "vol"], "already exists"),
        (["clone", "vol", "vol3"], "snapshot it"),
        (["write", "vol", "--offset", "8M", "-"], "pass the end of vol"),
        (["write", "vol", "--offset", "18446744073709551615", "-"], "pass the end of vol"),
        (["write", "img", "--offset", "0", "-"], "read-only"),
        (["grow", "vol", "--size", "1K"], "cannot shrink"),
        (["grow", "img", "--size", "100M"], "read-only"),
        (["snapshot", "vol", "img"], "already exists"),
        (["create", "vol9", "--size", "12Q"], "'12Q' is invalid"),
        (["import", "new", "/nonexistent/file"], "no such file"),
        (["create", "vol9"], "missing expected argument '--size <BYTES>'"),
    ]

    @Test(arguments: badInput.indices)
    func badInputExitsTwoAndChangesNothing(index: Int) throws {
        let (arguments, phrase) = CLITests.badInput[index]
        let cli = try CLI.withNewStore()
        try cli.ok(["import", "img", try cli.file(randomData(3 * mebibyte, seed: 4))])
        try cli.ok(["clone", "img", "vol", "--size", "8M"])
        try cli.ok(["write", "vol", "--offset", "1M", "-"], stdin: randomData(1000, seed: 5))
        let before = try cli.inventory()
        let result = try cli.run(arguments, stdin: Data("xyz".utf8))
        #expect(result.status == 2, "\(arguments): status \(result.status), \(result.stderr)")
        let lastLine = result.stderr.split(separator: "\n").last.map(String.init) ?? ""
        #expect(lastLine.localizedCaseInsensitiveContains(phrase), "\(arguments): \(result.stderr)")
        #expect(result.stdout.isEmpty, "nothing on stdout: \(result.stdout)")
        #expect(try cli.inventory() == before, "\(arguments) changed the store")
    }

    @Test func writeFromAStreamLongerThanTheVolumeChangesNothing() throws {
        let cli = try CLI.withNewStore()
        try cli.ok(["create", "vol", "--size", "2M"])
        let before = try cli.inventory()
        let result = try cli.run(["write", "vol", "--offset", "1M", "-"], stdin: randomData(mebibyte + 1, seed: 6))
        #expect(result.status == 2 && result.stderr.contains("pass the end of vol"))
        #expect(try cli.inventory() == before)
    }

    @Test func checkNamesCorruptAndMissingBlockFiles() throws {
        let cli = try CLI.withNewStore()
        try cli.ok(["import", "img", try cli.file(randomData(3 * blockSize, seed: 7))])
        let hashmap = try #require(try json(cli.ok(["hashmap", "img"]).stdout) as? [String: Any])
        let hashes = try #require(hashmap["hashes"] as? [String])
        let blockFile = { (hash: String) in "\(cli.root)/blocks/\(hash.prefix(2))/\(hash)" }
        // Corrupt one block file in place and delete another.
        let handle = try #require(FileHandle(forUpdatingAtPath: blockFile(hashes[0])))
        try handle.seek(toOffset: 1000)
        try handle.write(contentsOf: Data([0xff, 0x00, 0xff]))
        try handle.close()
        try FileManager.default.removeItem(atPath: blockFile(hashes[2]))

        let check = try cli.run(["check"])
        #expect(check.status == 1)
        let lines = check.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2, "one line per problem: \(lines)")
        #expect(lines.contains { $0.contains(hashes[0]) && $0.contains("corrupt") && $0.contains("img") })
        #expect(lines.contains { $0.contains(hashes[2]) && $0.contains("missing") && $0.contains("img") })
        #expect(check.stderr.contains("check found 2 problems"))

        let export = try cli.run(["export", "img", "-"])
        #expect(export.status == 1)
        #expect(export.stderr.contains(hashes[0]) || export.stderr.contains(hashes[2]), "the read error names the block")
    }
}
