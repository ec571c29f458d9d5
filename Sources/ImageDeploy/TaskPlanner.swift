/// Decides the customization of a deploy, on the host, from the OS parameters and the image
/// properties, before any guest data is read (snf-image §6 and §8).
public enum TaskPlanner {
    /// Turns a clear-text password into a crypt(3) string with the given method. Injected by
    /// the caller (the real one is `PasswordHasher` in Customize/), so the planner holds no
    /// crypt code.
    public typealias PasswordHashFunction = (_ password: String, _ method: PasswordHashingMethod) throws -> String

    /// What the planner decided, and what it warns about (unusual booleans, unknown task names).
    public struct Outcome: Sendable, Equatable {
        /// The plan; `tasks` is empty when nothing is to be customized (EXCLUDE_ALL_TASKS).
        public var plan: CustomizationPlan
        public var warnings: [String]
    }

    /// Task names for `EXCLUDE_TASK_<Name>`, upper-cased (property names are).
    static let tasksByUpperName: [String: CustomizationTask] = Dictionary(
        uniqueKeysWithValues: CustomizationTask.allCases.map { ($0.rawValue.uppercased(), $0) })

    /// snf-image tasks that exist there but not here: excluding them is harmless (nothing to do).
    static let otherSnfImageTasks: Set<String> = [
        "MOUNTIMAGE", "INITIALIZEDATASOURCE", "INSTALLUNATTEND", "FILESYSTEMRESIZEMOUNTED", "CONFIGURENETWORK",
        "DISABLEREMOTEDESKTOPCONNECTIONS", "SELINUXAUTORELABEL", "ENFORCEPERSONALITY", "RUNCUSTOMTASK", "UMOUNTIMAGE",
        "FILESYSTEMRESIZEAFTERUMOUNT",
    ]

    /// Plans the customization of the instance `hostname`.
    /// - Parameter hashPassword: called once when `img_passwd` is set, with USERS' method.
    /// - Throws: ``DeployError`` (bad input) for a property or parameter that is wrong, or an
    ///   OS family that cannot be customized here while tasks remain.
    public static func plan(
        hostname: String, parameters: ImageParameters, properties: ImageProperties,
        hashPassword: PasswordHashFunction
    ) throws -> Outcome {
        guard isValidHostname(hostname) else {
            throw DeployError.badInput("the instance name \(hostname.debugDescription) is not a valid host name (letters, digits, '-' and '.', at most 253 characters)")
        }
        var warnings: [String] = []
        func flag(_ name: String) -> Bool {
            let (value, warning) = properties.boolean(name)
            if let warning { warnings.append(warning) }
            return value
        }

        var tasks = CustomizationTask.allCases
        if flag("EXCLUDE_ALL_TASKS") { tasks = [] }
        if flag("EXCLUDE_MOUNTED_TASKS") { tasks.removeAll { !$0.isUnmounted } }
        if flag("EXCLUDE_FILESYSTEMRESIZE_TASKS") { tasks.removeAll { $0 == .filesystemResizeUnmounted } }
        for name in properties.values.keys.sorted() where name.hasPrefix("EXCLUDE_TASK_") {
            let taskName = String(name.dropFirst("EXCLUDE_TASK_".count))
            guard flag(name) else { continue }
            if let task = tasksByUpperName[taskName] {
                tasks.removeAll { $0 == task }
            } else if !otherSnfImageTasks.contains(taskName) {
                warnings.append("\(name): there is no task \(taskName.debugDescription) (tasks: \(CustomizationTask.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
        }

        // Validate everything even when nothing runs: a wrong value is a mistake either way,
        // except the OS family, which only matters for customization.
        try parameters.validate(requireImage: false)
        let users = try properties.users()
        let method = try properties.hashingMethod()
        let swap = try properties.swap()
        let rootPartition = try properties.rootPartition()
        let family = try properties.osFamily()

        // ChangePassword runs only when there is something to set; AddSwap only with SWAP.
        let changesPassword = parameters.password != nil || parameters.passwordHash != nil || parameters.authorizedKeys != nil
        if !changesPassword { tasks.removeAll { $0 == .changePassword } }
        if swap == nil { tasks.removeAll { $0 == .addSwap } }

        if let family, family != .linux, !tasks.isEmpty {
            throw DeployError.badInput(
                "OSFAMILY=\(family.rawValue): only Linux images can be customized; set the image property EXCLUDE_ALL_TASKS=yes to deploy it without customization")
        }

        var passwordHash: String?
        if tasks.contains(.changePassword) {
            if let password = parameters.password {
                passwordHash = try hashPassword(password, method)
            } else if let hash = parameters.passwordHash {
                passwordHash = hash
            }
        }
        let keys = tasks.contains(.changePassword) ? parameters.authorizedKeys : nil
        let plan = CustomizationPlan(
            tasks: tasks, hostname: hostname, users: users, passwordHash: passwordHash,
            authorizedKeys: keys, swap: swap, rootPartition: rootPartition)
        return Outcome(plan: plan, warnings: warnings)
    }
}

/// A DNS host name: labels of letters, digits and '-', not starting or ending with '-', joined by
/// '.'; at most 253 characters.
func isValidHostname(_ name: String) -> Bool {
    let bytes = Array(name.utf8)
    guard !bytes.isEmpty, bytes.count <= 253 else { return false }
    for label in bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false) {
        guard !label.isEmpty, label.count <= 63, label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else { return false }
        for b in label {
            let ok = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || b == UInt8(ascii: "-")
            guard ok else { return false }
        }
    }
    return true
}
