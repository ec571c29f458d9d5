import Foundation
import Hummingbird
import NIOCore

/// Who is calling an image or volume route: the project the token is scoped to and what the
/// token may do there. Images and volumes need a project-scoped token (401 without a valid one,
/// 403 for an unscoped one).
struct Caller: Sendable {
    var projectID: String
    var userID: String
    /// The admin role on the token's project: may read and write every project's resources.
    var isAdmin: Bool
    /// The member role (implied by admin): may create, change and delete; readers only read.
    var canWrite: Bool
}

extension IdentityService {
    /// The caller behind `X-Auth-Token`.
    func caller(_ request: Request) async throws -> Caller {
        guard let secret = request.headers[.xAuthToken], let a = try await validate(secret) else {
            throw CloudError.unauthorized()
        }
        guard let project = a.project else {
            throw CloudError.forbidden("Images and volumes need a project-scoped token.")
        }
        return Caller(
            projectID: project.id, userID: a.user.id, isAdmin: a.isAdmin,
            canWrite: a.roles.contains { $0.name == BuiltinRole.member.rawValue })
    }
}

extension Request {
    /// The request body parsed as any JSON value (Glance's JSON patch is an array); 400 when it is
    /// missing or not JSON, 413 past 1 MiB.
    mutating func jsonValue() async throws -> JSON {
        let buffer: ByteBuffer
        do {
            buffer = try await collectBody(upTo: maximumJSONBodyBytes)
        } catch {
            throw CloudError(status: 413, message: "The request body is larger than \(maximumJSONBodyBytes) bytes.")
        }
        guard buffer.readableBytes > 0 else { throw CloudError.badRequest("The request body is empty; JSON was expected.") }
        return try JSON.parse(Data(buffer.readableBytesView))
    }
}

/// Checks shared by images and volumes.
enum ResourceNames {
    /// A display name or description: at most `maxBytes` bytes, no control characters.
    static func check(_ text: String, what: String, maxBytes: Int = 255) throws(CloudError) {
        guard text.utf8.count <= maxBytes else { throw .badRequest("The \(what) has at most \(maxBytes) bytes.") }
        for scalar in text.unicodeScalars where scalar.value < 0x20 || scalar.value == 0x7f {
            throw .badRequest("The \(what) cannot contain control characters.")
        }
    }

    /// A resource id in a URL or body: a UUID (any case); anything else cannot name a resource.
    static func isUUID(_ text: String) -> Bool { UUID(uuidString: text) != nil }

    static func newID() -> String { UUID().uuidString.lowercased() }
}

extension JSON {
    /// An integer, also from a JSON number with no fraction or a decimal string (clients differ).
    var integerValue: Int64? {
        switch self {
        case .int(let i): return Int64(i)
        case .double(let d) where d.rounded() == d && abs(d) < 9e15: return Int64(d)
        case .string(let s): return Int64(s)
        default: return nil
        }
    }
}
