import ArgumentParser
import BlockStore
import BlockStorePosix
import NodeSupport
import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `snf-store`: the block store's admin CLI, its node daemon (`serve`), and the Ganeti ExtStorage
/// provider: invoked as `create`, `attach`, ... (the provider directory's symlinks) or as
/// `snf-store provider VERB`, it runs that verb with Ganeti's environment.
///
/// EXIT STATUS: 0 success; 1 the operation failed (I/O error, damaged data, `check` found
/// problems); 2 bad input (usage, invalid or unknown name, bad size or offset) — nothing changed.
@main
enum SnfStoreMain {
    static func main() {
        let arguments = CommandLine.arguments
        let invokedAs = arguments.first.map { String($0.split(separator: "/").last ?? "") } ?? ""
        if ExtStorageProvider.verbs.contains(invokedAs) {
            exit(runProvider(invokedAs, extraArguments: Array(arguments.dropFirst())))
        }
        if arguments.count >= 2 && arguments[1] == "provider" {
            guard arguments.count >= 3 else {
                printError("snf-store provider: name a verb: \(ExtStorageProvider.verbs.joined(separator: ", "))")
                exit(ExitStatus.badInput)
            }
            exit(runProvider(arguments[2], extraArguments: Array(arguments.dropFirst(3))))
        }
        exit(run(Array(arguments.dropFirst())))
    }

    /// Runs a Ganeti ExtStorage verb with the process environment; only `attach` prints.
    static func runProvider(_ verb: String, extraArguments: [String]) -> Int32 {
        // Ganeti passes no arguments (verify gets "parameters" in some versions): ignore them.
        _ = extraArguments
        do {
            let provider = try ExtStorageProvider(environment: processEnvironment())
            let output = try provider.run(verb)
            if !output.isEmpty { writeStandardOutput(output) }
            return 0
        } catch let error as ProviderError {
            printError("snf-store \(verb): \(error.message)")
            return error.status
        } catch {
            printError("snf-store \(verb): \(error)")
            return ExitStatus.failure
        }
    }

    /// Parses `arguments`, runs the command and returns the exit status.
    static func run(_ arguments: [String]) -> Int32 {
        let command: any ParsableCommand
        do {
            command = try SnfStore.parseAsRoot(arguments)
        } catch {
            let status = SnfStore.exitCode(for: error)
            if status == .success {
                print(SnfStore.fullMessage(for: error))
                return 0
            }
            // One line (Ganeti shows the last lines of output): the error, then where help is.
            printError("snf-store: \(SnfStore.message(for: error)) (see snf-store --help)")
            return ExitStatus.badInput
        }
        do {
            var runnable = command
            try runnable.run()
            return 0
        } catch {
            return exitStatus(for: error)
        }
    }

    /// The one place errors become exit statuses and a last stderr line.
    static func exitStatus(for error: any Error) -> Int32 {
        switch error {
        case let error as StoreError:
            printError("snf-store: " + error.message)
            return error.code.isBadInput ? ExitStatus.badInput : ExitStatus.failure
        case let exit as ExitCode:
            return exit.rawValue
        case let error as ValidationError:
            printError("snf-store: \(error.message)")
            return ExitStatus.badInput
        default:
            // `--help` parses into a help command whose run throws the help request.
            if SnfStore.exitCode(for: error) == .success {
                print(SnfStore.fullMessage(for: error))
                return 0
            }
            printError("snf-store: \(SnfStore.message(for: error))")
            return ExitStatus.failure
        }
    }
}

/// Exit statuses, as documented in `docs/snf-store.md`.
enum ExitStatus {
    static let failure: Int32 = 1
    static let badInput: Int32 = 2
}

/// Writes one line to standard error.
func printError(_ message: String) {
    var line = message
    if !line.hasSuffix("\n") { line += "\n" }
    writeStandardError(line)
}

/// Writes `text` to file descriptor 2 as it is.
func writeStandardError(_ text: String) { writeAll(2, text) }

/// Writes `text` to file descriptor 1 as it is.
func writeStandardOutput(_ text: String) { writeAll(1, text) }



struct SnfStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snf-store",
        abstract: "Manage a content-addressed block store: images, snapshots and thin-cloned volumes.",
        discussion: """
            The store lives in --root DIR, else $SNF_STORE_ROOT, else `root` in /etc/snf/store.conf,
            else /var/lib/snf-store. The node daemon's runtime directory likewise comes from --run,
            $SNF_STORE_RUN, `run` in the configuration file, else /run/snf-store.
            Invoked as create, attach, detach, remove, grow, setinfo, verify, snapshot, open or
            close (the Ganeti ExtStorage provider's symlinks), or as `snf-store provider VERB`, it
            runs that provider verb with Ganeti's environment (see docs/extstorage.md).
            Sizes and offsets are bytes, optionally with a K, M, G or T suffix (powers of 1024).
            Exit status: 0 success, 1 failure, 2 bad input (nothing was changed).
            """,
        subcommands: [
            Init.self, Import.self, Export.self, Create.self, Clone.self, Write.self, Snapshot.self, Grow.self,
            Remove.self, Info.self, List.self, Hashmap.self, CollectGarbage.self, Check.self,
            Attach.self, Detach.self, Status.self, Serve.self,
        ])
}

/// The store location shared by every subcommand.
struct StoreOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("The store's directory.", valueName: "DIR"))
    var root: String?

    @Option(name: .long, help: ArgumentHelp("The node daemon's runtime directory.", valueName: "DIR"))
    var run: String?

    /// `--root`, else `SNF_STORE_ROOT`, else `root` in the configuration file, else `/var/lib/snf-store`.
    var resolvedRoot: String {
        (try? config().root) ?? root ?? NodeConfig.defaultRoot
    }

    /// Both locations, as the provider resolves them.
    func config() throws -> NodeConfig {
        do {
            return try NodeConfig.load(rootOption: root, runOption: run, environment: processEnvironment())
        } catch let error as ServerError {
            throw StoreError(.invalidArgument, error.message)
        }
    }

    func backend() throws -> PosixBackend { try PosixBackend(root: resolvedRoot) }

    /// Fails at once (instead of waiting for its lock) when the node daemon serves `name`.
    func requireDetached(_ name: MapName) throws {
        let config = try config()
        guard let answer = try ControlClient(config: config).sendIfRunning(["status"]),
            case .ok(let lines) = answer,
            lines.contains(where: { $0.split(separator: " ").first.map(String.init) == name.rawValue })
        else { return }
        throw StoreError(.busy, "\(name) is attached on this node (served by the node daemon); detach it first (`snf-store detach \(name)`)")
    }
    func store() throws -> BlockStore { BlockStore(backend: try backend()) }
}

/// A byte count given as digits with an optional K, M, G, T or P suffix (powers of 1024; `KiB`
/// and `KB` forms accepted and mean the same).
struct ByteCount: ExpressibleByArgument {
    let bytes: UInt64

    init?(argument: String) {
        var text = argument.uppercased()
        for suffix in ["IB", "B"] where text.hasSuffix(suffix) && text.count > suffix.count {
            text.removeLast(suffix.count)
            break
        }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50]
        var multiplier: UInt64 = 1
        if let last = text.last, let unit = units[last] {
            multiplier = unit
            text.removeLast()
        }
        guard !text.isEmpty, text.allSatisfy(\.isASCII), let value = UInt64(text) else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { return nil }
        bytes = product
    }

    static var defaultCompletionKind: CompletionKind { .default }
}

/// Parses a name argument; an invalid name is bad input (exit status 2).
func mapName(_ text: String) throws -> MapName {
    try MapName(text)
}
