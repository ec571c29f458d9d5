import HTTPTypes
import Hummingbird

/// The admin surface: projects, users, roles and role assignments. Everything here needs an
/// admin token, except reading one's own user and projects.
extension IdentityRoutes {
    func registerProjects(on router: Router<BasicRequestContext>) {
        router.get("/v3/projects") { request, _ in
            _ = try await requireAdmin(request)
            var projects = try await identity.projects(name: request.uri.queryParameters["name"].map(String.init))
            if let enabled = request.uri.queryParameters["enabled"] {
                let wanted = !["false", "0", "no"].contains(enabled.lowercased())
                projects = projects.filter { $0.enabled == wanted }
            }
            let s = shapes(request)
            return jsonResponse(s.list("projects", projects.map(s.project), path: "/projects"))
        }
        router.post("/v3/projects") { request, _ in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("project", in: "the request")
            guard let name = try body.string("name", in: "project") else {
                throw CloudError.badRequest("Expecting to find name in project.")
            }
            if let domain = try body.string("domain_id", in: "project"), domain != Domain.defaultID {
                throw CloudError.badRequest("Only the default domain exists; domain_id must be \(Domain.defaultID).")
            }
            if try body.bool("is_domain", in: "project") == true {
                throw CloudError.badRequest("Projects acting as domains are not supported.")
            }
            let project = try await identity.createProject(
                name: name, description: try body.string("description", in: "project") ?? "",
                enabled: try body.bool("enabled", in: "project") ?? true)
            return jsonResponse(["project": shapes(request).project(project)], status: 201)
        }
        router.get("/v3/projects/{id}") { request, context in
            let a = try await authorize(request)
            let id = context.parameters.get("id") ?? ""
            guard a.isAdmin || a.project?.id == id else { throw CloudError.forbidden() }
            return jsonResponse(["project": shapes(request).project(try await identity.project(id: id))])
        }
        router.patch("/v3/projects/{id}") { request, context in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("project", in: "the request")
            let project = try await identity.updateProject(
                id: context.parameters.get("id") ?? "", name: try body.string("name", in: "project"),
                description: try body.string("description", in: "project"),
                enabled: try body.bool("enabled", in: "project"))
            return jsonResponse(["project": shapes(request).project(project)])
        }
        router.delete("/v3/projects/{id}") { request, context in
            _ = try await requireAdmin(request)
            try await identity.deleteProject(id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 204)
        }
        router.get("/v3/projects/{id}/users/{user}/roles") { request, context in
            _ = try await requireAdmin(request)
            let assignments = try await identity.roleAssignments(
                userID: context.parameters.get("user"), projectID: context.parameters.get("id"))
            let ids = Set(assignments.map(\.roleID))
            let roles = try await identity.roles().filter { ids.contains($0.id) }
            let s = shapes(request)
            return jsonResponse(s.list("roles", roles.map(s.role), path: request.uri.path.dropFirst(3).description))
        }
        router.put("/v3/projects/{id}/users/{user}/roles/{role}") { request, context in
            _ = try await requireAdmin(request)
            try await identity.assignRole(
                userID: context.parameters.get("user") ?? "", projectID: context.parameters.get("id") ?? "",
                roleID: context.parameters.get("role") ?? "")
            return emptyResponse(status: 204)
        }
        router.head("/v3/projects/{id}/users/{user}/roles/{role}") { request, context in
            _ = try await requireAdmin(request)
            let found = try await identity.roleAssignments(
                userID: context.parameters.get("user"), projectID: context.parameters.get("id"),
                roleID: context.parameters.get("role"))
            return emptyResponse(status: found.isEmpty ? 404 : 204)
        }
        router.get("/v3/projects/{id}/users/{user}/roles/{role}") { request, context in
            _ = try await requireAdmin(request)
            let found = try await identity.roleAssignments(
                userID: context.parameters.get("user"), projectID: context.parameters.get("id"),
                roleID: context.parameters.get("role"))
            guard !found.isEmpty else { throw CloudError.notFound("Could not find role assignment.") }
            return emptyResponse(status: 204)
        }
        router.delete("/v3/projects/{id}/users/{user}/roles/{role}") { request, context in
            _ = try await requireAdmin(request)
            try await identity.unassignRole(
                userID: context.parameters.get("user") ?? "", projectID: context.parameters.get("id") ?? "",
                roleID: context.parameters.get("role") ?? "")
            return emptyResponse(status: 204)
        }
        router.get("/v3/role_assignments") { request, _ in
            _ = try await requireAdmin(request)
            let q = request.uri.queryParameters
            if q["scope.domain.id"] != nil || q["scope.system"] != nil || q["group.id"] != nil {
                let s = shapes(request)
                return jsonResponse(s.list("role_assignments", [], path: "/role_assignments"))
            }
            let assignments = try await identity.roleAssignments(
                userID: q["user.id"].map(String.init), projectID: q["scope.project.id"].map(String.init),
                roleID: q["role.id"].map(String.init))
            let includeNames = q["include_names"].map { !["false", "0"].contains($0.lowercased()) } ?? false
            var names: (users: [String: String], projects: [String: String], roles: [String: String]) = ([:], [:], [:])
            if includeNames {
                names.users = Dictionary(uniqueKeysWithValues: try await identity.users().map { ($0.id, $0.name) })
                names.projects = Dictionary(uniqueKeysWithValues: try await identity.projects().map { ($0.id, $0.name) })
                names.roles = Dictionary(uniqueKeysWithValues: try await identity.roles().map { ($0.id, $0.name) })
            }
            let s = shapes(request)
            let items: [JSON] = assignments.map { a in
                func entity(_ id: String, _ name: String?, domain: Bool) -> JSON {
                    var o: [String: JSON] = ["id": .string(id)]
                    if let name { o["name"] = .string(name) }
                    if name != nil && domain { o["domain"] = IdentityJSON.domain }
                    return .object(o)
                }
                return [
                    "role": entity(a.roleID, includeNames ? names.roles[a.roleID] : nil, domain: false),
                    "user": entity(a.userID, includeNames ? names.users[a.userID] : nil, domain: true),
                    "scope": ["project": entity(a.projectID, includeNames ? names.projects[a.projectID] : nil, domain: true)],
                    "links": [
                        "assignment": .string("\(s.v3)/projects/\(a.projectID)/users/\(a.userID)/roles/\(a.roleID)")
                    ],
                ]
            }
            return jsonResponse(s.list("role_assignments", items, path: "/role_assignments"))
        }
    }

    func registerUsers(on router: Router<BasicRequestContext>) {
        router.get("/v3/users") { request, _ in
            _ = try await requireAdmin(request)
            let users = try await identity.users(name: request.uri.queryParameters["name"].map(String.init))
            let s = shapes(request)
            return jsonResponse(s.list("users", users.map(s.user), path: "/users"))
        }
        router.post("/v3/users") { request, _ in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("user", in: "the request")
            guard let name = try body.string("name", in: "user") else {
                throw CloudError.badRequest("Expecting to find name in user.")
            }
            if let domain = try body.string("domain_id", in: "user"), domain != Domain.defaultID {
                throw CloudError.badRequest("Only the default domain exists; domain_id must be \(Domain.defaultID).")
            }
            let user = try await identity.createUser(
                name: name, password: try body.string("password", in: "user"),
                defaultProjectID: try body.string("default_project_id", in: "user"),
                email: try body.string("email", in: "user"),
                description: try body.string("description", in: "user") ?? "",
                enabled: try body.bool("enabled", in: "user") ?? true)
            return jsonResponse(["user": shapes(request).user(user)], status: 201)
        }
        router.get("/v3/users/{id}") { request, context in
            let a = try await authorize(request)
            let id = context.parameters.get("id") ?? ""
            guard a.isAdmin || a.user.id == id else { throw CloudError.forbidden() }
            return jsonResponse(["user": shapes(request).user(try await identity.user(id: id))])
        }
        router.patch("/v3/users/{id}") { request, context in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("user", in: "the request")
            func optionalString(_ key: String) throws(CloudError) -> String?? {
                guard let value = body[key] else { return .none }
                if value.isNull { return .some(nil) }
                guard let s = value.stringValue else { throw .badRequest("user.\(key) must be a string.") }
                return .some(s)
            }
            let user = try await identity.updateUser(
                id: context.parameters.get("id") ?? "", name: try body.string("name", in: "user"),
                password: try body.string("password", in: "user"), enabled: try body.bool("enabled", in: "user"),
                defaultProjectID: try optionalString("default_project_id"), email: try optionalString("email"),
                description: try body.string("description", in: "user"))
            return jsonResponse(["user": shapes(request).user(user)])
        }
        router.delete("/v3/users/{id}") { request, context in
            _ = try await requireAdmin(request)
            try await identity.deleteUser(id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 204)
        }
        router.post("/v3/users/{id}/password") { request, context in
            let a = try await authorize(request)
            let id = context.parameters.get("id") ?? ""
            guard a.user.id == id else { throw CloudError.forbidden("You can only change your own password.") }
            var request = request
            let body = try await request.jsonObject().requiredObject("user", in: "the request")
            guard let original = try body.string("original_password", in: "user"),
                let new = try body.string("password", in: "user")
            else { throw CloudError.badRequest("Expecting to find original_password and password in user.") }
            guard let hash = a.user.passwordHash, await PasswordHash.verify(original, hash: hash) else {
                throw CloudError.unauthorized("The original password is not correct.")
            }
            _ = try await identity.updateUser(
                id: id, name: nil, password: new, enabled: nil, defaultProjectID: .none, email: .none, description: nil)
            return emptyResponse(status: 204)
        }
        router.get("/v3/users/{id}/projects") { request, context in
            let a = try await authorize(request)
            let id = context.parameters.get("id") ?? ""
            guard a.isAdmin || a.user.id == id else { throw CloudError.forbidden() }
            _ = try await identity.user(id: id)
            let projects = try await identity.projects(ofUser: id)
            let s = shapes(request)
            return jsonResponse(s.list("projects", projects.map(s.project), path: "/users/\(id)/projects"))
        }
    }

    func registerRoles(on router: Router<BasicRequestContext>) {
        router.get("/v3/roles") { request, _ in
            _ = try await requireAdmin(request)
            let roles = try await identity.roles(name: request.uri.queryParameters["name"].map(String.init))
            let s = shapes(request)
            return jsonResponse(s.list("roles", roles.map(s.role), path: "/roles"))
        }
        router.post("/v3/roles") { request, _ in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("role", in: "the request")
            guard let name = try body.string("name", in: "role") else {
                throw CloudError.badRequest("Expecting to find name in role.")
            }
            let role = try await identity.createRole(
                name: name, description: try body.string("description", in: "role") ?? "")
            return jsonResponse(["role": shapes(request).role(role)], status: 201)
        }
        router.get("/v3/roles/{id}") { request, context in
            _ = try await requireAdmin(request)
            return jsonResponse(["role": shapes(request).role(try await identity.role(id: context.parameters.get("id") ?? ""))])
        }
        router.patch("/v3/roles/{id}") { request, context in
            _ = try await requireAdmin(request)
            var request = request
            let body = try await request.jsonObject().requiredObject("role", in: "the request")
            let role = try await identity.updateRole(
                id: context.parameters.get("id") ?? "", name: try body.string("name", in: "role"),
                description: try body.string("description", in: "role"))
            return jsonResponse(["role": shapes(request).role(role)])
        }
        router.delete("/v3/roles/{id}") { request, context in
            _ = try await requireAdmin(request)
            try await identity.deleteRole(id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 204)
        }
    }
}
