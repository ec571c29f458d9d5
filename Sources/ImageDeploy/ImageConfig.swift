import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Which customization path a deploy uses.
public enum CustomizerChoice: String, Sendable, CaseIterable {
    /// The fast ext editor when the root filesystem is ext2/3/4 on MBR/GPT, else libguestfs.
    case auto
    /// Only the sandboxed fast ext editor.
    case fast
    /// Only libguestfs.
    case guestfs
}

/// The node's snf-image configuration: `/etc/snf/image.conf` (or `$SNF_IMAGE_CONF`), `key = value`
/// lines, `#` comments. Ganeti runs OS scripts with a cleared environment, so the file is what
/// counts on nodes.
public struct ImageConfig: Sendable, Equatable {
    public static let defaultConfigFile = "/etc/snf/image.conf"
    public static let defaultImageDirectory = "/var/lib/snf-image"
    /// The variants this OS definition has (`variants.list`).
    public static let variants = ["default"]

    /// Where `local://NAME` images are.
    public var imageDirectory: String
    /// Where monitor messages go.
    public var monitor: MonitorDestination
    public var customizer: CustomizerChoice
    /// The unprivileged user the fast editor's tools run as.
    public var sandboxUser: String
    /// The time limit of one customization task, in seconds.
    public var taskTimeoutSeconds: Int
    /// The snf-store block store (`snf-store://` images, the clone fast path).
    public var store: NodeConfig

    public init(
        imageDirectory: String = ImageConfig.defaultImageDirectory, monitor: MonitorDestination = .none,
        customizer: CustomizerChoice = .auto, sandboxUser: String = "nobody", taskTimeoutSeconds: Int = 600,
        store: NodeConfig = NodeConfig(root: NodeConfig.defaultRoot, run: NodeConfig.defaultRun)
    ) {
        self.imageDirectory = imageDirectory
        self.monitor = monitor
        self.customizer = customizer
        self.sandboxUser = sandboxUser
        self.taskTimeoutSeconds = taskTimeoutSeconds
        self.store = store
    }

    static let keys = ["image_dir", "monitor", "customizer", "sandbox_user", "task_timeout", "store_root", "store_run"]

    /// Reads the configuration file named by `SNF_IMAGE_CONF` in `environment` (else the
    /// default); a missing file means the defaults. The store locations default to snf-store's
    /// (its `NodeConfig`: `SNF_STORE_*`, `/etc/snf/store.conf`).
    /// - Throws: ``DeployError`` (bad input) for a file that does not parse.
    public static func load(environment: [String: String]) throws -> ImageConfig {
        let path = environment["SNF_IMAGE_CONF"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultConfigFile
        guard let text = try readConfigFile(path) else { return try ImageConfig(settings: [:], environment: environment, file: path) }
        return try ImageConfig(settings: parse(text, file: path), environment: environment, file: path)
    }

    /// Parses `key = value` lines.
    static func parse(_ text: String, file: String) throws -> [String: String] {
        var settings: [String: String] = [:]
        for (number, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = (rawLine.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? "").snfTrimmed
            if line.isEmpty { continue }
            let parts = line.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].snfTrimmed
            guard parts.count == 2, keys.contains(key) else {
                throw DeployError.badInput("\(file) line \(number + 1): expected `key = value` with a key among \(keys.joined(separator: ", ")), got \(line.debugDescription)")
            }
            settings[key] = parts[1].snfTrimmed
        }
        return settings
    }

    init(settings: [String: String], environment: [String: String], file: String) throws {
        func absolute(_ key: String) throws -> String? {
            guard let value = settings[key] else { return nil }
            guard value.hasPrefix("/"), !value.utf8.contains(0) else {
                throw DeployError.badInput("\(file): \(key) must be an absolute path, got \(value.debugDescription)")
            }
            return value
        }
        imageDirectory = try absolute("image_dir") ?? ImageConfig.defaultImageDirectory
        do {
            monitor = try settings["monitor"].map { try MonitorDestination($0) } ?? .none
        } catch let error as DeployError {
            throw DeployError.badInput("\(file): \(error.message)")
        }
        if let text = settings["customizer"] {
            guard let choice = CustomizerChoice(rawValue: text) else {
                throw DeployError.badInput("\(file): customizer must be auto, fast or guestfs, got \(text.debugDescription)")
            }
            customizer = choice
        } else {
            customizer = .auto
        }
        sandboxUser = settings["sandbox_user"] ?? "nobody"
        guard ImageProperties.isValidUserName(sandboxUser) else {
            throw DeployError.badInput("\(file): sandbox_user \(sandboxUser.debugDescription) is not a valid user name")
        }
        if let text = settings["task_timeout"] {
            guard let seconds = Int(text), seconds > 0, seconds <= 86400 else {
                throw DeployError.badInput("\(file): task_timeout must be a number of seconds (1-86400), got \(text.debugDescription)")
            }
            taskTimeoutSeconds = seconds
        } else {
            taskTimeoutSeconds = 600
        }
        let storeDefaults: NodeConfig
        do {
            storeDefaults = try NodeConfig.load(environment: environment)
        } catch let error as ServerError {
            throw DeployError.badInput(error.message)
        }
        store = NodeConfig(root: try absolute("store_root") ?? storeDefaults.root, run: try absolute("store_run") ?? storeDefaults.run)
    }

    /// Checks OS_VARIANT: empty (none given) or one of ``variants``.
    public static func checkVariant(_ variant: String?) throws {
        guard let variant, !variant.isEmpty else { return }
        guard variants.contains(variant) else {
            throw DeployError.badInput("unknown OS variant \(variant.debugDescription) (variants: \(variants.joined(separator: ", ")))")
        }
    }

    /// The text of the OS definition's files, by name: `ganeti_api_version`, `variants.list`,
    /// `parameters.list`.
    public static var osFiles: [(name: String, content: String)] {
        [
            ("ganeti_api_version", "\(OSEnvironment.apiVersion)\n"),
            ("variants.list", variants.map { $0 + "\n" }.joined()),
            ("parameters.list", ImageParameters.parametersList),
        ]
    }
}

/// The text of a small configuration file; nil when it does not exist.
func readConfigFile(_ path: String) throws -> String? {
    do {
        return try NodeConfig.readConfigurationFile(path)
    } catch let error as ServerError {
        throw DeployError.failure(error.message)
    }
}
