import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Direct file access for the node daemon's data path, which keeps descriptors open instead of
/// opening a file per request. Same files, same crash rules as the ``StoreBackend`` calls.
extension PosixBackend {
    /// Opens the file of an existing object; nil when it does not exist.
    public func openObject(_ kind: ObjectKind, _ key: String, writable: Bool) throws -> Int32? {
        let path = try path(kind, key)
        let fd = Sys.open(path, writable ? O_RDWR : O_RDONLY)
        guard fd >= 0 else {
            if errno == ENOENT { return nil }
            throw Sys.failure("open", path)
        }
        return fd
    }

    /// How ``createPrivateBlock(_:as:fill:)`` publishes the new block.
    public enum NewBlock: Sendable {
        /// Under its final name, fsynced first or not. Without the fsync a power failure may lose
        /// the content even though the name survived: only for a block whose previous content was
        /// all zeros, so that losing it reads as the old content.
        case final(sync: Bool)
        /// Under a pending name (see ``StoreBackend/settlePendingBlocks(volume:epoch:base:)``),
        /// not fsynced: ``promotePendingBlock(_:)`` after an fdatasync makes it final.
        case pending
        /// Under a partial name: only the 64 KiB granules whose bits are set in `covered` hold the
        /// block's data; the others are still the origin's. ``updatePartialBlock(_:from:to:)``
        /// records more granules, ``completePartialBlock(_:covered:)`` makes it pending.
        case partial(covered: UInt64)
    }

    /// The size of a granule of a partial block: 1/64 of a block.
    public static let granuleBytes = BlockStore.blockSizeBytes / 64

    /// Creates the private block `key` (which must not exist): a scratch file that `fill` writes,
    /// then linked into place as `how` says. Returns a read-write descriptor of the new block.
    /// The name is durable after the next ``flush()``.
    public func createPrivateBlock(_ key: String, as how: NewBlock, fill: (Int32) throws -> Void) throws -> Int32 {
        let final = try path(.volumeBlock, key)
        var target = final
        var sync = false
        switch how {
        case .final(let s): sync = s
        case .pending: target = final + PosixBackend.pendingSuffix
        case .partial(let covered): target = final + PosixBackend.partialSuffix(covered)
        }
        let scratch = try scratchPath()
        let fd = Sys.open(scratch, O_RDWR | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw Sys.failure("create", scratch) }
        defer { unlink(scratch) }
        do {
            try fill(fd)
            if sync { try Sys.fdatasync(fd, path: scratch) }
            let directory = String(target[..<target.lastIndex(of: "/")!])
            var madeDirectory = false
            while link(scratch, target) != 0 {
                let code = errno
                if code == ENOENT && !madeDirectory {
                    try Sys.makeDirectory(directory)
                    markDirectoryDirty(root + "/volumes")
                    madeDirectory = true
                    continue
                }
                throw Sys.failure("create", target, code)
            }
            markDirectoryDirty(directory)
            return fd
        } catch {
            Sys.close(fd)
            throw error
        }
    }

    /// `.pending-<boot id>`: what marks a pending private block made during this boot.
    static let pendingSuffix: String = ".pending-" + bootID

    /// This boot of the machine (`/proc/sys/kernel/random/boot_id` without dashes).
    static let bootID: String = {
        let text = (try? readSmallFile("/proc/sys/kernel/random/boot_id")).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let hex = text.filter { $0.isHexDigit }
        return hex.isEmpty ? "unknown" : hex
    }()

    /// `.partial-<boot id>-<16 hex of the granule bitmap>`.
    static func partialSuffix(_ covered: UInt64) -> String {
        let hex = String(covered, radix: 16)
        return ".partial-" + bootID + "-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    static func isPending(_ key: String) -> Bool { key.contains(".pending-") || key.contains(".partial-") }

    /// Records that the partial block `key` now holds the granules of `covered` (the caller wrote
    /// them first). Atomic: a crash leaves the old or the new record.
    public func updatePartialBlock(_ key: String, from old: UInt64, to covered: UInt64) throws {
        let final = try path(.volumeBlock, key)
        guard rename(final + PosixBackend.partialSuffix(old), final + PosixBackend.partialSuffix(covered)) == 0 else {
            throw Sys.failure("rename", final + PosixBackend.partialSuffix(old))
        }
        markDirectoryDirty(String(final[..<final.lastIndex(of: "/")!]))
    }

    /// Makes the partial block `key`, which now holds every granule, pending.
    public func completePartialBlock(_ key: String, covered: UInt64) throws {
        let final = try path(.volumeBlock, key)
        guard rename(final + PosixBackend.partialSuffix(covered), final + PosixBackend.pendingSuffix) == 0 else {
            throw Sys.failure("rename", final + PosixBackend.partialSuffix(covered))
        }
        markDirectoryDirty(String(final[..<final.lastIndex(of: "/")!]))
    }

    /// Makes the pending private block `key` final (the caller fdatasynced it). Durable after the
    /// next ``flush()``. Already final: nothing to do.
    public func promotePendingBlock(_ key: String) throws {
        let final = try path(.volumeBlock, key)
        if rename(final + PosixBackend.pendingSuffix, final) != 0 {
            let code = errno
            guard code == ENOENT, try Sys.statPath(final) != nil else { throw Sys.failure("rename", final + PosixBackend.pendingSuffix, code) }
        }
        markDirectoryDirty(String(final[..<final.lastIndex(of: "/")!]))
    }

    public func settlePendingBlocks(volume: VolumeID, epoch: UInt64, base: [MapEntry]) throws {
        let directory = root + "/volumes/" + volume.hex
        var changed = false
        for entry in try Sys.listDirectory(directory) ?? [] where PosixBackend.isPending(entry.name) {
            let path = directory + "/" + entry.name
            // `<epoch 16 hex>_<index 16 hex>.<kind>-<boot>...`: the final name is the first 33 characters.
            let finalName = String(entry.name.prefix(33))
            let final = directory + "/" + finalName
            let id = VolumeBlockID(key: volume.hex + "/" + finalName)
            let thisBoot = entry.name.dropFirst(33).hasPrefix(".pending-" + PosixBackend.bootID)
                || entry.name.dropFirst(33).hasPrefix(".partial-" + PosixBackend.bootID + "-")
            changed = true
            guard let id, id.epoch == epoch, thisBoot, try Sys.statPath(final) == nil else {
                // From an earlier boot (a power failure may have emptied it), or stale.
                if unlink(path) != 0 && errno != ENOENT { throw Sys.failure("remove", path) }
                markDirectoryDirty(directory)
                continue
            }
            let fd = Sys.open(path, O_RDWR)
            guard fd >= 0 else {
                if errno == ENOENT { continue }  // settled meanwhile
                throw Sys.failure("open", path)
            }
            defer { Sys.close(fd) }
            if entry.name.dropFirst(33).hasPrefix(".partial-") {
                guard let covered = UInt64(entry.name.suffix(16), radix: 16) else {
                    if unlink(path) != 0 && errno != ENOENT { throw Sys.failure("remove", path) }
                    continue
                }
                let origin = id.index < UInt64(base.count) ? base[Int(id.index)] : .zero
                try fillGranules(fd, path: path, except: covered, from: origin)
            }
            try Sys.fdatasync(fd, path: path)
            if rename(path, final) != 0 && errno != ENOENT { throw Sys.failure("rename", path) }
            markDirectoryDirty(directory)
        }
        if changed { try flush() }
    }

    /// Writes the origin's bytes into every granule of the block file `fd` not in `covered`.
    public func fillGranules(_ fd: Int32, path: String, except covered: UInt64, from origin: MapEntry) throws {
        let granule = PosixBackend.granuleBytes
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: granule, alignment: 4096)
        defer { buffer.deallocate() }
        for g in 0..<64 where covered & (UInt64(1) << UInt64(g)) == 0 {
            let offset = UInt64(g * granule)
            var n = 0
            switch origin {
            case .zero: n = 0
            case .block(let id): n = try read(.block, id.hex, at: offset, into: buffer) ?? 0
            case .volumeBlock(let id): n = try read(.volumeBlock, id.key, at: offset, into: buffer) ?? 0
            }
            if n < granule { memset(buffer.baseAddress! + n, 0, granule - n) }
            try Sys.writeAll(fd, UnsafeRawBufferPointer(buffer), at: offset, path: path)
        }
    }

    public func discardPendingBlocks(keeping live: Set<VolumeID>) throws {
        var changed = false
        for volume in try Sys.listDirectory(root + "/volumes") ?? [] where volume.stat.isDirectory {
            guard let id = VolumeID(hex: volume.name), !live.contains(id) else { continue }
            let directory = root + "/volumes/" + volume.name
            for entry in try Sys.listDirectory(directory) ?? [] where PosixBackend.isPending(entry.name) {
                if unlink(directory + "/" + entry.name) != 0 && errno != ENOENT { throw Sys.failure("remove", directory + "/" + entry.name) }
                markDirectoryDirty(directory)
                changed = true
            }
        }
        if changed { try flush() }
    }

    /// Reads until `buffer` is full or the file ends; returns the bytes read.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64, what: String)
        throws -> Int
    {
        try Sys.readFully(fd, buffer, at: offset, path: what)
    }

    /// Writes all of `bytes` at `offset`.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: UInt64, what: String) throws {
        try Sys.writeAll(fd, bytes, at: offset, path: what)
    }

    /// fdatasync, as a ``StoreError`` naming `what` on failure.
    public static func dataSync(_ fd: Int32, what: String) throws {
        try Sys.fdatasync(fd, path: what)
    }
}

/// Operator metadata of volumes (Ganeti's `setinfo`): `meta/<name>`, one line of text, replaced
/// atomically. Not part of the map format: losing it loses no data.
extension PosixBackend {
    /// Stores `text` as the metadata of `name`, or removes it when `text` is nil.
    public func setMetadata(of name: String, to text: String?) throws {
        guard MapName.problem(with: name) == nil else {
            throw StoreError(.invalidName, "invalid name \(name.debugDescription)")
        }
        let directory = root + "/meta"
        let target = directory + "/" + name
        guard let text else {
            if unlink(target) != 0 && errno != ENOENT { throw Sys.failure("remove", target) }
            return
        }
        try Sys.makeDirectory(directory)
        let scratch = try scratchPath()
        let fd = Sys.open(scratch, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw Sys.failure("create", scratch) }
        defer { unlink(scratch) }
        do {
            try Array((text + "\n").utf8).withUnsafeBytes { try Sys.writeAll(fd, $0, at: 0, path: scratch) }
            try Sys.fsync(fd, path: scratch)
            Sys.close(fd)
        } catch {
            Sys.close(fd)
            throw error
        }
        guard rename(scratch, target) == 0 else { throw Sys.failure("replace", target) }
        try Sys.syncDirectory(directory)
    }

    /// The metadata of `name`, or nil.
    public func metadata(of name: String) throws -> String? {
        guard MapName.problem(with: name) == nil else { return nil }
        let path = root + "/meta/" + name
        guard try Sys.statPath(path) != nil else { return nil }
        let bytes = try PosixBackend.readSmallFile(path)
        return String(decoding: bytes, as: UTF8.self).trimmingSuffixNewline
    }
}

extension String {
    var trimmingSuffixNewline: String { hasSuffix("\n") ? String(dropLast()) : self }
}
