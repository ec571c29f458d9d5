import BlockStore

/// Bytes from memory, for tests. `sequential` makes it behave like a pipe (unknown size,
/// one read at a time in order).
public final class MemorySource: ByteSource {
    public let bytes: [UInt8]
    private let sequential: Bool
    private let fileIdentity: SourceIdentity?
    /// How many reads it served (to tell whether an import read it at all).
    public var readCount: Int { reads.withLock { $0 } }
    private let reads = ConditionLock(0)

    /// `identity` makes it look like a regular file of that identity to the import cache.
    public init(_ bytes: [UInt8], sequential: Bool = false, identity: SourceIdentity? = nil) {
        self.bytes = bytes
        self.sequential = sequential
        self.fileIdentity = identity
    }

    public func identity() throws -> SourceIdentity? { fileIdentity }

    public var sizeBytes: UInt64? { sequential ? nil : UInt64(bytes.count) }
    public var supportsConcurrentReads: Bool { !sequential }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        reads.withLock { $0 += 1 }
        guard offset < UInt64(bytes.count) else { return 0 }
        let n = min(buffer.count, bytes.count - Int(offset))
        bytes.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[Int(offset)..<Int(offset) + n])) }
        return n
    }
}

/// Bytes collected in memory, for tests.
public final class MemorySink: ByteSink, @unchecked Sendable {
    private let state = ConditionLock<[UInt8]>([])
    private let randomAccess: Bool

    public init(randomAccess: Bool = true) { self.randomAccess = randomAccess }

    public var supportsRandomAccess: Bool { randomAccess }

    /// Everything written so far.
    public var bytes: [UInt8] { state.withLock { $0 } }

    public func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
        state.withLock { data in
            let end = Int(offset) + bytes.count
            if !randomAccess { precondition(Int(offset) == data.count, "sequential sink written out of order") }
            if data.count < end { data += [UInt8](repeating: 0, count: end - data.count) }
            data.withUnsafeMutableBytes { UnsafeMutableRawBufferPointer(rebasing: $0[Int(offset)..<end]).copyMemory(from: bytes) }
        }
    }

    public func finish(sizeBytes: UInt64) throws {
        state.withLock { data in
            if data.count < Int(sizeBytes) {
                data += [UInt8](repeating: 0, count: Int(sizeBytes) - data.count)
            } else {
                data.removeLast(data.count - Int(sizeBytes))
            }
        }
    }
}

extension BlockStore {
    /// The bytes of `name`, exported into memory (tests only: the whole map is held in memory).
    public func exportedBytes(_ name: MapName) throws -> [UInt8] {
        let sink = MemorySink()
        try export(name, to: sink)
        return sink.bytes
    }
}
