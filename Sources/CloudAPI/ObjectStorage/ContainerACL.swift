import Foundation

/// Swift container ACLs as keystoneauth reads them: `X-Container-Read` and `X-Container-Write`,
/// comma-separated elements, kept in the container's metadata under keys no `X-Container-Meta-*`
/// name can be (`sys:read-acl`, `sys:write-acl`).
///
/// Elements:
/// - `<project>:<user>`, by id or name, either side `*`: a user's project-scoped token;
/// - `.r:*` (read only): anyone, with or without a token; `.r:<host>` or `.r:.<domain>`: requests
///   whose `Referer` names that host, or a host in that domain (Swift's referrer ACL; like Swift's,
///   it is not a secret: any client can send any `Referer`); `.r:-<host>` is not supported and
///   grants nothing;
/// - `.rlistings` (read only): a referrer grant also lists the container.
/// Anything else (a bare role name, which keystoneauth matches only for tokens of the account's own
/// project, who need no ACL) grants nothing.
///
/// An ACL grants only object GET/HEAD (read) or object PUT/POST/DELETE (write), and container
/// GET/HEAD to readers; never the account, container changes, copies, manifests or Pithos calls.
public struct ContainerACL: Sendable, Equatable {
    public var read: String?
    public var write: String?

    static let readKey = ObjectSystemHeaders.prefix + "read-acl"
    static let writeKey = ObjectSystemHeaders.prefix + "write-acl"

    init(metadata: [String: String]) {
        read = metadata[Self.readKey]
        write = metadata[Self.writeKey]
    }

    static func elements(_ acl: String?) -> [String] {
        (acl ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    }

    /// True when `acl` names the caller (`project:user`), whose token is scoped to a project.
    static func grants(_ acl: String?, user: User, project: Project?) -> Bool {
        guard let project else { return false }
        for element in elements(acl) where !element.hasPrefix(".") {
            let parts = element.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2 else { continue }
            let projectMatches = parts[0] == "*" || parts[0] == project.id || parts[0] == project.name
            let userMatches = parts[1] == "*" || parts[1] == user.id || parts[1] == user.name
            if projectMatches && userMatches { return true }
        }
        return false
    }

    /// True when the read ACL grants requests with `referer` (`.r:` elements), and, for a
    /// listing, also has `.rlistings`.
    static func grantsReferrer(_ acl: String?, referer: String?, listing: Bool) -> Bool {
        let elements = elements(acl)
        if listing && !elements.contains(".rlistings") { return false }
        let host = referer.flatMap { URL(string: $0)?.host?.lowercased() }
        for element in elements where element.hasPrefix(".r:") {
            let pattern = element.dropFirst(3).lowercased()
            if pattern == "*" { return true }
            guard let host, !pattern.isEmpty, !pattern.hasPrefix("-") else { continue }
            if pattern.hasPrefix(".") ? (host.hasSuffix(pattern) || host == pattern.dropFirst()) : host == pattern {
                return true
            }
        }
        return false
    }

    /// Checks an ACL header's value: at most 8 KiB, no empty `.r:`; 400 otherwise.
    static func validate(_ value: String, header: String) throws(CloudError) {
        guard value.utf8.count <= 8192 else { throw .badRequest("\(header) is too long.") }
        for element in elements(value) where element == ".r:" || element == ".r:-" {
            throw .badRequest("Referrer element in \(header) has no value: \(element)")
        }
    }
}
