import NodeSupport

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Where the node's block store and the daemon's runtime files live.
///
/// Each setting comes from, in order: the command line, the environment (`SNF_STORE_ROOT`,
/// `SNF_STORE_RUN`), the configuration file (`/etc/snf/store.conf`, or `SNF_STORE_CONF`), the
/// default. The file holds `key = value` lines (`root`, `run`); `#` starts a comment.
public struct NodeConfig: Sendable, Equatable {
    /// The block store's directory.
    public var root: String
    /// The daemon's runtime directory: control socket, NBD sockets, FUSE mount, attachments.
    public var run: String

    public static let defaultRoot = "/var/lib/snf-store"
    public static let defaultRun = "/run/snf-store"
    public static let defaultConfigFile = "/etc/snf/store.conf"

    public init(root: String, run: String) {
        self.root = root
        self.run = run
    }

    /// Resolves the settings. `rootOption`/`runOption` are the command line's, if given.
    /// - Throws: ``ServerError`` for a configuration file that exists but does not parse.
    public static func load(rootOption: String? = nil, runOption: String? = nil, environment: [String: String])
        throws -> NodeConfig
    {
        let file = environment["SNF_STORE_CONF"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultConfigFile
        let settings = try parse(file: file)
        func pick(_ option: String?, _ variable: String, _ key: String, _ fallback: String) -> String {
            if let option, !option.isEmpty { return option }
            if let value = environment[variable], !value.isEmpty { return value }
            return settings[key] ?? fallback
        }
        return NodeConfig(
            root: pick(rootOption, "SNF_STORE_ROOT", "root", defaultRoot),
            run: pick(runOption, "SNF_STORE_RUN", "run", defaultRun))
    }

    /// The text of a small configuration file (at most 1 MiB), nil when it does not exist.
    public static func readConfigurationFile(_ file: String) throws -> String? {
        do {
            return try readConfigurationText(file)
        } catch {
            throw ServerError(error.message)
        }
    }

    /// The settings in `file`; empty when the file does not exist.
    static func parse(file: String) throws -> [String: String] {
        guard let text = try readConfigurationFile(file) else { return [:] }
        var settings: [String: String] = [:]
        for (number, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let trimmed = line.trimmingSpaces
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].trimmingSpaces
            guard parts.count == 2, ["root", "run"].contains(key) else {
                throw ServerError("\(file) line \(number + 1): expected `root = PATH` or `run = PATH`, got \(trimmed.debugDescription)")
            }
            let value = parts[1].trimmingSpaces
            guard value.hasPrefix("/") else {
                throw ServerError("\(file) line \(number + 1): \(key) must be an absolute path, got \(value.debugDescription)")
            }
            settings[key] = value
        }
        return settings
    }

    // MARK: Runtime paths

    var controlSocket: String { run + "/control.sock" }
    var lockFile: String { run + "/serve.lock" }
    var logFile: String { run + "/serve.log" }
    var attachedDirectory: String { run + "/attached" }
    var nbdDirectory: String { run + "/nbd" }
    /// The FUSE mount point; each attached volume is a file in it.
    public var fuseMountpoint: String { run + "/fuse" }

    /// The NBD socket of `name`: `<run>/nbd/<name>.sock`, or a digest of the name when that path
    /// would not fit in a socket address.
    public func nbdSocket(for name: String) -> String {
        let plain = nbdDirectory + "/" + name + ".sock"
        if plain.utf8.count <= UnixSocket.maxPathLength { return plain }
        return nbdDirectory + "/" + shortDigest(name) + ".sock"
    }
}

extension StringProtocol {
    var trimmingSpaces: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" }) else { return "" }
        let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" })!
        return String(String.UnicodeScalarView(scalars[first...last]))
    }
}

/// 16 hex characters of FNV-1a over `text`: a stable, short file name for a long volume name.
func shortDigest(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
