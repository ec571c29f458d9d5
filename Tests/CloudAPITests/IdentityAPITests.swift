import CloudAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing

@Suite("Keystone v3 in-process", .serialized)
struct IdentityAPITests {
    @Test("version discovery at / and /v3, a request id on every response", arguments: Backend.all)
    func discovery(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            let root = try await client.execute(uri: "/", method: .get)
            #expect(root.status.code == 300)
            #expect(try body(root)["versions"]?["values"]?.arrayValue?.first?["id"] == "v3.14")
            #expect(root.headers[xRequestID]?.hasPrefix("req-") == true)
            let v3 = try await client.execute(uri: "/v3", method: .get)
            #expect(v3.status == .ok)
            #expect(try body(v3)["version"]?["status"] == "stable")
            let missing = try await client.execute(uri: "/v3/nothing-here", method: .get)
            #expect(missing.status == .notFound)
            #expect(try body(missing)["error"]?["code"] == 404)
            #expect(missing.headers[xRequestID] != nil)
        }
    }

    @Test("password auth scoped by name: 201, X-Subject-Token, roles, catalog", arguments: Backend.all)
    func passwordScoped(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            let response = try await issue(client, passwordAuth(user: "admin", password: "secret-admin", project: "admin"))
            #expect(response.status == .created)
            let secret = try #require(response.headers[xSubjectToken])
            #expect(secret.count >= 43)
            let token = try #require(try body(response)["token"])
            #expect(token["project"]?["name"] == "admin")
            #expect(token["user"]?["name"] == "admin")
            #expect(token["methods"] == ["password"])
            let roles = Set(token["roles"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? [])
            #expect(roles == ["admin", "member", "reader"])
            let catalog = try #require(token["catalog"]?.arrayValue)
            #expect(Set(catalog.compactMap { $0["type"]?.stringValue }) == ["identity", "object-store", "image", "volumev3"])
            let identity = try #require(catalog.first { $0["type"] == "identity" })
            let endpoints = identity["endpoints"]?.arrayValue ?? []
            #expect(Set(endpoints.compactMap { $0["interface"]?.stringValue }) == ["public", "internal", "admin"])
            #expect(endpoints.allSatisfy { $0["region_id"] == "RegionOne" })
            // ?nocatalog
            let bare = try await client.execute(
                uri: "/v3/auth/tokens?nocatalog", method: .post,
                body: json(passwordAuth(user: "admin", password: "secret-admin", project: "admin")))
            #expect(try body(bare)["token"]?["catalog"] == nil)
        }
    }

    @Test("user id and project id; unscoped; the default project when no scope", arguments: Backend.all)
    func idsAndScopes(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let admin = try await harness.identity.user(idOrName: "admin")
            let project = try await harness.identity.project(idOrName: "admin")
            let byID = try await issue(
                client,
                [
                    "auth": [
                        "identity": [
                            "methods": ["password"],
                            "password": ["user": ["id": .string(admin.id), "password": "secret-admin"]],
                        ],
                        "scope": ["project": ["id": .string(project.id)]],
                    ]
                ])
            #expect(byID.status == .created)
            #expect(try body(byID)["token"]?["project"]?["id"] == .string(project.id))
            let unscoped = try await issue(
                client,
                [
                    "auth": [
                        "identity": [
                            "methods": ["password"],
                            "password": ["user": ["id": .string(admin.id), "password": "secret-admin"]],
                        ],
                        "scope": "unscoped",
                    ]
                ])
            #expect(unscoped.status == .created)
            #expect(try body(unscoped)["token"]?["project"] == nil)
            #expect(try body(unscoped)["token"]?["catalog"] == nil)
            let implicit = try await issue(client, passwordAuth(user: "admin", password: "secret-admin"))
            #expect(try body(implicit)["token"]?["project"]?["name"] == "admin")
        }
    }

    @Test("bad credentials are 401 with Keystone's error body; malformed JSON is 400", arguments: Backend.all)
    func badInput(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            for request in [
                passwordAuth(user: "admin", password: "wrong", project: "admin"),
                passwordAuth(user: "nobody", password: "secret-admin", project: "admin"),
                passwordAuth(user: "admin", password: "secret-admin", project: "no-such-project"),
            ] {
                let response = try await issue(client, request)
                #expect(response.status == .unauthorized)
                let error = try body(response)["error"]
                #expect(error?["code"] == 401)
                #expect(error?["title"] == "Unauthorized")
                #expect(response.headers[xSubjectToken] == nil)
            }
            let malformed = try await client.execute(
                uri: "/v3/auth/tokens", method: .post, body: ByteBuffer(string: "{\"auth\": "))
            #expect(malformed.status == .badRequest)
            #expect(try body(malformed)["error"]?["code"] == 400)
            let noIdentity = try await issue(client, ["auth": [:]])
            #expect(noIdentity.status == .badRequest)
            let wrongType = try await issue(client, ["auth": ["identity": ["methods": "password"]]])
            #expect(wrongType.status == .badRequest)
        }
    }

    @Test("validate, HEAD, revoke; a revoked token is 401 and 404 as a subject", arguments: Backend.all)
    func validateAndRevoke(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            let token = try await adminToken(client)
            let get = try await client.execute(
                uri: "/v3/auth/tokens", method: .get, headers: [xAuthToken: token, xSubjectToken: token])
            #expect(get.status == .ok)
            #expect(try body(get)["token"]?["project"]?["name"] == "admin")
            let head = try await client.execute(
                uri: "/v3/auth/tokens", method: .head, headers: [xAuthToken: token, xSubjectToken: token])
            #expect(head.status == .ok)
            let other = try await adminToken(client)
            let delete = try await client.execute(
                uri: "/v3/auth/tokens", method: .delete, headers: [xAuthToken: other, xSubjectToken: token])
            #expect(delete.status == .noContent)
            let after = try await client.execute(
                uri: "/v3/auth/tokens", method: .get, headers: [xAuthToken: other, xSubjectToken: token])
            #expect(after.status == .notFound)
            let use = try await client.execute(uri: "/v3/projects", method: .get, headers: [xAuthToken: token])
            #expect(use.status == .unauthorized)
            let none = try await client.execute(uri: "/v3/projects", method: .get)
            #expect(none.status == .unauthorized)
        }
    }

    @Test("tokens expire after an hour", arguments: Backend.all)
    func expiry(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let response = try await issue(client, passwordAuth(user: "admin", password: "secret-admin", project: "admin"))
            let expires = try #require(try body(response)["token"]?["expires_at"]?.stringValue)
            let issued = try #require(try body(response)["token"]?["issued_at"]?.stringValue)
            #expect(expires.hasSuffix("Z") && issued.count == expires.count)
            // The test clock runs with the real one: 10 s of slack for a loaded machine.
            harness.clock.advance(seconds: 3590)
            #expect(try await client.execute(uri: "/v3/projects", method: .get, headers: [xAuthToken: token]).status == .ok)
            harness.clock.advance(seconds: 20)
            #expect(
                try await client.execute(uri: "/v3/projects", method: .get, headers: [xAuthToken: token]).status
                    == .unauthorized)
        }
    }

    @Test("token method rescoping keeps the expiry; revoking the original revokes the rescoped", arguments: Backend.all)
    func rescope(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let admin = try await harness.identity.user(idOrName: "admin")
            let unscoped = try await issue(
                client,
                [
                    "auth": [
                        "identity": [
                            "methods": ["password"],
                            "password": ["user": ["id": .string(admin.id), "password": "secret-admin"]],
                        ],
                        "scope": "unscoped",
                    ]
                ])
            let first = try #require(unscoped.headers[xSubjectToken])
            let firstExpiry = try body(unscoped)["token"]?["expires_at"]
            let rescoped = try await issue(
                client,
                [
                    "auth": [
                        "identity": ["methods": ["token"], "token": ["id": .string(first)]],
                        "scope": ["project": ["name": "admin", "domain": ["id": "default"]]],
                    ]
                ])
            #expect(rescoped.status == .created)
            let second = try #require(rescoped.headers[xSubjectToken])
            let token = try body(rescoped)["token"]
            #expect(token?["project"]?["name"] == "admin")
            #expect(token?["expires_at"] == firstExpiry)
            #expect(token?["audit_ids"]?.arrayValue?.count == 2)
            try await harness.identity.revoke(first)
            #expect(try await harness.identity.validate(second) == nil)
        }
    }

    @Test("admin CRUD: project, user, role assignment; the new user logs in; members get 403", arguments: Backend.all)
    func adminCRUD(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            let admin = try await adminToken(client)
            let h: HTTPFields = [xAuthToken: admin, .contentType: "application/json"]
            let created = try await client.execute(
                uri: "/v3/projects", method: .post, headers: h,
                body: json(["project": ["name": "demo", "description": "a demo"]]))
            #expect(created.status == .created)
            let projectID = try #require(try body(created)["project"]?["id"]?.stringValue)
            let duplicate = try await client.execute(
                uri: "/v3/projects", method: .post, headers: h, body: json(["project": ["name": "demo"]]))
            #expect(duplicate.status == .conflict)
            let user = try await client.execute(
                uri: "/v3/users", method: .post, headers: h,
                body: json(["user": ["name": "alice", "password": "alice-pw", "default_project_id": .string(projectID)]]))
            #expect(user.status == .created)
            let userJSON = try body(user)["user"]
            #expect(userJSON?["password"] == nil && userJSON?["password_hash"] == nil)
            let userID = try #require(userJSON?["id"]?.stringValue)
            let roles = try await client.execute(uri: "/v3/roles?name=member", method: .get, headers: h)
            let memberID = try #require(try body(roles)["roles"]?.arrayValue?.first?["id"]?.stringValue)
            // Not a member yet: cannot scope to demo.
            #expect(try await issue(client, passwordAuth(user: "alice", password: "alice-pw", project: "demo")).status == .unauthorized)
            let put = try await client.execute(
                uri: "/v3/projects/\(projectID)/users/\(userID)/roles/\(memberID)", method: .put, headers: h)
            #expect(put.status == .noContent)
            let check = try await client.execute(
                uri: "/v3/projects/\(projectID)/users/\(userID)/roles/\(memberID)", method: .head, headers: h)
            #expect(check.status == .noContent)
            let assignments = try await client.execute(
                uri: "/v3/role_assignments?user.id=\(userID)&include_names", method: .get, headers: h)
            let first = try body(assignments)["role_assignments"]?.arrayValue?.first
            #expect(first?["scope"]?["project"]?["name"] == "demo")
            #expect(first?["role"]?["name"] == "member")
            let alice = try await issue(client, passwordAuth(user: "alice", password: "alice-pw", project: "demo"))
            #expect(alice.status == .created)
            let aliceToken = try #require(alice.headers[xSubjectToken])
            #expect(Set(try body(alice)["token"]?["roles"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []) == ["member", "reader"])
            let forbidden = try await client.execute(
                uri: "/v3/projects", method: .post, headers: [xAuthToken: aliceToken],
                body: json(["project": ["name": "mine"]]))
            #expect(forbidden.status == .forbidden)
            #expect(try body(forbidden)["error"]?["code"] == 403)
            let own = try await client.execute(
                uri: "/v3/users/\(userID)/projects", method: .get, headers: [xAuthToken: aliceToken])
            #expect(try body(own)["projects"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["demo"])
            let authProjects = try await client.execute(
                uri: "/v3/auth/projects", method: .get, headers: [xAuthToken: aliceToken])
            #expect(try body(authProjects)["projects"]?.arrayValue?.count == 1)
            // Removing the role invalidates alice's project token at once.
            let remove = try await client.execute(
                uri: "/v3/projects/\(projectID)/users/\(userID)/roles/\(memberID)", method: .delete, headers: h)
            #expect(remove.status == .noContent)
            #expect(
                try await client.execute(uri: "/v3/auth/projects", method: .get, headers: [xAuthToken: aliceToken]).status
                    == .unauthorized)
            let list = try await client.execute(uri: "/v3/projects", method: .get, headers: h)
            #expect(Set(try body(list)["projects"]?.arrayValue?.compactMap { $0["name"]?.stringValue } ?? []) == ["admin", "demo"])
            let patched = try await client.execute(
                uri: "/v3/users/\(userID)", method: .patch, headers: h, body: json(["user": ["enabled": false]]))
            #expect(try body(patched)["user"]?["enabled"] == false)
            #expect(try await client.execute(uri: "/v3/users/\(userID)", method: .delete, headers: h).status == .noContent)
            #expect(try await client.execute(uri: "/v3/users/\(userID)", method: .get, headers: h).status == .notFound)
            #expect(try await client.execute(uri: "/v3/projects/\(projectID)", method: .delete, headers: h).status == .noContent)
            let builtin = try await client.execute(uri: "/v3/roles/\(memberID)", method: .delete, headers: h)
            #expect(builtin.status == .forbidden)
        }
    }

    @Test("Keystone v2.0 POST /v2.0/tokens with password and with token", arguments: Backend.all)
    func v2(backend: Backend) async throws {
        try await withHarness(backend) { _, client in
            let response = try await client.execute(
                uri: "/v2.0/tokens", method: .post,
                body: json(["auth": ["passwordCredentials": ["username": "admin", "password": "secret-admin"], "tenantName": "admin"]]))
            #expect(response.status == .ok)
            let access = try body(response)["access"]
            let token = try #require(access?["token"]?["id"]?.stringValue)
            #expect(access?["token"]?["tenant"]?["name"] == "admin")
            #expect(access?["serviceCatalog"]?.arrayValue?.first?["endpoints"]?.arrayValue?.first?["publicURL"] != nil)
            let again = try await client.execute(
                uri: "/v2.0/tokens", method: .post, body: json(["auth": ["token": ["id": .string(token)], "tenantName": "admin"]]))
            #expect(again.status == .ok)
            let bad = try await client.execute(
                uri: "/v2.0/tokens", method: .post,
                body: json(["auth": ["passwordCredentials": ["username": "admin", "password": "nope"]]]))
            #expect(bad.status == .unauthorized)
        }
    }
}
