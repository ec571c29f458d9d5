import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

extension HTTPField.Name {
    static let xAuthToken = HTTPField.Name("X-Auth-Token")!
    static let xSubjectToken = HTTPField.Name("X-Subject-Token")!
    static let xOpenstackRequestID = HTTPField.Name("X-Openstack-Request-Id")!
}

/// The largest request body the identity API reads; its bodies are a few hundred bytes.
let maximumJSONBodyBytes = 1 << 20

/// Builds a JSON response.
func jsonResponse(_ body: JSON, status: Int = 200, headers: HTTPFields = [:]) -> Response {
    var fields = headers
    fields[.contentType] = "application/json"
    return Response(
        status: .init(code: status), headers: fields,
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: body.encoded())))
}

/// A response with no body (204, HEAD answers).
func emptyResponse(status: Int, headers: HTTPFields = [:]) -> Response {
    Response(status: .init(code: status), headers: headers)
}

extension Request {
    /// The request body parsed as a JSON object; 400 when it is missing, too large or not an object.
    mutating func jsonObject() async throws -> [String: JSON] {
        guard let object = try await jsonValue().objectValue else {
            throw CloudError.badRequest("The request body must be a JSON object.")
        }
        return object
    }

    /// The caller's base URL: the configured public URL, or `http://` plus the Host header.
    func baseURL(configured: String?) -> String {
        if let configured { return configured }
        let host = head.authority ?? "localhost"
        return "http://\(host)"
    }
}

/// Field access on request objects, answering every wrong shape with a one-sentence 400.
extension Dictionary where Key == String, Value == JSON {
    func object(_ key: String, in context: String) throws(CloudError) -> [String: JSON]? {
        guard let value = self[key], !value.isNull else { return nil }
        guard let object = value.objectValue else { throw .badRequest("\(context).\(key) must be an object.") }
        return object
    }

    func requiredObject(_ key: String, in context: String) throws(CloudError) -> [String: JSON] {
        guard let object = try object(key, in: context) else {
            throw .badRequest("Expecting to find \(key) in \(context). The server could not comply with the request since it is either malformed or otherwise incorrect.")
        }
        return object
    }

    func string(_ key: String, in context: String) throws(CloudError) -> String? {
        guard let value = self[key], !value.isNull else { return nil }
        guard let string = value.stringValue else { throw .badRequest("\(context).\(key) must be a string.") }
        return string
    }

    func bool(_ key: String, in context: String) throws(CloudError) -> Bool? {
        guard let value = self[key], !value.isNull else { return nil }
        guard let bool = value.boolValue else { throw .badRequest("\(context).\(key) must be true or false.") }
        return bool
    }
}

/// Gives every response an `X-Openstack-Request-Id`, turns ``CloudError`` and Hummingbird's
/// errors into Keystone's error body, and anything unexpected into a bare 500 (details go to the
/// log with the request id, never to the client). Logs one line per request: method, path,
/// status, request id; never headers or bodies (they carry tokens and passwords).
struct OpenStackMiddleware<Context: RequestContext>: RouterMiddleware {
    let logger: Logger

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let requestID = "req-" + UUID().uuidString.lowercased()
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as CloudError {
            response = Self.errorResponse(error)
        } catch let error as HTTPError {
            let message = error.body ?? (error.status.code == 404
                ? "The resource could not be found." : error.status.reasonPhrase)
            response = Self.errorResponse(CloudError(status: error.status.code, message: message))
        } catch {
            logger.error(
                "request failed", metadata: ["request_id": "\(requestID)", "error": "\(String(reflecting: error))"])
            response = Self.errorResponse(
                CloudError(status: 500, message: "An unexpected error prevented the server from fulfilling your request."))
        }
        response.headers[.xOpenstackRequestID] = requestID
        logger.info(
            "\(request.method) \(request.uri.path) \(response.status.code)",
            metadata: ["request_id": "\(requestID)"])
        return response
    }

    /// Keystone's error body: `{"error": {"code": N, "title": "...", "message": "..."}}`.
    static func errorResponse(_ error: CloudError) -> Response {
        var headers: HTTPFields = [:]
        if error.status == 401 { headers[.wwwAuthenticate] = "Keystone uri=\"/v3\"" }
        return jsonResponse(
            ["error": ["code": .int(error.status), "title": .string(error.title), "message": .string(error.message)]],
            status: error.status, headers: headers)
    }
}
