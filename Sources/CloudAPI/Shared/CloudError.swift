/// An error the cloud service reports to its caller: an HTTP status and one sentence that says
/// what was wrong and, where it helps, how to fix it. Each service renders it in its own fault
/// shape (Identity: `{"error": {"code", "title", "message"}}`).
public struct CloudError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The HTTP status code (400, 401, 403, 404, 409, 413, 500...).
    public var status: Int
    /// One sentence for the client; never contains a secret.
    public var message: String

    public init(status: Int, message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    public static func badRequest(_ message: String) -> CloudError { .init(status: 400, message: message) }
    public static func unauthorized(_ message: String = "The request you have made requires authentication.")
        -> CloudError
    { .init(status: 401, message: message) }
    public static func forbidden(_ message: String = "You are not authorized to perform the requested action.")
        -> CloudError
    { .init(status: 403, message: message) }
    public static func notFound(_ message: String) -> CloudError { .init(status: 404, message: message) }
    public static func conflict(_ message: String) -> CloudError { .init(status: 409, message: message) }

    /// Keystone's `title` for a status code.
    var title: String {
        switch status {
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 413: "Request Entity Too Large"
        case 415: "Unsupported Media Type"
        default: "Internal Server Error"
        }
    }
}
