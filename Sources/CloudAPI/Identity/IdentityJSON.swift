/// Identity's response shapes (Keystone v3), built from the models.
struct IdentityJSON {
    /// The public base URL of this request, without a trailing slash (`http://host:port`).
    let base: String
    let region: String
    /// True when this process serves object storage (its catalog entry is listed only then).
    var objectStorage = false
    /// True when this process serves images and volumes (`image`, `volumev3`).
    var imagesAndVolumes = false

    var v3: String { base + "/v3" }

    static let domain: JSON = ["id": .string(Domain.defaultID), "name": .string(Domain.defaultName)]

    func project(_ p: Project) -> JSON {
        [
            "id": .string(p.id), "name": .string(p.name), "domain_id": .string(p.domainID),
            "description": .string(p.description), "enabled": .bool(p.enabled), "is_domain": false,
            "parent_id": .string(p.domainID), "tags": [], "options": [:],
            "links": ["self": .string("\(v3)/projects/\(p.id)")],
        ]
    }

    func user(_ u: User) -> JSON {
        var o: [String: JSON] = [
            "id": .string(u.id), "name": .string(u.name), "domain_id": .string(u.domainID),
            "enabled": .bool(u.enabled), "description": .string(u.description), "password_expires_at": nil,
            "options": [:], "links": ["self": .string("\(v3)/users/\(u.id)")],
        ]
        if let p = u.defaultProjectID { o["default_project_id"] = .string(p) }
        if let e = u.email { o["email"] = .string(e) }
        return .object(o)
    }

    func role(_ r: Role) -> JSON {
        [
            "id": .string(r.id), "name": .string(r.name), "domain_id": nil, "description": .string(r.description),
            "options": [:], "links": ["self": .string("\(v3)/roles/\(r.id)")],
        ]
    }

    func domainEntity() -> JSON {
        [
            "id": .string(Domain.defaultID), "name": .string(Domain.defaultName),
            "description": "The default domain", "enabled": true, "tags": [], "options": [:],
            "links": ["self": .string("\(v3)/domains/\(Domain.defaultID)")],
        ]
    }

    func list(_ key: String, _ items: [JSON], path: String) -> JSON {
        [key: .array(items), "links": ["self": .string(v3 + path), "previous": nil, "next": nil]]
    }

    /// The service catalog: only what this process serves (identity, object storage, images,
    /// volumes), each service with public, internal and admin endpoints in one region. Object
    /// storage's URL names the token's project (`/v1/AUTH_<project id>`), as does Cinder's
    /// (`/volume/v3/<project id>`); Glance's is unversioned (`/image`), as clients expect.
    func catalog(projectID: String) -> JSON {
        var services: [(type: String, name: String, url: String)] = [("identity", "keystone", v3)]
        if objectStorage { services.append(("object-store", "swift", "\(base)/v1/AUTH_\(projectID)")) }
        if imagesAndVolumes {
            services.append(("image", "glance", base + ImageRoutes.prefix))
            services.append(("volumev3", "cinderv3", "\(base)\(VolumeRoutes.prefix)/v3/\(projectID)"))
        }
        return .array(
            services.map { service in
                [
                    "id": .string(service.type), "type": .string(service.type), "name": .string(service.name),
                    "endpoints": .array(
                        ["public", "internal", "admin"].map { interface in
                            [
                                "id": .string("\(service.type)-\(interface)"), "interface": .string(interface),
                                "region": .string(region), "region_id": .string(region), "url": .string(service.url),
                            ]
                        }),
                ]
            })
    }

    /// The v3 token body (`{"token": {...}}`).
    func token(_ a: IdentityService.Authorization, includeCatalog: Bool) -> JSON {
        var auditIDs: [JSON] = [.string(a.token.auditID)]
        if let parent = a.token.parentAuditID { auditIDs.append(.string(parent)) }
        var t: [String: JSON] = [
            "methods": .array(a.token.methods.map(JSON.string)),
            "user": [
                "id": .string(a.user.id), "name": .string(a.user.name), "domain": Self.domain,
                "password_expires_at": nil,
            ],
            "audit_ids": .array(auditIDs),
            "issued_at": .string(a.token.issuedAt.iso8601Microseconds),
            "expires_at": .string(a.token.expiresAt.iso8601Microseconds),
        ]
        if let p = a.project {
            t["project"] = ["id": .string(p.id), "name": .string(p.name), "domain": Self.domain]
            t["is_domain"] = false
            t["roles"] = .array(a.roles.map { ["id": .string($0.id), "name": .string($0.name)] })
            if includeCatalog { t["catalog"] = catalog(projectID: p.id) }
        }
        return ["token": .object(t)]
    }

    /// The version entry of `GET /` and `GET /v3`.
    func versionV3() -> JSON {
        [
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [["rel": "self", "href": .string(v3 + "/")]],
            "media-types": [["base": "application/json", "type": "application/vnd.openstack.identity-v3+json"]],
        ]
    }
}
