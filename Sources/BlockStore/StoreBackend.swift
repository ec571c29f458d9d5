/// The four kinds of objects a backend keeps, each in its own namespace.
public enum ObjectKind: String, Sendable, CaseIterable {
    /// Content-addressed blocks. Key: 64 hex (the ``BlockID``). Content: the block with trailing
    /// zeros stripped. Immutable.
    case block
    /// Private blocks of volumes. Key: ``VolumeBlockID/key``. Content: up to one block; the rest
    /// of the block reads as zeros. Written in place by their volume until a snapshot freezes them.
    case volumeBlock
    /// Map bodies. Key: 64 hex (the ``MapID``). Content: ``MapBody`` encoding. Immutable.
    case map
    /// Named records. Key: a ``MapName``. Content: ``MapRecord`` encoding. Replaced atomically.
    case record
    /// Import cache entries: which map an unchanged file was imported as. Key:
    /// ``SourceIdentity/cacheKey``. Content: ``ImportCacheEntry`` encoding. Not a reference:
    /// garbage collection ignores them when marking and removes the ones whose map is gone.
    case importCache
}

/// Facts about one stored object, as ``StoreBackend/list(_:prefix:)`` reports them.
public struct ObjectInfo: Sendable, Hashable {
    /// The object's key in its namespace.
    public var key: String
    /// Stored size in bytes.
    public var sizeBytes: UInt64
    /// Last modification (or ``StoreBackend/touch(_:_:)``), seconds since the Unix epoch.
    public var modifiedSeconds: Int64

    public init(key: String, sizeBytes: UInt64, modifiedSeconds: Int64) {
        self.key = key
        self.sizeBytes = sizeBytes
        self.modifiedSeconds = modifiedSeconds
    }
}

/// How ``StoreBackend/put(_:_:_:mode:)`` treats an existing object.
public enum PutMode: Sendable {
    /// Keep an existing object and report that it existed (content-addressed data, new names).
    case createOnly
    /// Atomically replace an existing object (records under their name lock).
    case replace
}

/// A held lock; released by ``unlock()`` or when the value is deinitialized.
public protocol StoreLock: AnyObject, Sendable {
    /// Releases the lock. Calling it twice is harmless.
    func unlock()
}

/// How bytes reach storage: the only thing a backend decides.
///
/// The contract every backend honours (the conformance suite in `BlockStoreTesting` checks it):
/// - `put` is atomic: readers see the old object, or none, or the whole new one; never a part.
///   Its content is on stable storage when `put` returns; its *name* is on stable storage after
///   the next ``flush()``. (POSIX: temp file, fsync, rename or link; flush fsyncs directories.)
/// - ``write(_:_:at:_:)`` changes an existing object in place, like a disk write; it is on stable
///   storage after ``sync(_:_:)`` of that object.
/// - ``delete(_:_:)`` of an absent object succeeds.
/// - Locks exclude across processes that share the store (POSIX: `flock`).
/// All failures are ``StoreError``s (``StoreError/Code/noSpace`` or ``StoreError/Code/io`` for
/// backend faults) naming the object.
public protocol StoreBackend: Sendable {
    /// Reads up to `buffer.count` bytes of the object starting at `offset`. Returns the number of
    /// bytes read (fewer only at the end of the object), or nil when the object does not exist.
    func read(_ kind: ObjectKind, _ key: String, at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer)
        throws -> Int?

    /// The whole object, or nil when it does not exist.
    func get(_ kind: ObjectKind, _ key: String) throws -> [UInt8]?

    /// Stores `bytes` as the object (see the type's contract). Returns false when `mode` is
    /// ``PutMode/createOnly`` and the object already existed (the existing one is kept).
    @discardableResult
    func put(_ kind: ObjectKind, _ key: String, _ bytes: UnsafeRawBufferPointer, mode: PutMode) throws -> Bool

    /// Writes `bytes` at `offset` into an existing object. Throws ``StoreError/Code/missing`` when
    /// the object does not exist.
    func write(_ kind: ObjectKind, _ key: String, at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws

    /// Makes every completed ``write(_:_:at:_:)`` to the object durable.
    func sync(_ kind: ObjectKind, _ key: String) throws

    /// Facts about the object, or nil when it does not exist.
    func stat(_ kind: ObjectKind, _ key: String) throws -> ObjectInfo?

    /// Sets the object's modification time to now. Returns false when it does not exist.
    @discardableResult
    func touch(_ kind: ObjectKind, _ key: String) throws -> Bool

    /// Removes the object; succeeds when it is already absent.
    func delete(_ kind: ObjectKind, _ key: String) throws

    /// Every object of `kind` whose key starts with `prefix`, in no particular order.
    func list(_ kind: ObjectKind, prefix: String) throws -> [ObjectInfo]

    /// Makes the names of all completed puts and deletes durable.
    func flush() throws

    /// Takes the named lock, waiting for it. Shared holders exclude exclusive ones.
    func lock(_ name: String, exclusive: Bool) throws -> any StoreLock

    /// Takes the named lock if nobody holds it in a conflicting mode; nil otherwise (never waits).
    func tryLock(_ name: String, exclusive: Bool) throws -> (any StoreLock)?

    /// Forgets a lock that nobody can hold or want any more (garbage collection of stale locks).
    func removeLock(_ name: String) throws

    /// Names of every lock the backend keeps.
    func lockNames() throws -> [String]

    /// Removes scratch files of writers that died, older than `olderThanSeconds`. Returns how many.
    func purgeScratch(olderThanSeconds: Int64) throws -> Int

    /// Settles the *pending* and *partial* private blocks of `volume`: copies on write that a data
    /// path made without waiting for the disk, under names that say which boot of the machine
    /// made them (a partial one also says which 64 KiB granules it holds; the others are still the
    /// origin's). One made since the machine booted, in the volume's current `epoch`, survived
    /// whatever killed its writer (it is in the page cache): a partial one is completed from
    /// `base` (the volume's base entries), and it is synced and becomes an ordinary private block.
    /// One from an earlier boot may have lost its content in a power failure, and no flush ever
    /// covered it: it is removed, so the block reads as before that copy-on-write. Backends
    /// without pending blocks do nothing.
    func settlePendingBlocks(volume: VolumeID, epoch: UInt64, base: [MapEntry]) throws

    /// Removes the pending and partial blocks of every volume not in `live` (garbage collection).
    func discardPendingBlocks(keeping live: Set<VolumeID>) throws
}

extension StoreBackend {
    public func settlePendingBlocks(volume: VolumeID, epoch: UInt64, base: [MapEntry]) throws {}
    public func discardPendingBlocks(keeping live: Set<VolumeID>) throws {}
}

extension StoreBackend {
    /// Runs `body` holding the named lock.
    public func withLock<T>(_ name: String, exclusive: Bool, _ body: () throws -> T) throws -> T {
        let held = try lock(name, exclusive: exclusive)
        defer { held.unlock() }
        return try body()
    }
}
