import ArgumentParser
import BlockStore
import BlockStorePosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create an empty store (does nothing to an existing one).")
    @OptionGroup var store: StoreOptions

    func run() throws {
        let root = store.resolvedRoot
        let created = try PosixBackend.initialize(root: root)
        print(created ? "initialized a block store at \(root)" : "a block store already exists at \(root)")
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Import a file (or - for standard input) as a read-only map: an image or object.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The new map's name.") var name: String
    @Argument(help: ArgumentHelp("The data: a file, a block device, or - for standard input.", valueName: "FILE|-"))
    var file: String
    @Flag(help: "Read and hash the file even if it is unchanged since an earlier import.")
    var rehash = false

    func run() throws {
        let name = try mapName(name)
        let store = try store.store()
        guard try store.record(named: name) == nil else {
            throw StoreError(.alreadyExists, "\(name) already exists; remove it first or choose another name")
        }
        let source = try openSource(file)
        let bar = ProgressBar.forTerminal(label: "import \(name)")
        let result = try store.importMap(named: name, from: source, useCache: !rehash, progress: bar?.update)
        bar?.finish()
        let info = try store.info(name)
        let reused = result.reusedUnchangedFile ? " (the file is unchanged since an earlier import: not read again)" : ""
        printError("imported \(name): \(formatBytes(result.record.sizeBytes)), \(info.blocks) blocks, \(info.zeroBlocks) of them zero\(reused)")
    }
}

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write the bytes of a map or volume to a file (or - for standard output).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The map or volume.") var name: String
    @Argument(help: ArgumentHelp("Where to write: a file, a block device, or - for standard output.", valueName: "FILE|-"))
    var file: String

    func run() throws {
        let name = try mapName(name)
        try self.store.requireDetached(name)
        let store = try store.store()
        // Check the name before creating or truncating the output.
        guard try store.record(named: name) != nil else {
            throw StoreError(.notFound, "no map or volume named \(name)")
        }
        let sink = file == "-" ? try FileSink(descriptor: 1, path: "standard output") : try FileSink(path: file)
        let bar = ProgressBar.forTerminal(label: "export \(name)")
        try store.export(name, to: sink, progress: bar?.update)
        bar?.finish()
    }
}

struct Create: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Create an empty read-write volume.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The new volume's name.") var volume: String
    @Option(help: ArgumentHelp("The volume's size.", valueName: "BYTES")) var size: ByteCount

    func run() throws {
        try store.store().createVolume(named: mapName(volume), sizeBytes: size.bytes)
    }
}

struct Clone: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Thin-clone a read-only map into a new volume (writes no data).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The origin: an image or snapshot.") var source: String
    @Argument(help: "The new volume's name.") var volume: String
    @Option(help: ArgumentHelp("The volume's size (default: the origin's; never smaller).", valueName: "BYTES"))
    var size: ByteCount?

    func run() throws {
        try store.store().cloneVolume(from: mapName(source), named: mapName(volume), sizeBytes: size?.bytes)
    }
}

struct Write: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a file (or - for standard input) into a volume at an offset, copying on write.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The volume.") var volume: String
    @Option(help: ArgumentHelp("Where in the volume to start.", valueName: "BYTES")) var offset: ByteCount
    @Argument(help: ArgumentHelp("The data: a file, or - for standard input.", valueName: "FILE|-")) var file: String

    func run() throws {
        let name = try mapName(volume)
        try self.store.requireDetached(name)
        let backend = try store.backend()
        let store = BlockStore(backend: backend)
        guard let record = try store.record(named: name) else {
            throw StoreError(.notFound, "no map or volume named \(name)")
        }
        guard record.kind == .readWrite else {
            throw StoreError(.wrongKind, "\(name) is a read-only map; clone it to a volume to write")
        }
        var source = try openSource(file)
        if source.sizeBytes == nil {
            // A stream: spool it (at most what fits) so its length is known before writing.
            let room = record.sizeBytes > offset.bytes ? record.sizeBytes - offset.bytes : 0
            source = try spool(source, backend: backend, limit: room, volume: name, offset: offset.bytes)
        }
        let bar = ProgressBar.forTerminal(label: "write \(name)")
        try store.write(to: name, at: offset.bytes, from: source, progress: bar?.update)
        bar?.finish()
    }
}

struct Snapshot: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Freeze a volume into a new read-only map.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The volume.") var volume: String
    @Argument(help: "The snapshot's name.") var snapshot: String

    func run() throws {
        try store.requireDetached(mapName(volume))
        try store.store().snapshot(mapName(volume), as: mapName(snapshot))
    }
}

struct Grow: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Grow a volume; new bytes read as zeros.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The volume.") var volume: String
    @Option(help: ArgumentHelp("The new size (not below the current one).", valueName: "BYTES")) var size: ByteCount

    func run() throws {
        try store.requireDetached(mapName(volume))
        try store.store().grow(mapName(volume), toSizeBytes: size.bytes)
    }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rm",
        abstract: "Remove a map or volume (its blocks stay until `gc` finds them unused).")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The map or volume.") var name: String

    func run() throws {
        try store.requireDetached(mapName(name))
        try store.store().remove(mapName(name))
    }
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a map or volume.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The map or volume.") var name: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let info = try store.store().info(mapName(name))
        if json {
            print(try encodeJSON(MapInfoJSON(info)))
        } else {
            for (key, value) in MapInfoJSON(info).lines { print("\(key): \(value)") }
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List every map and volume.")
    @OptionGroup var store: StoreOptions
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let records = try store.store().list()
        if json {
            print(try encodeJSON(records.map(RecordJSON.init)))
            return
        }
        print(pad("NAME", 40) + pad("KIND", 5) + pad("SIZE", 14, right: true) + "  ORIGIN")
        for r in records {
            print(pad(r.name.rawValue, 40) + pad(r.kind.rawValue, 5) + pad(formatBytes(r.sizeBytes), 14, right: true)
                + "  " + (r.origin ?? "-"))
        }
    }
}

struct Hashmap: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the Pithos hashmap (block hashes and top hash) of a map or volume as JSON.")
    @OptionGroup var store: StoreOptions
    @Argument(help: "The map or volume.") var name: String

    func run() throws {
        try store.requireDetached(mapName(name))
        print(try encodeJSON(HashmapJSON(try store.store().hashmap(of: mapName(name)))))
    }
}

struct CollectGarbage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc", abstract: "Delete blocks and map data that nothing refers to.")
    @OptionGroup var store: StoreOptions
    @Option(help: ArgumentHelp(
        "Keep unreferenced content blocks younger than this (an upload may still commit them).",
        valueName: "SECONDS"))
    var grace: Int64 = 3600

    func validate() throws {
        guard grace >= 0 else { throw ValidationError("--grace must be 0 or more seconds") }
    }

    func run() throws {
        let r = try store.store().collectGarbage(graceSeconds: grace)
        print("freed \(formatBytes(r.freedBytes)): \(r.blocks) blocks (\(formatBytes(r.blockBytes))), "
            + "\(r.privateBlocks) private blocks (\(formatBytes(r.privateBlockBytes))), "
            + "\(r.maps) map data (\(formatBytes(r.mapBytes)))")
        if r.blocksInGrace > 0 {
            print("kept \(r.blocksInGrace) unreferenced blocks younger than \(grace) seconds")
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Verify every map and block; print one line per problem (exit status 1 if any).")
    @OptionGroup var store: StoreOptions

    func run() throws {
        let bar = ProgressBar.forTerminal(label: "check")
        let report = try store.store().check(progress: bar?.update)
        bar?.finish()
        for problem in report.problems { print(problem) }
        let summary = "\(report.maps) maps, \(report.blocksVerified) blocks (\(formatBytes(report.bytesVerified))) verified, \(report.unreferencedBlocks) unreferenced"
        if report.isSound {
            print("no problems: " + summary)
        } else {
            printError("snf-store: check found \(report.problems.count) problems (\(summary))")
            throw ExitCode(ExitStatus.failure)
        }
    }
}

// MARK: Helpers

/// A source for `FILE|-`.
func openSource(_ file: String) throws -> FileSource {
    file == "-" ? try FileSource(descriptor: 0, path: "standard input") : try FileSource(path: file)
}

/// Copies a stream into an anonymous file under the store (at most `limit` bytes; one more is
/// an error), so that its length is known before the volume is touched.
func spool(_ source: FileSource, backend: PosixBackend, limit: UInt64, volume: MapName, offset: UInt64) throws
    -> FileSource
{
    let fd = try backend.anonymousScratchFile()
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    defer { buffer.deallocate() }
    do {
        var total: UInt64 = 0
        while true {
            let n = try source.read(at: total, into: buffer)
            if n == 0 { break }
            guard total + UInt64(n) <= limit else {
                throw StoreError(.outOfRange, "the data written at offset \(offset) would pass the end of \(volume) (\(offset + limit) bytes); grow it first")
            }
            var done = 0
            while done < n {
                let w = pwrite(fd, buffer.baseAddress! + done, n - done, off_t(total) + off_t(done))
                if w < 0 {
                    if errno == EINTR { continue }
                    throw StoreError(errno == ENOSPC ? .noSpace : .io, "cannot spool standard input: \(Errno(errno))")
                }
                done += w
            }
            total += UInt64(n)
        }
    } catch {
        close(fd)
        throw error
    }
    return try FileSource(descriptor: fd, path: "standard input", owns: true)
}

func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
    let fill = String(repeating: " ", count: max(0, width - text.count))
    return right ? fill + text : text + " " + fill
}
