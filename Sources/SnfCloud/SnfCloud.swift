import ArgumentParser
import CloudAPI
import Foundation
import Logging

/// snf-cloud: the cloud API service and its admin verbs. Everything it does is in CloudAPI; this
/// file only turns arguments into calls and errors into one line on stderr and an exit status
/// (0 success, 1 the operation failed, 64 bad arguments).
@main
struct SnfCloud: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snf-cloud",
        abstract: "The Synnefo-in-Swift cloud API (OpenStack Keystone so far) and its admin verbs.",
        subcommands: [
            Serve.self, Bootstrap.self, UserCommand.self, ProjectCommand.self, RoleCommand.self, QuotaCommand.self,
        ]
    )
}

/// Where the configuration comes from; shared by every verb.
struct Location: ParsableArguments {
    @Option(name: .long, help: "Data directory: the SQLite database lives here (default /var/lib/snf-cloud).")
    var dataDir: String?

    @Option(name: .long, help: "Configuration file (key = value lines: database_url, listen, public_url, region...).")
    var config: String?

    func load(listen: String? = nil) throws -> CloudConfiguration {
        try CloudConfiguration.load(dataDirectory: dataDir, configFile: config, listen: listen)
    }
}

/// Runs `body` with the opened identity service, closing the database afterwards; reports
/// failures as one line and exit status 1.
func withIdentity(_ location: Location, _ body: (IdentityService) async throws -> Void) async throws {
    do {
        let configuration = try location.load()
        let database = try await MetadataDatabase.open(configuration, logger: quietLogger())
        let identity = IdentityService(database: database, tokenLifetimeSeconds: configuration.tokenLifetimeSeconds)
        do {
            try await body(identity)
        } catch {
            await database.close()
            throw error
        }
        await database.close()
    } catch let error as ExitCode {
        throw error
    } catch {
        fail(error)
    }
}

func fail(_ error: any Error) -> Never {
    FileHandle.standardError.write(Data("snf-cloud: \(error)\n".utf8))
    exit(1)
}

func quietLogger() -> Logger {
    var logger = Logger(label: "snf-cloud") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = .warning
    return logger
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the cloud API until SIGINT or SIGTERM.")

    @OptionGroup var location: Location

    @Option(name: .long, help: "HOST:PORT to listen on (default 127.0.0.1:5000).")
    var listen: String?

    func run() async throws {
        var logger = Logger(label: "snf-cloud") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .info
        do {
            let configuration = try location.load(listen: listen)
            logger.info("listening on \(configuration.listenHost):\(configuration.listenPort)")
            try await CloudServer.run(configuration: configuration, logger: logger)
        } catch {
            fail(error)
        }
    }
}

struct Bootstrap: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create the built-in roles and the admin user in the admin project; print its OS_* variables.",
        discussion: "Idempotent: run again, it keeps what exists and sets the admin's password.")

    @OptionGroup var location: Location

    @Option(name: .long, help: "The admin user's password.")
    var adminPassword: String

    @Option(name: .long, help: "HOST:PORT snf-cloud serve listens on, for OS_AUTH_URL (default 127.0.0.1:5000).")
    var listen: String?

    func run() async throws {
        let authURL: String
        do { authURL = try location.load(listen: listen).authURL } catch { fail(error) }
        try await withIdentity(location) { identity in
            let (user, project) = try await identity.bootstrap(adminPassword: adminPassword)
            let lines = [
                "OS_AUTH_URL=\(authURL)", "OS_USERNAME=\(user.name)", "OS_PROJECT_NAME=\(project.name)",
                "OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default", "OS_IDENTITY_API_VERSION=3",
                "OS_PASSWORD=\(shellQuoted(adminPassword))",
            ]
            print(lines.map { "export " + $0 }.joined(separator: "\n"))
        }
    }
}

/// `'...'` with embedded single quotes escaped, for `eval "$(snf-cloud bootstrap ...)"`.
func shellQuoted(_ s: String) -> String {
    "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Prints rows as aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    for row in all {
        let cells = row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }
        print(cells.joined(separator: "  "))
    }
}
