import BlockStore
import CloudAPI
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Sends one Swift request with `token`.
func swiftCall(
    _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ path: String, token: String?,
    headers: HTTPFields = [:], body: [UInt8]? = nil
) async throws -> TestResponse {
    var fields = headers
    if let token { fields[xAuthToken] = token }
    return try await client.execute(
        uri: path, method: method, headers: fields, body: body.map { ByteBuffer(bytes: $0) })
}

func text(_ response: TestResponse) -> String { String(buffer: response.body) }

func md5Hex(_ bytes: [UInt8]) -> String { Insecure.MD5.hash(data: bytes).map { String(format: "%02x", $0) }.joined() }

func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    return (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
}

/// A project `name` with a user `name` holding `role` on it; returns the project id and a token.
func projectMember(_ harness: Harness, _ client: any TestClientProtocol, name: String, role: String = "member")
    async throws -> (String, String)
{
    let project = try await harness.identity.createProject(name: name)
    let user = try await harness.identity.createUser(name: name, password: "pw-\(name)-123")
    let roleID = try await harness.identity.role(idOrName: role).id
    try await harness.identity.assignRole(userID: user.id, projectID: project.id, roleID: roleID)
    let response = try await issue(client, passwordAuth(user: name, password: "pw-\(name)-123", project: name))
    #expect(response.status == .created)
    return (project.id, try #require(response.headers[xSubjectToken]))
}

@Suite("Swift object storage in-process", .serialized)
struct ObjectStorageAPITests {
    @Test("containers and objects: create, metadata, listings, ETag, delete", arguments: Backend.all)
    func basics(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let project = try await harness.identity.project(idOrName: "admin").id
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/photos", token: token).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(account)/photos", token: token).status.code == 202)
            let data = Array("hello, world\n".utf8)
            let put = try await swiftCall(
                client, .put, "\(account)/photos/a/b.txt", token: token,
                headers: [.contentType: "text/plain", HTTPField.Name("X-Object-Meta-Color")!: "blue"], body: data)
            #expect(put.status.code == 201)
            #expect(put.headers[.eTag] == md5Hex(data))
            for name in ["a/c.txt", "b.txt", "c/d/e", "zeta"] {
                #expect(try await swiftCall(client, .put, "\(account)/photos/\(name)", token: token, body: [1, 2, 3]).status.code == 201)
            }
            let get = try await swiftCall(client, .get, "\(account)/photos/a/b.txt", token: token)
            #expect(get.status == .ok)
            #expect(Array(get.body.readableBytesView) == data)
            #expect(get.headers[.contentType] == "text/plain")
            #expect(get.headers[HTTPField.Name("X-Object-Meta-Color")!] == "blue")
            #expect(get.headers[.eTag] == md5Hex(data))
            let head = try await swiftCall(client, .head, "\(account)/photos/a/b.txt", token: token)
            #expect(head.status == .ok)
            #expect(head.headers[.contentLength] == "\(data.count)")
            // POST replaces the object's metadata.
            let post = try await swiftCall(
                client, .post, "\(account)/photos/a/b.txt", token: token,
                headers: [HTTPField.Name("X-Object-Meta-Size")!: "large"])
            #expect(post.status.code == 202)
            let after = try await swiftCall(client, .head, "\(account)/photos/a/b.txt", token: token)
            #expect(after.headers[HTTPField.Name("X-Object-Meta-Size")!] == "large")
            #expect(after.headers[HTTPField.Name("X-Object-Meta-Color")!] == nil)
            // Listings.
            let plain = try await swiftCall(client, .get, "\(account)/photos", token: token)
            #expect(text(plain) == "a/b.txt\na/c.txt\nb.txt\nc/d/e\nzeta\n")
            #expect(plain.headers[HTTPField.Name("X-Container-Object-Count")!] == "5")
            #expect(plain.headers[HTTPField.Name("X-Container-Bytes-Used")!] == "\(data.count + 12)")
            let delimited = try await swiftCall(client, .get, "\(account)/photos?delimiter=/", token: token)
            #expect(text(delimited) == "a/\nb.txt\nc/\nzeta\n")
            // Clients page with the last subdir as marker: it is not repeated.
            let afterSubdir = try await swiftCall(client, .get, "\(account)/photos?delimiter=/&marker=a/", token: token)
            #expect(text(afterSubdir) == "b.txt\nc/\nzeta\n")
            let limited = try await swiftCall(client, .get, "\(account)/photos?delimiter=/&limit=2", token: token)
            #expect(text(limited) == "a/\nb.txt\n")
            let prefixed = try await swiftCall(client, .get, "\(account)/photos?prefix=a/&delimiter=/", token: token)
            #expect(text(prefixed) == "a/b.txt\na/c.txt\n")
            let paged = try await swiftCall(client, .get, "\(account)/photos?limit=2&marker=a/c.txt", token: token)
            #expect(text(paged) == "b.txt\nc/d/e\n")
            let ended = try await swiftCall(client, .get, "\(account)/photos?end_marker=b.txt", token: token)
            #expect(text(ended) == "a/b.txt\na/c.txt\n")
            let reversed = try await swiftCall(client, .get, "\(account)/photos?reverse=true&limit=2", token: token)
            #expect(text(reversed) == "zeta\nc/d/e\n")
            let reversedDelimited = try await swiftCall(client, .get, "\(account)/photos?reverse=on&delimiter=/", token: token)
            #expect(text(reversedDelimited) == "zeta\nc/\nb.txt\na/\n")
            let listed = try await swiftCall(client, .get, "\(account)/photos?format=json&prefix=a/", token: token)
            let entries = try body(listed).arrayValue ?? []
            #expect(entries.count == 2)
            #expect(entries.first?["name"] == "a/b.txt")
            #expect(entries.first?["hash"] == .string(md5Hex(data)))
            #expect(entries.first?["bytes"] == .int(data.count))
            let subdirs = try await swiftCall(client, .get, "\(account)/photos?format=json&delimiter=/", token: token)
            #expect(try body(subdirs).arrayValue?.first == ["subdir": "a/"])
            let none = try await swiftCall(client, .get, "\(account)/photos?prefix=nothing", token: token)
            #expect(none.status == .noContent)
            let noneJSON = try await swiftCall(client, .get, "\(account)/photos?prefix=nothing&format=json", token: token)
            #expect(noneJSON.status == .ok)
            #expect(try body(noneJSON) == [])
            // Account.
            #expect(try await swiftCall(client, .put, "\(account)/empty", token: token).status.code == 201)
            let accountHead = try await swiftCall(client, .head, account, token: token)
            #expect(accountHead.status == .noContent)
            #expect(accountHead.headers[HTTPField.Name("X-Account-Container-Count")!] == "2")
            #expect(accountHead.headers[HTTPField.Name("X-Account-Object-Count")!] == "5")
            #expect(accountHead.headers[HTTPField.Name("X-Account-Bytes-Used")!] == "\(data.count + 12)")
            let accountList = try await swiftCall(client, .get, "\(account)?format=json", token: token)
            let containers = try body(accountList).arrayValue ?? []
            #expect(containers.map { $0["name"] } == ["empty", "photos"])
            #expect(containers.last?["count"] == 5)
            #expect(text(try await swiftCall(client, .get, "/v1/\(project)", token: token)) == "empty\nphotos\n")
            // Container metadata.
            let meta = try await swiftCall(
                client, .post, "\(account)/photos", token: token, headers: [HTTPField.Name("X-Container-Meta-Owner")!: "me"])
            #expect(meta.status == .noContent)
            let containerHead = try await swiftCall(client, .head, "\(account)/photos", token: token)
            #expect(containerHead.headers[HTTPField.Name("X-Container-Meta-Owner")!] == "me")
            let removed = try await swiftCall(
                client, .post, "\(account)/photos", token: token, headers: [HTTPField.Name("X-Remove-Container-Meta-Owner")!: "x"])
            #expect(removed.status == .noContent)
            #expect(try await swiftCall(client, .head, "\(account)/photos", token: token).headers[HTTPField.Name("X-Container-Meta-Owner")!] == nil)
            // Delete: a container with objects is 409; objects go, then it does.
            #expect(try await swiftCall(client, .delete, "\(account)/photos", token: token).status == .conflict)
            for name in ["a/b.txt", "a/c.txt", "b.txt", "c/d/e", "zeta"] {
                #expect(try await swiftCall(client, .delete, "\(account)/photos/\(name)", token: token).status == .noContent)
            }
            #expect(try await swiftCall(client, .delete, "\(account)/photos/zeta", token: token).status == .notFound)
            #expect(try await swiftCall(client, .get, "\(account)/photos/zeta", token: token).status == .notFound)
            #expect(try await swiftCall(client, .delete, "\(account)/photos", token: token).status == .noContent)
            #expect(try await swiftCall(client, .head, "\(account)/photos", token: token).status == .notFound)
            #expect(try await swiftCall(client, .put, "\(account)/photos/x", token: token, body: [1]).status == .notFound)
            // Every object's map is gone from the store.
            #expect(try harness.objects.store.list().isEmpty)
            let info = try await client.execute(uri: "/info", method: .get)
            #expect(try body(info)["swift"]?["max_file_size"] == .int(5 * 1024 * 1024 * 1024 + 2))
        }
    }

    @Test("headers stored with an object, empty metadata, X-Delete-At/After, conditional GET and PUT", arguments: Backend.all)
    func objectHeadersExpiryAndConditions(backend: Backend) async throws {
        @Sendable func name(_ text: String) -> HTTPField.Name { HTTPField.Name(text)! }
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let project = try await harness.identity.project(idOrName: "admin").id
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/c", token: token).status.code == 201)
            let data = Array("some bytes".utf8)
            let put = try await swiftCall(
                client, .put, "\(account)/c/o", token: token,
                headers: [
                    name("Content-Disposition"): "attachment; filename=o.txt", name("Content-Encoding"): "gzip",
                    name("X-Object-Meta-Empty"): "", name("X-Object-Meta-Kept"): "yes",
                ], body: data)
            #expect(put.status.code == 201)
            for method in [HTTPRequest.Method.get, .head] {
                let got = try await swiftCall(client, method, "\(account)/c/o", token: token)
                #expect(got.headers[name("Content-Disposition")] == "attachment; filename=o.txt")
                #expect(got.headers[name("Content-Encoding")] == "gzip")
                #expect(got.headers[name("X-Object-Meta-Empty")] == "")
                #expect(got.headers[name("X-Object-Meta-Kept")] == "yes")
                #expect(got.headers[name("X-Delete-At")] == nil)
            }
            // A copy keeps them; a POST replaces them all.
            let copy = try await swiftCall(
                client, .put, "\(account)/c/copy", token: token, headers: [name("X-Copy-From"): "c/o"])
            #expect(copy.status.code == 201)
            #expect(copy.headers[name("X-Object-Meta-Kept")] == "yes" && copy.headers[name("X-Object-Meta-Empty")] == "")
            #expect(try await swiftCall(client, .head, "\(account)/c/copy", token: token).headers[name("Content-Encoding")] == "gzip")

            // XML listings, Swift's shape.
            let xml = try await swiftCall(client, .get, "\(account)/c?format=xml&prefix=co", token: token)
            #expect(xml.headers[.contentType] == "application/xml; charset=utf-8")
            #expect(text(xml).hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"c\"><object><name>copy</name><hash>\(md5Hex(data))</hash><bytes>\(data.count)</bytes><content_type>application/octet-stream</content_type><last_modified>20"))
            #expect(text(xml).hasSuffix("</last_modified></object></container>\n"))
            let accountXML = text(try await swiftCall(client, .get, "\(account)?format=xml", token: token))
            #expect(accountXML.hasPrefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<account name=\"AUTH_\(project)\"><container><name>c</name><count>2</count>"))
            #expect(try await swiftCall(client, .put, "\(account)/c/x%26y/z", token: token, body: [1]).status.code == 201)
            let subdirs = text(try await swiftCall(client, .get, "\(account)/c?format=xml&delimiter=/&prefix=x", token: token))
            #expect(subdirs == "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<container name=\"c\"><subdir name=\"x&amp;y/\"><name>x&amp;y/</name></subdir></container>\n")
            #expect(try await swiftCall(client, .delete, "\(account)/c/x%26y/z", token: token).status.code == 204)
            let post = try await swiftCall(
                client, .post, "\(account)/c/copy", token: token, headers: [name("Content-Language"): "el"])
            #expect(post.status.code == 202)
            let posted = try await swiftCall(client, .head, "\(account)/c/copy", token: token)
            #expect(posted.headers[name("Content-Language")] == "el")
            #expect(posted.headers[name("Content-Encoding")] == nil)
            #expect(posted.headers[name("X-Object-Meta-Kept")] == nil)

            // Conditional GET and HEAD.
            let etag = md5Hex(data)
            let lastModified = try #require(put.headers[.lastModified])
            let cases: [(HTTPField.Name, String, Int)] = [
                (.ifNoneMatch, etag, 304), (.ifNoneMatch, "\"\(etag)\"", 304), (.ifNoneMatch, "*", 304),
                (.ifNoneMatch, md5Hex([1]), 200), (.ifMatch, etag, 200), (.ifMatch, md5Hex([1]), 412),
                (.ifModifiedSince, lastModified, 304), (.ifModifiedSince, "Sat, 01 Jan 2000 00:00:00 GMT", 200),
                (.ifUnmodifiedSince, "Sat, 01 Jan 2000 00:00:00 GMT", 412), (.ifUnmodifiedSince, lastModified, 200),
            ]
            for (field, value, status) in cases {
                for method in [HTTPRequest.Method.get, .head] {
                    let got = try await swiftCall(client, method, "\(account)/c/o", token: token, headers: [field: value])
                    #expect(got.status.code == status, "\(method) \(field): \(value)")
                    if status == 304 { #expect(got.body.readableBytes == 0 && got.headers[.eTag] == etag) }
                    if status == 200 && method == .get { #expect(Array(got.body.readableBytesView) == data) }
                }
            }
            // PUT with If-None-Match: * creates but never replaces.
            let ifNone: HTTPFields = [.ifNoneMatch: "*"]
            #expect(try await swiftCall(client, .put, "\(account)/c/o", token: token, headers: ifNone, body: [9]).status.code == 412)
            #expect(try await swiftCall(client, .put, "\(account)/c/new", token: token, headers: ifNone, body: [9]).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(account)/c/new", token: token, headers: [.ifNoneMatch: etag], body: [9]).status.code == 400)
            #expect(Array(try await swiftCall(client, .get, "\(account)/c/o", token: token).body.readableBytesView) == data)

            // X-Delete-At / X-Delete-After: bad values are 400; an expired object is gone (404
            // for GET, HEAD, POST, DELETE) and its bytes no longer count.
            let now = Int(Date().timeIntervalSince1970)
            for (field, value) in [(name("X-Delete-At"), "\(now - 10)"), (name("X-Delete-At"), "soon"),
                                   (name("X-Delete-After"), "-1"), (name("X-Delete-After"), "0"), (name("X-Delete-After"), "1.5")] {
                let bad = try await swiftCall(client, .post, "\(account)/c/o", token: token, headers: [field: value])
                #expect(bad.status.code == 400, "\(field): \(value)")
            }
            let later = now + 3600
            #expect(try await swiftCall(client, .post, "\(account)/c/o", token: token, headers: [name("X-Delete-At"): "\(later)"]).status.code == 202)
            #expect(try await swiftCall(client, .get, "\(account)/c/o", token: token).headers[name("X-Delete-At")] == "\(later)")
            // X-Delete-After is returned as X-Delete-At; a copy does not inherit it.
            let hour = try await swiftCall(
                client, .put, "\(account)/c/hour", token: token, headers: [name("X-Delete-After"): "3600"], body: [7])
            #expect(hour.status.code == 201)
            let hourAt = Int(try await swiftCall(client, .head, "\(account)/c/hour", token: token).headers[name("X-Delete-At")] ?? "") ?? 0
            #expect(hourAt >= now + 3600 && hourAt <= Int(Date().timeIntervalSince1970) + 3600)
            #expect(try await swiftCall(client, .put, "\(account)/c/kept", token: token, headers: [name("X-Copy-From"): "c/hour"]).status.code == 201)
            #expect(try await swiftCall(client, .head, "\(account)/c/kept", token: token).headers[name("X-Delete-At")] == nil)
            // An object past its expiry is gone and its bytes no longer count.
            let big = randomBytes(100_000)
            let before = try await swiftCall(client, .head, account, token: token)
            let deadline = Int(Date().timeIntervalSince1970) + 2
            let expiring = try await swiftCall(
                client, .put, "\(account)/c/short", token: token, headers: [name("X-Delete-After"): "1"], body: big)
            #expect(expiring.status.code == 201)
            while Int(Date().timeIntervalSince1970) <= deadline { try await Task.sleep(for: .milliseconds(200)) }
            for method in [HTTPRequest.Method.get, .head, .post, .delete] {
                #expect(try await swiftCall(client, method, "\(account)/c/short", token: token).status.code == 404, "\(method)")
            }
            let after = try await swiftCall(client, .head, account, token: token)
            let bytes = { (r: TestResponse) in Int(r.headers[name("X-Account-Bytes-Used")] ?? "") ?? -1 }
            #expect(bytes(after) == bytes(before))

            // The expirer removes expired objects nobody asked for; listings leave them out before.
            let quiet = Int(Date().timeIntervalSince1970) + 2
            #expect(try await swiftCall(client, .put, "\(account)/c/quiet", token: token, headers: [name("X-Delete-At"): "\(quiet)"], body: big).status.code == 201)
            #expect(text(try await swiftCall(client, .get, "\(account)/c?prefix=qu", token: token)) == "quiet\n")
            #expect(try await harness.objects.removeExpiredObjects() == 0)
            while Int(Date().timeIntervalSince1970) <= quiet { try await Task.sleep(for: .milliseconds(200)) }
            #expect(try await swiftCall(client, .get, "\(account)/c?prefix=qu", token: token).status.code == 204)
            #expect(try await harness.objects.removeExpiredObjects() == 1)
            #expect(bytes(try await swiftCall(client, .head, account, token: token)) == bytes(before))
            #expect(try await harness.objects.removeExpiredObjects() == 0)

            // POST with X-Object-Manifest makes the object a dynamic large object.
            for part in ["1", "2"] {
                #expect(try await swiftCall(client, .put, "\(account)/c/seg/\(part)", token: token, body: Array(part.utf8)).status.code == 201)
            }
            #expect(try await swiftCall(client, .post, "\(account)/c/new", token: token, headers: [name("X-Object-Manifest"): "c/seg/"]).status.code == 202)
            let manifest = try await swiftCall(client, .get, "\(account)/c/new", token: token)
            #expect(text(manifest) == "12")
            #expect(manifest.headers[name("X-Object-Manifest")] == "c/seg/")
        }
    }

    @Test("account quotas: only a ResellerAdmin sets them; bytes (the project's quota) and object count", arguments: Backend.all)
    func accountQuotasAndResellerAdmin(backend: Backend) async throws {
        @Sendable func name(_ text: String) -> HTTPField.Name { HTTPField.Name(text)! }
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "operator")
            _ = try await harness.identity.createRole(name: "ResellerAdmin")
            let (_, reseller) = try await projectMember(harness, client, name: "reseller", role: "ResellerAdmin")
            let (_, stranger) = try await projectMember(harness, client, name: "stranger")
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/c", token: token).status.code == 201)
            let quotaHeaders: HTTPFields = [name("X-Account-Meta-Quota-Bytes"): "20", name("X-Account-Quota-Count"): "2"]
            // The account's own member may not set its quota; another project's member may not
            // even read the account; a reseller admin may do both.
            #expect(try await swiftCall(client, .post, account, token: token, headers: quotaHeaders).status.code == 403)
            #expect(try await swiftCall(client, .get, account, token: stranger).status.code == 403)
            #expect(try await swiftCall(client, .post, account, token: reseller, headers: [name("X-Account-Meta-Quota-Bytes"): "-1"]).status.code == 400)
            #expect(try await swiftCall(client, .post, account, token: reseller, headers: quotaHeaders).status.code == 204)
            let head = try await swiftCall(client, .head, account, token: token)
            #expect(head.headers[name("X-Account-Meta-Quota-Bytes")] == "20")
            #expect(head.headers[name("X-Account-Quota-Count")] == "2")
            #expect(try await harness.objects.quotas.usage(project: project, .storageBytes).limit == 20)
            // Bytes: 21 is over; 10 + 10 fit; an object over the count is refused too.
            #expect(try await swiftCall(client, .put, "\(account)/c/big", token: token, body: randomBytes(21)).status.code == 413)
            #expect(try await swiftCall(client, .put, "\(account)/c/a", token: token, body: randomBytes(10)).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(account)/c/b", token: token, body: randomBytes(5)).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(account)/c/third", token: token, body: []).status.code == 413)
            // Replacing an object does not add one.
            #expect(try await swiftCall(client, .put, "\(account)/c/b", token: token, body: randomBytes(10)).status.code == 201)
            let usage = try await swiftCall(client, .head, account, token: token)
            #expect(usage.headers[name("X-Account-Object-Count")] == "2" && usage.headers[name("X-Account-Bytes-Used")] == "20")
            // The reseller admin reads and writes the account, and removes the quotas.
            #expect(try await swiftCall(client, .get, "\(account)/c/a", token: reseller).status.code == 200)
            let removal: HTTPFields = [name("X-Remove-Account-Meta-Quota-Bytes"): "x", name("X-Remove-Account-Quota-Count"): "x"]
            #expect(try await swiftCall(client, .post, account, token: reseller, headers: removal).status.code == 204)
            let after = try await swiftCall(client, .head, account, token: token)
            #expect(after.headers[name("X-Account-Meta-Quota-Bytes")] == nil && after.headers[name("X-Account-Quota-Count")] == nil)
            #expect(try await swiftCall(client, .put, "\(account)/c/third", token: token, body: randomBytes(30)).status.code == 201)
        }
    }

    @Test("container ACLs: project:user read and write grants, .r:* and .rlistings, nothing else", arguments: Backend.all)
    func containerACLs(backend: Backend) async throws {
        @Sendable func name(_ text: String) -> HTTPField.Name { HTTPField.Name(text)! }
        try await withHarness(backend) { harness, client in
            let (project, owner) = try await projectMember(harness, client, name: "owner")
            let (friendProject, friend) = try await projectMember(harness, client, name: "friend")
            let (_, stranger) = try await projectMember(harness, client, name: "stranger")
            let friendUser = try await harness.identity.user(idOrName: "friend").id
            let account = "/v1/AUTH_\(project)"
            for c in ["shared", "private", "drop"] {
                #expect(try await swiftCall(client, .put, "\(account)/\(c)", token: owner).status.code == 201)
                #expect(try await swiftCall(client, .put, "\(account)/\(c)/doc", token: owner, body: Array("doc in \(c)".utf8)).status.code == 201)
            }
            #expect(try await swiftCall(client, .put, "\(account)/shared/seg", token: owner, headers: [name("X-Object-Manifest"): "private/"]).status.code == 201)
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Container-Read"): ".r:"]).status.code == 400)
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Container-Read"): "\(friendProject):\(friendUser)"]).status.code == 204)
            #expect(try await swiftCall(client, .post, "\(account)/drop", token: owner, headers: [name("X-Container-Write"): "friend:*"]).status.code == 204)
            let ownerView = try await swiftCall(client, .head, "\(account)/shared", token: owner)
            #expect(ownerView.headers[name("X-Container-Read")] == "\(friendProject):\(friendUser)")

            // The read grant: objects and the listing of that container, nothing else; no ACLs shown.
            #expect(text(try await swiftCall(client, .get, "\(account)/shared/doc", token: friend)) == "doc in shared")
            #expect(try await swiftCall(client, .head, "\(account)/shared/doc", token: friend).status.code == 200)
            let listing = try await swiftCall(client, .get, "\(account)/shared", token: friend)
            #expect(text(listing) == "doc\nseg\n")
            #expect(listing.headers[name("X-Container-Read")] == nil)
            for (method, path) in [(HTTPRequest.Method.put, "shared/new"), (.delete, "shared/doc"), (.post, "shared/doc"),
                                   (.get, "shared/seg"), (.get, "private/doc"), (.get, "nosuch/doc"), (.post, "shared"),
                                   (.delete, "shared"), (.put, "other")] {
                #expect(try await swiftCall(client, method, "\(account)/\(path)", token: friend, body: method == .put ? [1] : nil).status.code == 403,
                        "\(method) \(path)")
            }
            #expect(try await swiftCall(client, .get, account, token: friend).status.code == 403)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc?hashmap&format=json", token: friend).status.code == 403)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: stranger).status.code == 403)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: nil).status.code == 401)

            // The write grant (by project name, any user): PUT, POST, DELETE, but no reads, copies or manifests.
            #expect(try await swiftCall(client, .put, "\(account)/drop/in", token: friend, body: [1, 2]).status.code == 201)
            #expect(try await swiftCall(client, .post, "\(account)/drop/in", token: friend, headers: [name("X-Object-Meta-A"): "b"]).status.code == 202)
            #expect(try await swiftCall(client, .get, "\(account)/drop/in", token: friend).status.code == 403)
            #expect(try await swiftCall(client, .put, "\(account)/drop/copy", token: friend, headers: [name("X-Copy-From"): "private/doc"]).status.code == 403)
            #expect(try await swiftCall(client, .put, "\(account)/drop/m", token: friend, headers: [name("X-Object-Manifest"): "private/"]).status.code == 403)
            #expect(try await swiftCall(client, .delete, "\(account)/drop/doc", token: friend).status.code == 204)
            #expect(try await swiftCall(client, .get, "\(account)/drop/in", token: owner).headers[name("X-Object-Meta-A")] == "b")
            #expect(try await swiftCall(client, .put, "\(account)/drop/in", token: stranger, body: [1]).status.code == 403)

            // Public read: objects for anyone; the listing only with .rlistings.
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Container-Read"): ".r:*"]).status.code == 204)
            #expect(text(try await swiftCall(client, .get, "\(account)/shared/doc", token: nil)) == "doc in shared")
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: stranger).status.code == 200)
            #expect(try await swiftCall(client, .get, "\(account)/shared", token: nil).status.code == 401)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: friend).status.code == 200)
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Container-Read"): ".r:*,.rlistings"]).status.code == 204)
            #expect(text(try await swiftCall(client, .get, "\(account)/shared", token: nil)) == "doc\nseg\n")
            #expect(try await swiftCall(client, .put, "\(account)/shared/x", token: nil, body: [1]).status.code == 401)
            // Referrer grants.
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Container-Read"): ".r:.example.org"]).status.code == 204)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: nil, headers: [name("Referer"): "https://www.example.org/page"]).status.code == 200)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: nil, headers: [name("Referer"): "https://example.com/"]).status.code == 401)
            // Removing the ACL ends every grant.
            #expect(try await swiftCall(client, .post, "\(account)/shared", token: owner, headers: [name("X-Remove-Container-Read"): "x"]).status.code == 204)
            #expect(try await swiftCall(client, .get, "\(account)/shared/doc", token: nil, headers: [name("Referer"): "https://www.example.org/page"]).status.code == 401)
            #expect(try await swiftCall(client, .head, "\(account)/shared", token: owner).headers[name("X-Container-Read")] == nil)
        }
    }

    @Test("several blocks, ranges, ETag mismatch 422, copies share every block", arguments: Backend.all)
    func blocksRangesCopies(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let project = try await harness.identity.project(idOrName: "admin").id
            let c = "/v1/AUTH_\(project)/data"
            #expect(try await swiftCall(client, .put, c, token: token).status.code == 201)
            let size = 2 * BlockStore.blockSizeBytes + 12345
            var data = randomBytes(size)
            // A zero block in the middle is never stored.
            for i in BlockStore.blockSizeBytes..<(2 * BlockStore.blockSizeBytes) { data[i] = 0 }
            let put = try await swiftCall(client, .put, "\(c)/big", token: token, body: data)
            #expect(put.status.code == 201)
            #expect(put.headers[.eTag] == md5Hex(data))
            let whole = try await swiftCall(client, .get, "\(c)/big", token: token)
            #expect(whole.headers[.contentLength] == "\(size)")
            #expect(Array(whole.body.readableBytesView) == data)
            let start = BlockStore.blockSizeBytes - 10
            let ranged = try await swiftCall(
                client, .get, "\(c)/big", token: token, headers: [.range: "bytes=\(start)-\(start + 2 * BlockStore.blockSizeBytes)"])
            #expect(ranged.status == .partialContent)
            #expect(Array(ranged.body.readableBytesView) == Array(data[start..<size]))
            #expect(ranged.headers[.contentRange] == "bytes \(start)-\(size - 1)/\(size)")
            let suffix = try await swiftCall(client, .get, "\(c)/big", token: token, headers: [.range: "bytes=-100"])
            #expect(Array(suffix.body.readableBytesView) == Array(data[(size - 100)...]))
            let beyond = try await swiftCall(client, .get, "\(c)/big", token: token, headers: [.range: "bytes=\(size)-"])
            #expect(beyond.status.code == 416)
            let blocks = try harness.objects.store.backend.list(.block, prefix: "").count
            #expect(blocks == 2)
            // ETag mismatch: 422 and nothing stored.
            let bad = try await swiftCall(client, .put, "\(c)/bad", token: token, headers: [.eTag: md5Hex([1])], body: [2])
            #expect(bad.status.code == 422)
            #expect(try await swiftCall(client, .head, "\(c)/bad", token: token).status == .notFound)
            let good = try await swiftCall(client, .put, "\(c)/good", token: token, headers: [.eTag: "\"\(md5Hex([2]))\""], body: [2])
            #expect(good.status.code == 201)
            // Copies: COPY and PUT with X-Copy-From; metadata merged; no new block.
            let copy = try await swiftCall(
                client, HTTPRequest.Method("COPY")!, "\(c)/big", token: token,
                headers: [HTTPField.Name("Destination")!: "data/big-copy", HTTPField.Name("X-Object-Meta-Kind")!: "copy"])
            #expect(copy.status.code == 201)
            let fromHeader = try await swiftCall(
                client, .put, "\(c)/big-2", token: token, headers: [HTTPField.Name("X-Copy-From")!: "/data/big"])
            #expect(fromHeader.status.code == 201)
            #expect(try harness.objects.store.backend.list(.block, prefix: "").count == blocks + 1)  // + "good"
            let copied = try await swiftCall(client, .get, "\(c)/big-copy", token: token)
            #expect(Array(copied.body.readableBytesView) == data)
            #expect(copied.headers[.eTag] == md5Hex(data))
            #expect(copied.headers[HTTPField.Name("X-Object-Meta-Kind")!] == "copy")
            // Deleting the original keeps the copies readable.
            #expect(try await swiftCall(client, .delete, "\(c)/big", token: token).status == .noContent)
            let still = try await swiftCall(client, .get, "\(c)/big-2", token: token, headers: [.range: "bytes=0-9"])
            #expect(Array(still.body.readableBytesView) == Array(data[0..<10]))
            // Overwrite replaces the object and its map.
            #expect(try await swiftCall(client, .put, "\(c)/big-2", token: token, body: [9, 9]).status.code == 201)
            #expect(Array(try await swiftCall(client, .get, "\(c)/big-2", token: token).body.readableBytesView) == [9, 9])
            #expect(try harness.objects.store.list().count == 3)  // good, big-copy, big-2
            // An empty object.
            #expect(try await swiftCall(client, .put, "\(c)/empty", token: token, body: []).status.code == 201)
            let empty = try await swiftCall(client, .get, "\(c)/empty", token: token)
            #expect(empty.status == .ok)
            #expect(empty.headers[.eTag] == md5Hex([]))
            #expect(empty.body.readableBytes == 0)
        }
    }

    @Test("another project's token gets 403 and learns nothing; readers cannot write; 401", arguments: Backend.all)
    func isolation(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let admin = try await adminToken(client)
            let (alice, aliceToken) = try await projectMember(harness, client, name: "alice")
            let (_, bobToken) = try await projectMember(harness, client, name: "bob")
            let (_, readerToken) = try await { () async throws -> (String, String) in
                let user = try await harness.identity.createUser(name: "carol", password: "pw-carol-123")
                let reader = try await harness.identity.role(idOrName: "reader").id
                try await harness.identity.assignRole(userID: user.id, projectID: alice, roleID: reader)
                let r = try await issue(client, passwordAuth(user: "carol", password: "pw-carol-123", project: "alice"))
                return (alice, try #require(r.headers[xSubjectToken]))
            }()
            let a = "/v1/AUTH_\(alice)"
            #expect(try await swiftCall(client, .put, "\(a)/private", token: aliceToken).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(a)/private/secret", token: aliceToken, body: [7]).status.code == 201)
            // Bob: 403 on everything of Alice's, existing or not, and on a made-up account.
            for (method, path) in [
                (HTTPRequest.Method.get, a), (.head, a), (.get, "\(a)/private"), (.get, "\(a)/nothing"),
                (.get, "\(a)/private/secret"), (.get, "\(a)/private/nothing"), (.delete, "\(a)/private/secret"),
                (.put, "\(a)/private/x"), (.post, "\(a)/private"), (.get, "/v1/AUTH_\(UUID().uuidString)"),
                (.get, "/v1/\(alice)/private/secret"),
            ] {
                let r = try await swiftCall(client, method, path, token: bobToken, body: method == .put ? [1] : nil)
                #expect(r.status == .forbidden, "\(method) \(path)")
                #expect(!text(r).contains("secret"))
            }
            // No token or a bad one: 401.
            #expect(try await swiftCall(client, .get, "\(a)/private/secret", token: nil).status == .unauthorized)
            #expect(try await swiftCall(client, .get, "\(a)/private/secret", token: "nope").status == .unauthorized)
            // A reader reads but cannot write.
            #expect(try await swiftCall(client, .get, "\(a)/private/secret", token: readerToken).status == .ok)
            #expect(try await swiftCall(client, .put, "\(a)/private/y", token: readerToken, body: [1]).status == .forbidden)
            // Copying from another project's container is a 403 too (the URL names the account).
            let sneaky = try await swiftCall(
                client, .put, "/v1/AUTH_\(try await harness.identity.project(idOrName: "bob").id)/x", token: bobToken)
            #expect(sneaky.status.code == 201)
            let steal = try await swiftCall(
                client, .put, "/v1/AUTH_\(try await harness.identity.project(idOrName: "bob").id)/x/stolen", token: bobToken,
                headers: [HTTPField.Name("X-Copy-From")!: "private/secret"])
            #expect(steal.status == .notFound)
            // The admin may use any existing account; an unknown one is 404.
            #expect(try await swiftCall(client, .get, "\(a)/private/secret", token: admin).status == .ok)
            #expect(try await swiftCall(client, .get, "/v1/AUTH_\(UUID().uuidString)", token: admin).status == .notFound)
            // The catalog lists object-store at the token's own account.
            let auth = try await issue(client, passwordAuth(user: "alice", password: "pw-alice-123", project: "alice"))
            let catalog = try body(auth)["token"]?["catalog"]?.arrayValue ?? []
            let swift = try #require(catalog.first { $0["type"] == "object-store" })
            let urls = Set(swift["endpoints"]?.arrayValue?.compactMap { $0["url"]?.stringValue } ?? [])
            #expect(urls.count == 1)
            #expect(urls.first?.hasSuffix("/v1/AUTH_\(alice)") == true)
            #expect(swift["endpoints"]?.arrayValue?.count == 3)
        }
    }

    @Test("names: traversal steps, lengths and control characters are 400", arguments: Backend.all)
    func names(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let project = try await harness.identity.project(idOrName: "admin").id
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/ok", token: token).status.code == 201)
            for path in [
                "\(account)/..", "\(account)/%2E%2E", "\(account)/ok/../x", "\(account)/ok/a/./b", "\(account)/ok/..",
                "\(account)/ok/%2e%2e/etc", "\(account)/ok/a%00b", "\(account)/ok/a%0Ab",
                "\(account)/" + String(repeating: "c", count: 257),
                "\(account)/ok/" + String(repeating: "o", count: 1025),
            ] {
                let r = try await swiftCall(client, .put, path, token: token, body: [1])
                #expect(r.status == .badRequest, "\(path.prefix(80))")
            }
            // Names Swift allows: spaces, unicode, a trailing slash, 1024 bytes.
            for name in ["with%20space", "%C3%A9t%C3%A9", "dir/", String(repeating: "o", count: 1024)] {
                let r = try await swiftCall(client, .put, "\(account)/ok/\(name)", token: token, body: [1])
                #expect(r.status.code == 201, "\(name.prefix(40))")
            }
            let listed = try await swiftCall(client, .get, "\(account)/ok?format=json&limit=3", token: token)
            #expect(try body(listed).arrayValue?.compactMap { $0["name"]?.stringValue }.first == "dir/")
        }
    }

    @Test("Pithos: GET ?hashmap, hashmap PUT 409/201, POST ?update; no dedup across projects", arguments: Backend.all)
    func pithos(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (alice, aliceToken) = try await projectMember(harness, client, name: "alice")
            let (bob, bobToken) = try await projectMember(harness, client, name: "bob")
            let a = "/v1/AUTH_\(alice)/c"
            let b = "/v1/AUTH_\(bob)/c"
            #expect(try await swiftCall(client, .put, a, token: aliceToken).status.code == 201)
            #expect(try await swiftCall(client, .put, b, token: bobToken).status.code == 201)
            let data = randomBytes(BlockStore.blockSizeBytes + 1000)
            let expected = PithosHashmap(hashing: data)
            #expect(try await swiftCall(client, .put, "\(a)/orig", token: aliceToken, body: data).status.code == 201)
            let container = try await swiftCall(client, .head, a, token: aliceToken)
            #expect(container.headers[HTTPField.Name("X-Container-Block-Size")!] == "4194304")
            #expect(container.headers[HTTPField.Name("X-Container-Block-Hash")!] == "sha256")
            let got = try await swiftCall(client, .get, "\(a)/orig?hashmap&format=json", token: aliceToken)
            #expect(got.status == .ok)
            let map = try body(got)
            #expect(map["hashes"] == .array(expected.hashes.map { .string($0.hex) }))
            #expect(map["bytes"] == .int(data.count))
            #expect(map["block_size"] == .int(BlockStore.blockSizeBytes))
            #expect(got.headers[HTTPField.Name("X-Object-Hash")!] == expected.topHash.hex)
            let hashmap: JSON = ["bytes": .int(data.count), "hashes": .array(expected.hashes.map { .string($0.hex) })]
            let blocks = try harness.objects.store.backend.list(.block, prefix: "").count
            // Alice holds the blocks: 201 without data, same bytes, ETag = MD5.
            let again = try await swiftCall(
                client, .put, "\(a)/again?hashmap&format=json", token: aliceToken,
                headers: [.contentType: "application/octet-stream"], body: Array(hashmap.encoded()))
            #expect(again.status.code == 201)
            #expect(again.headers[.eTag] == md5Hex(data))
            #expect(Array(try await swiftCall(client, .get, "\(a)/again", token: aliceToken).body.readableBytesView) == data)
            #expect(try harness.objects.store.backend.list(.block, prefix: "").count == blocks)
            // Bob names the same blocks: 409 with both missing, though the store has them.
            let denied = try await swiftCall(
                client, .put, "\(b)/copy?hashmap&format=json", token: bobToken, body: Array(hashmap.encoded()))
            #expect(denied.status == .conflict)
            #expect(try body(denied) == .array(expected.hashes.map { .string($0.hex) }))
            #expect(try await swiftCall(client, .head, "\(b)/copy", token: bobToken).status == .notFound)
            // Bob uploads the blocks (POST ?update), then the hashmap PUT succeeds.
            let update = try await swiftCall(
                client, .post, "\(b)?update", token: bobToken, headers: [.contentType: "application/octet-stream"],
                body: data)
            #expect(update.status == .accepted)
            #expect(try body(update) == .array(expected.hashes.map { .string($0.hex) }))
            let created = try await swiftCall(
                client, .put, "\(b)/copy?hashmap&format=json", token: bobToken, body: Array(hashmap.encoded()))
            #expect(created.status.code == 201)
            #expect(Array(try await swiftCall(client, .get, "\(b)/copy", token: bobToken).body.readableBytesView) == data)
            // A wrong count or a bad hash is 400; the empty object's hashmap is one hash.
            let wrong: JSON = ["bytes": .int(data.count), "hashes": [.string(expected.hashes[0].hex)]]
            #expect(try await swiftCall(client, .put, "\(a)/w?hashmap", token: aliceToken, body: Array(wrong.encoded())).status == .badRequest)
            let bad: JSON = ["bytes": 3, "hashes": ["../../etc/passwd"]]
            #expect(try await swiftCall(client, .put, "\(a)/w?hashmap", token: aliceToken, body: Array(bad.encoded())).status == .badRequest)
            let empty: JSON = ["bytes": 0, "hashes": []]
            #expect(try await swiftCall(client, .put, "\(a)/e?hashmap", token: aliceToken, body: Array(empty.encoded())).status.code == 201)
            let emptyMap = try body(try await swiftCall(client, .get, "\(a)/e?hashmap", token: aliceToken))
            #expect(emptyMap["hashes"] == [.string(BlockID.zero.hex)])
        }
    }

    @Test("dynamic large objects: the manifest reads as its segments, ranges across them", arguments: Backend.all)
    func dynamicLargeObjects(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let project = try await harness.identity.project(idOrName: "admin").id
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/c", token: token).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(account)/c_segments", token: token).status.code == 201)
            let parts = [randomBytes(1000), randomBytes(BlockStore.blockSizeBytes + 10), randomBytes(5)]
            for (i, part) in parts.enumerated() {
                let r = try await swiftCall(client, .put, "\(account)/c_segments/big/0000000\(i)", token: token, body: part)
                #expect(r.status.code == 201)
            }
            let manifest = try await swiftCall(
                client, .put, "\(account)/c/big", token: token,
                headers: [HTTPField.Name("X-Object-Manifest")!: "c_segments/big/"], body: [])
            #expect(manifest.status.code == 201)
            let whole = parts.flatMap { $0 }
            let got = try await swiftCall(client, .get, "\(account)/c/big", token: token)
            #expect(got.status == .ok)
            #expect(got.headers[HTTPField.Name("X-Object-Manifest")!] == "c_segments/big/")
            #expect(Array(got.body.readableBytesView) == whole)
            #expect(got.headers[.eTag] == "\"" + md5Hex(Array(parts.map(md5Hex).joined().utf8)) + "\"")
            let ranged = try await swiftCall(client, .get, "\(account)/c/big", token: token, headers: [.range: "bytes=990-1020"])
            #expect(Array(ranged.body.readableBytesView) == Array(whole[990...1020]))
            let head = try await swiftCall(client, .head, "\(account)/c/big", token: token)
            #expect(head.headers[.contentLength] == "\(whole.count)")
        }
    }
}
