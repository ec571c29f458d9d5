import BlockStore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Carries out a customization plan on a disk (the fast ext editor or libguestfs, through the
/// TaskRunner, as `config` chooses), reporting task events to `progress`. The executable passes
/// ``StandardCustomization/customize(diskPath:plan:config:progress:)``; tests may inject others.
public typealias Customizer = (_ diskPath: String, _ plan: CustomizationPlan, _ config: ImageConfig, _ progress: any ProgressSink) throws -> Void

/// What one deploy is: the image parameters, the instance name and disk 0.
public struct DeployRequest: Sendable {
    public var instanceName: String
    public var diskPath: String
    public var parameters: ImageParameters

    public init(instanceName: String, diskPath: String, parameters: ImageParameters) {
        self.instanceName = instanceName
        self.diskPath = diskPath
        self.parameters = parameters
    }
}

/// What a deploy did.
public struct DeployReport: Sendable, Equatable {
    /// The clone fast path found the disk already holding the image: nothing was copied.
    public var cloned: Bool
    /// The copy, when there was one.
    public var copy: DiskCopier.Outcome?
    /// The plan that ran (empty `tasks`: no customization).
    public var plan: CustomizationPlan
}

/// The deploy of `create` (and `snf-image deploy`): parameters → plan → image source → clone
/// fast path or copy → customization.
public struct Deployment {
    public var config: ImageConfig
    public var customizer: Customizer
    public var hashPassword: TaskPlanner.PasswordHashFunction
    /// Fetches `config_url` (curl by default).
    public var fetchConfig: (String) throws -> String
    public var copier: DiskCopier

    public init(
        config: ImageConfig, customizer: @escaping Customizer, hashPassword: @escaping TaskPlanner.PasswordHashFunction,
        fetchConfig: @escaping (String) throws -> String = ImageParameters.fetchWithCurl, copier: DiskCopier = DiskCopier()
    ) {
        self.config = config
        self.customizer = customizer
        self.hashPassword = hashPassword
        self.fetchConfig = fetchConfig
        self.copier = copier
    }

    /// Runs the deploy; on failure emits an `image-error` event with the message and rethrows.
    public func run(_ request: DeployRequest, progress: any ProgressSink) throws -> DeployReport {
        do {
            return try deploy(request, progress: progress)
        } catch {
            progress.emit(.error(String(describing: error)))
            throw error
        }
    }

    private func deploy(_ request: DeployRequest, progress: any ProgressSink) throws -> DeployReport {
        let parameters = try request.parameters.applyingConfigURL(fetch: fetchConfig)
        try parameters.validate(requireImage: true)
        let format = try parameters.format() ?? .diskdump
        let locator = try ImageLocator(parameters.imageID ?? "")
        let outcome = try TaskPlanner.plan(
            hostname: request.instanceName, parameters: parameters, properties: parameters.properties(),
            hashPassword: hashPassword)
        for warning in outcome.warnings { progress.emit(.warning(warning)) }

        let source = try ImageSources.open(locator, config: config, format: format)
        var cloned = false
        var copy: DiskCopier.Outcome?
        var decision = CloneFastPath.Decision.copy(reason: "the image is not in the block store")
        if case .store(let image) = locator {
            decision = CloneFastPath.decide(diskPath: request.diskPath, image: image, store: config.store)
        }
        switch decision {
        case .alreadyCloned(let volume):
            // The disk must still be able to hold the image (it does: the volume is at least as
            // large), and nothing is written.
            progress.emit(.info("Image copy skipped: \(request.diskPath) is the snf-store volume \(volume), already a clone of \(locator) (no data copied)."))
            cloned = true
        case .copy(let reason):
            progress.emit(.info("Starting image copy..."))
            progress.emit(.info("Copying \(source.description) (\(source.sizeBytes) bytes) onto \(request.diskPath) (\(reason))."))
            let result = try copier.copy(from: source, toDisk: request.diskPath, progress: progress)
            let rate = result.seconds > 0 ? Double(result.bytes) / result.seconds / 1_048_576 : 0
            progress.emit(.info("Image copy finished."))
            progress.emit(.info("Copied \(result.bytes) bytes in \(formatTwoDecimals(result.seconds)) s (\(formatTwoDecimals(rate)) MiB/s); wrote \(result.writtenBytes) bytes, the rest was already zero."))
            copy = result
        }

        if outcome.plan.tasks.isEmpty {
            progress.emit(.info("No customization (every task is excluded)."))
        } else {
            progress.emit(.info("Starting customization: \(outcome.plan.tasks.map(\.rawValue).joined(separator: ", "))."))
            try customizer(request.diskPath, outcome.plan, config, progress)
            progress.emit(.info("Image customization finished successfully."))
        }
        return DeployReport(cloned: cloned, copy: copy, plan: outcome.plan)
    }
}

/// The Ganeti OS definition's scripts (OS API 20): `create`, `import`, `export`, `rename`,
/// `verify`, run with Ganeti's environment.
public struct OSDefinition {
    public static let verbs = ["create", "import", "export", "rename", "verify"]

    public var environment: [String: String]
    public var customizer: Customizer
    public var hashPassword: TaskPlanner.PasswordHashFunction
    public var fetchConfig: (String) throws -> String
    /// Where `import` reads and `export` writes the disk's bytes.
    public var standardInput: Int32 = 0
    public var standardOutput: Int32 = 1

    public init(
        environment: [String: String], customizer: @escaping Customizer,
        hashPassword: @escaping TaskPlanner.PasswordHashFunction,
        fetchConfig: @escaping (String) throws -> String = ImageParameters.fetchWithCurl
    ) {
        self.environment = environment
        self.customizer = customizer
        self.hashPassword = hashPassword
        self.fetchConfig = fetchConfig
    }

    /// Runs `verb` with `arguments` (Ganeti passes `parameters` to verify, nothing to the rest).
    public func run(_ verb: String, arguments: [String]) throws {
        switch verb {
        case "create": try create()
        case "import": try importDisk()
        case "export": try exportDisk()
        case "rename": try rename()
        case "verify": try verify(arguments)
        default: throw DeployError.badInput("unknown OS script \(verb.debugDescription) (scripts: \(OSDefinition.verbs.joined(separator: ", ")))")
        }
    }

    /// Runs `verb` and returns the exit status: 0, 1 (failure) or 2 (bad input), after one
    /// last line on standard error for a failure.
    public func exitStatus(running verb: String, arguments: [String]) -> Int32 {
        do {
            try run(verb, arguments: arguments)
            return 0
        } catch let error as DeployError {
            writeFully(2, Array("snf-image \(verb): \(error.message)\n".utf8))
            return error.exitStatus
        } catch {
            writeFully(2, Array("snf-image \(verb): \(error)\n".utf8))
            return 1
        }
    }

    func create() throws {
        let env = try OSEnvironment(environment, scope: .instance)
        let config = try ImageConfig.load(environment: environment)
        let progress = MonitorProgressSink(destination: config.monitor)
        let request: DeployRequest
        do {
            try ImageConfig.checkVariant(env.variant)
            let parameters = try ImageParameters(env.osParameters)
            request = DeployRequest(instanceName: env.instanceName!, diskPath: try env.firstDiskPath(), parameters: parameters)
        } catch {
            progress.emit(.error(String(describing: error)))
            throw error
        }
        let deployment = Deployment(config: config, customizer: customizer, hashPassword: hashPassword, fetchConfig: fetchConfig)
        _ = try deployment.run(request, progress: progress)
    }

    func diskPath(_ names: [String]) throws -> String {
        for name in names { if let value = environment[name], !value.isEmpty { return value } }
        throw DeployError.badInput("\(names[0]) is not set")
    }

    /// `import`: the raw bytes on standard input onto IMPORT_DISK_PATH (no more than the disk holds).
    func importDisk() throws {
        _ = try OSEnvironment(environment, scope: .instance)
        let path = try diskPath(["IMPORT_DISK_PATH", "IMPORT_DEVICE"])
        let disk = try DiskFile(path: path)
        defer { disk.close() }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageSources.chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while true {
            var got = 0
            while got < buffer.count {
                let n = read(standardInput, buffer.baseAddress! + got, buffer.count - got)
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw DeployError.errno("read", "standard input") }
                if n == 0 { break }
                got += n
            }
            if got == 0 { break }
            guard offset + UInt64(got) <= disk.sizeBytes else {
                throw DeployError.failure("the import stream is larger than the disk \(path) (\(disk.sizeBytes) bytes)")
            }
            try disk.writeFully(UnsafeRawBufferPointer(rebasing: buffer[0..<got]), at: offset)
            offset += UInt64(got)
            if got < buffer.count { break }
        }
        guard fsync(disk.fd) == 0 else { throw DeployError.errno("flush", path) }
        writeFully(2, Array("snf-image import: wrote \(offset) bytes to \(path)\n".utf8))
    }

    /// `export`: EXPORT_DISK_PATH's raw bytes to standard output; its size to EXP_SIZE_FD first.
    func exportDisk() throws {
        _ = try OSEnvironment(environment, scope: .instance)
        let path = try diskPath(["EXPORT_DISK_PATH", "EXPORT_DEVICE"])
        let disk = try DiskFile(path: path, writable: false)
        defer { disk.close() }
        if let text = environment["EXP_SIZE_FD"], !text.isEmpty {
            guard let fd = Int32(text), fd > 2 else { throw DeployError.badInput("EXP_SIZE_FD \(text.debugDescription) is not a file descriptor") }
            writeFully(fd, Array("\(disk.sizeBytes)\n".utf8))
        }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ImageSources.chunkBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset: UInt64 = 0
        while offset < disk.sizeBytes {
            let count = Int(min(UInt64(buffer.count), disk.sizeBytes - offset))
            let chunk = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count])
            try disk.readFully(chunk, at: offset)
            var done = 0
            while done < count {
                let n = write(standardOutput, chunk.baseAddress! + done, count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { throw DeployError.errno("write the export stream to", "standard output") }
                done += n
            }
            offset += UInt64(count)
        }
    }

    /// `rename`: nothing is changed inside the guest (as snf-image: the guest keeps its hostname).
    func rename() throws {
        let env = try OSEnvironment(environment, scope: .core)
        let old = environment["OLD_INSTANCE_NAME"] ?? "?"
        let new = env.raw["INSTANCE_NAME"] ?? "?"
        writeFully(2, Array("snf-image rename: \(old) -> \(new): nothing changed inside the guest (its hostname stays)\n".utf8))
    }

    /// `verify parameters`: checks the OS parameters' values (skipped when config_url is set:
    /// the values come at create time).
    func verify(_ arguments: [String]) throws {
        guard !arguments.isEmpty else { throw DeployError.badInput("verify: name the checks to run (Ganeti passes `parameters`)") }
        for check in arguments where check != "parameters" {
            throw DeployError.badInput("verify: unknown check \(check.debugDescription) (known: parameters)")
        }
        let env = try OSEnvironment(environment, scope: .core)
        try ImageConfig.checkVariant(env.variant)
        let parameters = try ImageParameters(env.osParameters)
        if let url = parameters.configURL {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw DeployError.badInput("config_url must be an http:// or https:// URL, got \(url.debugDescription)")
            }
            writeFully(2, Array("snf-image verify: config_url is set: the parameters are checked at create time\n".utf8))
            return
        }
        try parameters.validate(requireImage: true)
        // The same planning as create (OS family, exclusions, USERS, SWAP...), without hashing.
        _ = try TaskPlanner.plan(
            hostname: "verify.invalid", parameters: parameters, properties: parameters.properties(),
            hashPassword: { _, method in method.cryptPrefix })
    }
}
