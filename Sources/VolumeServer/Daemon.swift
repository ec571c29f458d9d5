import BlockStore
import BlockStorePosix
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The node daemon (`snf-store serve`): serves every attached volume over NBD and as a loop
/// device, and performs the changes that must go through the holder of an attached volume
/// (snapshot, grow) and the open locks.
///
/// One daemon per runtime directory (`serve.lock`). Attachments are remembered as files in
/// `<run>/attached/`, so a daemon that was killed and restarted serves the same volumes again
/// (nothing acknowledged is lost: every completed write is in a private block under its final
/// name). The daemon exits when nothing is attached or open, so a node without instances runs no
/// daemon, mount or socket; provider verbs start it on demand.
public final class Daemon {
    let config: NodeConfig
    let store: BlockStore
    let backend: PosixBackend
    private var attachments: [String: Attachment] = [:]
    private var opens: [String: (lock: any StoreLock, exclusive: Bool)] = [:]
    private var fuse: FuseExport?
    /// Loop devices left by an earlier daemon (their FUSE connection is gone): never reused.
    private var staleLoops: Set<String> = []
    private var controlFD: Int32 = -1

    struct Attachment {
        let device: VolumeDevice
        let nbd: NBDServer
        var loop: String?
    }

    /// Opens the store for serving.
    public init(config: NodeConfig) throws {
        self.config = config
        self.backend = try PosixBackend(root: config.root)
        self.store = BlockStore(backend: backend, nameLockWaitSeconds: 10)
    }

    /// Serves until idle. Returns normally when it exits because nothing is attached or open, or
    /// at once when another daemon already serves this runtime directory.
    public func run() throws {
        closeInheritedDescriptors()
        try makeRunDirectory(config.run)
        let lockFD = open(config.lockFile, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw ServerError.errno("open", config.lockFile) }
        defer { close(lockFD) }
        if flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
            // Another daemon serves (or is just exiting): wait a little for it to finish exiting.
            var waited = 0
            while flock(lockFD, LOCK_EX | LOCK_NB) != 0 {
                if waited >= 100 {
                    log("another snf-store daemon serves \(config.run); exiting")
                    return
                }
                usleep(50_000)
                waited += 1
            }
        }
        _ = ftruncate(lockFD, 0)
        let pidText = Array("\(getpid())\n".utf8)
        _ = pidText.withUnsafeBytes { pwrite(lockFD, $0.baseAddress, $0.count, 0) }

        try makeRunDirectory(config.attachedDirectory)
        try makeRunDirectory(config.nbdDirectory)
        log("serving the store \(config.root) from \(config.run) (pid \(getpid()))")
        staleLoops = Set(LoopDevice.devices(under: config.fuseMountpoint))
        for device in staleLoops {
            log("detaching stale loop device \(device) of an earlier daemon")
            _ = try? LoopDevice.detach(device)
        }
        let restore = (try? listDirectory(config.attachedDirectory)) ?? []
        for name in restore {
            do {
                let (device, socket) = try attach(name)
                log("restored \(name): \(device ?? "-") \(socket)")
            } catch {
                log("cannot restore \(name): \(error); forgetting it")
                unlink(config.attachedDirectory + "/" + name)
            }
        }
        controlFD = try UnixSocket.listen(at: config.controlSocket)
        defer { shutdownAll() }
        serve()
    }

    private func serve() {
        var idleSince = monotonicSeconds()
        while true {
            var pollFD = pollfd(fd: controlFD, events: Int16(POLLIN), revents: 0)
            let ready = poll(&pollFD, 1, 1000)
            if ready == 0 {
                if attachments.isEmpty && opens.isEmpty && monotonicSeconds() - idleSince >= 10 {
                    log("nothing attached or open; exiting")
                    return
                }
                continue
            }
            if ready < 0 { continue }
            let client = accept(controlFD, nil, nil)
            if client < 0 { continue }
            let handled = handle(client)
            close(client)
            idleSince = monotonicSeconds()
            // A connection without a request is a client checking that the daemon is up.
            if handled && attachments.isEmpty && opens.isEmpty {
                log("nothing attached or open; exiting")
                return
            }
        }
    }

    /// Answers one request; false when the client sent none.
    private func handle(_ fd: Int32) -> Bool {
        var tv = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while !bytes.contains(UInt8(ascii: "\n")) && bytes.count < 4096 {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        guard bytes.contains(UInt8(ascii: "\n")) else { return false }
        let line = String(decoding: bytes.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        let words = line.split(separator: " ").map(String.init)
        let reply: String
        do {
            reply = "ok\n" + (try perform(words)).map { $0 + "\n" }.joined()
        } catch let error as StoreError {
            reply = "error \(error.code) \(error.message)\n"
        } catch {
            reply = "error io \(error)\n"
        }
        _ = Array(reply.utf8).withUnsafeBytes { UnixSocket.sendAll(fd, $0) }
        return true
    }

    private func perform(_ words: [String]) throws -> [String] {
        func name(_ i: Int) throws -> String {
            guard words.count > i else { throw StoreError(.invalidArgument, "the request \(words.first ?? "") needs more arguments") }
            return try MapName(words[i]).rawValue
        }
        switch words.first {
        case "attach":
            let (device, socket) = try attach(try name(1))
            return [device ?? "", "kvm:nbd:unix:" + socket]
        case "detach":
            try detach(try name(1))
            return []
        case "snapshot":
            let volume = try name(1)
            let snapshot = try MapName(try name(2))
            if let attachment = attachments[volume] {
                try attachment.device.snapshot(as: snapshot)
            } else {
                try store.snapshot(try MapName(volume), as: snapshot)
            }
            log("snapshot \(volume) -> \(snapshot)")
            return []
        case "grow":
            let volume = try name(1)
            guard words.count > 2, let size = UInt64(words[2]) else {
                throw StoreError(.invalidArgument, "grow needs a size in bytes")
            }
            if let attachment = attachments[volume] {
                try attachment.device.grow(toSizeBytes: size)
                if let loop = attachment.loop { try? LoopDevice.refreshCapacity(loop) }
            } else {
                try store.grow(try MapName(volume), toSizeBytes: size)
            }
            log("grow \(volume) to \(size) bytes")
            return []
        case "open":
            let volume = try name(1)
            try openVolume(volume, exclusive: words.count < 3 || words[2] != "shared")
            return []
        case "close":
            let volume = try name(1)
            if let held = opens.removeValue(forKey: volume) { held.lock.unlock() }
            return []
        case "status":
            return attachments.keys.sorted().map { name in
                let a = attachments[name]!
                let open = opens[name].map { $0.exclusive ? "exclusive" : "shared" } ?? "-"
                return [name, a.loop ?? "-", a.nbd.socketPath, String(a.nbd.connectionCount),
                        String(a.device.bytesRead.load(ordering: .relaxed)),
                        String(a.device.bytesWritten.load(ordering: .relaxed)),
                        String(a.device.sizeBytes), a.device.isWritable ? "rw" : "ro", open,
                ].joined(separator: " ")
            }
        default:
            throw StoreError(.invalidArgument, "unknown request \((words.first ?? "").debugDescription)")
        }
    }

    // MARK: Attach and detach

    private func attach(_ name: String) throws -> (device: String?, socket: String) {
        if var existing = attachments[name] {
            // Idempotent; recreate a loop device that someone detached behind our back.
            if let fuse, existing.loop == nil || !LoopDevice.devices(backing: fuse.path(of: name)).contains(existing.loop!) {
                existing.loop = try loopDevice(for: name, fuse: fuse)
                attachments[name] = existing
            }
            return (existing.loop, existing.nbd.socketPath)
        }
        let mapName = try MapName(name)
        guard try store.record(named: mapName) != nil else {
            throw StoreError(.notFound, "no volume named \(name) in the block store at \(config.root)")
        }
        let device = try VolumeDevice(store: store, backend: backend, name: mapName)
        var nbd: NBDServer?
        do {
            nbd = try NBDServer(
                socketPath: config.nbdSocket(for: name), device: device, readOnly: !device.isWritable, exportName: name)
            var loop: String?
            if let fuse = try kernelExport() {
                fuse.add(name: name, device: device)
                do {
                    loop = try loopDevice(for: name, fuse: fuse)
                } catch {
                    fuse.remove(name: name)
                    throw error
                }
            }
            attachments[name] = Attachment(device: device, nbd: nbd!, loop: loop)
            try rememberAttached(name)
            log("attach \(name): \(loop ?? "no block device") \(nbd!.socketPath)")
            return (loop, nbd!.socketPath)
        } catch {
            nbd?.stop()
            attachments[name] = nil
            try? device.close()
            throw error
        }
    }

    private func loopDevice(for name: String, fuse: FuseExport) throws -> String {
        let file = fuse.path(of: name)
        if let existing = LoopDevice.devices(backing: file).first(where: { !staleLoops.contains($0) }) {
            return existing
        }
        return try LoopDevice.attach(file: file)
    }

    /// The FUSE export, mounted on first use; nil when this machine has no FUSE.
    private func kernelExport() throws -> FuseExport? {
        if let fuse { return fuse }
        guard access("/dev/fuse", R_OK | W_OK) == 0 else { return nil }
        let export = try FuseExport(mountpoint: config.fuseMountpoint)
        fuse = export
        return export
    }

    private func detach(_ name: String) throws {
        if let held = opens.removeValue(forKey: name) { held.lock.unlock() }
        guard let attachment = attachments[name] else {
            unlink(config.attachedDirectory + "/" + name)
            return
        }
        if let fuse {
            for loop in LoopDevice.devices(backing: fuse.path(of: name)) {
                try LoopDevice.detach(loop)
            }
            fuse.remove(name: name)
        }
        attachment.nbd.stop()
        try attachment.device.close()
        attachments[name] = nil
        unlink(config.attachedDirectory + "/" + name)
        log("detach \(name)")
    }

    private func rememberAttached(_ name: String) throws {
        let path = config.attachedDirectory + "/" + name
        let fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ServerError.errno("create", path) }
        close(fd)
    }

    private func openVolume(_ name: String, exclusive: Bool) throws {
        if let held = opens[name] {
            if held.exclusive == exclusive { return }
            held.lock.unlock()
            opens[name] = nil
        }
        let lockName = "open." + name
        guard let lock = try backend.tryLock(lockName, exclusive: exclusive) else {
            throw StoreError(.busy, "\(name) is open \(exclusive ? "" : "exclusively ")on another node; close it there first")
        }
        opens[name] = (lock, exclusive)
        log("open \(name) \(exclusive ? "exclusive" : "shared")")
    }

    private func shutdownAll() {
        if controlFD >= 0 {
            close(controlFD)
            unlink(config.controlSocket)
            controlFD = -1
        }
        for name in attachments.keys.sorted() {
            do {
                // Keep the attachment file: a restarted daemon serves the volume again.
                let attachment = attachments[name]!
                attachment.nbd.stop()
                try attachment.device.close()
            } catch {
                log("cannot close \(name): \(error)")
            }
        }
        attachments = [:]
        for (_, held) in opens { held.lock.unlock() }
        opens = [:]
        fuse?.unmount()
        fuse = nil
        rmdir(config.fuseMountpoint)
    }

    func log(_ message: String) {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        var stamp = [CChar](repeating: 0, count: 32)
        strftime(&stamp, stamp.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        let text = String(decoding: stamp.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let line = text + " snf-store serve: " + message + "\n"
        _ = Array(line.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
    }
}

/// Closes every descriptor above standard error: a daemon started by a Ganeti verb must not keep
/// Ganeti's pipes (or anything else of its parent) open.
func closeInheritedDescriptors() {
    guard let names = try? listDirectory("/proc/self/fd") else { return }
    for name in names {
        if let fd = Int32(name), fd > 2 { close(fd) }
    }
}

/// Names in a directory (not `.`/`..`).
func listDirectory(_ path: String) throws -> [String] {
    guard let dir = opendir(path) else { throw ServerError.errno("list", path) }
    defer { closedir(dir) }
    var names: [String] = []
    while let entry = readdir(dir) {
        let name = withUnsafePointer(to: &entry.pointee.d_name) {
            String(cString: UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self))
        }
        if name != "." && name != ".." { names.append(name) }
    }
    return names.sorted()
}

func monotonicSeconds() -> Int64 { BlockStore.monotonicNanoseconds() / 1_000_000_000 }

extension LoopDevice {
    /// Every loop device whose backing file lies under `directory` (such as the FUSE mount of a
    /// daemon that was killed), as `/dev/loopN`.
    static func devices(under directory: String) -> [String] {
        guard let names = try? listDirectory("/sys/block") else { return [] }
        return names.filter { $0.hasPrefix("loop") }.compactMap { name in
            guard let backing = backingFile(of: "/dev/" + name), backing.hasPrefix(directory + "/") else { return nil }
            return "/dev/" + name
        }
    }
}
