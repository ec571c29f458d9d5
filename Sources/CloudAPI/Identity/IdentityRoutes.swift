import HTTPTypes
import Hummingbird

/// Keystone v3 (and the v2.0 token call) over HTTP, mounted at the root of the service:
/// `GET /`, `/v3/...`, `/v2.0/...`. Handlers parse and check the request, call
/// ``IdentityService`` and render its answer; they hold no logic of their own.
public struct IdentityRoutes: Sendable {
    let identity: IdentityService
    let publicURL: String?
    let region: String
    /// True when object storage is mounted too: the catalog then lists it.
    let objectStorage: Bool
    /// True when images and volumes are mounted too: the catalog then lists `image` and `volumev3`.
    let imagesAndVolumes: Bool

    public init(
        identity: IdentityService, publicURL: String?, region: String, objectStorage: Bool = false,
        imagesAndVolumes: Bool = false
    ) {
        self.identity = identity
        self.publicURL = publicURL
        self.region = region
        self.objectStorage = objectStorage
        self.imagesAndVolumes = imagesAndVolumes
    }

    func shapes(_ request: Request) -> IdentityJSON {
        IdentityJSON(
            base: request.baseURL(configured: publicURL), region: region, objectStorage: objectStorage,
            imagesAndVolumes: imagesAndVolumes)
    }

    /// The caller's authorization from `X-Auth-Token`; 401 when missing or not valid.
    func authorize(_ request: Request) async throws -> IdentityService.Authorization {
        guard let secret = request.headers[.xAuthToken], let a = try await identity.validate(secret) else {
            throw CloudError.unauthorized()
        }
        return a
    }

    /// As ``authorize(_:)``, and 403 unless the token is project-scoped with the admin role.
    func requireAdmin(_ request: Request) async throws -> IdentityService.Authorization {
        let a = try await authorize(request)
        guard a.isAdmin else { throw CloudError.forbidden() }
        return a
    }

    public func register(on router: Router<BasicRequestContext>) {
        router.get("/") { request, _ in
            jsonResponse(["versions": ["values": [shapes(request).versionV3()]]], status: 300)
        }
        router.get("/v3") { request, _ in jsonResponse(["version": shapes(request).versionV3()]) }
        registerTokens(on: router)
        registerProjects(on: router)
        registerUsers(on: router)
        registerRoles(on: router)
        registerV2(on: router)
    }

    // MARK: Tokens

    func registerTokens(on router: Router<BasicRequestContext>) {
        router.post("/v3/auth/tokens") { request, _ in
            var request = request
            let body = try await request.jsonObject()
            let (credentials, scope) = try Self.parseAuth(body)
            let (secret, authorization) = try await identity.issueToken(credentials, scope: scope)
            let includeCatalog = request.uri.queryParameters["nocatalog"] == nil
            return jsonResponse(
                shapes(request).token(authorization, includeCatalog: includeCatalog), status: 201,
                headers: [.xSubjectToken: secret])
        }
        router.get("/v3/auth/tokens") { request, _ in
            let (secret, subject) = try await subjectToken(request)
            let includeCatalog = request.uri.queryParameters["nocatalog"] == nil
            return jsonResponse(
                shapes(request).token(subject, includeCatalog: includeCatalog), headers: [.xSubjectToken: secret])
        }
        router.head("/v3/auth/tokens") { request, _ in
            let (secret, _) = try await subjectToken(request)
            return emptyResponse(status: 200, headers: [.xSubjectToken: secret])
        }
        router.delete("/v3/auth/tokens") { request, _ in
            let (secret, _) = try await subjectToken(request)
            try await identity.revoke(secret)
            return emptyResponse(status: 204)
        }
        router.get("/v3/auth/projects") { request, _ in
            let a = try await authorize(request)
            let projects = try await identity.projects(ofUser: a.user.id).filter(\.enabled)
            let s = shapes(request)
            return jsonResponse(s.list("projects", projects.map(s.project), path: "/auth/projects"))
        }
        router.get("/v3/auth/catalog") { request, _ in
            let a = try await authorize(request)
            guard let project = a.project else {
                throw CloudError.forbidden("A catalog can only be retrieved with a project-scoped token.")
            }
            let s = shapes(request)
            return jsonResponse(["catalog": s.catalog(projectID: project.id), "links": ["self": .string(s.v3 + "/auth/catalog")]])
        }
        router.get("/v3/domains") { request, _ in
            _ = try await authorize(request)
            let s = shapes(request)
            var domains = [s.domainEntity()]
            if let name = request.uri.queryParameters["name"], String(name) != Domain.defaultName { domains = [] }
            return jsonResponse(s.list("domains", domains, path: "/domains"))
        }
        router.get("/v3/domains/{id}") { request, context in
            _ = try await authorize(request)
            let id = context.parameters.get("id") ?? ""
            guard id == Domain.defaultID else { throw CloudError.notFound("Could not find domain: \(id).") }
            return jsonResponse(["domain": shapes(request).domainEntity()])
        }
    }

    /// The caller must hold a valid token; the subject token must be valid (404 otherwise); the
    /// caller must be an admin or the subject's user (403 otherwise).
    func subjectToken(_ request: Request) async throws -> (String, IdentityService.Authorization) {
        let caller = try await authorize(request)
        guard let secret = request.headers[.xSubjectToken], !secret.isEmpty else {
            throw CloudError.badRequest("The X-Subject-Token header is missing.")
        }
        guard let subject = try await identity.validate(secret) else {
            throw CloudError.notFound("Could not find token.")
        }
        guard caller.isAdmin || caller.user.id == subject.user.id else { throw CloudError.forbidden() }
        return (secret, subject)
    }

    /// Reads `{"auth": {"identity": {...}, "scope": {...}}}`.
    static func parseAuth(_ body: [String: JSON]) throws(CloudError) -> (IdentityService.Credentials, IdentityService.Scope) {
        let auth = try body.requiredObject("auth", in: "the request")
        let identityObject = try auth.requiredObject("identity", in: "auth")
        guard let methodsJSON = identityObject["methods"]?.arrayValue else {
            throw .badRequest("Expecting to find methods in identity. The server could not comply with the request since it is either malformed or otherwise incorrect.")
        }
        let methods = methodsJSON.compactMap(\.stringValue)
        let credentials: IdentityService.Credentials
        if methods.contains("password") {
            let password = try identityObject.requiredObject("password", in: "identity")
            let user = try password.requiredObject("user", in: "password")
            let domain = try user.object("domain", in: "user")
            guard let secret = try user.string("password", in: "user") else {
                throw .badRequest("Expecting to find password in user.")
            }
            let id = try user.string("id", in: "user")
            let name = try user.string("name", in: "user")
            guard id != nil || name != nil else { throw .badRequest("Expecting to find id or name in user.") }
            credentials = .password(
                userID: id, userName: name, domainID: try domain?.string("id", in: "domain"),
                domainName: try domain?.string("name", in: "domain"), password: secret)
        } else if methods.contains("token") {
            let token = try identityObject.requiredObject("token", in: "identity")
            guard let id = try token.string("id", in: "token") else { throw .badRequest("Expecting to find id in token.") }
            credentials = .token(id)
        } else {
            throw .unauthorized("Attempted to authenticate with an unsupported method.")
        }
        guard let scopeValue = auth["scope"], !scopeValue.isNull else { return (credentials, .defaultProject) }
        if scopeValue.stringValue == "unscoped" { return (credentials, .unscoped) }
        guard let scope = scopeValue.objectValue else { throw .badRequest("auth.scope must be an object.") }
        guard let project = try scope.object("project", in: "scope") else {
            if scope["domain"] != nil || scope["system"] != nil {
                throw .unauthorized("Only project scope is supported; domain and system scope are not.")
            }
            throw .badRequest("Expecting to find project in scope.")
        }
        let domain = try project.object("domain", in: "project")
        let id = try project.string("id", in: "project")
        let name = try project.string("name", in: "project")
        guard id != nil || name != nil else { throw .badRequest("Expecting to find id or name in project.") }
        return (
            credentials,
            .project(
                id: id, name: name, domainID: try domain?.string("id", in: "domain"),
                domainName: try domain?.string("name", in: "domain"))
        )
    }
}
