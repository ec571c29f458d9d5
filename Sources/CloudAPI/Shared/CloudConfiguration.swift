import Foundation

/// Everything `snf-cloud` needs to run, from the command line and an optional configuration file.
///
/// The file is `key = value` lines; `#` starts a comment; unknown keys are an error (a typo must
/// not silently fall back to a default). Keys: `data_dir`, `store_dir`, `listen` (`HOST:PORT`), `database_url`
/// (`sqlite:///path` or `postgres://user:password@host:port/db?sslmode=disable`), `public_url`,
/// `region`, `token_lifetime_seconds`, `quota_default_<resource>`. Command-line values win over the file.
public struct CloudConfiguration: Sendable, Equatable {
    /// Where the embedded database (`cloud.sqlite3`) and upload scratch files live.
    public var dataDirectory: String
    /// The block store's root; nil means `<data dir>/store`. Pointing it at the node's store
    /// (`/var/lib/snf-store`, what `scripts/setup` does) makes API volumes and Ganeti disks the
    /// same maps.
    public var storeDirectoryOverride: String?
    /// The block store every object, image, snapshot and volume lives in.
    public var storeDirectory: String { storeDirectoryOverride ?? dataDirectory + "/store" }
    public var listenHost: String = "127.0.0.1"
    public var listenPort: Int = 5000
    /// The metadata database; nil means SQLite at `<data dir>/cloud.sqlite3`.
    public var databaseURL: String?
    /// The base URL clients reach this service at (catalog entries, version links); nil means
    /// `http://` plus the request's Host header.
    public var publicURL: String?
    /// The region every catalog endpoint names (`region_id`).
    public var region: String = "RegionOne"
    /// Token lifetime; Keystone's default is one hour.
    public var tokenLifetimeSeconds: Int = 3600
    /// `quota_default_<resource> = N`: the limit of projects that have none of their own, by
    /// resource name (``QuotaResource/known``); an absent resource is unlimited.
    public var quotaDefaults: [String: Int64] = [:]

    public init(dataDirectory: String) {
        self.dataDirectory = dataDirectory
    }

    /// The SQLite file used when no `database_url` is set.
    public var sqlitePath: String { dataDirectory + "/cloud.sqlite3" }

    /// Parses a configuration file's text over `self`. Throws `.badRequest`-style errors with the
    /// line number; never echoes a value (a database URL may hold a password).
    public mutating func apply(fileText: String, fileName: String) throws(ConfigurationError) {
        for (index, rawLine) in fileText.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first
                .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            if line.isEmpty { continue }
            guard let eq = line.firstIndex(of: "=") else {
                throw ConfigurationError("\(fileName):\(index + 1): expected `key = value`")
            }
            let key = line[..<eq].trimmingCharacters(in: .whitespaces)
            let value = line[line.index(after: eq)...].trimmingCharacters(in: .whitespaces)
            try set(key: key, value: value, where: "\(fileName):\(index + 1)")
        }
    }

    mutating func set(key: String, value: String, where location: String) throws(ConfigurationError) {
        switch key {
        case "data_dir": dataDirectory = value
        case "store_dir": storeDirectoryOverride = value.isEmpty ? nil : value
        case "listen": try setListen(value)
        case "database_url": databaseURL = value.isEmpty ? nil : value
        case "public_url": publicURL = value.isEmpty ? nil : value.trimmingSuffix("/")
        case "region": region = value
        case "token_lifetime_seconds":
            guard let seconds = Int(value), seconds > 0 else {
                throw ConfigurationError("\(location): token_lifetime_seconds must be a positive integer")
            }
            tokenLifetimeSeconds = seconds
        case _ where key.hasPrefix("quota_default_"):
            let name = String(key.dropFirst("quota_default_".count))
            guard QuotaResource.named(name) != nil else {
                throw ConfigurationError(
                    "\(location): unknown quota resource in `\(key)` (known: \(QuotaResource.known.map(\.rawValue).joined(separator: ", ")))"
                )
            }
            guard let limit = Int64(value), limit >= 0 else {
                throw ConfigurationError("\(location): \(key) must be a non-negative integer")
            }
            quotaDefaults[name] = limit
        default:
            throw ConfigurationError(
                "\(location): unknown key `\(key)` (known: data_dir, store_dir, listen, database_url, public_url, region, token_lifetime_seconds, quota_default_<resource>)"
            )
        }
    }

    /// Sets the listen address from `HOST:PORT` (`[v6]:PORT` for IPv6).
    public mutating func setListen(_ value: String) throws(ConfigurationError) {
        guard let colon = value.lastIndex(of: ":"), let port = Int(value[value.index(after: colon)...]),
            (1...65535).contains(port)
        else {
            throw ConfigurationError("listen address `\(value)` is not HOST:PORT (for example 127.0.0.1:5000)")
        }
        var host = String(value[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { throw ConfigurationError("listen address `\(value)` has no host") }
        listenHost = host
        listenPort = port
    }
}

/// A configuration that cannot be used; the message names the file and line, never a secret.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension String {
    func trimmingSuffix(_ suffix: String) -> String {
        var s = self
        while s.hasSuffix(suffix) { s.removeLast(suffix.count) }
        return s
    }
}

extension CloudConfiguration {
    /// The configuration `snf-cloud` runs with: the defaults, then `configFile` if given, then the
    /// command-line values (which win).
    public static func load(dataDirectory: String?, configFile: String?, listen: String?) throws -> CloudConfiguration {
        var configuration = CloudConfiguration(dataDirectory: "/var/lib/snf-cloud")
        if let configFile {
            let text: String
            do {
                text = try String(contentsOfFile: configFile, encoding: .utf8)
            } catch {
                throw ConfigurationError("cannot read the configuration file \(configFile): \(error.localizedDescription)")
            }
            try configuration.apply(fileText: text, fileName: configFile)
        }
        if let dataDirectory { configuration.dataDirectory = dataDirectory }
        if let listen { try configuration.setListen(listen) }
        return configuration
    }

    /// The identity URL clients use (`OS_AUTH_URL`).
    public var authURL: String {
        let host = listenHost.contains(":") ? "[\(listenHost)]" : listenHost
        return (publicURL ?? "http://\(host):\(listenPort)") + "/v3"
    }
}
