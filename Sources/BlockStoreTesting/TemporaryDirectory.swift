import BlockStore
import FoundationEssentials

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Temporary directories for tests, all under one directory per test process that is removed
/// when the process exits, so test runs leave nothing behind.
public enum TemporaryDirectory {
    /// `$TMPDIR/snf-store-tests-<pid>`, created on first use and removed at exit.
    static let processRoot: String = {
        let base = getenv("TMPDIR").flatMap { String(validatingCString: $0) } ?? "/tmp"
        let path = base + "/snf-store-tests-\(getpid())"
        mkdir(path, 0o700)
        atexit { try? FileManager.default.removeItem(atPath: TemporaryDirectory.processRoot) }
        return path
    }()

    /// A new, empty directory whose name starts with `prefix`.
    public static func make(prefix: String) throws -> String {
        var template = Array("\(processRoot)/\(prefix)-XXXXXX".utf8CString)
        guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw StoreError(.io, "cannot create a temporary directory under \(processRoot)")
        }
        return String(cString: path)
    }
}
