import ArgumentParser
import ImageDeploy
import NodeSupport
import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `snf-image`: the Ganeti OS definition snf-image. Invoked as `create`, `import`, `export`,
/// `rename` or `verify` (the OS directory's symlinks), it runs that script with Ganeti's
/// environment; otherwise it is the admin CLI (`os-files`, `deploy`).
///
/// EXIT STATUS: 0 success; 1 the operation failed; 2 bad input (environment, parameters, usage).
@main
enum SnfImageMain {
    static func main() {
        signal(SIGPIPE, SIG_IGN)
        let arguments = CommandLine.arguments
        let invokedAs = arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        if OSDefinition.verbs.contains(invokedAs) {
            exit(osDefinition().exitStatus(running: invokedAs, arguments: Array(arguments.dropFirst())))
        }
        exit(run(Array(arguments.dropFirst())))
    }

    /// The OS definition with this process's environment and the customization hooks.
    static func osDefinition() -> OSDefinition {
        OSDefinition(environment: processEnvironment(), customizer: StandardCustomization.customize, hashPassword: StandardCustomization.hashPassword)
    }

    static func run(_ arguments: [String]) -> Int32 {
        let command: any ParsableCommand
        do {
            command = try SnfImage.parseAsRoot(arguments)
        } catch {
            if SnfImage.exitCode(for: error) == .success {
                print(SnfImage.fullMessage(for: error))
                return 0
            }
            printError("snf-image: \(SnfImage.message(for: error)) (see snf-image --help)")
            return 2
        }
        do {
            var runnable = command
            try runnable.run()
            return 0
        } catch let error as DeployError {
            printError("snf-image: " + error.message)
            return error.exitStatus
        } catch let exit as ExitCode {
            return exit.rawValue
        } catch let error as ValidationError {
            printError("snf-image: \(error.message)")
            return 2
        } catch {
            if SnfImage.exitCode(for: error) == .success {
                print(SnfImage.fullMessage(for: error))
                return 0
            }
            printError("snf-image: \(SnfImage.message(for: error))")
            return 1
        }
    }
}

func printError(_ message: String) {
    writeAll(2, message.hasSuffix("\n") ? message : message + "\n")
}

struct SnfImage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snf-image",
        abstract: "The snf-image Ganeti OS definition: deploy disk images onto instance disks.",
        discussion: """
            Invoked as create, import, export, rename or verify (the OS definition's symlinks in
            /usr/share/ganeti/os/snf-image), it runs that OS script with Ganeti's environment
            (OS API 20). Configuration: /etc/snf/image.conf (or $SNF_IMAGE_CONF).
            See docs/snf-image.md. Exit status: 0 success, 1 failure, 2 bad input.
            """,
        subcommands: [OSFiles.self, Deploy.self])
}

struct OSFiles: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "os-files",
        abstract: "Write ganeti_api_version, variants.list and parameters.list into DIR.")

    @Argument(help: ArgumentHelp("The OS definition's directory (it must exist).", valueName: "DIR"))
    var directory: String

    func run() throws {
        try OSDefinitionFiles.write(into: directory)
    }
}

struct Deploy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deploy",
        abstract: "Deploy an image onto a disk outside Ganeti (what `create` does).",
        discussion: "The image source, monitor and store come from /etc/snf/image.conf, as for create.")

    @Option(help: ArgumentHelp("The disk: a block device or a regular file (never truncated).", valueName: "PATH"))
    var disk: String

    @Option(help: ArgumentHelp("The image (img_id): snf-store://NAME, local://NAME, NAME or an http(s) URL.", valueName: "ID"))
    var image: String

    @Option(help: ArgumentHelp("The host name to give the guest.", valueName: "NAME"))
    var hostname: String = "localhost"

    @Option(name: .customLong("password-file"), help: ArgumentHelp("A file holding the password for USERS (one trailing newline is dropped).", valueName: "FILE"))
    var passwordFile: String?

    @Option(name: .customLong("ssh-key-file"), help: ArgumentHelp("An authorized_keys file to add for USERS.", valueName: "FILE"))
    var sshKeyFile: String?

    @Option(help: ArgumentHelp("Image properties, a JSON object (img_properties).", valueName: "JSON"))
    var properties: String?

    func run() throws {
        var values = ["img_id": image, "img_format": ImageFormat.diskdump.rawValue]
        if let passwordFile {
            var text = try readSmallTextFile(passwordFile, what: "password file")
            if text.hasSuffix("\n") { text.removeLast() }
            values["img_passwd"] = text
        }
        if let sshKeyFile { values["auth_keys"] = try readSmallTextFile(sshKeyFile, what: "SSH key file") }
        if let properties { values["img_properties"] = properties }
        let environment = processEnvironment()
        let config = try ImageConfig.load(environment: environment)
        let progress = MonitorProgressSink(destination: config.monitor)
        let request = DeployRequest(instanceName: hostname, diskPath: disk, parameters: try ImageParameters(values))
        let deployment = Deployment(config: config, customizer: StandardCustomization.customize, hashPassword: StandardCustomization.hashPassword)
        _ = try deployment.run(request, progress: progress)
    }
}
