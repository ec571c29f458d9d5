/// The only domain: every user and project lives in Keystone's `default` domain.
public enum Domain {
    public static let defaultID = "default"
    public static let defaultName = "Default"
}

/// The roles every cloud has (Keystone's defaults). `admin` implies `member`, which implies
/// `reader`: a token carries the implied roles too.
public enum BuiltinRole: String, CaseIterable, Sendable {
    case admin
    case member
    case reader

    /// The roles a direct assignment of `name` grants, itself first.
    static func effectiveNames(of name: String) -> [String] {
        switch name {
        case "admin": ["admin", "member", "reader"]
        case "member": ["member", "reader"]
        default: [name]
        }
    }
}

public struct Project: Sendable, Equatable {
    public var id: String
    public var name: String
    public var domainID: String
    public var description: String
    public var enabled: Bool
}

public struct User: Sendable, Equatable {
    public var id: String
    public var name: String
    public var domainID: String
    public var enabled: Bool
    public var defaultProjectID: String?
    public var email: String?
    public var description: String
    /// crypt(3) string, nil when the user cannot log in with a password.
    var passwordHash: String?
}

public struct Role: Sendable, Equatable {
    public var id: String
    public var name: String
    public var description: String
}

public struct RoleAssignment: Sendable, Equatable {
    public var userID: String
    public var projectID: String
    public var roleID: String
}

/// A token as stored: what it is bound to, never its secret.
public struct TokenRecord: Sendable, Equatable {
    public var userID: String
    public var projectID: String?
    public var methods: [String]
    public var auditID: String
    public var parentAuditID: String?
    public var issuedAt: Timestamp
    public var expiresAt: Timestamp
    public var revoked: Bool
}
