import BlockStore
import BlockStorePosix
import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where `img_id` points.
public enum ImageLocator: Sendable, Equatable, CustomStringConvertible {
    /// `snf-store://NAME`: a read-only map (image or snapshot) in the node's block store.
    case store(MapName)
    /// `local://NAME`, `file://NAME` or a bare `NAME`: a regular file in `image_dir`.
    case local(String)
    /// `http://...` or `https://...`, streamed with curl.
    case http(String)

    public init(_ id: String) throws {
        guard !id.isEmpty else { throw DeployError.badInput("img_id is empty") }
        guard !id.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else {
            throw DeployError.badInput("img_id contains control characters")
        }
        if id.hasPrefix("snf-store://") {
            let name = String(id.dropFirst("snf-store://".count))
            do {
                self = .store(try MapName(name))
            } catch let error as StoreError {
                throw DeployError.badInput("img_id \(id): \(error.message)")
            }
        } else if id.hasPrefix("http://") || id.hasPrefix("https://") {
            guard id.count > (id.hasPrefix("https") ? 8 : 7), !id.contains(" ") else { throw DeployError.badInput("img_id \(id.debugDescription) is not a URL") }
            self = .http(id)
        } else if id.hasPrefix("local://") || id.hasPrefix("file://") {
            let name = String(id.drop(while: { $0 != ":" }).dropFirst(3))
            try ImageLocator.checkFileName(name, id: id)
            self = .local(name)
        } else if !id.contains(":") {
            try ImageLocator.checkFileName(id, id: id)
            self = .local(id)
        } else {
            throw DeployError.badInput("img_id \(id.debugDescription): unknown source (use snf-store://NAME, local://NAME, NAME or an http(s):// URL)")
        }
    }

    /// A file name in `image_dir`: no '/', not `.` or `..`, no NUL.
    static func checkFileName(_ name: String, id: String) throws {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), !name.utf8.contains(0), name.utf8.count <= 255 else {
            throw DeployError.badInput("img_id \(id.debugDescription): \(name.debugDescription) is not a file name in the image directory (no '/', not '.' or '..')")
        }
    }

    public var description: String {
        switch self {
        case .store(let name): return "snf-store://\(name)"
        case .local(let name): return "local://\(name)"
        case .http(let url): return url
        }
    }
}

/// The bytes of an image: its size, known before the copy, and a stream of chunks.
public protocol ImageSource: Sendable {
    /// For messages: where the bytes come from.
    var description: String { get }
    /// The image size in bytes.
    var sizeBytes: UInt64 { get }
    /// Calls `consume` with consecutive chunks from offset 0: every chunk is
    /// ``ImageSources/chunkBytes`` long except the last. The bytes are only valid during the
    /// call. Throws when the source ends early, runs long, or fails.
    func stream(_ consume: (_ offset: UInt64, _ chunk: UnsafeRawBufferPointer) throws -> Void) throws
}

public enum ImageSources {
    /// The chunk size of every source: 4 MiB (the block store's block).
    public static let chunkBytes = 4 << 20

    /// Opens the image `locator` names, with the node's configuration.
    public static func open(_ locator: ImageLocator, config: ImageConfig, format: ImageFormat = .diskdump) throws -> any ImageSource {
        switch locator {
        case .store(let name): return try StoreImageSource(name: name, store: config.store)
        case .local(let name): return try LocalImageSource(directory: config.imageDirectory, name: name, format: format)
        case .http(let url): return try HTTPImageSource(url: url)
        }
    }
}

/// A regular file in the image directory, opened with O_NOFOLLOW (a symlink is refused).
public final class LocalImageSource: ImageSource {
    public let description: String
    public let sizeBytes: UInt64
    let fd: Int32

    /// Opens `directory/name`, or (snf-image's legacy fallback) `directory/name.<format>`.
    public init(directory: String, name: String, format: ImageFormat = .diskdump) throws {
        try ImageLocator.checkFileName(name, id: name)
        let directoryFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw DeployError.errno("open the image directory", directory) }
        defer { close(directoryFD) }
        var chosen = name
        var fd = openat(directoryFD, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)
        if fd < 0 && errno == ENOENT {
            chosen = name + "." + format.rawValue
            fd = openat(directoryFD, chosen, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY)
            if fd < 0 && errno == ENOENT {
                throw DeployError.failure("the image \(name) is not in \(directory) (nor \(chosen))")
            }
        }
        let path = directory + "/" + chosen
        guard fd >= 0 else {
            if errno == ELOOP { throw DeployError.failure("the image \(path) is a symbolic link; images must be regular files") }
            throw DeployError.errno("open the image", path)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            close(fd)
            throw DeployError.errno("stat the image", path)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            close(fd)
            throw DeployError.failure("the image \(path) is not a regular file")
        }
        self.fd = fd
        description = path
        sizeBytes = UInt64(info.st_size)
    }

    deinit { close(fd) }

    public func stream(_ consume: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageSources.chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < sizeBytes {
            let want = Int(min(UInt64(buffer.count), sizeBytes - offset))
            var got = 0
            while got < want {
                let n = pread(fd, buffer.baseAddress! + got, want - got, off_t(offset) + off_t(got))
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw DeployError.errno("read the image", description) }
                guard n > 0 else { throw DeployError.failure("the image \(description) shrank while it was being copied") }
                got += n
            }
            try consume(offset, UnsafeRawBufferPointer(rebasing: buffer[0..<want]))
            offset += UInt64(want)
        }
    }
}

/// A read-only map (image or snapshot) of the snf-store block store, read and verified by the
/// store's export (blocks hashed as they are read, several at a time).
public final class StoreImageSource: ImageSource {
    public let description: String
    public let sizeBytes: UInt64
    public let name: MapName
    let store: BlockStore

    public init(name: MapName, store config: NodeConfig) throws {
        self.name = name
        description = "snf-store://\(name)"
        do {
            store = BlockStore(backend: try PosixBackend(root: config.root))
            guard let record = try store.record(named: name) else {
                throw DeployError.failure("the image \(name) is not in the block store \(config.root) (see `snf-store list`)")
            }
            guard record.kind == .readOnly else {
                throw DeployError.badInput("snf-store://\(name) is a volume; an image must be an image or snapshot (read-only map)")
            }
            sizeBytes = record.sizeBytes
        } catch let error as StoreError {
            throw DeployError.failure("cannot open the block store \(config.root): \(error.message)")
        }
    }

    public func stream(_ consume: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws {
        try withoutActuallyEscaping(consume) { consume in
            let sink = ChunkSink(consume)
            do {
                try store.export(name, to: sink)
            } catch let error as StoreError {
                throw sink.failure ?? DeployError.failure("cannot read \(description): \(error.message)")
            } catch {
                throw sink.failure ?? error
            }
        }
    }

    /// Hands the export's in-order blocks to the consumer. The export calls `write` one block at
    /// a time, in order (a stream sink), from its worker threads.
    private final class ChunkSink: ByteSink, @unchecked Sendable {
        let consume: (UInt64, UnsafeRawBufferPointer) throws -> Void
        var failure: (any Error)?
        init(_ consume: @escaping (UInt64, UnsafeRawBufferPointer) throws -> Void) { self.consume = consume }
        var supportsRandomAccess: Bool { false }
        func write(at offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
            do {
                try consume(offset, bytes)
            } catch {
                failure = error
                throw error
            }
        }
        func finish(sizeBytes: UInt64) throws {}
    }
}

/// An image on an HTTP(S) server, streamed by `curl -fsSL --proto =http,https` (a child process
/// from an argument vector). The size comes from a HEAD request first (`curl -fsSIL`,
/// Content-Length of the last response); the bytes streamed must match it.
public final class HTTPImageSource: ImageSource {
    public let description: String
    public let sizeBytes: UInt64
    let url: String

    public init(url: String) throws {
        self.url = url
        description = url
        let headers = try runCapturingOutput(curlBaseArguments + ["-I", "--max-time", "60", url], what: "the HEAD request for \(url)")
        guard let size = HTTPImageSource.contentLength(String(decoding: headers, as: UTF8.self)) else {
            throw DeployError.failure("the server of \(url) did not send a Content-Length; snf-image needs the image size before the copy")
        }
        sizeBytes = size
    }

    /// The Content-Length of the last response in `headers` (curl -IL prints every redirect's).
    static func contentLength(_ headers: String) -> UInt64? {
        var length: UInt64?
        for line in headers.split(whereSeparator: \.isNewline) {
            let text = line.snfTrimmed
            if text.hasPrefix("HTTP/") { length = nil; continue }
            let parts = text.split(separator: ":", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "content-length" { length = UInt64(parts[1].snfTrimmed) }
        }
        return length
    }

    public func stream(_ consume: (UInt64, UnsafeRawBufferPointer) throws -> Void) throws {
        let child = try PipedChild(curlBaseArguments + [url])
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageSources.chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        do {
            while true {
                let n = try child.readFull(buffer)
                if n == 0 { break }
                guard offset + UInt64(n) <= sizeBytes else {
                    throw DeployError.failure("\(url) sent more than the \(sizeBytes) bytes its Content-Length announced")
                }
                if n < buffer.count && offset + UInt64(n) < sizeBytes {
                    throw DeployError.failure("\(url) ended after \(offset + UInt64(n)) of \(sizeBytes) bytes")
                }
                try consume(offset, UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
                offset += UInt64(n)
                if n < buffer.count { break }
            }
        } catch {
            child.terminate()
            throw error
        }
        // Anything after the announced size is an error too.
        var extra: UInt8 = 0
        let more = try withUnsafeMutableBytes(of: &extra) { try child.readFull($0) }
        if more > 0 {
            child.terminate()
            throw DeployError.failure("\(url) sent more than the \(sizeBytes) bytes its Content-Length announced")
        }
        let status = child.wait()
        guard status == 0 else { throw DeployError.failure("downloading \(url) failed (curl exited with status \(status))") }
        guard offset == sizeBytes else {
            throw DeployError.failure("\(url) sent \(offset) bytes; its Content-Length announced \(sizeBytes)")
        }
    }
}
