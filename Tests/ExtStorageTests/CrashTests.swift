import BlockStore
import Foundation
import Testing

@Suite("snf-store under SIGKILL and concurrent processes (the built binary)", .serialized)
struct CrashTests {
    /// Kills writers with SIGKILL at varied moments; afterwards `check` passes and every
    /// acknowledged write, snapshot, import and clone reads back exactly.
    @Test func killNineInALoop() throws {
        let cli = try CLI.withNewStore()
        let volumeSize = 64 * mebibyte
        let image = randomData(3 * blockSize + 1000, seed: 100)
        try cli.ok(["import", "img", try cli.file(image)])
        try cli.ok(["clone", "img", "vol", "--size", "\(volumeSize)"])
        // Each region is written at most once, so before its write it holds the clone's bytes.
        let baseline = image + Data(count: volumeSize - image.count)

        struct Write { let offset: Int; let data: Data; let order: Int }
        var ackedWrites: [Write] = []
        var ackedSnapshots: [(name: String, order: Int)] = []
        var ackedImports: [(name: String, data: Data)] = []
        var ackedClones: [String] = []
        var killed = 0
        var rng = SystemRandomNumberGenerator()
        // The longest kill delay adapts to this machine's speed: longer after a kill, shorter
        // after a command that finished, so that about half of the commands are killed.
        var maxDelayMicroseconds = 40_000.0
        let iterations = 48
        for i in 0..<iterations {
            // Distinct regions inside distinct MiBs (at most 528 KiB from a 256 KiB offset); those
            // starting at 4 MiB boundaries make the first write to a block cover its start.
            let offset = i * mebibyte + (i % 4 == 0 ? 0 : mebibyte / 4)
            let arguments: [String]
            var stdinData: Data?
            switch i % 6 {
            case 0, 1, 2, 4:
                stdinData = randomData(mebibyte / 2 + 4096 * (i % 5), seed: UInt64(1000 + i))
                arguments = ["write", "vol", "--offset", "\(offset)", try cli.file(stdinData!)]
            case 3:
                arguments = ["snapshot", "vol", "snap\(i)"]
            default:
                stdinData = randomData(2 * blockSize + 17 * i, seed: UInt64(2000 + i))
                arguments = i % 12 == 5 ? ["import", "img\(i)", try cli.file(stdinData!)] : ["clone", "img", "clone\(i)"]
            }
            let (process, out, err) = try cli.start(arguments)
            // Kill at a varied moment: from at once to after the command normally ends.
            usleep(UInt32(Double.random(in: 0...maxDelayMicroseconds, using: &rng)))
            if process.isRunning {
                kill(process.processIdentifier, SIGKILL)
                maxDelayMicroseconds = min(maxDelayMicroseconds * 1.3, 3_000_000)
            } else {
                maxDelayMicroseconds = max(maxDelayMicroseconds * 0.8, 1_000)
            }
            let result = CLI.collect(process, out, err)
            if result.status == 0 {
                switch arguments[0] {
                case "write": ackedWrites.append(Write(offset: offset, data: stdinData!, order: i))
                case "snapshot": ackedSnapshots.append((arguments[2], i))
                case "import": ackedImports.append((arguments[1], stdinData!))
                default: ackedClones.append(arguments[2])
                }
            } else {
                #expect(result.status == -SIGKILL, "\(arguments): \(result.status) \(result.stderr)")
                killed += 1
            }
        }
        print("killNineInALoop: \(killed) of \(iterations) commands killed; acknowledged: \(ackedWrites.count) writes, \(ackedSnapshots.count) snapshots, \(ackedImports.count) imports, \(ackedClones.count) clones")
        #expect(killed > 0 && killed < iterations, "some commands were killed (\(killed) of \(iterations))")

        func verify(_ phase: String) throws {
            let check = try cli.run(["check"])
            #expect(check.status == 0, "\(phase): \(check.stdout)")
            let volume = try cli.exported("vol")
            for write in ackedWrites {
                #expect(volume[write.offset..<(write.offset + write.data.count)] == write.data,
                        "\(phase): acknowledged write \(write.order) is intact")
            }
            for snapshot in ackedSnapshots {
                let bytes = try cli.exported(snapshot.name)
                for write in ackedWrites {
                    let range = write.offset..<(write.offset + write.data.count)
                    if write.order < snapshot.order {
                        #expect(bytes[range] == write.data, "\(phase): \(snapshot.name) holds write \(write.order)")
                    } else {
                        #expect(bytes[range] == baseline[range],
                                "\(phase): \(snapshot.name) does not hold later write \(write.order)")
                    }
                }
            }
            for (name, data) in ackedImports {
                #expect(try cli.exported(name) == data, "\(phase): import \(name)")
            }
            for name in ackedClones {
                #expect(try cli.exported(name) == image, "\(phase): clone \(name)")
            }
        }
        try verify("after the kills")
        try cli.ok(["gc", "--grace", "0"])
        try verify("after garbage collection")
    }

    /// Several processes clone, write, snapshot and import on one store at once, with a garbage
    /// collection in the middle; the store stays sound and every result is exact.
    @Test func concurrentProcesses() throws {
        let cli = try CLI.withNewStore()
        let image = randomData(2 * blockSize, seed: 300)
        try cli.ok(["import", "img", try cli.file(image)])
        let failures = LockedBox<[String]>([])
        let workers = 4
        let rounds = 3
        let patches = (0..<workers).map { w in (0..<rounds).map { r in randomData(100_000, seed: UInt64(400 + w * 10 + r)) } }
        let patchFiles = try patches.map { try $0.map { try cli.file($0) } }
        DispatchQueue.concurrentPerform(iterations: workers + 1) { worker in
            func step(_ arguments: [String]) {
                guard let result = try? cli.run(arguments), result.status == 0 else {
                    failures.update { $0.append("\(arguments)") }
                    return
                }
            }
            if worker == workers {
                for _ in 0..<3 {
                    step(["gc", "--grace", "0"])
                    step(["check"])
                }
                return
            }
            step(["clone", "img", "vol\(worker)", "--size", "12M"])
            for round in 0..<rounds {
                step(["write", "vol\(worker)", "--offset", "\(round * 3_000_000)", patchFiles[worker][round]])
                step(["snapshot", "vol\(worker)", "snap\(worker)-\(round)"])
                step(["import", "img\(worker)-\(round)", patchFiles[worker][round]])
            }
        }
        #expect(failures.get().isEmpty, "failed: \(failures.get())")
        #expect(try cli.run(["check"]).status == 0)
        for worker in 0..<workers {
            var expected = image + Data(count: 4 * mebibyte)
            for round in 0..<rounds {
                let range = (round * 3_000_000)..<(round * 3_000_000 + 100_000)
                expected.replaceSubrange(range, with: patches[worker][round])
                #expect(try cli.exported("snap\(worker)-\(round)") == expected)
                #expect(try cli.exported("img\(worker)-\(round)") == patches[worker][round])
            }
            #expect(try cli.exported("vol\(worker)") == expected)
        }
        #expect(try cli.exported("img") == image)
    }
}
