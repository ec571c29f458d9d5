import BlockStore
import BlockStoreTesting
import Testing

/// A scenario of store operations with a model of what each acknowledged operation guarantees.
/// Crashing the in-memory backend at every mutation in turn, then restarting it, must leave a
/// sound store in which everything acknowledged before the crash is intact.
struct Scenario {
    enum Effect: Sendable {
        case creates(String)
        case writes(String, Range<Int>)
        case grows(String)
        case removes(String)
        case none
    }

    struct Step: Sendable {
        let label: String
        let run: @Sendable (BlockStore) throws -> Void
        let apply: @Sendable (inout [String: [UInt8]]) -> Void
        let effect: Effect
    }

    static let block = TestData.block
    static let data0 = TestData.random(block, seed: 1) + [UInt8](repeating: 0, count: block) + TestData.random(1000, seed: 2)
    static let data1 = Array(data0.prefix(block)) + TestData.random(2000, seed: 3)

    static func write(_ name: String, at offset: Int, seed: UInt64, count: Int = 1000) -> Step {
        let bytes = TestData.random(count, seed: seed)
        return Step(
            label: "write \(name) at \(offset)",
            run: { try $0.write(to: n(name), at: UInt64(offset), from: MemorySource(bytes)) },
            apply: { $0[name]!.replaceSubrange(offset..<(offset + count), with: bytes) },
            effect: .writes(name, offset..<(offset + count)))
    }

    static let steps: [Step] = [
        Step(label: "import img", run: { try $0.importMap(named: n("img"), from: MemorySource(data0)) },
             apply: { $0["img"] = data0 }, effect: .creates("img")),
        Step(label: "clone img to vol", run: { try $0.cloneVolume(from: n("img"), named: n("vol"), sizeBytes: UInt64(3 * block)) },
             apply: { $0["vol"] = data0 + [UInt8](repeating: 0, count: 3 * block - data0.count) }, effect: .creates("vol")),
        write("vol", at: 100, seed: 10),  // copy-on-write from a content block
        Step(label: "snapshot vol as snap1", run: { try $0.snapshot(n("vol"), as: n("snap1")) },
             apply: { $0["snap1"] = $0["vol"] }, effect: .creates("snap1")),
        write("vol", at: block - 500, seed: 11),  // copy-on-write of a frozen private block and a zero block
        Step(label: "import img2", run: { try $0.importMap(named: n("img2"), from: MemorySource(data1, sequential: true)) },
             apply: { $0["img2"] = data1 }, effect: .creates("img2")),
        write("vol", at: 200_000, seed: 12),  // in place
        Step(label: "remove img", run: { try $0.remove(n("img")) }, apply: { $0["img"] = nil }, effect: .removes("img")),
        write("vol", at: 2 * block + 5000, seed: 13),  // copy-on-write of a short content block
        Step(label: "grow vol", run: { try $0.grow(n("vol"), toSizeBytes: UInt64(4 * block)) },
             apply: { $0["vol"]! += [UInt8](repeating: 0, count: block) }, effect: .grows("vol")),
        Step(label: "collect garbage", run: { _ = try $0.collectGarbage(graceSeconds: 0) }, apply: { _ in }, effect: .none),
        write("vol", at: 3 * block + 1, seed: 14, count: 100),
        Step(label: "snapshot vol as snap2", run: { try $0.snapshot(n("vol"), as: n("snap2")) },
             apply: { $0["snap2"] = $0["vol"] }, effect: .creates("snap2")),
        Step(label: "remove snap1", run: { try $0.remove(n("snap1")) }, apply: { $0["snap1"] = nil }, effect: .removes("snap1")),
        Step(label: "clone snap2 to vol2", run: { try $0.cloneVolume(from: n("snap2"), named: n("vol2")) },
             apply: { $0["vol2"] = $0["snap2"] }, effect: .creates("vol2")),
        write("vol2", at: 150, seed: 15),
        Step(label: "collect garbage", run: { _ = try $0.collectGarbage(graceSeconds: 0) }, apply: { _ in }, effect: .none),
    ]

    /// Runs the steps until one fails. Returns the model of acknowledged state and the failed step.
    static func run(_ store: BlockStore) -> (model: [String: [UInt8]], failed: Step?) {
        var model: [String: [UInt8]] = [:]
        for step in steps {
            do {
                try step.run(store)
            } catch {
                return (model, step)
            }
            step.apply(&model)
        }
        return (model, nil)
    }

    /// Checks that `store` holds everything `model` acknowledges, allowing `failed` to have taken
    /// effect wholly or partly (as its effect says), and nothing else.
    static func verify(_ store: BlockStore, model: [String: [UInt8]], failed: Step?, context: String) throws {
        let names = Set(try store.list().map(\.name.rawValue))
        var wouldBe = model
        failed?.apply(&wouldBe)
        for name in names.union(model.keys) {
            let present = names.contains(name)
            let effect = failed?.effect
            switch (effect, model[name]) {
            case (.creates(let created), nil) where created == name:
                // Atomic: absent, or present with exactly the intended bytes.
                if present { #expect(sameBytes(try store.exportedBytes(n(name)), wouldBe[name]!), "\(context): half-made \(name)") }
            case (_, nil):
                Issue.record("\(context): \(name) exists but was never acknowledged")
            case (.removes(let removed), let expected?) where removed == name:
                if present { #expect(sameBytes(try store.exportedBytes(n(name)), expected), "\(context): \(name) damaged") }
            case (_, let expected?):
                guard present else {
                    Issue.record("\(context): acknowledged \(name) is gone")
                    continue
                }
                var actual = try store.exportedBytes(n(name))
                var expected = expected
                if case .writes(let written, let range) = effect, written == name {
                    // A write that did not return may have changed its own range, nothing else.
                    zeroBytes(&actual, range)
                    zeroBytes(&expected, range)
                }
                if case .grows(let grown) = effect, grown == name, actual.count == wouldBe[name]!.count {
                    expected = wouldBe[name]!
                }
                #expect(sameBytes(actual, expected), "\(context): acknowledged bytes of \(name) changed")
            }
        }
    }
}

@Suite("Crash safety and faults (in-memory backend)")
struct CrashSimulationTests {
    /// The scenario completes and every model expectation holds without faults.
    @Test func scenarioWithoutFaults() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend, workers: 2)
        let (model, failed) = Scenario.run(store)
        #expect(failed == nil)
        try Scenario.verify(store, model: model, failed: nil, context: "no fault")
        #expect(try store.check().isSound)
    }

    static var mutationCount: Int {
        let backend = MemoryBackend()
        _ = Scenario.run(BlockStore(backend: backend, workers: 1))
        return backend.mutationCount
    }

    enum Mode: CaseIterable, Sendable { case pessimistic, randomA, randomB }

    /// Crash at every mutation of the scenario, restart, and require a sound store that holds
    /// every acknowledged operation; then garbage collection must not destroy any of it.
    @Test(arguments: Mode.allCases)
    func crashAtEveryMutation(mode: Mode) throws {
        let total = CrashSimulationTests.mutationCount
        #expect(total > 50)
        for point in 1...total {
            let backend = MemoryBackend()
            let store = BlockStore(backend: backend, workers: 1)
            backend.crash(atMutation: point)
            let (model, failed) = Scenario.run(store)
            #expect(backend.hasCrashed, "crash point \(point) was reached")
            switch mode {
            case .pessimistic: backend.restart(keeping: .nothingPending)
            case .randomA: backend.restart(keeping: .randomSubset(seed: UInt64(point)))
            case .randomB: backend.restart(keeping: .randomSubset(seed: UInt64(point) &* 7919 &+ 13))
            }
            let context = "crash at mutation \(point) of \(total) in '\(failed?.label ?? "-")' (\(mode))"
            let report = try store.check()
            #expect(report.isSound, "\(context): \(report.problems)")
            try Scenario.verify(store, model: model, failed: failed, context: context)
            _ = try store.collectGarbage(graceSeconds: 0)
            #expect(try store.check().isSound, "\(context): after garbage collection")
            try Scenario.verify(store, model: model, failed: failed, context: context + " after gc")
        }
    }

    /// An I/O error at any mutation fails that operation cleanly; the process goes on.
    @Test func ioErrorAtEveryMutation() throws {
        let total = CrashSimulationTests.mutationCount
        for point in stride(from: 1, through: total, by: 1) {
            let backend = MemoryBackend()
            let store = BlockStore(backend: backend, workers: 1)
            backend.failMutation(point, with: StoreError(.io, "injected I/O error"))
            let (model, failed) = Scenario.run(store)
            let context = "I/O error at mutation \(point) in '\(failed?.label ?? "-")'"
            #expect(try store.check().isSound, "\(context)")
            try Scenario.verify(store, model: model, failed: failed, context: context)
        }
    }

    @Test func noSpaceDuringImportLeavesNoName() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend, workers: 2)
        backend.limitSpace(toBytes: UInt64(2 * TestData.block))
        let data = TestData.random(4 * TestData.block, seed: 5)
        #expect {
            try store.importMap(named: n("big"), from: MemorySource(data))
        } throws: { ($0 as? StoreError)?.code == .noSpace }
        #expect(try store.record(named: n("big")) == nil)
        #expect(try store.check().isSound)
        backend.limitSpace(toBytes: nil)
        try store.importMap(named: n("big"), from: MemorySource(data))
        #expect(try store.exportedBytes(n("big")) == data)
    }

    @Test func garbageCollectionRefusesWhenAMapIsUnreadable() throws {
        let backend = MemoryBackend()
        let store = BlockStore(backend: backend)
        try store.importMap(named: n("img"), from: MemorySource(TestData.random(100, seed: 6)))
        let map = try #require(try store.record(named: n("img"))?.map)
        backend.removeObject(.map, map.hex)
        #expect { _ = try store.collectGarbage(graceSeconds: 0) } throws: { ($0 as? StoreError)?.code == .missing }
        #expect(backend.keys(.block).count == 1, "nothing was swept")
    }

    @Test func graceUsesTheInjectedClock() throws {
        let clock = ManualClock(start: 1_000_000)
        let backend = MemoryBackend(clock: clock.now)
        let store = BlockStore(backend: backend, clock: clock.now)
        try store.importMap(named: n("img"), from: MemorySource(TestData.random(100, seed: 7)))
        try store.remove(n("img"))
        clock.advance(by: 59)
        #expect(try store.collectGarbage(graceSeconds: 60).blocks == 0)
        clock.advance(by: 1)
        #expect(try store.collectGarbage(graceSeconds: 60).blocks == 1)
        backend.addScratch(modifiedSeconds: clock.now() - 10)
        backend.addScratch(modifiedSeconds: clock.now() - 100)
        #expect(try store.collectGarbage(graceSeconds: 60).scratchFiles == 1)
    }

    @Test func reuseRestampsABlockInGrace() throws {
        let clock = ManualClock(start: 1_000_000)
        let backend = MemoryBackend(clock: clock.now)
        let store = BlockStore(backend: backend, clock: clock.now)
        let data = TestData.random(100, seed: 8)
        try store.importMap(named: n("a"), from: MemorySource(data))
        try store.remove(n("a"))
        clock.advance(by: 50)
        // An upload that finds the block present must protect it for a whole new grace period.
        let hashes = PithosHashmap(hashing: data).hashes
        let blocks = try BlockStore(backend: backend, clock: clock.now).storeBlocks(of: MemorySource(data), progress: nil)
        #expect(blocks.0 == [.block(hashes[0])])
        clock.advance(by: 50)
        #expect(try store.collectGarbage(graceSeconds: 60).blocks == 0)
    }
}

final class ManualClock: Sendable {
    private let seconds: ConditionLock<Int64>
    init(start: Int64) { seconds = ConditionLock(start) }
    var now: @Sendable () -> Int64 { { [seconds] in seconds.withLock { $0 } } }
    func advance(by delta: Int64) { seconds.withLock { $0 += delta } }
}
