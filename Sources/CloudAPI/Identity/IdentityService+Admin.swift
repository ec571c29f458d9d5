import SQLKit

/// Managing users, projects, roles and role assignments: the admin API and the admin verbs.
extension IdentityService {
    // MARK: Projects

    public func createProject(name: String, description: String = "", enabled: Bool = true) async throws -> Project {
        try Self.checkName(name, of: "project")
        let project = Project(
            id: newID(), name: name, domainID: Domain.defaultID, description: description, enabled: enabled)
        let now = self.now()
        try await database.transaction { db in
            if try await IdentityStore.project(name: name, domainID: Domain.defaultID, db) != nil {
                throw CloudError.conflict("A project named \(name) already exists in domain Default.")
            }
            try await IdentityStore.insert(project, createdAt: now, db)
        }
        return project
    }

    public func projects(name: String? = nil) async throws -> [Project] {
        try await database.read { db in
            try await IdentityStore.projects(db, where: name == nil ? nil : "name", is: name)
        }
    }

    public func project(id: String) async throws -> Project {
        guard let p = try await database.read({ db in try await IdentityStore.project(id: id, db) }) else {
            throw CloudError.notFound("Could not find project: \(id).")
        }
        return p
    }

    /// The project with this id, or else this name (what the admin verbs accept).
    public func project(idOrName: String) async throws -> Project {
        let found = try await database.read { db -> Project? in
            if let p = try await IdentityStore.project(id: idOrName, db) { return p }
            return try await IdentityStore.project(name: idOrName, domainID: Domain.defaultID, db)
        }
        guard let found else { throw CloudError.notFound("Could not find project: \(idOrName).") }
        return found
    }

    public func updateProject(id: String, name: String?, description: String?, enabled: Bool?) async throws -> Project {
        if let name { try Self.checkName(name, of: "project") }
        return try await database.transaction { db in
            guard var p = try await IdentityStore.project(id: id, db) else {
                throw CloudError.notFound("Could not find project: \(id).")
            }
            if let name, name != p.name {
                if try await IdentityStore.project(name: name, domainID: p.domainID, db) != nil {
                    throw CloudError.conflict("A project named \(name) already exists in domain Default.")
                }
                p.name = name
            }
            if let description { p.description = description }
            if let enabled { p.enabled = enabled }
            try await IdentityStore.update(p, db)
            return p
        }
    }

    public func deleteProject(id: String) async throws {
        try await database.transaction { db in
            guard try await IdentityStore.project(id: id, db) != nil else {
                throw CloudError.notFound("Could not find project: \(id).")
            }
            try await IdentityStore.deleteProject(id: id, db)
        }
    }

    // MARK: Users

    public func createUser(
        name: String, password: String?, defaultProjectID: String? = nil, email: String? = nil,
        description: String = "", enabled: Bool = true
    ) async throws -> User {
        try Self.checkName(name, of: "user")
        let hash: String? = if let password { try await PasswordHash.make(password) } else { nil }
        let user = User(
            id: newID(), name: name, domainID: Domain.defaultID, enabled: enabled, defaultProjectID: defaultProjectID,
            email: email, description: description, passwordHash: hash)
        let now = self.now()
        try await database.transaction { db in
            if try await IdentityStore.user(name: name, domainID: Domain.defaultID, db) != nil {
                throw CloudError.conflict("A user named \(name) already exists in domain Default.")
            }
            if let defaultProjectID, try await IdentityStore.project(id: defaultProjectID, db) == nil {
                throw CloudError.badRequest("The default project \(defaultProjectID) does not exist.")
            }
            try await IdentityStore.insert(user, createdAt: now, db)
        }
        return user
    }

    public func users(name: String? = nil) async throws -> [User] {
        try await database.read { db in try await IdentityStore.users(db, where: name == nil ? nil : "name", is: name) }
    }

    public func user(id: String) async throws -> User {
        guard let u = try await database.read({ db in try await IdentityStore.user(id: id, db) }) else {
            throw CloudError.notFound("Could not find user: \(id).")
        }
        return u
    }

    /// The user with this id, or else this name.
    public func user(idOrName: String) async throws -> User {
        let found = try await database.read { db -> User? in
            if let u = try await IdentityStore.user(id: idOrName, db) { return u }
            return try await IdentityStore.user(name: idOrName, domainID: Domain.defaultID, db)
        }
        guard let found else { throw CloudError.notFound("Could not find user: \(idOrName).") }
        return found
    }

    /// Changes the given fields. A new password revokes nothing by itself (Keystone neither);
    /// disabling the user invalidates its tokens at once (validation checks `enabled`).
    public func updateUser(
        id: String, name: String?, password: String?, enabled: Bool?, defaultProjectID: String??, email: String??,
        description: String?
    ) async throws -> User {
        if let name { try Self.checkName(name, of: "user") }
        let hash: String? = if let password { try await PasswordHash.make(password) } else { nil }
        return try await database.transaction { db in
            guard var u = try await IdentityStore.user(id: id, db) else {
                throw CloudError.notFound("Could not find user: \(id).")
            }
            if let name, name != u.name {
                if try await IdentityStore.user(name: name, domainID: u.domainID, db) != nil {
                    throw CloudError.conflict("A user named \(name) already exists in domain Default.")
                }
                u.name = name
            }
            if let hash { u.passwordHash = hash }
            if let enabled { u.enabled = enabled }
            if let defaultProjectID {
                if let p = defaultProjectID, try await IdentityStore.project(id: p, db) == nil {
                    throw CloudError.badRequest("The default project \(p) does not exist.")
                }
                u.defaultProjectID = defaultProjectID
            }
            if let email { u.email = email }
            if let description { u.description = description }
            try await IdentityStore.update(u, db)
            return u
        }
    }

    /// Deletes the user, its role assignments and its tokens.
    public func deleteUser(id: String) async throws {
        try await database.transaction { db in
            guard try await IdentityStore.user(id: id, db) != nil else {
                throw CloudError.notFound("Could not find user: \(id).")
            }
            try await IdentityStore.deleteUser(id: id, db)
        }
    }

    /// The projects `userID` holds any role on.
    public func projects(ofUser userID: String) async throws -> [Project] {
        try await database.read { db in
            let ids = Set(try await IdentityStore.assignments(db, userID: userID).map(\.projectID))
            return try await IdentityStore.projects(db).filter { ids.contains($0.id) }
        }
    }

    // MARK: Roles

    public func createRole(name: String, description: String = "") async throws -> Role {
        try Self.checkName(name, of: "role")
        let role = Role(id: newID(), name: name, description: description)
        try await database.transaction { db in
            if try await !IdentityStore.roles(db, where: "name", is: name).isEmpty {
                throw CloudError.conflict("A role named \(name) already exists.")
            }
            try await IdentityStore.insert(role, db)
        }
        return role
    }

    public func roles(name: String? = nil) async throws -> [Role] {
        try await database.read { db in try await IdentityStore.roles(db, where: name == nil ? nil : "name", is: name) }
    }

    public func role(id: String) async throws -> Role {
        guard let r = try await database.read({ db in try await IdentityStore.roles(db, where: "id", is: id).first })
        else { throw CloudError.notFound("Could not find role: \(id).") }
        return r
    }

    /// The role with this id, or else this name.
    public func role(idOrName: String) async throws -> Role {
        let found = try await database.read { db -> Role? in
            if let r = try await IdentityStore.roles(db, where: "id", is: idOrName).first { return r }
            return try await IdentityStore.roles(db, where: "name", is: idOrName).first
        }
        guard let found else { throw CloudError.notFound("Could not find role: \(idOrName).") }
        return found
    }

    public func updateRole(id: String, name: String?, description: String?) async throws -> Role {
        if let name { try Self.checkName(name, of: "role") }
        return try await database.transaction { db in
            guard var r = try await IdentityStore.roles(db, where: "id", is: id).first else {
                throw CloudError.notFound("Could not find role: \(id).")
            }
            if let name, name != r.name {
                if BuiltinRole(rawValue: r.name) != nil {
                    throw CloudError.forbidden("The built-in role \(r.name) cannot be renamed.")
                }
                if try await !IdentityStore.roles(db, where: "name", is: name).isEmpty {
                    throw CloudError.conflict("A role named \(name) already exists.")
                }
                r.name = name
            }
            if let description { r.description = description }
            try await IdentityStore.update(r, db)
            return r
        }
    }

    /// Deletes a role and its assignments; the built-in roles cannot be deleted.
    public func deleteRole(id: String) async throws {
        try await database.transaction { db in
            guard let r = try await IdentityStore.roles(db, where: "id", is: id).first else {
                throw CloudError.notFound("Could not find role: \(id).")
            }
            if BuiltinRole(rawValue: r.name) != nil {
                throw CloudError.forbidden("The built-in role \(r.name) cannot be deleted.")
            }
            try await IdentityStore.deleteRole(id: id, db)
        }
    }

    // MARK: Role assignments

    /// Grants `roleID` on `projectID` to `userID` (idempotent). 404 names what does not exist.
    public func assignRole(userID: String, projectID: String, roleID: String) async throws {
        try await database.transaction { db in
            try await Self.checkAssignmentParts(userID: userID, projectID: projectID, roleID: roleID, db)
            try await IdentityStore.assign(RoleAssignment(userID: userID, projectID: projectID, roleID: roleID), db)
        }
    }

    /// Removes the grant; 404 when it does not exist.
    public func unassignRole(userID: String, projectID: String, roleID: String) async throws {
        try await database.transaction { db in
            let a = RoleAssignment(userID: userID, projectID: projectID, roleID: roleID)
            if try await IdentityStore.assignments(db, userID: userID, projectID: projectID, roleID: roleID).isEmpty {
                throw CloudError.notFound(
                    "Could not find role assignment with role: \(roleID), user: \(userID), project: \(projectID).")
            }
            try await IdentityStore.unassign(a, db)
        }
    }

    public func roleAssignments(userID: String? = nil, projectID: String? = nil, roleID: String? = nil) async throws
        -> [RoleAssignment]
    {
        try await database.read { db in
            try await IdentityStore.assignments(db, userID: userID, projectID: projectID, roleID: roleID)
        }
    }

    static func checkAssignmentParts(userID: String, projectID: String, roleID: String, _ db: any SQLDatabase)
        async throws
    {
        if try await IdentityStore.user(id: userID, db) == nil {
            throw CloudError.notFound("Could not find user: \(userID).")
        }
        if try await IdentityStore.project(id: projectID, db) == nil {
            throw CloudError.notFound("Could not find project: \(projectID).")
        }
        if try await IdentityStore.roles(db, where: "id", is: roleID).isEmpty {
            throw CloudError.notFound("Could not find role: \(roleID).")
        }
    }

    // MARK: Bootstrap

    /// Creates the built-in roles, the `admin` project and the `admin` user with the admin role
    /// on it. Idempotent: run again, it keeps what exists and sets the admin's password.
    public func bootstrap(adminPassword: String) async throws -> (user: User, project: Project) {
        let hash = try await PasswordHash.make(adminPassword)
        let now = self.now()
        return try await database.transaction { db in
            for builtin in BuiltinRole.allCases where try await IdentityStore.roles(db, where: "name", is: builtin.rawValue).isEmpty {
                try await IdentityStore.insert(Role(id: newID(), name: builtin.rawValue, description: ""), db)
            }
            let adminRole = try await IdentityStore.roles(db, where: "name", is: BuiltinRole.admin.rawValue)[0]
            var project: Project
            if let p = try await IdentityStore.project(name: "admin", domainID: Domain.defaultID, db) {
                project = p
                if !p.enabled {
                    project.enabled = true
                    try await IdentityStore.update(project, db)
                }
            } else {
                project = Project(
                    id: newID(), name: "admin", domainID: Domain.defaultID, description: "Bootstrap project",
                    enabled: true)
                try await IdentityStore.insert(project, createdAt: now, db)
            }
            var user: User
            if var u = try await IdentityStore.user(name: "admin", domainID: Domain.defaultID, db) {
                u.passwordHash = hash
                u.enabled = true
                try await IdentityStore.update(u, db)
                user = u
            } else {
                user = User(
                    id: newID(), name: "admin", domainID: Domain.defaultID, enabled: true,
                    defaultProjectID: project.id, email: nil, description: "Bootstrap administrator",
                    passwordHash: hash)
                try await IdentityStore.insert(user, createdAt: now, db)
            }
            try await IdentityStore.assign(RoleAssignment(userID: user.id, projectID: project.id, roleID: adminRole.id), db)
            return (user, project)
        }
    }

    /// Names: 1 to 255 characters, no control characters (they end up in logs and terminals).
    static func checkName(_ name: String, of kind: String) throws(CloudError) {
        guard !name.isEmpty, name.count <= 255 else {
            throw .badRequest("A \(kind) name must be 1 to 255 characters long.")
        }
        guard !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            throw .badRequest("A \(kind) name must not contain control characters.")
        }
    }
}
