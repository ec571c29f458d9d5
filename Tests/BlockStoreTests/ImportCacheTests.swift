import BlockStore
import BlockStoreTesting
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("Import cache: unchanged files are not read again")
struct ImportCacheTests {
    /// The wall clock now, in nanoseconds (read on every call: tests run at different times).
    static var nowNanoseconds: Int64 {
        var t = timespec()
        clock_gettime(CLOCK_REALTIME, &t)
        return Int64(t.tv_sec) * 1_000_000_000 + Int64(t.tv_nsec)
    }

    static func identity(changedSecondsAgo: Int64, inode: UInt64 = 7, size: Int) -> SourceIdentity {
        let changed = nowNanoseconds - changedSecondsAgo * 1_000_000_000
        return SourceIdentity(
            device: 1, inode: inode, sizeBytes: UInt64(size), modifiedNanoseconds: changed, changedNanoseconds: changed)
    }

    @Test func anUnchangedFileIsReusedAndAChangedOneIsRead() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend)
        let data = TestData.random(2 * TestData.block + 5, seed: 1)
        let old = ImportCacheTests.identity(changedSecondsAgo: 60, size: data.count)
        let first = try store.importMap(named: n("a"), from: MemorySource(data, identity: old))
        #expect(!first.reusedUnchangedFile)
        let again = MemorySource(data, identity: old)
        let second = try store.importMap(named: n("b"), from: again)
        #expect(second.reusedUnchangedFile && again.readCount == 0)
        #expect(second.record.map == first.record.map && second.record.sizeBytes == first.record.sizeBytes)
        #expect(try store.exportedBytes(n("b")) == data)

        // Any field of the identity differs: the file is read.
        var changed = old
        changed.changedNanoseconds += 1
        let other = TestData.random(data.count, seed: 2)
        let third = try store.importMap(named: n("c"), from: MemorySource(other, identity: changed))
        #expect(!third.reusedUnchangedFile)
        #expect(try store.exportedBytes(n("c")) == other)
        for tweak in [\SourceIdentity.inode, \.device, \.sizeBytes] as [WritableKeyPath<SourceIdentity, UInt64>] {
            var identity = changed
            identity[keyPath: tweak] += 1
            let source = MemorySource(other, identity: identity)
            #expect(!(try store.importMap(named: n("t\(identity.hashValue & 0xffff)"), from: source).reusedUnchangedFile))
        }
        // useCache: false always reads.
        let forced = MemorySource(data, identity: old)
        #expect(!(try store.importMap(named: n("d"), from: forced, useCache: false).reusedUnchangedFile))
        #expect(forced.readCount > 0)
    }

    @Test func aRecentlyChangedFileIsNeverCached() throws {
        let store = BlockStore(backend: MemoryBackend())
        let data = TestData.random(1000, seed: 3)
        let racy = ImportCacheTests.identity(changedSecondsAgo: 0, size: data.count)
        _ = try store.importMap(named: n("a"), from: MemorySource(data, identity: racy))
        let again = MemorySource(data, identity: racy)
        #expect(!(try store.importMap(named: n("b"), from: again).reusedUnchangedFile))
        #expect(again.readCount > 0)
    }

    @Test func missingStoredDataMeansTheFileIsReadAgain() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend)
        let data = TestData.random(2 * TestData.block, seed: 4)
        let old = ImportCacheTests.identity(changedSecondsAgo: 60, size: data.count)
        try store.importMap(named: n("a"), from: MemorySource(data, identity: old))
        let lost = try store.hashmap(of: n("a")).hashes[1].hex
        backend.removeObject(.block, lost)
        let again = try store.importMap(named: n("b"), from: MemorySource(data, identity: old))
        #expect(!again.reusedUnchangedFile, "a block is gone: the cache cannot be trusted")
        #expect(try store.check().isSound, "and the re-import stored the lost block again")
        let map = try #require(try store.record(named: n("a"))?.map)
        backend.corrupt(.map, map.hex)
        #expect(!(try store.importMap(named: n("c"), from: MemorySource(data, identity: old)).reusedUnchangedFile))
    }

    @Test func garbageCollectionForgetsEntriesOfCollectedMaps() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend)
        let data = TestData.random(1000, seed: 5)
        let old = ImportCacheTests.identity(changedSecondsAgo: 60, size: data.count)
        try store.importMap(named: n("a"), from: MemorySource(data, identity: old))
        #expect(backend.keys(.importCache).count == 1)
        #expect(try store.collectGarbage(graceSeconds: 0).cacheEntries == 0)
        try store.remove(n("a"))
        #expect(try store.collectGarbage(graceSeconds: 0).cacheEntries == 1)
        #expect(backend.keys(.importCache).isEmpty)
        backend.restart()
        let again = MemorySource(data, identity: old)
        #expect(!(try store.importMap(named: n("b"), from: again).reusedUnchangedFile))
    }

    @Test func aDamagedEntryIsAMissAndCheckReportsIt() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend)
        let data = TestData.random(1000, seed: 6)
        let old = ImportCacheTests.identity(changedSecondsAgo: 60, size: data.count)
        try store.importMap(named: n("a"), from: MemorySource(data, identity: old))
        backend.corrupt(.importCache, old.cacheKey, at: 40)
        #expect(!(try store.importMap(named: n("b"), from: MemorySource(data, identity: old)).reusedUnchangedFile))
        backend.corrupt(.importCache, old.cacheKey, at: 40)
        let report = try store.check()
        #expect(report.problems.count == 1 && report.problems[0].contains("import cache entry"))
    }
}
