/// The hypervisors snf-image deploys for (`fake` is Ganeti's test hypervisor, used by our tests).
public enum Hypervisor: String, Sendable, CaseIterable {
    case kvm
    case xenPVM = "xen-pvm"
    case xenHVM = "xen-hvm"
    case fake
}

/// One instance disk as Ganeti describes it (`DISK_<N>_*`).
public struct InstanceDisk: Sendable, Equatable {
    public var index: Int
    /// Host block device or regular file; nil for a userspace-only disk.
    public var path: String?
    /// Userspace URI (`access=userspace`), if any.
    public var uri: String?
    /// Size in MiB (Ganeti ≥ 3.0).
    public var sizeMiB: UInt64?
    /// `rw` or `ro`.
    public var access: String?

    public init(index: Int, path: String?, uri: String? = nil, sizeMiB: UInt64? = nil, access: String? = nil) {
        self.index = index
        self.path = path
        self.uri = uri
        self.sizeMiB = sizeMiB
        self.access = access
    }
}

/// The environment of a Ganeti OS API 20 script (ganeti-os-interface(7)).
///
/// `verify` gets only the core subset (`OS_*`, `DEBUG_LEVEL`, `OSP_*`); the other scripts also get
/// the instance, its disks and NICs. Unset and empty are different things for OS parameters.
public struct OSEnvironment: Sendable {
    /// Which variables must be present.
    public enum Scope: Sendable {
        /// `verify`: OS_API_VERSION and the parameters.
        case core
        /// `create`, `import`, `export`, `rename`: also INSTANCE_NAME, HYPERVISOR, the disks.
        case instance
    }

    public static let apiVersion = 20

    public var osName: String?
    /// OS_VARIANT; nil or empty when none was given.
    public var variant: String?
    public var debugLevel: Int
    /// OS parameters by lower-case name (`OSP_IMG_ID` → `img_id`). Present means set (maybe empty).
    public var osParameters: [String: String]

    public var instanceName: String?
    public var hypervisor: Hypervisor?
    public var disks: [InstanceDisk]
    public var nicCount: Int
    /// Every `NIC_*` variable as Ganeti gave it (for customizations that configure networking).
    public var nics: [String: String]
    /// The whole environment, for verb-specific variables (IMPORT_*, EXPORT_*, EXP_SIZE_FD...).
    public var raw: [String: String]

    /// Parses `environment`.
    /// - Throws: ``DeployError`` (bad input) naming the first missing or malformed variable.
    public init(_ environment: [String: String], scope: Scope) throws {
        raw = environment
        guard let version = environment["OS_API_VERSION"] else {
            throw DeployError.badInput("OS_API_VERSION is not set: run by Ganeti (OS API 20), or use `snf-image deploy`")
        }
        guard Int(version) == OSEnvironment.apiVersion else {
            throw DeployError.badInput("OS_API_VERSION is \(version.debugDescription); snf-image supports only OS API 20")
        }
        osName = environment["OS_NAME"]
        variant = environment["OS_VARIANT"]
        debugLevel = environment["DEBUG_LEVEL"].flatMap { Int($0) } ?? 0

        var parameters: [String: String] = [:]
        for (key, value) in environment where key.hasPrefix("OSP_") && key.count > 4 {
            parameters[String(key.dropFirst(4)).lowercased()] = value
        }
        osParameters = parameters

        var nicVariables: [String: String] = [:]
        for (key, value) in environment where key.hasPrefix("NIC_") { nicVariables[key] = value }
        nics = nicVariables
        nicCount = 0
        disks = []
        guard scope == .instance else { return }

        guard let name = environment["INSTANCE_NAME"], !name.isEmpty else {
            throw DeployError.badInput("INSTANCE_NAME is not set")
        }
        instanceName = name
        guard let hv = environment["HYPERVISOR"] else { throw DeployError.badInput("HYPERVISOR is not set") }
        guard let parsed = Hypervisor(rawValue: hv) else {
            throw DeployError.badInput(
                "HYPERVISOR \(hv.debugDescription) is not supported (supported: \(Hypervisor.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        hypervisor = parsed
        nicCount = try OSEnvironment.count(environment, "NIC_COUNT", required: false)
        let diskCount = try OSEnvironment.count(environment, "DISK_COUNT", required: true)
        for index in 0..<diskCount {
            let prefix = "DISK_\(index)_"
            var size: UInt64?
            if let text = environment[prefix + "SIZE"] {
                guard let value = UInt64(text) else { throw DeployError.badInput("\(prefix)SIZE \(text.debugDescription) is not a number of MiB") }
                size = value
            }
            let path = environment[prefix + "PATH"].flatMap { $0.isEmpty ? nil : $0 }
            let uri = environment[prefix + "URI"].flatMap { $0.isEmpty ? nil : $0 }
            disks.append(InstanceDisk(index: index, path: path, uri: uri, sizeMiB: size, access: environment[prefix + "ACCESS"]))
        }
    }

    static func count(_ environment: [String: String], _ name: String, required: Bool) throws -> Int {
        guard let text = environment[name] else {
            if required { throw DeployError.badInput("\(name) is not set") }
            return 0
        }
        guard let value = Int(text), value >= 0, value <= 64 else {
            throw DeployError.badInput("\(name) \(text.debugDescription) is not a count")
        }
        return value
    }

    /// Disk 0, which receives the image: it must exist and have a host path.
    public func firstDiskPath() throws -> String {
        guard let disk = disks.first else { throw DeployError.badInput("DISK_COUNT is 0: the instance has no disk to deploy onto") }
        guard let path = disk.path else {
            throw DeployError.badInput(
                "DISK_0_PATH is not set (a userspace-only disk\(disk.uri.map { ", \($0)" } ?? "")); snf-image needs kernel access to disk 0")
        }
        return path
    }
}
