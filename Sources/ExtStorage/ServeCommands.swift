import ArgumentParser
import BlockStore
import VolumeServer

/// `snf-store attach NAME`: what the provider's attach does, for operators and benchmarks.
struct Attach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a volume (or snapshot) through the node daemon, starting it if needed.",
        discussion: "Prints the loop device (line 1) and the NBD URI for qemu (line 2, kvm:nbd:unix:SOCKET).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The volume or snapshot.") var name: String

    func run() throws {
        let name = try mapName(name)
        let config = try store.config()
        guard try BlockStore(backend: try store.backend()).record(named: name) != nil else {
            throw StoreError(.notFound, "no volume named \(name) in the block store at \(config.root)")
        }
        let lines = try reply(try ControlClient(config: config).send(["attach", name.rawValue]))
        print(lines.joined(separator: "\n"))
    }
}

struct Detach: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Stop serving a volume: remove its loop device and NBD socket, flush it (does nothing if not attached).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The volume or snapshot.") var name: String

    func run() throws {
        let name = try mapName(name)
        if let answer = try ControlClient(config: try store.config()).sendForAttached(["detach", name.rawValue], name: name.rawValue) {
            _ = try reply(answer)
        }
    }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the volumes the node daemon serves, with their devices, sockets and I/O counters.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let lines = try ControlClient(config: try store.config()).sendIfRunning(["status"]).map(reply) ?? []
        let volumes = lines.map { line -> VolumeStatusJSON in
            let f = line.split(separator: " ").map(String.init)
            return VolumeStatusJSON(
                name: f[0], device: f[1] == "-" ? nil : f[1], socket: f[2], nbdConnections: Int(f[3]) ?? 0,
                bytesRead: UInt64(f[4]) ?? 0, bytesWritten: UInt64(f[5]) ?? 0, sizeBytes: UInt64(f[6]) ?? 0,
                access: f[7], open: f[8] == "-" ? nil : f[8])
        }
        if json {
            print(try encodeJSON(StatusJSON(volumes: volumes)))
            return
        }
        if volumes.isEmpty {
            print("nothing attached (no daemon running)")
            return
        }
        for v in volumes {
            print("\(v.name)  \(v.device ?? "-")  nbd:unix:\(v.socket)  \(v.access)  \(formatBytes(v.sizeBytes))  connections \(v.nbdConnections)  read \(formatBytes(v.bytesRead))  written \(formatBytes(v.bytesWritten))  open \(v.open ?? "-")")
        }
    }
}

struct StatusJSON: Encodable {
    var volumes: [VolumeStatusJSON]
}

struct VolumeStatusJSON: Encodable {
    var name: String
    var device: String?
    var socket: String
    var nbdConnections: Int
    var bytesRead: UInt64
    var bytesWritten: UInt64
    var sizeBytes: UInt64
    var access: String
    var open: String?
}

struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the node daemon in the foreground (attach starts it on demand).",
        discussion: "Serves attached volumes over NBD (Unix sockets in RUN/nbd) and as loop devices on a FUSE mount (RUN/fuse); exits when nothing is attached or open.")
    @OptionGroup var store: StoreOptions

    func run() throws {
        try Daemon(config: try store.config()).run()
    }
}

/// The payload of a reply, or its error as a ``StoreError``.
func reply(_ reply: ControlClient.Reply) throws -> [String] {
    try reply.payload()
}
