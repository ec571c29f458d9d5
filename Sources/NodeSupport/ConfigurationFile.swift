#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The text of a small configuration file (at most 1 MiB); nil when it does not exist.
public func readConfigurationText(_ file: String) throws(ChildProcessError) -> String? {
    let fd = open(file, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        if errno == ENOENT { return nil }
        throw ChildProcessError("cannot read the configuration file \(file): \(ChildProcess.errnoText())")
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        guard n >= 0 else { throw ChildProcessError("cannot read the configuration file \(file): \(ChildProcess.errnoText())") }
        if n == 0 { break }
        bytes += chunk[0..<n]
        guard bytes.count < 1 << 20 else { throw ChildProcessError("the configuration file \(file) is too large") }
    }
    return String(decoding: bytes, as: UTF8.self)
}
