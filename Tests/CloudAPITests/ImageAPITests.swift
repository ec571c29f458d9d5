import BlockStore
import CloudAPI
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

/// Sends one request with `token` and an optional JSON body.
func apiCall(
    _ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ path: String, token: String?, json body: JSON? = nil,
    raw: [UInt8]? = nil, headers: HTTPFields = [:]
) async throws -> TestResponse {
    var fields = headers
    if let token { fields[xAuthToken] = token }
    var buffer: ByteBuffer?
    if let body {
        if fields[.contentType] == nil { fields[.contentType] = "application/json" }
        buffer = json(body)
    } else if let raw {
        if fields[.contentType] == nil { fields[.contentType] = "application/octet-stream" }
        buffer = ByteBuffer(bytes: raw)
    }
    return try await client.execute(uri: path, method: method, headers: fields, body: buffer)
}

let jsonPatch: HTTPFields = [.contentType: "application/openstack-images-v2.1-json-patch"]

func blockCount(_ harness: Harness) throws -> Int { try harness.objects.store.backend.list(.block, prefix: "").count }

func hex(_ bytes: some Sequence<UInt8>) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

/// Creates an image with `data` uploaded; returns its id.
func uploadedImage(_ client: any TestClientProtocol, token: String, name: String, data: [UInt8]) async throws -> String {
    let created = try await apiCall(
        client, .post, "/image/v2/images", token: token,
        json: ["name": .string(name), "disk_format": "raw", "container_format": "bare"])
    #expect(created.status == .created)
    let id = try #require(try body(created)["id"]?.stringValue)
    let put = try await apiCall(client, .put, "/image/v2/images/\(id)/file", token: token, raw: data)
    #expect(put.status == .noContent)
    return id
}

@Suite("Glance images in-process", .serialized)
struct ImageAPITests {
    @Test("discovery, schemas, create, upload, download, show, list, patch, tags, delete", arguments: Backend.all)
    func lifecycle(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let root = try await apiCall(client, .get, "/image", token: nil)
            #expect(root.status.code == 300)
            #expect(try body(root)["versions"]?.arrayValue?.first?["status"] == "CURRENT")
            let schema = try await apiCall(client, .get, "/image/v2/schemas/image", token: token)
            #expect(schema.status == .ok)
            #expect(try body(schema)["properties"]?["visibility"] != nil)
            #expect(try await apiCall(client, .get, "/image/v2/schemas/images", token: token).status == .ok)

            let created = try await apiCall(
                client, .post, "/image/v2/images", token: token,
                json: ["name": "debian", "disk_format": "raw", "container_format": "bare", "tags": ["a"], "os_distro": "debian"])
            #expect(created.status == .created)
            let image = try body(created)
            #expect(image["status"] == "queued")
            #expect(image["os_distro"] == "debian")
            #expect(image["visibility"] == "shared")
            let id = try #require(image["id"]?.stringValue)
            #expect(try await apiCall(client, .get, "/image/v2/images/\(id)/file", token: token).status == .noContent)
            // 2 blocks and a bit, one of them zeros.
            var data = randomBytes(BlockStore.blockSizeBytes + 100)
            data += [UInt8](repeating: 0, count: BlockStore.blockSizeBytes)
            data += randomBytes(5)
            let put = try await apiCall(client, .put, "/image/v2/images/\(id)/file", token: token, raw: data)
            #expect(put.status == .noContent)
            let shown = try body(try await apiCall(client, .get, "/image/v2/images/\(id)", token: token))
            #expect(shown["status"] == "active")
            #expect(shown["size"] == .int(data.count))
            #expect(shown["checksum"] == .string(md5Hex(data)))
            #expect(shown["os_hash_algo"] == "sha512")
            #expect(shown["os_hash_value"] == .string(hex(SHA512.hash(data: data))))
            let down = try await apiCall(client, .get, "/image/v2/images/\(id)/file", token: token)
            #expect(down.status == .ok)
            #expect(Array(down.body.readableBytesView) == data)
            #expect(down.headers[HTTPField.Name("Content-MD5")!] == md5Hex(data))
            // Uploading again: 409.
            #expect(try await apiCall(client, .put, "/image/v2/images/\(id)/file", token: token, raw: [1]).status == .conflict)

            // Patch: name, a property added and removed, read-only attributes refused.
            let patched = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token,
                json: [
                    ["op": "replace", "path": "/name", "value": "debian-12"],
                    ["op": "add", "path": "/hw_disk_bus", "value": "virtio"], ["op": "remove", "path": "/os_distro"],
                ], headers: jsonPatch)
            #expect(patched.status == .ok)
            let after = try body(patched)
            #expect(after["name"] == "debian-12")
            #expect(after["hw_disk_bus"] == "virtio")
            #expect(after["os_distro"] == nil)
            let readOnly = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token,
                json: [["op": "replace", "path": "/status", "value": "queued"]], headers: jsonPatch)
            #expect(readOnly.status == .forbidden)
            let wrongType = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token, json: [["op": "replace", "path": "/name", "value": "x"]])
            #expect(wrongType.status.code == 415)

            // Tags.
            #expect(try await apiCall(client, .put, "/image/v2/images/\(id)/tags/golden", token: token).status == .noContent)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(id)/tags/a", token: token).status == .noContent)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(id)/tags/a", token: token).status == .notFound)
            #expect(try body(try await apiCall(client, .get, "/image/v2/images/\(id)", token: token))["tags"] == ["golden"])

            // Listing: filters and pages.
            let second = try await uploadedImage(client, token: token, name: "other", data: [1, 2, 3])
            let all = try body(try await apiCall(client, .get, "/image/v2/images", token: token))
            #expect(all["images"]?.arrayValue?.count == 2)
            let byName = try body(try await apiCall(client, .get, "/image/v2/images?name=other", token: token))
            #expect(byName["images"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [second])
            let byTag = try body(try await apiCall(client, .get, "/image/v2/images?tag=golden", token: token))
            #expect(byTag["images"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [id])
            let page1 = try body(try await apiCall(client, .get, "/image/v2/images?limit=1&sort=name:asc", token: token))
            #expect(page1["images"]?.arrayValue?.first?["name"] == "debian-12")
            let next = try #require(page1["next"]?.stringValue)
            #expect(next.hasPrefix("/v2/images?"))
            let page2 = try body(try await apiCall(client, .get, "/image" + next, token: token))
            #expect(page2["images"]?.arrayValue?.compactMap { $0["id"]?.stringValue } == [second])
            #expect(page2["next"] == nil)

            // Protected images cannot be deleted; deleting removes the map.
            _ = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token,
                json: [["op": "replace", "path": "/protected", "value": true]], headers: jsonPatch)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(id)", token: token).status == .forbidden)
            _ = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token,
                json: [["op": "replace", "path": "/protected", "value": false]], headers: jsonPatch)
            #expect(try harness.objects.store.record(named: try MapName("img-\(id)")) != nil)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(id)", token: token).status == .noContent)
            #expect(try await apiCall(client, .get, "/image/v2/images/\(id)", token: token).status == .notFound)
            #expect(try harness.objects.store.record(named: try MapName("img-\(id)")) == nil)
        }
    }

    @Test("registering an object as an image writes no block and serves the same bytes", arguments: Backend.all)
    func registerObject(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "alice")
            let account = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(account)/images", token: token).status.code == 201)
            let data = randomBytes(2 * BlockStore.blockSizeBytes + 7)
            #expect(try await swiftCall(client, .put, "\(account)/images/disk.raw", token: token, body: data).status.code == 201)
            let blocks = try blockCount(harness)
            #expect(blocks == 3)
            let created = try await apiCall(
                client, .post, "/image/v2/images", token: token,
                json: ["name": "from-object", "disk_format": "raw", "container_format": "bare", "snf_source_object": "images/disk.raw"])
            #expect(created.status == .created)
            let image = try body(created)
            #expect(image["status"] == "active")
            #expect(image["size"] == .int(data.count))
            #expect(image["checksum"] == .string(md5Hex(data)))
            let id = try #require(image["id"]?.stringValue)
            #expect(try blockCount(harness) == blocks)
            let object = try await harness.objects.object(project: project, container: "images", name: "disk.raw")
            let objectEntries = try harness.objects.store.resolvedEntries(of: try MapName(object.mapName)).entries
            let imageEntries = try harness.objects.store.resolvedEntries(of: try MapName("img-\(id)")).entries
            #expect(objectEntries == imageEntries)
            let down = try await apiCall(client, .get, "/image/v2/images/\(id)/file", token: token)
            #expect(Array(down.body.readableBytesView) == data)
            // Deleting the object leaves the image whole.
            #expect(try await swiftCall(client, .delete, "\(account)/images/disk.raw", token: token).status.code == 204)
            let again = try await apiCall(client, .get, "/image/v2/images/\(id)/file", token: token)
            #expect(Array(again.body.readableBytesView) == data)
            // Missing objects and bad paths.
            let missing = try await apiCall(
                client, .post, "/image/v2/images", token: token, json: ["name": "x", "snf_source_object": "images/nope"])
            #expect(missing.status == .notFound)
            let badPath = try await apiCall(
                client, .post, "/image/v2/images", token: token, json: ["name": "x", "snf_source_object": "nocontainer"])
            #expect(badPath.status == .badRequest)
            // The property cannot be changed afterwards.
            let patch = try await apiCall(
                client, .patch, "/image/v2/images/\(id)", token: token,
                json: [["op": "replace", "path": "/snf_source_object", "value": "images/other"]], headers: jsonPatch)
            #expect(patch.status == .forbidden)
        }
    }

    @Test("isolation: private images are 404 elsewhere, public ones readable not writable, readers cannot write", arguments: Backend.all)
    func isolation(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let admin = try await adminToken(client)
            let (_, alice) = try await projectMember(harness, client, name: "alice")
            let (_, bob) = try await projectMember(harness, client, name: "bob")
            let (_, reader) = try await projectMember(harness, client, name: "carol", role: "reader")
            let mine = try await uploadedImage(client, token: alice, name: "mine", data: [1, 2, 3])
            for (method, path) in [
                (HTTPRequest.Method.get, "/image/v2/images/\(mine)"), (.get, "/image/v2/images/\(mine)/file"),
                (.delete, "/image/v2/images/\(mine)"), (.put, "/image/v2/images/\(mine)/tags/x"),
            ] {
                #expect(try await apiCall(client, method, path, token: bob).status == .notFound, "\(method) \(path)")
            }
            let patch = try await apiCall(
                client, .patch, "/image/v2/images/\(mine)", token: bob,
                json: [["op": "replace", "path": "/name", "value": "stolen"]], headers: jsonPatch)
            #expect(patch.status == .notFound)
            let bobList = try body(try await apiCall(client, .get, "/image/v2/images", token: bob))
            #expect(bobList["images"]?.arrayValue?.isEmpty == true)
            // Only an admin makes an image public; then everyone reads it and only owner/admin write.
            let publicize: JSON = [["op": "replace", "path": "/visibility", "value": "public"]]
            #expect(try await apiCall(client, .patch, "/image/v2/images/\(mine)", token: alice, json: publicize, headers: jsonPatch).status == .forbidden)
            #expect(try await apiCall(client, .patch, "/image/v2/images/\(mine)", token: admin, json: publicize, headers: jsonPatch).status == .ok)
            let read = try await apiCall(client, .get, "/image/v2/images/\(mine)/file", token: bob)
            #expect(Array(read.body.readableBytesView) == [1, 2, 3])
            #expect(try body(try await apiCall(client, .get, "/image/v2/images", token: bob))["images"]?.arrayValue?.count == 1)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(mine)", token: bob).status == .forbidden)
            #expect(try await apiCall(client, .patch, "/image/v2/images/\(mine)", token: bob, json: [["op": "replace", "path": "/name", "value": "x"]], headers: jsonPatch).status == .forbidden)
            // Readers read, never write.
            #expect(try await apiCall(client, .get, "/image/v2/images/\(mine)", token: reader).status == .ok)
            #expect(try await apiCall(client, .post, "/image/v2/images", token: reader, json: ["name": "r"]).status == .forbidden)
            // No token: 401.
            #expect(try await apiCall(client, .get, "/image/v2/images", token: nil).status == .unauthorized)
        }
    }

    @Test("bad input: JSON, names, attributes, ids", arguments: Backend.all)
    func badInput(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let token = try await adminToken(client)
            let badJSON = try await client.execute(
                uri: "/image/v2/images", method: .post, headers: [xAuthToken: token, .contentType: "application/json"],
                body: ByteBuffer(string: "{not json"))
            #expect(badJSON.status == .badRequest)
            let cases: [(JSON, HTTPResponse.Status)] = [
                (["name": .string(String(repeating: "n", count: 256))], .badRequest),
                (["name": "tab\there"], .badRequest),
                (["name": "x", "visibility": "everyone"], .badRequest),
                (["name": "x", "disk_format": "exe"], .badRequest),
                (["name": "x", "min_disk": -1], .badRequest),
                (["name": "x", "size": 10], .forbidden),
                (["name": "x", "status": "active"], .forbidden),
                (["name": "x", "id": "not-a-uuid"], .badRequest),
                (["name": "x", "tags": "a"], .badRequest),
                (["name": "x", "prop": 1], .badRequest),
            ]
            for (request, status) in cases {
                #expect(try await apiCall(client, .post, "/image/v2/images", token: token, json: request).status == status, "\(request)")
            }
            #expect(try await apiCall(client, .get, "/image/v2/images/nope", token: token).status == .notFound)
            #expect(try await apiCall(client, .get, "/image/v2/images/\(UUID().uuidString)", token: token).status == .notFound)
            #expect(try await apiCall(client, .get, "/image/v2/images?limit=x", token: token).status == .badRequest)
            let fixed = UUID().uuidString.lowercased()
            #expect(try await apiCall(client, .post, "/image/v2/images", token: token, json: ["id": .string(fixed)]).status == .created)
            #expect(try await apiCall(client, .post, "/image/v2/images", token: token, json: ["id": .string(fixed)]).status == .conflict)
            let notArray = try await apiCall(
                client, .patch, "/image/v2/images/\(fixed)", token: token, json: ["op": "replace"], headers: jsonPatch)
            #expect(notArray.status == .badRequest)
        }
    }
}
