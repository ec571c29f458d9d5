import BlockStore

/// An in-memory backend that models durability exactly as the ``StoreBackend`` contract states
/// it, and injects faults (TigerBeetle's `testing/storage.zig` in spirit).
///
/// Durability model: every object has *live* content (what reads see) and a *stable* state (what
/// survives a crash).
/// - `put` makes its content stable at once (fsync before rename) but its *name* only at the next
///   `flush`; until then a crash brings back the old object (or none).
/// - `write` changes live content only; `sync` makes it stable.
/// - `delete` is undone by a crash before the next `flush`.
/// ``restart(keeping:)`` simulates a crash and reboot: live state becomes the stable state;
/// pending changes are lost, or kept at random with a seed (a real crash may persist any subset).
///
/// Faults: fail the n-th mutating operation with an error, "crash" at the n-th mutating operation
/// (it and every later operation fail until ``restart(keeping:)``), run out of space after a byte
/// budget, and corrupt or remove stored objects.
public final class MemoryBackend: StoreBackend, @unchecked Sendable {
    struct Key: Hashable {
        var kind: ObjectKind
        var key: String
    }

    struct Object {
        var content: [UInt8]
        var synced: [UInt8]
        var modifiedSeconds: Int64
    }

    struct Stable {
        var content: [UInt8]
        var modifiedSeconds: Int64
    }

    struct LockState {
        var shared = 0
        var exclusive = false
    }

    struct State {
        var live: [Key: Object] = [:]
        var stable: [Key: Stable] = [:]
        var pending: Set<Key> = []
        var mutations = 0
        var failures: [Int: StoreError] = [:]
        var crashAt: Int?
        var crashed = false
        var spaceBytes: UInt64?
        var scratch: [Int64] = []
        var locks: [String: LockState] = [:]
    }

    private let state = ConditionLock(State())
    private let clock: @Sendable () -> Int64

    /// A new, empty backend. `clock` gives modification times (share it with the ``BlockStore``).
    public init(clock: @escaping @Sendable () -> Int64 = BlockStore.systemSeconds) {
        self.clock = clock
    }

    // MARK: Fault injection

    /// How a simulated crash treats changes that were not yet durable.
    public enum Survival: Sendable {
        /// Every pending change is lost (the most pessimistic crash).
        case nothingPending
        /// Each pending change survives or not, chosen by a generator seeded with this value.
        case randomSubset(seed: UInt64)
    }

    /// Number of mutating operations (put, write, sync, touch, delete, flush) so far.
    public var mutationCount: Int { state.withLock { $0.mutations } }

    /// Makes mutating operation number `number` (counting from 1 since creation) throw `error`.
    public func failMutation(_ number: Int, with error: StoreError) {
        state.withLock { $0.failures[number] = error }
    }

    /// Crashes at mutating operation number `number`: it and every later operation throw, and it
    /// changes nothing, until ``restart(keeping:)``.
    public func crash(atMutation number: Int) {
        state.withLock { $0.crashAt = number }
    }

    /// True once a scheduled crash has happened.
    public var hasCrashed: Bool { state.withLock { $0.crashed } }

    /// Limits the bytes that puts and writes may still store; past it they throw `noSpace`.
    public func limitSpace(toBytes bytes: UInt64?) {
        state.withLock { $0.spaceBytes = bytes }
    }

    /// Simulates a crash and restart: what was not durable is lost (see ``Survival``); locks held
    /// by the dead process are released; scheduled faults are cleared.
    public func restart(keeping survival: Survival = .nothingPending) {
        state.withLock { s in
            var rng = SplitMix64(seed: { if case .randomSubset(let seed) = survival { return seed }; return 0 }())
            let keepSome: Bool = { if case .randomSubset = survival { return true }; return false }()
            if keepSome {
                for key in s.pending.sorted(by: { ($0.kind.rawValue, $0.key) < ($1.kind.rawValue, $1.key) })
                where rng.next() & 1 == 1 {
                    if let object = s.live[key] {
                        s.stable[key] = Stable(content: object.synced, modifiedSeconds: object.modifiedSeconds)
                    } else {
                        s.stable[key] = nil
                    }
                }
                for (key, object) in s.live.sorted(by: { ($0.key.kind.rawValue, $0.key.key) < ($1.key.kind.rawValue, $1.key.key) })
                where !s.pending.contains(key) && object.content != object.synced && rng.next() & 1 == 1 {
                    // An unsynced in-place write that happened to reach the disk.
                    s.stable[key] = Stable(content: object.content, modifiedSeconds: object.modifiedSeconds)
                }
            }
            s.live = s.stable.mapValues { Object(content: $0.content, synced: $0.content, modifiedSeconds: $0.modifiedSeconds) }
            s.pending = []
            s.crashed = false
            s.crashAt = nil
            s.failures = [:]
            s.spaceBytes = nil
            s.locks = [:]
        }
    }

    /// Flips one byte of a stored object (live and stable), as bit rot would.
    public func corrupt(_ kind: ObjectKind, _ key: String, at offset: Int = 0) {
        state.withLock { s in
            let k = Key(kind: kind, key: key)
            guard var object = s.live[k], !object.content.isEmpty else { return }
            let i = min(offset, object.content.count - 1)
            object.content[i] ^= 0x5a
            object.synced = object.content
            s.live[k] = object
            s.stable[k]?.content = object.content
        }
    }

    /// Replaces a stored object's content outright (live and stable).
    public func overwrite(_ kind: ObjectKind, _ key: String, with bytes: [UInt8]) {
        state.withLock { s in
            let k = Key(kind: kind, key: key)
            s.live[k]?.content = bytes
            s.live[k]?.synced = bytes
            s.stable[k]?.content = bytes
        }
    }

    /// Removes a stored object behind the store's back (live and stable).
    public func removeObject(_ kind: ObjectKind, _ key: String) {
        state.withLock { s in
            let k = Key(kind: kind, key: key)
            s.live[k] = nil
            s.stable[k] = nil
            s.pending.remove(k)
        }
    }

    /// Keys of every live object of `kind`, sorted.
    public func keys(_ kind: ObjectKind) -> [String] {
        state.withLock { s in s.live.keys.filter { $0.kind == kind }.map(\.key).sorted() }
    }

    /// Adds a scratch file of a dead writer, modified at `modifiedSeconds`.
    public func addScratch(modifiedSeconds: Int64) {
        state.withLock { $0.scratch.append(modifiedSeconds) }
    }

    // MARK: Operation accounting

    /// Counts one mutating operation and applies scheduled faults. Called with the state locked.
    private func beginMutation(_ s: inout State, _ what: String) throws {
        if s.crashed { throw MemoryBackend.crashError }
        s.mutations += 1
        if let at = s.crashAt, s.mutations >= at {
            s.crashed = true
            throw MemoryBackend.crashError
        }
        if let failure = s.failures.removeValue(forKey: s.mutations) { throw failure }
    }

    private func beginRead(_ s: State) throws {
        if s.crashed { throw MemoryBackend.crashError }
    }

    private func consumeSpace(_ s: inout State, _ bytes: Int, _ what: String) throws {
        guard let budget = s.spaceBytes else { return }
        guard UInt64(bytes) <= budget else {
            throw StoreError(.noSpace, "cannot write \(what): No space left on device (simulated)")
        }
        s.spaceBytes = budget - UInt64(bytes)
    }

    /// The error every operation throws after a simulated crash.
    public static let crashError = StoreError(.io, "simulated crash: the backend is gone")

    // MARK: StoreBackend

    public func read(_ kind: ObjectKind, _ key: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
        throws -> Int?
    {
        try state.withLock { s in
            try beginRead(s)
            guard let object = s.live[Key(kind: kind, key: key)] else { return nil }
            guard offset < UInt64(object.content.count) else { return 0 }
            let n = min(buffer.count, object.content.count - Int(offset))
            object.content.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(offset)..<Int(offset) + n]))
            }
            return n
        }
    }

    public func get(_ kind: ObjectKind, _ key: String) throws -> [UInt8]? {
        try state.withLock { s in
            try beginRead(s)
            return s.live[Key(kind: kind, key: key)]?.content
        }
    }

    @discardableResult
    public func put(_ kind: ObjectKind, _ key: String, _ bytes: UnsafeRawBufferPointer, mode: PutMode) throws -> Bool {
        let content = copyBytes(bytes)
        return try state.withLock { s in
            try beginMutation(&s, "put \(key)")
            let k = Key(kind: kind, key: key)
            if mode == .createOnly && s.live[k] != nil { return false }
            try consumeSpace(&s, content.count, key)
            s.live[k] = Object(content: content, synced: content, modifiedSeconds: clock())
            s.pending.insert(k)
            return true
        }
    }

    public func write(_ kind: ObjectKind, _ key: String, at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        try state.withLock { s in
            try beginMutation(&s, "write \(key)")
            let k = Key(kind: kind, key: key)
            guard var object = s.live[k] else {
                throw StoreError(.missing, "cannot write \(kind.rawValue) \(key): it does not exist")
            }
            let end = Int(offset) + bytes.count
            try consumeSpace(&s, max(0, end - object.content.count), key)
            if object.content.count < end {
                object.content += [UInt8](repeating: 0, count: end - object.content.count)
            }
            object.content.withUnsafeMutableBytes { target in
                UnsafeMutableRawBufferPointer(rebasing: target[Int(offset)..<end]).copyMemory(from: bytes)
            }
            object.modifiedSeconds = clock()
            s.live[k] = object
        }
    }

    public func sync(_ kind: ObjectKind, _ key: String) throws {
        try state.withLock { s in
            try beginMutation(&s, "sync \(key)")
            let k = Key(kind: kind, key: key)
            guard let object = s.live[k] else { return }
            s.live[k]?.synced = object.content
            if !s.pending.contains(k) {
                s.stable[k] = Stable(content: object.content, modifiedSeconds: object.modifiedSeconds)
            }
        }
    }

    public func stat(_ kind: ObjectKind, _ key: String) throws -> ObjectInfo? {
        try state.withLock { s in
            try beginRead(s)
            guard let object = s.live[Key(kind: kind, key: key)] else { return nil }
            return ObjectInfo(key: key, sizeBytes: UInt64(object.content.count), modifiedSeconds: object.modifiedSeconds)
        }
    }

    @discardableResult
    public func touch(_ kind: ObjectKind, _ key: String) throws -> Bool {
        try state.withLock { s in
            try beginMutation(&s, "touch \(key)")
            let k = Key(kind: kind, key: key)
            guard s.live[k] != nil else { return false }
            s.live[k]?.modifiedSeconds = clock()
            s.stable[k]?.modifiedSeconds = clock()
            return true
        }
    }

    public func delete(_ kind: ObjectKind, _ key: String) throws {
        try state.withLock { s in
            try beginMutation(&s, "delete \(key)")
            let k = Key(kind: kind, key: key)
            if s.live.removeValue(forKey: k) != nil { s.pending.insert(k) }
        }
    }

    public func list(_ kind: ObjectKind, prefix: String) throws -> [ObjectInfo] {
        try state.withLock { s in
            try beginRead(s)
            return s.live.compactMap { key, object in
                guard key.kind == kind, key.key.hasPrefix(prefix) else { return nil }
                return ObjectInfo(key: key.key, sizeBytes: UInt64(object.content.count), modifiedSeconds: object.modifiedSeconds)
            }
        }
    }

    public func flush() throws {
        try state.withLock { s in
            try beginMutation(&s, "flush")
            for key in s.pending {
                if let object = s.live[key] {
                    s.stable[key] = Stable(content: object.synced, modifiedSeconds: object.modifiedSeconds)
                } else {
                    s.stable[key] = nil
                }
            }
            s.pending = []
        }
    }

    public func lock(_ name: String, exclusive: Bool) throws -> any StoreLock {
        state.withLock(
            when: { s in
                let held = s.locks[name] ?? LockState()
                return exclusive ? (!held.exclusive && held.shared == 0) : !held.exclusive
            },
            { s in
                if exclusive { s.locks[name, default: LockState()].exclusive = true }
                else { s.locks[name, default: LockState()].shared += 1 }
            })
        return MemoryLock { [state] in
            state.withLock { s in
                if exclusive { s.locks[name]?.exclusive = false } else { s.locks[name]?.shared -= 1 }
            }
        }
    }

    public func tryLock(_ name: String, exclusive: Bool) throws -> (any StoreLock)? {
        let taken = state.withLock { s -> Bool in
            let held = s.locks[name] ?? LockState()
            guard exclusive ? (!held.exclusive && held.shared == 0) : !held.exclusive else { return false }
            if exclusive { s.locks[name, default: LockState()].exclusive = true }
            else { s.locks[name, default: LockState()].shared += 1 }
            return true
        }
        guard taken else { return nil }
        return MemoryLock { [state] in
            state.withLock { s in
                if exclusive { s.locks[name]?.exclusive = false } else { s.locks[name]?.shared -= 1 }
            }
        }
    }

    public func removeLock(_ name: String) throws {
        state.withLock { s in
            if let held = s.locks[name], !held.exclusive && held.shared == 0 { s.locks[name] = nil }
        }
    }

    public func lockNames() throws -> [String] {
        state.withLock { Array($0.locks.keys) }
    }

    public func purgeScratch(olderThanSeconds: Int64) throws -> Int {
        let cutoff = clock() - olderThanSeconds
        return state.withLock { s in
            let before = s.scratch.count
            s.scratch.removeAll { $0 <= cutoff }
            return before - s.scratch.count
        }
    }
}

/// A lock of the in-memory backend.
final class MemoryLock: StoreLock, @unchecked Sendable {
    private var release: (@Sendable () -> Void)?
    private let guardLock = ConditionLock(())

    init(release: @escaping @Sendable () -> Void) { self.release = release }

    func unlock() {
        let action: (@Sendable () -> Void)? = guardLock.withLock { _ in
            defer { release = nil }
            return release
        }
        action?()
    }

    deinit { unlock() }
}

/// A small deterministic generator for reproducible fault schedules.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

/// A copy of `bytes` as an array (memcpy, fast in debug builds too).
func copyBytes(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: bytes.count) { buffer, initialized in
        if let base = bytes.baseAddress, !bytes.isEmpty {
            UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(start: base, count: bytes.count))
        }
        initialized = bytes.count
    }
}

/// True when `a` and `b` hold the same bytes (memcmp, fast in debug builds too).
public func sameBytes(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    return a.withUnsafeBytes { pa in
        b.withUnsafeBytes { pb in pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0 }
    }
}

/// Sets `range` of `bytes` to zero (memset).
public func zeroBytes(_ bytes: inout [UInt8], _ range: Range<Int>) {
    bytes.withUnsafeMutableBytes { raw in
        if !range.isEmpty { memset(raw.baseAddress! + range.lowerBound, 0, range.count) }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
