import SQLKit

/// The identity tables: projects, users, roles, role assignments and tokens. Stateless; every
/// function runs on the session it is given, so callers choose the transaction.
enum IdentityStore {
    // MARK: Projects

    static func insert(_ p: Project, createdAt: Timestamp, _ db: any SQLDatabase) async throws {
        try await db.insert(into: "projects")
            .columns("id", "name", "domain_id", "description", "enabled", "created_at_us")
            .values(
                SQLBind(p.id), SQLBind(p.name), SQLBind(p.domainID), SQLBind(p.description),
                SQLBind(p.enabled ? 1 : 0), SQLBind(createdAt.microseconds)
            )
            .run()
    }

    static func projects(_ db: any SQLDatabase, where column: String? = nil, is value: String? = nil) async throws
        -> [Project]
    {
        var query = db.select().columns("id", "name", "domain_id", "description", "enabled").from("projects")
        if let column, let value { query = query.where(SQLColumn(column), .equal, SQLBind(value)) }
        return try await query.orderBy("name").all().map { row in
            Project(
                id: try row.decode(column: "id", as: String.self),
                name: try row.decode(column: "name", as: String.self),
                domainID: try row.decode(column: "domain_id", as: String.self),
                description: try row.decode(column: "description", as: String.self),
                enabled: try row.decode(column: "enabled", as: Int.self) != 0)
        }
    }

    static func project(id: String, _ db: any SQLDatabase) async throws -> Project? {
        try await projects(db, where: "id", is: id).first
    }

    static func project(name: String, domainID: String, _ db: any SQLDatabase) async throws -> Project? {
        try await projects(db, where: "name", is: name).first { $0.domainID == domainID }
    }

    static func update(_ p: Project, _ db: any SQLDatabase) async throws {
        try await db.update("projects")
            .set("name", to: SQLBind(p.name)).set("description", to: SQLBind(p.description))
            .set("enabled", to: SQLBind(p.enabled ? 1 : 0))
            .where("id", .equal, SQLBind(p.id)).run()
    }

    static func deleteProject(id: String, _ db: any SQLDatabase) async throws {
        // Foreign keys cascade on SQLite (PRAGMA foreign_keys) and PostgreSQL alike; the explicit
        // deletes keep it true even on a database opened without the pragma.
        try await db.delete(from: "tokens").where("project_id", .equal, SQLBind(id)).run()
        try await db.delete(from: "role_assignments").where("project_id", .equal, SQLBind(id)).run()
        try await db.update("users").set("default_project_id", to: SQLLiteral.null)
            .where("default_project_id", .equal, SQLBind(id)).run()
        try await db.delete(from: "projects").where("id", .equal, SQLBind(id)).run()
    }

    // MARK: Users

    static func insert(_ u: User, createdAt: Timestamp, _ db: any SQLDatabase) async throws {
        try await db.insert(into: "users")
            .columns(
                "id", "name", "domain_id", "password_hash", "enabled", "default_project_id", "email",
                "description", "created_at_us"
            )
            .values(
                SQLBind(u.id), SQLBind(u.name), SQLBind(u.domainID), SQLBind(u.passwordHash),
                SQLBind(u.enabled ? 1 : 0), SQLBind(u.defaultProjectID), SQLBind(u.email), SQLBind(u.description),
                SQLBind(createdAt.microseconds)
            )
            .run()
    }

    static func users(_ db: any SQLDatabase, where column: String? = nil, is value: String? = nil) async throws
        -> [User]
    {
        var query = db.select()
            .columns(
                "id", "name", "domain_id", "password_hash", "enabled", "default_project_id", "email", "description"
            )
            .from("users")
        if let column, let value { query = query.where(SQLColumn(column), .equal, SQLBind(value)) }
        return try await query.orderBy("name").all().map { row in
            User(
                id: try row.decode(column: "id", as: String.self),
                name: try row.decode(column: "name", as: String.self),
                domainID: try row.decode(column: "domain_id", as: String.self),
                enabled: try row.decode(column: "enabled", as: Int.self) != 0,
                defaultProjectID: try row.decode(column: "default_project_id", as: String?.self),
                email: try row.decode(column: "email", as: String?.self),
                description: try row.decode(column: "description", as: String.self),
                passwordHash: try row.decode(column: "password_hash", as: String?.self))
        }
    }

    static func user(id: String, _ db: any SQLDatabase) async throws -> User? {
        try await users(db, where: "id", is: id).first
    }

    static func user(name: String, domainID: String, _ db: any SQLDatabase) async throws -> User? {
        try await users(db, where: "name", is: name).first { $0.domainID == domainID }
    }

    static func update(_ u: User, _ db: any SQLDatabase) async throws {
        try await db.update("users")
            .set("name", to: SQLBind(u.name)).set("enabled", to: SQLBind(u.enabled ? 1 : 0))
            .set("default_project_id", to: SQLBind(u.defaultProjectID)).set("email", to: SQLBind(u.email))
            .set("description", to: SQLBind(u.description)).set("password_hash", to: SQLBind(u.passwordHash))
            .where("id", .equal, SQLBind(u.id)).run()
    }

    static func deleteUser(id: String, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "tokens").where("user_id", .equal, SQLBind(id)).run()
        try await db.delete(from: "role_assignments").where("user_id", .equal, SQLBind(id)).run()
        try await db.delete(from: "users").where("id", .equal, SQLBind(id)).run()
    }

    // MARK: Roles

    static func insert(_ r: Role, _ db: any SQLDatabase) async throws {
        try await db.insert(into: "roles").columns("id", "name", "description")
            .values(SQLBind(r.id), SQLBind(r.name), SQLBind(r.description)).run()
    }

    static func roles(_ db: any SQLDatabase, where column: String? = nil, is value: String? = nil) async throws
        -> [Role]
    {
        var query = db.select().columns("id", "name", "description").from("roles")
        if let column, let value { query = query.where(SQLColumn(column), .equal, SQLBind(value)) }
        return try await query.orderBy("name").all().map { row in
            Role(
                id: try row.decode(column: "id", as: String.self),
                name: try row.decode(column: "name", as: String.self),
                description: try row.decode(column: "description", as: String.self))
        }
    }

    static func update(_ r: Role, _ db: any SQLDatabase) async throws {
        try await db.update("roles").set("name", to: SQLBind(r.name)).set("description", to: SQLBind(r.description))
            .where("id", .equal, SQLBind(r.id)).run()
    }

    static func deleteRole(id: String, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "role_assignments").where("role_id", .equal, SQLBind(id)).run()
        try await db.delete(from: "roles").where("id", .equal, SQLBind(id)).run()
    }

    // MARK: Role assignments

    static func assignments(
        _ db: any SQLDatabase, userID: String? = nil, projectID: String? = nil, roleID: String? = nil
    ) async throws -> [RoleAssignment] {
        var query = db.select().columns("user_id", "project_id", "role_id").from("role_assignments")
        if let userID { query = query.where("user_id", .equal, SQLBind(userID)) }
        if let projectID { query = query.where("project_id", .equal, SQLBind(projectID)) }
        if let roleID { query = query.where("role_id", .equal, SQLBind(roleID)) }
        return try await query.orderBy("user_id").orderBy("project_id").orderBy("role_id").all().map { row in
            RoleAssignment(
                userID: try row.decode(column: "user_id", as: String.self),
                projectID: try row.decode(column: "project_id", as: String.self),
                roleID: try row.decode(column: "role_id", as: String.self))
        }
    }

    /// Adds the assignment unless it exists (idempotent, like Keystone's PUT).
    static func assign(_ a: RoleAssignment, _ db: any SQLDatabase) async throws {
        if try await !assignments(db, userID: a.userID, projectID: a.projectID, roleID: a.roleID).isEmpty { return }
        try await db.insert(into: "role_assignments").columns("user_id", "project_id", "role_id")
            .values(SQLBind(a.userID), SQLBind(a.projectID), SQLBind(a.roleID)).run()
    }

    static func unassign(_ a: RoleAssignment, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "role_assignments")
            .where("user_id", .equal, SQLBind(a.userID)).where("project_id", .equal, SQLBind(a.projectID))
            .where("role_id", .equal, SQLBind(a.roleID)).run()
    }

    /// The roles `userID` holds on `projectID`, implied roles included, sorted by name.
    static func effectiveRoles(userID: String, projectID: String, _ db: any SQLDatabase) async throws -> [Role] {
        let direct = try await assignments(db, userID: userID, projectID: projectID)
        guard !direct.isEmpty else { return [] }
        let all = try await roles(db)
        let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
        let byName = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
        var names = Set<String>()
        for assignment in direct {
            guard let role = byID[assignment.roleID] else { continue }
            names.formUnion(BuiltinRole.effectiveNames(of: role.name))
        }
        return names.compactMap { byName[$0] }.sorted { $0.name < $1.name }
    }

    // MARK: Tokens

    static func insertToken(hash: String, _ t: TokenRecord, _ db: any SQLDatabase) async throws {
        try await db.insert(into: "tokens")
            .columns(
                "token_hash", "user_id", "project_id", "methods", "audit_id", "parent_audit_id", "issued_at_us",
                "expires_at_us", "revoked"
            )
            .values(
                SQLBind(hash), SQLBind(t.userID), SQLBind(t.projectID), SQLBind(t.methods.joined(separator: ",")),
                SQLBind(t.auditID), SQLBind(t.parentAuditID), SQLBind(t.issuedAt.microseconds),
                SQLBind(t.expiresAt.microseconds), SQLBind(t.revoked ? 1 : 0)
            )
            .run()
    }

    static func token(hash: String, _ db: any SQLDatabase) async throws -> TokenRecord? {
        let rows = try await db.select()
            .columns(
                "user_id", "project_id", "methods", "audit_id", "parent_audit_id", "issued_at_us", "expires_at_us",
                "revoked"
            )
            .from("tokens").where("token_hash", .equal, SQLBind(hash)).all()
        return try rows.first.map { row in
            TokenRecord(
                userID: try row.decode(column: "user_id", as: String.self),
                projectID: try row.decode(column: "project_id", as: String?.self),
                methods: try row.decode(column: "methods", as: String.self).split(separator: ",").map(String.init),
                auditID: try row.decode(column: "audit_id", as: String.self),
                parentAuditID: try row.decode(column: "parent_audit_id", as: String?.self),
                issuedAt: Timestamp(microseconds: try row.decode(column: "issued_at_us", as: Int64.self)),
                expiresAt: Timestamp(microseconds: try row.decode(column: "expires_at_us", as: Int64.self)),
                revoked: try row.decode(column: "revoked", as: Int.self) != 0)
        }
    }

    static func revokeToken(hash: String, _ db: any SQLDatabase) async throws {
        try await db.update("tokens").set("revoked", to: SQLBind(1)).where("token_hash", .equal, SQLBind(hash)).run()
    }

    /// Forgets tokens that expired before `cutoff` (they can no longer be used either way).
    static func deleteTokens(expiredBefore cutoff: Timestamp, _ db: any SQLDatabase) async throws {
        try await db.delete(from: "tokens").where("expires_at_us", .lessThan, SQLBind(cutoff.microseconds)).run()
    }
}
