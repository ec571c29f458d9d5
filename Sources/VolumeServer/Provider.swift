import BlockStore
import BlockStorePosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The Ganeti ExtStorage provider `snf-store` (contract: `docs/extstorage.md`).
///
/// Ganeti runs one verb per process with the volume in the environment (`VOL_NAME`, `VOL_SIZE`
/// in MiB, `EXTP_ORIGIN`, ...). Every verb is idempotent, because Ganeti retries: creating a
/// volume that already exists as asked, removing one that is gone, detaching one that is not
/// attached, snapshotting into a snapshot of the same volume that exists — all succeed.
/// Only `attach` writes to standard output (the contract's lines); failures are thrown as
/// ``ProviderError`` with one sentence for Ganeti's job log.
public struct ExtStorageProvider {
    /// The verbs, as Ganeti names the provider's scripts.
    public static let verbs = ["create", "attach", "detach", "remove", "grow", "setinfo", "verify", "snapshot", "open", "close"]

    public let config: NodeConfig
    let environment: [String: String]
    let client: ControlClient

    /// Reads the settings; `environment` is the process environment Ganeti gave.
    public init(environment: [String: String], executable: String = "/proc/self/exe") throws {
        self.environment = environment
        do {
            self.config = try NodeConfig.load(environment: environment)
        } catch let error as ServerError {
            throw ProviderError(error.message, status: 1)
        }
        self.client = ControlClient(config: config, executable: executable)
    }

    /// Runs `verb`; returns what goes to standard output.
    public func run(_ verb: String) throws -> String {
        do {
            switch verb {
            case "create": try create()
            case "attach": return try attach()
            case "detach": try detach()
            case "remove": try remove()
            case "grow": try grow()
            case "setinfo": try setInfo()
            case "verify": try verify()
            case "snapshot": try snapshot()
            case "open": try open()
            case "close": try close()
            default:
                throw ProviderError("unknown ExtStorage verb \(verb.debugDescription); the verbs are \(ExtStorageProvider.verbs.joined(separator: ", "))", status: 2)
            }
            return ""
        } catch let error as StoreError {
            throw ProviderError(error.message, status: error.code.isBadInput ? 2 : 1)
        } catch let error as ServerError {
            throw ProviderError(error.message, status: 1)
        }
    }

    // MARK: Environment

    func volumeName() throws -> MapName {
        try name("VOL_NAME")
    }

    func name(_ variable: String) throws -> MapName {
        guard let text = environment[variable], !text.isEmpty else {
            throw ProviderError("\(variable) is not set (run by Ganeti, or set it as Ganeti would)", status: 2)
        }
        guard let problem = MapName.problem(with: text) else { return try MapName(text) }
        throw ProviderError("invalid \(variable) \(text.debugDescription): \(problem)", status: 2)
    }

    /// A size variable in MiB, as bytes.
    func mebibytes(_ variable: String) throws -> UInt64 {
        guard let text = environment[variable], !text.isEmpty else {
            throw ProviderError("\(variable) is not set", status: 2)
        }
        guard let value = UInt64(text), value > 0, value < (1 << 44) else {
            throw ProviderError("\(variable) must be a positive whole number of MiB, not \(text.debugDescription)", status: 2)
        }
        return value << 20
    }

    func origin() throws -> MapName? {
        guard let text = environment["EXTP_ORIGIN"], !text.isEmpty else { return nil }
        return try name("EXTP_ORIGIN")
    }

    func openStore() throws -> (BlockStore, PosixBackend) {
        let backend = try PosixBackend(root: config.root)
        return (BlockStore(backend: backend, nameLockWaitSeconds: 20), backend)
    }

    func expect(_ reply: ControlClient.Reply) throws -> [String] {
        try reply.payload()
    }

    // MARK: Verbs

    /// A thin clone of `EXTP_ORIGIN` sized `VOL_SIZE` MiB, or an empty volume.
    func create() throws {
        let name = try volumeName()
        let size = try mebibytes("VOL_SIZE")
        let origin = try origin()
        let (store, _) = try openStore()
        if let existing = try store.record(named: name) {
            // A retry of a create that succeeded.
            guard existing.kind == .readWrite, existing.sizeBytes == size, existing.origin == origin?.rawValue else {
                throw ProviderError("\(name) already exists in the block store at \(config.root) and differs from the requested volume; remove it first", status: 2)
            }
            return
        }
        if let origin {
            guard let source = try store.record(named: origin) else {
                throw ProviderError("origin \(origin) not found in the block store at \(config.root) (`snf-store list` shows the images and snapshots)", status: 2)
            }
            guard source.kind == .readOnly else {
                throw ProviderError("origin \(origin) is a volume, not an image or snapshot; snapshot it and use the snapshot as origin", status: 2)
            }
            guard source.sizeBytes <= size else {
                throw ProviderError("origin \(origin) has \(mib(source.sizeBytes)) MiB, more than the disk's \(size >> 20) MiB; make the disk at least \(mib(source.sizeBytes)) MiB", status: 2)
            }
            try store.cloneVolume(from: origin, named: name, sizeBytes: size)
        } else {
            try store.createVolume(named: name, sizeBytes: size)
        }
    }

    /// Serves the volume: line 1 the loop device, line 2 `kvm:nbd:unix:<socket>`.
    func attach() throws -> String {
        let name = try volumeName()
        let (store, _) = try openStore()
        guard try store.record(named: name) != nil else {
            throw ProviderError("no volume named \(name) in the block store at \(config.root); it was removed or never created", status: 2)
        }
        let lines = try expect(try client.send(["attach", name.rawValue]))
        guard lines.count == 2 else { throw ProviderError("the daemon's attach reply is malformed: \(lines)", status: 1) }
        return lines[0] + "\n" + lines[1] + "\n"
    }

    func detach() throws {
        let name = try volumeName()
        if let reply = try client.sendForAttached(["detach", name.rawValue], name: name.rawValue) { _ = try expect(reply) }
    }

    func remove() throws {
        let name = try volumeName()
        if let reply = try client.sendForAttached(["detach", name.rawValue], name: name.rawValue) { _ = try expect(reply) }
        let (store, backend) = try openStore()
        do {
            try store.remove(name)
        } catch let error as StoreError where error.code == .notFound {
            // Already gone: a retry.
        }
        try backend.setMetadata(of: name.rawValue, to: nil)
    }

    func grow() throws {
        let name = try volumeName()
        let size = try mebibytes("VOL_NEW_SIZE")
        if let reply = try client.sendIfRunning(["grow", name.rawValue, String(size)]) {
            _ = try expect(reply)
            return
        }
        let (store, _) = try openStore()
        try store.grow(name, toSizeBytes: size)
    }

    /// Keeps `VOL_METADATA` (Ganeti sends `originstname+<instance>`) beside the volume, for
    /// operators mapping volumes back to instances (`snf-store info`).
    func setInfo() throws {
        let name = try volumeName()
        let metadata = environment["VOL_METADATA"] ?? ""
        guard metadata.utf8.count <= 1024, !metadata.contains("\n") else {
            throw ProviderError("VOL_METADATA must be one line of at most 1024 bytes", status: 2)
        }
        let (store, backend) = try openStore()
        guard try store.record(named: name) != nil else {
            throw ProviderError("no volume named \(name) in the block store at \(config.root)", status: 2)
        }
        try backend.setMetadata(of: name.rawValue, to: metadata)
    }

    /// Checks the parameters: the store opens and the origin, if any, is an image or snapshot.
    func verify() throws {
        let (store, _) = try openStore()
        for key in environment.keys where key.hasPrefix("EXTP_") {
            guard ["EXTP_PROVIDER", "EXTP_ACCESS", "EXTP_ORIGIN"].contains(key) else {
                throw ProviderError("unknown parameter \(key.dropFirst(5).lowercased()); snf-store takes only origin", status: 2)
            }
        }
        if let origin = try origin() {
            guard let record = try store.record(named: origin), record.kind == .readOnly else {
                throw ProviderError("origin \(origin) is not an image or snapshot in the block store at \(config.root)", status: 2)
            }
        }
    }

    func snapshot() throws {
        let name = try volumeName()
        let snapshot = try self.name("VOL_SNAPSHOT_NAME")
        let (store, _) = try openStore()
        if let existing = try store.record(named: snapshot) {
            guard existing.kind == .readOnly, existing.origin == name.rawValue else {
                throw ProviderError("\(snapshot) already exists and is not a snapshot of \(name); remove it first", status: 2)
            }
            return
        }
        if let reply = try client.sendIfRunning(["snapshot", name.rawValue, snapshot.rawValue]) {
            _ = try expect(reply)
            return
        }
        try store.snapshot(name, as: snapshot)
    }

    func open() throws {
        let name = try volumeName()
        let exclusive = (environment["VOL_OPEN_EXCLUSIVE"] ?? "True").lowercased() != "false"
        let (store, _) = try openStore()
        guard try store.record(named: name) != nil else {
            throw ProviderError("no volume named \(name) in the block store at \(config.root)", status: 2)
        }
        _ = try expect(try client.send(["open", name.rawValue, exclusive ? "exclusive" : "shared"]))
    }

    func close() throws {
        let name = try volumeName()
        if let reply = try client.sendIfRunning(["close", name.rawValue]) { _ = try expect(reply) }
    }

    func mib(_ bytes: UInt64) -> UInt64 { (bytes + (1 << 20) - 1) >> 20 }
}

/// A failed provider verb: one sentence, and the exit status (2 bad input, 1 failure).
public struct ProviderError: Error, CustomStringConvertible {
    public var message: String
    public var status: Int32
    public init(_ message: String, status: Int32) {
        self.message = message
        self.status = status
    }
    public var description: String { message }
}
