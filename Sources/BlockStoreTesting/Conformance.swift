import BlockStore

/// One check of the conformance suite, run against a fresh, empty backend.
public struct ConformanceCheck: Sendable, CustomStringConvertible {
    public let name: String
    public let run: @Sendable (any StoreBackend) throws -> Void
    public var description: String { name }
}

/// The suite every ``StoreBackend`` must pass (restic's `internal/backend/test/suite.go` in
/// spirit): the backend contract itself, then the store's behaviour on top of the backend.
/// Tests run each check against each backend (local directory, in-memory).
public enum Conformance {
    /// Every check.
    public static var all: [ConformanceCheck] { backendChecks + storeChecks }

    static func check(_ name: String, _ run: @escaping @Sendable (any StoreBackend) throws -> Void) -> ConformanceCheck {
        ConformanceCheck(name: name, run: run)
    }

    static let blockKey = String(repeating: "ab", count: 32)
    static let volumeKey = VolumeBlockID(volume: VolumeID(hex: String(repeating: "1", count: 32))!, epoch: 1, index: 2).key

    /// The backend contract.
    public static let backendChecks: [ConformanceCheck] = [
        check("put, get, read and stat") { backend in
            let data = TestData.random(1000, seed: 1)
            try require(try backend.get(.block, blockKey) == nil, "absent object reads as nil")
            try data.withUnsafeBytes { try require(try backend.put(.block, blockKey, $0, mode: .createOnly), "first put creates") }
            try require(try backend.get(.block, blockKey) == data, "get returns what put stored")
            var buffer = [UInt8](repeating: 0, count: 100)
            let n = try buffer.withUnsafeMutableBytes { try backend.read(.block, blockKey, at: 950, into: $0) }
            try require(n == 50 && Array(buffer.prefix(50)) == Array(data[950...]), "read at an offset stops at the end")
            let none = try buffer.withUnsafeMutableBytes { try backend.read(.map, blockKey, at: 0, into: $0) }
            try require(none == nil, "namespaces are separate")
            try require(try backend.stat(.block, blockKey)?.sizeBytes == 1000, "stat reports the size")
        },
        check("create-only keeps the first object, replace overwrites") { backend in
            let first = TestData.random(10, seed: 2)
            let second = TestData.random(20, seed: 3)
            try first.withUnsafeBytes { _ = try backend.put(.record, "name1", $0, mode: .createOnly) }
            let again = try second.withUnsafeBytes { try backend.put(.record, "name1", $0, mode: .createOnly) }
            try require(!again && (try backend.get(.record, "name1")) == first, "create-only keeps the existing object")
            try second.withUnsafeBytes { _ = try backend.put(.record, "name1", $0, mode: .replace) }
            try require(try backend.get(.record, "name1") == second, "replace overwrites")
        },
        check("write in place extends and syncs; writing an absent object fails") { backend in
            try ([1, 2, 3] as [UInt8]).withUnsafeBytes { _ = try backend.put(.volumeBlock, volumeKey, $0, mode: .replace) }
            try ([9, 9] as [UInt8]).withUnsafeBytes { try backend.write(.volumeBlock, volumeKey, at: 1, $0) }
            try ([7] as [UInt8]).withUnsafeBytes { try backend.write(.volumeBlock, volumeKey, at: 5, $0) }
            try backend.sync(.volumeBlock, volumeKey)
            try require(try backend.get(.volumeBlock, volumeKey) == [1, 9, 9, 0, 0, 7], "in-place writes land, gaps read as zeros")
            let other = VolumeBlockID(volume: VolumeID(hex: String(repeating: "2", count: 32))!, epoch: 1, index: 0).key
            try requireError(.missing) { try ([1] as [UInt8]).withUnsafeBytes { try backend.write(.volumeBlock, other, at: 0, $0) } }
        },
        check("delete is idempotent; list filters by kind and prefix") { backend in
            let otherVolume = VolumeBlockID(volume: VolumeID(hex: String(repeating: "3", count: 32))!, epoch: 4, index: 5).key
            for key in [volumeKey, otherVolume] {
                try ([1] as [UInt8]).withUnsafeBytes { _ = try backend.put(.volumeBlock, key, $0, mode: .replace) }
            }
            try ([1] as [UInt8]).withUnsafeBytes { _ = try backend.put(.block, blockKey, $0, mode: .replace) }
            try backend.flush()
            try require(Set(try backend.list(.volumeBlock, prefix: "").map(\.key)) == [volumeKey, otherVolume], "list all")
            try require(try backend.list(.volumeBlock, prefix: String(repeating: "3", count: 32) + "/").map(\.key) == [otherVolume], "list one volume")
            try require(try backend.list(.block, prefix: "").map(\.key) == [blockKey], "list blocks")
            try require(try backend.list(.map, prefix: "").isEmpty, "no maps")
            try backend.delete(.volumeBlock, otherVolume)
            try backend.delete(.volumeBlock, otherVolume)
            try backend.flush()
            try require(try backend.list(.volumeBlock, prefix: "").map(\.key) == [volumeKey], "deleted object is gone")
        },
        check("touch reports presence and refreshes the time") { backend in
            try require(!(try backend.touch(.block, blockKey)), "touch of an absent object is false")
            try ([1] as [UInt8]).withUnsafeBytes { _ = try backend.put(.block, blockKey, $0, mode: .createOnly) }
            try require(try backend.touch(.block, blockKey), "touch of a present object is true")
            let now = BlockStore.systemSeconds()
            let modified = try backend.stat(.block, blockKey)?.modifiedSeconds ?? 0
            try require(abs(modified - now) < 60, "touched object has a recent time")
        },
        check("exclusive locks exclude, shared locks share") { backend in
            let first = try backend.lock("test", exclusive: false)
            let second = try backend.lock("test", exclusive: false)
            let order = ConditionLock<[String]>([])
            Workers.run(count: 2) { worker in
                if worker == 0 {
                    let held = try! backend.lock("test", exclusive: true)
                    order.withLock { $0.append("exclusive") }
                    held.unlock()
                } else {
                    // Give the other thread time to block on the shared holders.
                    usleep(100_000)
                    order.withLock { $0.append("release") }
                    first.unlock()
                    second.unlock()
                }
            }
            try require(order.withLock { $0 } == ["release", "exclusive"], "an exclusive lock waits for shared holders")
            try backend.removeLock("test")
        },
    ]
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
