#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// The text files of the OS definition directory.
public enum OSDefinitionFiles {
    /// Writes `ganeti_api_version`, `variants.list` and `parameters.list` into `directory` (which
    /// must exist), each through a temporary file and a rename, mode 0644.
    public static func write(into directory: String) throws {
        var info = stat()
        guard stat(directory, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else {
            throw DeployError.badInput("\(directory) is not a directory")
        }
        for (name, content) in ImageConfig.osFiles {
            let path = directory + "/" + name
            let temporary = path + ".new"
            let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
            guard fd >= 0 else { throw DeployError.errno("create", temporary) }
            let bytes = Array(content.utf8)
            let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            fchmod(fd, 0o644)
            let synced = fsync(fd) == 0
            close(fd)
            guard written == bytes.count, synced else {
                unlink(temporary)
                throw DeployError.errno("write", temporary)
            }
            guard rename(temporary, path) == 0 else { throw DeployError.errno("rename \(temporary) to", path) }
        }
    }
}

/// The text of a small file given on the command line (at most 1 MiB, UTF-8).
public func readSmallTextFile(_ path: String, what: String) throws -> String {
    guard let text = try readConfigFile(path) else { throw DeployError.badInput("the \(what) \(path) does not exist") }
    return text
}
