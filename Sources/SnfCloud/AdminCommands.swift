import ArgumentParser
import CloudAPI

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user", abstract: "Create, list and delete users.",
        subcommands: [Create.self, List.self, Delete.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a user (optionally with a role on a project).")
        @OptionGroup var location: Location
        @Argument(help: "User name.") var name: String
        @Option(help: "Password (without one, the user cannot log in with a password).") var password: String?
        @Option(help: "Project (name or id): becomes the default project, and gets --role.") var project: String?
        @Option(help: "Role given on --project (default member).") var role: String = "member"
        @Option(help: "E-mail address.") var email: String?

        func run() async throws {
            try await withIdentity(location) { identity in
                var project: Project?
                if let name = self.project { project = try await identity.project(idOrName: name) }
                let role = project == nil ? nil : try await identity.role(idOrName: role)
                let user = try await identity.createUser(
                    name: name, password: password, defaultProjectID: project?.id, email: email)
                if let project, let role {
                    try await identity.assignRole(userID: user.id, projectID: project.id, roleID: role.id)
                }
                print(user.id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List users.")
        @OptionGroup var location: Location

        func run() async throws {
            try await withIdentity(location) { identity in
                let users = try await identity.users()
                printTable(
                    ["ID", "NAME", "ENABLED", "DEFAULT PROJECT"],
                    users.map { [$0.id, $0.name, $0.enabled ? "yes" : "no", $0.defaultProjectID ?? "-"] })
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a user, its role assignments and tokens.")
        @OptionGroup var location: Location
        @Argument(help: "User name or id.") var user: String

        func run() async throws {
            try await withIdentity(location) { identity in
                try await identity.deleteUser(id: try await identity.user(idOrName: user).id)
            }
        }
    }
}

struct ProjectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "project", abstract: "Create and list projects.", subcommands: [Create.self, List.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a project.")
        @OptionGroup var location: Location
        @Argument(help: "Project name.") var name: String
        @Option(help: "Description.") var description: String = ""

        func run() async throws {
            try await withIdentity(location) { identity in
                print(try await identity.createProject(name: name, description: description).id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List projects.")
        @OptionGroup var location: Location

        func run() async throws {
            try await withIdentity(location) { identity in
                let projects = try await identity.projects()
                printTable(
                    ["ID", "NAME", "ENABLED", "DESCRIPTION"],
                    projects.map { [$0.id, $0.name, $0.enabled ? "yes" : "no", $0.description] })
            }
        }
    }
}

struct RoleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "role", abstract: "Give roles and list them.", subcommands: [Add.self, List.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give USER the role ROLE on PROJECT (idempotent).")
        @OptionGroup var location: Location
        @Argument(help: "User name or id.") var user: String
        @Argument(help: "Project name or id.") var project: String
        @Argument(help: "Role name or id (admin, member, reader, or one created through the API).") var role: String

        func run() async throws {
            try await withIdentity(location) { identity in
                let u = try await identity.user(idOrName: user)
                let p = try await identity.project(idOrName: project)
                let r = try await identity.role(idOrName: role)
                try await identity.assignRole(userID: u.id, projectID: p.id, roleID: r.id)
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List roles.")
        @OptionGroup var location: Location

        func run() async throws {
            try await withIdentity(location) { identity in
                printTable(["ID", "NAME"], try await identity.roles().map { [$0.id, $0.name] })
            }
        }
    }
}

struct QuotaCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota", abstract: "Show and set per-project quotas.", subcommands: [Show.self, SetLimit.self])

    /// The known resources, for help texts.
    static let resources = QuotaResource.known.map(\.rawValue).joined(separator: ", ")

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a project's limits and usage (LIMIT: the limit in force; SOURCE: project, default or none).")
        @OptionGroup var location: Location
        @Option(help: "Project name or id.") var project: String

        func run() async throws {
            try await withIdentity(location) { identity in
                let configuration = try location.load()
                let p = try await identity.project(idOrName: project)
                let quotas = QuotaService(database: identity.database, configuration: configuration)
                let rows = try await quotas.usage(project: p.id).map { u in
                    [
                        u.resource.rawValue, u.limit.map(String.init) ?? "unlimited", String(u.usage),
                        u.projectLimit != nil ? "project" : (u.limit != nil ? "default" : "none"),
                    ]
                }
                printTable(["RESOURCE", "LIMIT", "USAGE", "SOURCE"], rows)
            }
        }
    }

    struct SetLimit: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Set a project's limit of one resource (\(QuotaCommand.resources)).",
            discussion: "--limit default goes back to the configured default (quota_default_<resource>, else unlimited). A limit below the usage removes nothing; it refuses further charges.")
        @OptionGroup var location: Location
        @Option(help: "Project name or id.") var project: String
        @Option(help: "Resource: \(QuotaCommand.resources).") var resource: String
        @Option(help: "A non-negative integer (bytes for storage_bytes), or `default`.") var limit: String

        func validate() throws {
            guard QuotaResource.named(resource) != nil else {
                throw ValidationError("unknown resource \(resource) (known: \(QuotaCommand.resources))")
            }
            guard limit == "default" || (Int64(limit).map { $0 >= 0 } ?? false) else {
                throw ValidationError("--limit must be a non-negative integer or `default`")
            }
        }

        func run() async throws {
            try await withIdentity(location) { identity in
                let p = try await identity.project(idOrName: project)
                let quotas = QuotaService(database: identity.database)
                try await quotas.setLimit(project: p.id, QuotaResource.named(resource)!, limit: Int64(limit))
            }
        }
    }
}
