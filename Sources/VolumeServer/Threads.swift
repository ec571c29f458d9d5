#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A started OS thread that can be joined.
public struct JoinableThread: @unchecked Sendable {  // pthread_t is a plain integer handle on Linux
    let handle: pthread_t

    /// Runs `body` on a new thread.
    public static func start(_ body: @escaping @Sendable () -> Void) -> JoinableThread {
        final class Box { let body: @Sendable () -> Void; init(_ b: @escaping @Sendable () -> Void) { body = b } }
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { arg in
            let box = Unmanaged<Box>.fromOpaque(arg!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return JoinableThread(handle: thread)
    }

    /// Waits for the thread to end.
    public func join() { pthread_join(handle, nil) }
}

/// Big-endian integer access to raw memory (the NBD wire format).
extension UnsafeMutableRawPointer {
    func storeBE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: T.self)
    }
}

extension UnsafeRawPointer {
    func loadBE<T: FixedWidthInteger>(at offset: Int, as: T.Type) -> T {
        T(bigEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

/// Unix-domain socket helpers.
enum UnixSocket {
    /// The longest path a `sockaddr_un` holds (without the terminating NUL).
    static let maxPathLength = 107

    /// Binds and listens on `path` (replacing a stale socket file), mode 0600.
    static func listen(at path: String, backlog: Int32 = 64) throws -> Int32 {
        guard path.utf8.count <= maxPathLength else {
            throw ServerError("the socket path \(path) is longer than \(maxPathLength) bytes")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError.errno("create a socket for", path) }
        unlink(path)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let previous = umask(0o077)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        umask(previous)
        guard rc == 0, Glibc.listen(fd, backlog) == 0 else {
            let error = ServerError.errno("listen on", path)
            close(fd)
            throw error
        }
        return fd
    }

    /// Connects to `path`; nil when nobody listens there (no file, or refused).
    static func connect(to path: String) throws -> Int32? {
        guard path.utf8.count <= maxPathLength else {
            throw ServerError("the socket path \(path) is longer than \(maxPathLength) bytes")
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ServerError.errno("create a socket for", path) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: path.utf8)
            raw[path.utf8.count] = 0
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let code = errno
            close(fd)
            if code == ENOENT || code == ECONNREFUSED { return nil }
            throw ServerError("cannot connect to \(path): \(String(cString: strerror(code)))")
        }
        return fd
    }

    /// Writes all of `bytes`; false when the peer went away.
    static func sendAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = send(fd, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += n
        }
        return true
    }
}

/// A failure of the daemon or its protocols, with one sentence for the operator.
public struct ServerError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    static func errno(_ action: String, _ what: String) -> ServerError {
        ServerError("cannot \(action) \(what): \(String(cString: strerror(Glibc.errno)))")
    }
}
