import SQLKit

/// Identity's logic, below HTTP and shared with the admin verbs: authentication, tokens, and the
/// users, projects, roles and role assignments behind them. Errors are ``CloudError``s whose
/// status the HTTP layer returns as is.
public struct IdentityService: Sendable {
    public let database: MetadataDatabase
    public let tokenLifetimeSeconds: Int
    let now: @Sendable () -> Timestamp

    /// - Parameter now: the clock; tests pass one they control to expire tokens.
    public init(
        database: MetadataDatabase, tokenLifetimeSeconds: Int = 3600,
        now: @escaping @Sendable () -> Timestamp = { Timestamp.now() }
    ) {
        self.database = database
        self.tokenLifetimeSeconds = tokenLifetimeSeconds
        self.now = now
    }

    // MARK: Authentication

    /// Who is authenticating.
    public enum Credentials: Sendable {
        /// `user.id`, or `user.name` with the domain's id or name; and the password.
        case password(userID: String?, userName: String?, domainID: String?, domainName: String?, password: String)
        /// An existing token (rescoping); the new token expires when this one does.
        case token(String)
    }

    /// What the token is for.
    public enum Scope: Sendable, Equatable {
        case unscoped
        /// No scope in the request: the user's default project when it may use it, else unscoped
        /// (what Keystone does).
        case defaultProject
        case project(id: String?, name: String?, domainID: String?, domainName: String?)
    }

    /// A valid token and everything it stands for, as of now.
    public struct Authorization: Sendable {
        public var user: User
        public var project: Project?
        /// Effective roles on `project` (implied roles included); empty when unscoped.
        public var roles: [Role]
        public var token: TokenRecord

        /// Admin means: a project-scoped token with the admin role.
        public var isAdmin: Bool { project != nil && roles.contains { $0.name == BuiltinRole.admin.rawValue } }
    }

    /// Checks `credentials`, and issues a token for `scope`. Every authentication failure is the
    /// same 401, whatever was wrong, so a caller cannot probe which users exist.
    public func issueToken(_ credentials: Credentials, scope: Scope) async throws -> (
        secret: String, authorization: Authorization
    ) {
        let denied = CloudError.unauthorized("The request you have made requires authentication.")
        let now = self.now()
        // Resolve the user and, for passwords, the hash to check outside the transaction (the
        // hash is slow and must not hold the SQLite session).
        var methods: [String]
        let user: User
        var expiresAt = now.adding(seconds: tokenLifetimeSeconds)
        var parentAuditID: String?
        switch credentials {
        case .password(let userID, let userName, let domainID, let domainName, let password):
            let found = try await database.read { db -> User? in
                if let userID { return try await IdentityStore.user(id: userID, db) }
                guard let userName, let domain = Self.domainID(id: domainID, name: domainName) else { return nil }
                return try await IdentityStore.user(name: userName, domainID: domain, db)
            }
            guard let found, found.enabled, let hash = found.passwordHash else {
                // As slow as a real check, so the answer's timing does not tell which users exist.
                _ = try? await PasswordHash.make(password)
                throw denied
            }
            guard await PasswordHash.verify(password, hash: hash) else { throw denied }
            user = found
            methods = ["password"]
        case .token(let secret):
            guard let existing = try await validate(secret) else { throw denied }
            user = existing.user
            methods = existing.token.methods.contains("token") ? existing.token.methods : ["token"] + existing.token.methods
            expiresAt = existing.token.expiresAt
            parentAuditID = existing.token.parentAuditID ?? existing.token.auditID
        }
        let userID = user.id
        let defaultProjectID = user.defaultProjectID
        let record = TokenRecord(
            userID: userID, projectID: nil, methods: methods, auditID: TokenSecret.auditID(),
            parentAuditID: parentAuditID, issuedAt: now, expiresAt: expiresAt, revoked: false)
        let secret = TokenSecret.make()
        let digest = TokenSecret.digest(secret)
        let issued = try await database.transaction { db -> (Project?, [Role], TokenRecord) in
            var record = record
            var project: Project?
            var roles: [Role] = []
            if scope == .defaultProject, let id = defaultProjectID,
                let candidate = try await IdentityStore.project(id: id, db), candidate.enabled
            {
                roles = try await IdentityStore.effectiveRoles(userID: userID, projectID: id, db)
                if !roles.isEmpty {
                    project = candidate
                    record.projectID = id
                }
            }
            if case .project(let id, let name, let domainID, let domainName) = scope {
                if let id {
                    project = try await IdentityStore.project(id: id, db)
                } else if let name, let domain = Self.domainID(id: domainID, name: domainName) {
                    project = try await IdentityStore.project(name: name, domainID: domain, db)
                }
                guard let scoped = project, scoped.enabled else { throw denied }
                roles = try await IdentityStore.effectiveRoles(userID: userID, projectID: scoped.id, db)
                guard !roles.isEmpty else { throw denied }
                record.projectID = scoped.id
            }
            try await IdentityStore.deleteTokens(expiredBefore: now.adding(seconds: -86400), db)
            try await IdentityStore.insertToken(hash: digest, record, db)
            return (project, roles, record)
        }
        return (secret, Authorization(user: user, project: issued.0, roles: issued.1, token: issued.2))
    }

    /// The authorization `secret` carries now, or nil when the token is unknown, expired, revoked,
    /// or its user, project or roles are gone or disabled.
    public func validate(_ secret: String) async throws -> Authorization? {
        guard !secret.isEmpty, secret.utf8.count <= 1024 else { return nil }
        let digest = TokenSecret.digest(secret)
        let now = self.now()
        return try await database.read { db -> Authorization? in
            guard let token = try await IdentityStore.token(hash: digest, db), !token.revoked, now < token.expiresAt,
                let user = try await IdentityStore.user(id: token.userID, db), user.enabled
            else { return nil }
            guard let projectID = token.projectID else {
                return Authorization(user: user, project: nil, roles: [], token: token)
            }
            guard let project = try await IdentityStore.project(id: projectID, db), project.enabled else { return nil }
            let roles = try await IdentityStore.effectiveRoles(userID: user.id, projectID: projectID, db)
            guard !roles.isEmpty else { return nil }
            return Authorization(user: user, project: project, roles: roles, token: token)
        }
    }

    /// Revokes `secret` and every token rescoped from it (its audit chain). Idempotent.
    public func revoke(_ secret: String) async throws {
        let digest = TokenSecret.digest(secret)
        try await database.transaction { db in
            guard let token = try await IdentityStore.token(hash: digest, db) else { return }
            try await IdentityStore.revokeToken(hash: digest, db)
            if token.parentAuditID == nil {
                try await db.update("tokens").set("revoked", to: SQLBind(1))
                    .where("parent_audit_id", .equal, SQLBind(token.auditID)).run()
            }
        }
    }

    static func domainID(id: String?, name: String?) -> String? {
        if let id { return id == Domain.defaultID ? id : nil }
        if let name { return name == Domain.defaultName || name == Domain.defaultID ? Domain.defaultID : nil }
        return nil
    }
}
