import BlockStore

extension Conformance {
    /// The hashmap test vectors of `storage-model.md` §3: content, block hashes, top hash.
    public static let hashmapVectors: [(name: String, content: [UInt8], hashes: [String], top: String)] = [
        ("empty", [], ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("hello world", Array("hello world".utf8),
         ["b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"],
         "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"),
        ("abc and 3 NUL", Array("abc".utf8) + [0, 0, 0],
         ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("4 MiB of NUL", [UInt8](repeating: 0, count: TestData.block),
         ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
         "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("4 MiB of a then b", [UInt8](repeating: UInt8(ascii: "a"), count: TestData.block) + [UInt8(ascii: "b")],
         ["299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05",
          "3e23e8160039594a33894f6564e1b1348bbd7a0088d42c4acb73eeaed59c009d"],
         "565546ad93383e225e7cf808fb4d527a54dec54826a5c34a24c1f19a03c62583"),
        ("8 MiB of NUL then x", [UInt8](repeating: 0, count: 2 * TestData.block) + [UInt8(ascii: "x")],
         ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
          "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"],
         "62d4027c1085f2e082025695fb3df2fbc95a1395916a316355da5de116cc7098"),
    ]

    /// Every object the backend holds, for "changes nothing" checks.
    static func inventory(_ backend: any StoreBackend) throws -> [String] {
        var all: [String] = []
        for kind in ObjectKind.allCases {
            for object in try backend.list(kind, prefix: "") {
                let content = try backend.get(kind, object.key) ?? []
                all.append("\(kind.rawValue) \(object.key) \(Digest(sha256Of: content).shortHex)")
            }
        }
        return all.sorted()
    }

    static let n = TestData.name

    /// The store's behaviour on top of the backend.
    public static let storeChecks: [ConformanceCheck] = [
        check("import and export round-trip, from files and streams") { backend in
            let store = BlockStore(backend: backend)
            // 2 random blocks, 1 zero block, a short last block with trailing zeros.
            let data = TestData.random(2 * TestData.block, seed: 10) + [UInt8](repeating: 0, count: TestData.block)
                + TestData.random(1000, seed: 11) + [0, 0, 0]
            let record = try store.importMap(named: n("img"), from: MemorySource(data)).record
            try require(record.sizeBytes == UInt64(data.count) && record.kind == .readOnly, "record size and kind")
            try require(try store.exportedBytes(n("img")) == data, "export returns the imported bytes")
            let info = try store.info(n("img"))
            try require(info.blocks == 4 && info.zeroBlocks == 1 && info.contentBlocks == 3, "entries: \(info)")
            try require(try backend.list(.block, prefix: "").count == 3, "the zero block is never stored")
            try store.importMap(named: n("piped"), from: MemorySource(data, sequential: true))
            try require(try store.exportedBytes(n("piped")) == data, "a stream imports the same bytes")
            let sequentialSink = MemorySink(randomAccess: false)
            try store.export(n("img"), to: sequentialSink)
            try require(sequentialSink.bytes == data, "a sequential sink gets every byte in order")
            try store.importMap(named: n("empty"), from: MemorySource([]))
            try require(try store.exportedBytes(n("empty")).isEmpty, "an empty map")
        },
        check("re-importing the same data stores no new block") { backend in
            let store = BlockStore(backend: backend)
            let data = TestData.random(3 * TestData.block + 5, seed: 20)
            try store.importMap(named: n("first"), from: MemorySource(data))
            let blocks = try backend.list(.block, prefix: "").count
            let maps = try backend.list(.map, prefix: "").count
            try store.importMap(named: n("second"), from: MemorySource(data))
            try require(try backend.list(.block, prefix: "").count == blocks, "no new block")
            try require(try backend.list(.map, prefix: "").count == maps, "the same map data is shared")
            try require(try store.record(named: n("second"))?.map == store.record(named: n("first"))?.map, "one map body")
        },
        check("hashmaps match every test vector") { backend in
            let store = BlockStore(backend: backend)
            for (i, vector) in hashmapVectors.enumerated() {
                let name = n("vector\(i)")
                try store.importMap(named: name, from: MemorySource(vector.content))
                let hashmap = try store.hashmap(of: name)
                try require(hashmap.hashes.map(\.hex) == vector.hashes, "\(vector.name): block hashes")
                try require(hashmap.topHash.hex == vector.top, "\(vector.name): top hash \(hashmap.topHash.hex)")
                try require(hashmap.sizeBytes == UInt64(vector.content.count), "\(vector.name): bytes")
                try require(PithosHashmap(hashing: vector.content) == hashmap, "\(vector.name): direct computation")
            }
        },
        check("a clone writes no data and writes to it never change the origin") { backend in
            let store = BlockStore(backend: backend)
            let data = TestData.random(2 * TestData.block + 100, seed: 30)
            try store.importMap(named: n("origin"), from: MemorySource(data))
            let originHashmap = try store.hashmap(of: n("origin"))
            let before = try inventory(backend).filter { !$0.hasPrefix("record") }
            try store.cloneVolume(from: n("origin"), named: n("vol"), sizeBytes: UInt64(3 * TestData.block))
            try require(try inventory(backend).filter { !$0.hasPrefix("record") } == before, "a clone writes only its record")
            try require(try store.exportedBytes(n("vol")) == data + [UInt8](repeating: 0, count: TestData.block - 100), "a clone reads its origin, then zeros")
            let patch = TestData.random(5000, seed: 31)
            try store.write(to: n("vol"), at: UInt64(TestData.block - 2000), from: MemorySource(patch))
            try store.write(to: n("vol"), at: 10, from: MemorySource(patch))  // in place now
            var expected = data + [UInt8](repeating: 0, count: TestData.block - 100)
            expected.replaceSubrange((TestData.block - 2000)..<(TestData.block + 3000), with: patch)
            expected.replaceSubrange(10..<5010, with: patch)
            try require(try store.exportedBytes(n("vol")) == expected, "the clone has the written bytes")
            try require(try store.exportedBytes(n("origin")) == data, "the origin's bytes never change")
            try require(try store.hashmap(of: n("origin")) == originHashmap, "the origin's hashmap never changes")
            try require(try store.hashmap(of: n("vol")) == PithosHashmap(hashing: expected), "a volume's hashmap hashes its bytes")
            let info = try store.info(n("vol"))
            try require(info.writableBlocks == 2 && info.privateBlocks == 2, "copy-on-write touched exactly two blocks: \(info)")
        },
        check("snapshots freeze a volume; clones of snapshots diverge independently") { backend in
            let store = BlockStore(backend: backend)
            try store.createVolume(named: n("vol"), sizeBytes: UInt64(2 * TestData.block))
            let first = TestData.random(TestData.block + 10, seed: 40)
            try store.write(to: n("vol"), at: 0, from: MemorySource(first))
            let snap1 = try store.snapshot(n("vol"), as: n("snap1"))
            try require(snap1.kind == .readOnly && snap1.origin == "vol", "snapshot record")
            try require(try store.record(named: n("vol"))?.epoch == 2, "a snapshot bumps the epoch")
            let atSnapshot = try store.exportedBytes(n("vol"))
            try store.write(to: n("vol"), at: 5, from: MemorySource(TestData.random(100, seed: 41)))
            try require(try store.exportedBytes(n("snap1")) == atSnapshot, "writing after a snapshot does not change it")
            try store.cloneVolume(from: n("snap1"), named: n("vol2"))
            try store.write(to: n("vol2"), at: 7, from: MemorySource(TestData.random(10, seed: 42)))
            try require(try store.exportedBytes(n("snap1")) == atSnapshot, "writing to a clone of a snapshot does not change it")
            try store.snapshot(n("vol"), as: n("snap2"))
            try store.remove(n("snap1"))
            _ = try store.collectGarbage(graceSeconds: 0)
            try require(try store.exportedBytes(n("vol2")).count == 2 * TestData.block, "a clone outlives its origin")
            try require(try store.check().isSound, "the store stays sound")
            try requireError(.wrongKind) { try store.cloneVolume(from: n("vol"), named: n("vol3")) }
            try requireError(.wrongKind) { try store.snapshot(n("snap2"), as: n("snap3")) }
        },
        check("grow reads zeros; shrinking and writing past the end are refused") { backend in
            let store = BlockStore(backend: backend)
            try store.createVolume(named: n("vol"), sizeBytes: 100)
            try store.write(to: n("vol"), at: 90, from: MemorySource([UInt8](repeating: 1, count: 10)))
            try store.grow(n("vol"), toSizeBytes: UInt64(TestData.block + 50))
            try store.grow(n("vol"), toSizeBytes: UInt64(TestData.block + 50))
            let bytes = try store.exportedBytes(n("vol"))
            try require(bytes.count == TestData.block + 50 && bytes[90..<100].allSatisfy { $0 == 1 }
                && bytes[100...].allSatisfy { $0 == 0 }, "grown bytes read as zeros")
            try requireError(.invalidArgument) { try store.grow(n("vol"), toSizeBytes: 10) }
            try requireError(.outOfRange) {
                try store.write(to: n("vol"), at: UInt64(TestData.block), from: MemorySource([UInt8](repeating: 2, count: 51)))
            }
        },
        check("bad input changes nothing") { backend in
            let store = BlockStore(backend: backend)
            try store.importMap(named: n("img"), from: MemorySource(TestData.random(1000, seed: 50)))
            try store.cloneVolume(from: n("img"), named: n("vol"), sizeBytes: 2000)
            let before = try inventory(backend)
            try requireError(.notFound) { try store.cloneVolume(from: n("missing"), named: n("x")) }
            try requireError(.alreadyExists) { try store.cloneVolume(from: n("img"), named: n("vol")) }
            try requireError(.alreadyExists) { try store.importMap(named: n("img"), from: MemorySource([1])) }
            try requireError(.alreadyExists) { try store.createVolume(named: n("img"), sizeBytes: 1) }
            try requireError(.invalidArgument) { try store.cloneVolume(from: n("img"), named: n("small"), sizeBytes: 999) }
            try requireError(.outOfRange) { try store.write(to: n("vol"), at: 1990, from: MemorySource([UInt8](repeating: 1, count: 11))) }
            try requireError(.outOfRange) { try store.write(to: n("vol"), at: UInt64.max, from: MemorySource([1])) }
            try requireError(.wrongKind) { try store.write(to: n("img"), at: 0, from: MemorySource([1])) }
            try requireError(.wrongKind) { try store.grow(n("img"), toSizeBytes: 5000) }
            try requireError(.alreadyExists) { try store.snapshot(n("vol"), as: n("img")) }
            try requireError(.notFound) { try store.remove(n("missing")) }
            try requireError(.notFound) { try store.exportedBytes(n("missing")) }
            try requireError(.notFound) { try store.hashmap(of: n("missing")) }
            try requireError(.invalidName) { try MapName("../etc") }
            try requireError(.invalidName) { try MapName("a/b") }
            try requireError(.invalidName) { try MapName("a..b") }
            try require(try inventory(backend) == before, "the store is unchanged")
        },
        check("garbage collection frees only what no map refers to, after the grace period") { backend in
            let store = BlockStore(backend: backend)
            let shared = TestData.random(TestData.block, seed: 60)
            let own = TestData.random(TestData.block, seed: 61)
            try store.importMap(named: n("a"), from: MemorySource(shared + own))
            try store.importMap(named: n("b"), from: MemorySource(shared))
            try store.cloneVolume(from: n("a"), named: n("vol"))
            try store.write(to: n("vol"), at: 0, from: MemorySource([1, 2, 3]))
            try store.remove(n("a"))
            let kept = try store.collectGarbage(graceSeconds: 3600)
            try require(kept.blocks == 0 && kept.blocksInGrace == 0, "blocks of a clone's origin stay: \(kept)")
            try store.remove(n("vol"))
            let young = try store.collectGarbage(graceSeconds: 3600)
            try require(young.blocks == 0 && young.blocksInGrace == 1 && young.privateBlocks == 1 && young.maps == 1,
                "young blocks wait out the grace period; private blocks and maps go at once: \(young)")
            let old = try store.collectGarbage(graceSeconds: -10)
            try require(old.blocks == 1 && old.blockBytes == UInt64(TestData.block), "then they go: \(old)")
            try require(try store.exportedBytes(n("b")) == shared, "what is still referenced stays")
            try require(try store.check().isSound, "the store is sound after collection")
            let nothing = try store.collectGarbage(graceSeconds: -10)
            try require(nothing.freedBytes == 0, "a second collection frees nothing")
        },
        check("check names corrupt and missing blocks and map data") { backend in
            let store = BlockStore(backend: backend)
            let data = TestData.random(3 * TestData.block, seed: 70)
            try store.importMap(named: n("img"), from: MemorySource(data))
            try store.createVolume(named: n("vol"), sizeBytes: 100)
            try store.write(to: n("vol"), at: 0, from: MemorySource([1]))
            try store.snapshot(n("vol"), as: n("snap"))
            try require(try store.check().isSound, "a fresh store is sound")
            let hashes = try store.hashmap(of: n("img")).hashes
            let corrupt = hashes[0].hex
            let missing = hashes[1].hex
            try ([0xde, 0xad] as [UInt8]).withUnsafeBytes { _ = try backend.put(.block, corrupt, $0, mode: .replace) }
            try backend.delete(.block, missing)
            let snapMap = try store.record(named: n("snap"))!.map!.hex
            try ([1, 2, 3] as [UInt8]).withUnsafeBytes { _ = try backend.put(.map, snapMap, $0, mode: .replace) }
            let report = try store.check()
            // The volume shares the snapshot's map data, so both names are reported.
            try require(report.problems.count == 4, "four problems: \(report.problems)")
            try require(report.problems.contains { $0.contains(corrupt) && $0.contains("corrupt") && $0.contains("img") }, "corrupt block named: \(report.problems)")
            try require(report.problems.contains { $0.contains(missing) && $0.contains("missing") }, "missing block named: \(report.problems)")
            try require(report.problems.contains { $0.hasPrefix("map snap:") && $0.contains("corrupt") }, "corrupt map data named: \(report.problems)")
            try require(report.problems.contains { $0.hasPrefix("map vol:") && $0.contains("corrupt") }, "every map using it named: \(report.problems)")
            do {
                _ = try store.exportedBytes(n("img"))
                throw ConformanceFailure(message: "reading a corrupt block must fail", line: #line)
            } catch let error as StoreError {
                try require((error.code == .corrupt || error.code == .missing) && (error.message.contains(corrupt) || error.message.contains(missing)),
                    "the read error names the block: \(error.message)")
            }
        },
        check("threads cloning, snapshotting, writing and importing at once keep the store sound") { backend in
            let store = BlockStore(backend: backend, workers: 2)
            let base = TestData.random(2 * TestData.block, seed: 80)
            try store.importMap(named: n("base"), from: MemorySource(base))
            let failures = ConditionLock<[String]>([])
            Workers.run(count: 4) { worker in
                do {
                    let vol = n("vol\(worker)")
                    try store.cloneVolume(from: n("base"), named: vol, sizeBytes: UInt64(3 * TestData.block))
                    for round in 0..<4 {
                        let patch = TestData.random(1000, seed: UInt64(worker * 100 + round))
                        try store.write(to: vol, at: UInt64(round * 3_000_000), from: MemorySource(patch))
                        try store.snapshot(vol, as: n("snap\(worker)-\(round)"))
                        try store.importMap(named: n("img\(worker)-\(round)"), from: MemorySource(base + patch))
                        if worker == 0 && round == 2 { _ = try store.collectGarbage(graceSeconds: 0) }
                    }
                } catch {
                    failures.withLock { $0.append("worker \(worker): \(error)") }
                }
            }
            let problems = failures.withLock { $0 }
            try require(problems.isEmpty, "no operation failed: \(problems)")
            try require(try store.check().isSound, "the store is sound")
            for worker in 0..<4 {
                var expected = base + [UInt8](repeating: 0, count: TestData.block)
                for round in 0..<4 {
                    let patch = TestData.random(1000, seed: UInt64(worker * 100 + round))
                    expected.replaceSubrange((round * 3_000_000)..<(round * 3_000_000 + 1000), with: patch)
                    let snapshot = try store.exportedBytes(n("snap\(worker)-\(round)"))
                    try require(snapshot == expected, "snapshot \(worker)-\(round) holds exactly the writes before it")
                }
                try require(try store.exportedBytes(n("vol\(worker)")) == expected, "volume \(worker) holds every write")
                let image = try store.exportedBytes(n("img\(worker)-3"))
                try require(image.count == base.count + 1000, "image \(worker)-3 is whole")
            }
            try require(try store.exportedBytes(n("base")) == base, "the origin never changed")
        },
        check("blocks put one at a time make the same map as an import") { backend in
            let store = BlockStore(backend: backend)
            // A random block, a zero block, the random block again, and a short tail with zeros.
            let first = TestData.random(TestData.block, seed: 60)
            let tail = TestData.random(1000, seed: 61) + [UInt8](repeating: 0, count: 24)
            let data = first + [UInt8](repeating: 0, count: TestData.block) + first + tail
            var ids: [BlockID] = []
            for start in stride(from: 0, to: data.count, by: TestData.block) {
                let block = Array(data[start..<min(start + TestData.block, data.count)])
                ids.append(try block.withUnsafeBytes { try store.putBlock($0) })
            }
            try require(ids[1] == .zero && ids[0] == ids[2], "zero block and dedup: \(ids)")
            try require(try backend.list(.block, prefix: "").count == 2, "two distinct non-zero blocks stored")
            try store.createMap(named: n("streamed"), sizeBytes: UInt64(data.count), blocks: ids)
            try require(try store.exportedBytes(n("streamed")) == data, "the map reads back the bytes")
            try store.importMap(named: n("imported"), from: MemorySource(data))
            try require(
                try store.record(named: n("streamed"))?.map == store.record(named: n("imported"))?.map,
                "the same map body as an import")
            try require(try store.check().isSound, "the store is sound")
            let tooLong = [UInt8](repeating: 1, count: TestData.block + 1)
            try requireError(.invalidArgument) { try tooLong.withUnsafeBytes { try store.putBlock($0) } }
        },
        check("blocks from page-aligned buffers of any length read back exactly") { backend in
            // What uploads and imports hand the store (a local directory writes them with
            // O_DIRECT, a last partial page through the page cache).
            let store = BlockStore(backend: backend)
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: TestData.block, alignment: 4096)
            defer { buffer.deallocate() }
            let lengths = [TestData.block, TestData.block - 1, TestData.block - 4096, 65536, 65536 + 4095, 70000, 3 * 4096, 1]
            for (index, length) in lengths.enumerated() {
                var bytes = TestData.random(length, seed: UInt64(70 + index))
                bytes[length - 1] = 0xA5  // no trailing zero: the whole length is the block's content
                buffer.copyBytes(from: bytes)
                let id = try store.putBlock(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
                try require(id == BlockID(digest: Digest(sha256Of: bytes)), "block of \(length) bytes: its hash")
                let stored = try backend.get(.block, id.hex)
                try require(stored == bytes, "block of \(length) bytes reads back (\(stored?.count ?? -1) bytes)")
            }
            try require(try store.check().isSound, "the store is sound")
        },
    ]
}
