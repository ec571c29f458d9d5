import BlockStore
import BlockStorePosix
import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The clone fast path: when disk 0 is an snf-store volume that is already an untouched thin clone
/// of the image (Ganeti created it with `origin=` the same image), copying would rewrite the
/// bytes it already reads. Decided from metadata only: the volume's map entries must equal the
/// image's for every block of the image and be zero beyond.
public enum CloneFastPath {
    /// What the check found.
    public enum Decision: Sendable, Equatable {
        /// Nothing to copy: `volume` already holds the image.
        case alreadyCloned(volume: String)
        /// Copy, because of `reason` (for the log).
        case copy(reason: String)
    }

    /// Decides for the disk at `diskPath` and the image `image` of the store in `store`.
    /// Never throws: anything unexpected means "copy".
    public static func decide(diskPath: String, image: MapName, store: NodeConfig) -> Decision {
        guard let volume = attachedVolume(diskPath: diskPath, store: store) else {
            return .copy(reason: "\(diskPath) is not an attached snf-store volume")
        }
        do {
            let blockStore = BlockStore(backend: try PosixBackend(root: store.root))
            let imageEntries = try blockStore.resolvedEntries(of: image)
            let volumeEntries = try blockStore.resolvedEntries(of: volume)
            guard volumeEntries.record.kind == .readWrite else {
                return .copy(reason: "\(volume) is not a volume")
            }
            if let reason = difference(image: imageEntries, volume: volumeEntries) {
                return .copy(reason: "\(volume) \(reason)")
            }
            return .alreadyCloned(volume: volume.rawValue)
        } catch {
            return .copy(reason: "cannot compare \(volume) with \(image): \(error)")
        }
    }

    /// Why `volume` does not hold `image` byte for byte, or nil when it does.
    static func difference(image: BlockStore.ResolvedEntries, volume: BlockStore.ResolvedEntries) -> String? {
        if volume.hasUnsettledBlocks { return "has copy-on-write copies in progress" }
        guard volume.record.sizeBytes >= image.record.sizeBytes else { return "is smaller than the image" }
        for (index, entry) in volume.entries.enumerated() {
            let expected = index < image.entries.count ? image.entries[index] : .zero
            if entry != expected { return "differs from the image at block \(index)" }
        }
        // The image's last block may be partial: the shared entry reads the image's bytes, then
        // zeros, as every block beyond does.
        return nil
    }

    /// The snf-store volume behind `diskPath` on this node, if any: asks the daemon which volume
    /// has that loop device, else reads the loop device's backing file (`<run>/fuse/<volume>`);
    /// a path in the FUSE mount itself names its volume.
    public static func attachedVolume(diskPath: String, store: NodeConfig) -> MapName? {
        guard let resolved = realPath(diskPath) else { return nil }
        let fusePrefix = store.fuseMountpoint + "/"
        if resolved.hasPrefix(fusePrefix) {
            return try? MapName(String(resolved.dropFirst(fusePrefix.count)))
        }
        let deviceName = resolved.split(separator: "/").last.map(String.init) ?? ""
        guard resolved.hasPrefix("/dev/loop"), deviceName.dropFirst(4).allSatisfy(\.isNumber) else { return nil }
        if let reply = try? ControlClient(config: store).sendIfRunning(["status"]), case .ok(let lines) = reply {
            for line in lines {
                let words = line.split(separator: " ").map(String.init)
                if words.count >= 2, words[1] == resolved || realPath(words[1]) == resolved {
                    return try? MapName(words[0])
                }
            }
        }
        if let backing = LoopDevice.backingFile(of: resolved), backing.hasPrefix(fusePrefix) {
            return try? MapName(String(backing.dropFirst(fusePrefix.count)))
        }
        return nil
    }

    static func realPath(_ path: String) -> String? {
        guard let resolved = realpath(path, nil) else { return nil }
        defer { free(resolved) }
        return String(cString: resolved)
    }
}
