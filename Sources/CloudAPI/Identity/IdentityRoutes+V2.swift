import HTTPTypes
import Hummingbird

/// Keystone v2.0's token call, which kamaki (through astakosclient) uses:
/// `POST /v2.0/tokens` with `passwordCredentials` or `token`, and `tenantName` or `tenantId`.
extension IdentityRoutes {
    func registerV2(on router: Router<BasicRequestContext>) {
        router.get("/v2.0") { request, _ in
            let base = request.baseURL(configured: publicURL)
            return jsonResponse([
                "version": [
                    "id": "v2.0", "status": "deprecated", "updated": "2014-04-17T00:00:00Z",
                    "links": [["rel": "self", "href": .string(base + "/v2.0/")]],
                    "media-types": [["base": "application/json", "type": "application/vnd.openstack.identity-v2.0+json"]],
                ]
            ])
        }
        router.post("/v2.0/tokens") { request, _ in
            var request = request
            let auth = try await request.jsonObject().requiredObject("auth", in: "the request")
            let credentials: IdentityService.Credentials
            if let password = try auth.object("passwordCredentials", in: "auth") {
                guard let name = try password.string("username", in: "passwordCredentials"),
                    let secret = try password.string("password", in: "passwordCredentials")
                else { throw CloudError.badRequest("Expecting username and password in passwordCredentials.") }
                credentials = .password(
                    userID: nil, userName: name, domainID: Domain.defaultID, domainName: nil, password: secret)
            } else if let token = try auth.object("token", in: "auth") {
                guard let id = try token.string("id", in: "token") else {
                    throw CloudError.badRequest("Expecting to find id in token.")
                }
                credentials = .token(id)
            } else {
                throw CloudError.badRequest("Expecting passwordCredentials or token in auth.")
            }
            var scope = IdentityService.Scope.unscoped
            if let id = try auth.string("tenantId", in: "auth") {
                scope = .project(id: id, name: nil, domainID: nil, domainName: nil)
            } else if let name = try auth.string("tenantName", in: "auth") {
                // kamaki may send a project id where a name is expected: try the name, then the id.
                if let byName = try? await identity.project(idOrName: name) {
                    scope = .project(id: byName.id, name: nil, domainID: nil, domainName: nil)
                } else {
                    throw CloudError.unauthorized()
                }
            }
            let (secret, a) = try await identity.issueToken(credentials, scope: scope)
            return jsonResponse(v2Access(secret: secret, a, base: request.baseURL(configured: publicURL)))
        }
    }

    func v2Access(secret: String, _ a: IdentityService.Authorization, base: String) -> JSON {
        var token: [String: JSON] = [
            "id": .string(secret), "issued_at": .string(a.token.issuedAt.iso8601Microseconds),
            "expires": .string(a.token.expiresAt.iso8601Seconds), "audit_ids": [.string(a.token.auditID)],
        ]
        var catalog: [JSON] = []
        if let p = a.project {
            token["tenant"] = [
                "id": .string(p.id), "name": .string(p.name), "enabled": .bool(p.enabled),
                "description": .string(p.description),
            ]
            let url = base + "/v2.0"
            catalog = [
                [
                    "type": "identity", "name": "keystone",
                    "endpoints": [
                        [
                            "id": "identity-public", "region": .string(region), "publicURL": .string(url),
                            "internalURL": .string(url), "adminURL": .string(url), "versionId": "2.0",
                        ]
                    ],
                    "endpoints_links": [],
                ]
            ]
            if objectStorage {
                let swiftURL = "\(base)/v1/AUTH_\(p.id)"
                catalog.append([
                    "type": "object-store", "name": "swift",
                    "endpoints": [
                        [
                            "id": "object-store-public", "region": .string(region), "publicURL": .string(swiftURL),
                            "internalURL": .string(swiftURL), "adminURL": .string(swiftURL),
                        ]
                    ],
                    "endpoints_links": [],
                ])
            }
        }
        return [
            "access": [
                "token": .object(token), "serviceCatalog": .array(catalog),
                "user": [
                    "id": .string(a.user.id), "name": .string(a.user.name), "username": .string(a.user.name),
                    "roles": .array(a.roles.map { ["id": .string($0.id), "name": .string($0.name)] }), "roles_links": [],
                ],
                "metadata": ["is_admin": .int(a.isAdmin ? 1 : 0), "roles": .array(a.roles.map { .string($0.id) })],
            ]
        ]
    }
}
