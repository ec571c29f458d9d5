import BlockStore
import CloudAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

let xStaticLargeObject = HTTPField.Name("X-Static-Large-Object")!

/// `"` MD5 of the concatenated ETags `"`.
func sloETag(_ parts: [[UInt8]]) -> String { "\"" + md5Hex(Array(parts.map(md5Hex).joined().utf8)) + "\"" }

@Suite("Static large objects", .serialized)
struct StaticLargeObjectTests {
    @Test("segments of whole blocks: one concatenated map, no block written, outlives its segments", arguments: Backend.all)
    func aligned(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "slo1")
            let a = "/v1/AUTH_\(project)"
            let info = try body(try await client.execute(uri: "/info", method: .get))
            #expect(info["slo"]?["max_manifest_segments"] == .int(1000))
            for c in ["big", "segs"] { #expect(try await swiftCall(client, .put, "\(a)/\(c)", token: token).status.code == 201) }
            let block = BlockStore.blockSizeBytes
            let parts = [randomBytes(block), randomBytes(2 * block), randomBytes(1000)]
            for (i, part) in parts.enumerated() {
                #expect(try await swiftCall(client, .put, "\(a)/segs/p\(i)", token: token, body: part).status.code == 201)
            }
            let blocks = try harness.objects.store.backend.list(.block, prefix: "").count
            let manifest: JSON = .array(
                parts.enumerated().map { i, part in
                    ["path": .string("/segs/p\(i)"), "etag": .string(md5Hex(part)), "size_bytes": .int(part.count)]
                })
            let put = try await swiftCall(
                client, .put, "\(a)/big/obj?multipart-manifest=put", token: token,
                headers: [.contentType: "application/x-test"], body: Array(manifest.encoded()))
            #expect(put.status.code == 201)
            #expect(put.headers[.eTag] == sloETag(parts))
            #expect(try harness.objects.store.backend.list(.block, prefix: "").count == blocks)
            let whole = parts.flatMap { $0 }
            let get = try await swiftCall(client, .get, "\(a)/big/obj", token: token)
            #expect(get.status == .ok)
            #expect(Array(get.body.readableBytesView) == whole)
            #expect(get.headers[.eTag] == sloETag(parts))
            #expect(get.headers[xStaticLargeObject] == "True")
            #expect(get.headers[.contentType] == "application/x-test")
            // Its hashmap is the concatenation of the segments'.
            let hashmap = try body(try await swiftCall(client, .get, "\(a)/big/obj?hashmap&format=json", token: token))
            #expect(hashmap["hashes"]?.arrayValue?.count == 4)
            // The manifest as Swift stores it.
            let got = try await swiftCall(client, .get, "\(a)/big/obj?multipart-manifest=get", token: token)
            let list = try #require(try body(got).arrayValue)
            #expect(list.map { $0["name"] } == [.string("/segs/p0"), .string("/segs/p1"), .string("/segs/p2")])
            #expect(list.map { $0["hash"] } == parts.map { .string(md5Hex($0)) })
            // Listing and account usage count the large object at its size.
            let listing = try body(try await swiftCall(client, .get, "\(a)/big?format=json", token: token))
            #expect(listing.arrayValue?.first?["bytes"] == .int(whole.count))
            #expect(try await harness.objects.quotas.usage(project: project, .storageBytes).usage == Int64(2 * whole.count))
            // The concatenated map does not depend on the segments.
            for i in parts.indices { #expect(try await swiftCall(client, .delete, "\(a)/segs/p\(i)", token: token).status.code == 204) }
            let after = try await swiftCall(client, .get, "\(a)/big/obj", token: token, headers: [.range: "bytes=\(block - 10)-\(block + 9)"])
            #expect(after.status.code == 206)
            #expect(Array(after.body.readableBytesView) == Array(whole[(block - 10)..<(block + 10)]))
            // multipart-manifest=delete: the segments are already gone, the manifest goes.
            let deleted = try await swiftCall(
                client, .delete, "\(a)/big/obj?multipart-manifest=delete", token: token, headers: [.accept: "application/json"])
            #expect(deleted.status == .ok)
            let report = try body(deleted)
            #expect(report["Number Deleted"] == .int(1) && report["Number Not Found"] == .int(3))
            #expect(try await swiftCall(client, .head, "\(a)/big/obj", token: token).status == .notFound)
            #expect(try await harness.objects.quotas.usage(project: project, .storageBytes).usage == 0)
        }
    }

    @Test("unaligned segments: read through the segments; a changed segment is 409; delete removes them all", arguments: Backend.all)
    func unaligned(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "slo2")
            let a = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(a)/c", token: token).status.code == 201)
            let parts = [randomBytes(3 * 1024 * 1024), randomBytes(3 * 1024 * 1024 + 5), randomBytes(100)]
            for (i, part) in parts.enumerated() {
                #expect(try await swiftCall(client, .put, "\(a)/c/seg/\(i)", token: token, body: part).status.code == 201)
            }
            let manifest: JSON = .array(parts.indices.map { i in ["path": .string("/c/seg/\(i)"), "etag": .null, "size_bytes": .null] })
            let put = try await swiftCall(client, .put, "\(a)/c/obj?multipart-manifest=put", token: token, body: Array(manifest.encoded()))
            #expect(put.status.code == 201)
            #expect(put.headers[.eTag] == sloETag(parts))
            let whole = parts.flatMap { $0 }
            let get = try await swiftCall(client, .get, "\(a)/c/obj", token: token)
            #expect(Array(get.body.readableBytesView) == whole)
            #expect(get.headers[.eTag] == sloETag(parts))
            let head = try await swiftCall(client, .head, "\(a)/c/obj", token: token)
            #expect(head.headers[.contentLength] == "\(whole.count)")
            #expect(head.headers[xStaticLargeObject] == "True")
            let start = 3 * 1024 * 1024 - 3
            let ranged = try await swiftCall(client, .get, "\(a)/c/obj", token: token, headers: [.range: "bytes=\(start)-\(start + 9)"])
            #expect(Array(ranged.body.readableBytesView) == Array(whole[start..<(start + 10)]))
            // A copy reads the same.
            let copy = try await swiftCall(client, .put, "\(a)/c/copy", token: token, headers: [HTTPField.Name("X-Copy-From")!: "c/obj"])
            #expect(copy.status.code == 201)
            #expect(Array(try await swiftCall(client, .get, "\(a)/c/copy", token: token).body.readableBytesView) == whole)
            #expect(try await swiftCall(client, .delete, "\(a)/c/copy", token: token).status.code == 204)
            // A replaced segment: 409 before any byte.
            #expect(try await swiftCall(client, .put, "\(a)/c/seg/2", token: token, body: [1, 2, 3]).status.code == 201)
            #expect(try await swiftCall(client, .get, "\(a)/c/obj", token: token).status.code == 409)
            let deleted = try await swiftCall(client, .delete, "\(a)/c/obj?multipart-manifest=delete", token: token)
            #expect(deleted.status == .ok)
            #expect(text(deleted).contains("Number Deleted: 4"))
            let left = try await swiftCall(client, .get, "\(a)/c", token: token)
            #expect(left.status.code == 204)
            #expect(try await harness.objects.quotas.usage(project: project, .storageBytes).usage == 0)
            #expect(try harness.objects.store.list().isEmpty)
        }
    }

    @Test("bad manifests are 400 and store nothing", arguments: Backend.all)
    func badManifests(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "slo3")
            let (other, otherToken) = try await projectMember(harness, client, name: "slo3b")
            let a = "/v1/AUTH_\(project)"
            #expect(try await swiftCall(client, .put, "\(a)/c", token: token).status.code == 201)
            #expect(try await swiftCall(client, .put, "\(a)/c/s", token: token, body: [1, 2, 3]).status.code == 201)
            #expect(try await swiftCall(client, .put, "/v1/AUTH_\(other)/c", token: otherToken).status.code == 201)
            #expect(try await swiftCall(client, .put, "/v1/AUTH_\(other)/c/theirs", token: otherToken, body: [4]).status.code == 201)
            let maps = try objectMaps(harness)
            let bad: [JSON] = [
                [],
                ["path": "/c/s"],
                [["path": "/c/missing"]],
                [["path": "/c/theirs"]],  // another project's object is not found in this account
                [["path": "/c/s", "etag": .string(md5Hex([9]))]],
                [["path": "/c/s", "size_bytes": 4]],
                [["path": "/c/s", "range": "0-1"]],
                [["path": "nocontainer"]],
            ]
            for manifest in bad {
                let put = try await swiftCall(client, .put, "\(a)/c/obj?multipart-manifest=put", token: token, body: Array(manifest.encoded()))
                #expect(put.status.code == 400, "\(manifest)")
            }
            let etag = try await swiftCall(
                client, .put, "\(a)/c/obj?multipart-manifest=put", token: token, headers: [.eTag: md5Hex([1])],
                body: Array(JSON.array([["path": "/c/s"]]).encoded()))
            #expect(etag.status.code == 422)
            #expect(try objectMaps(harness) == maps)
            #expect(try await swiftCall(client, .head, "\(a)/c/obj", token: token).status == .notFound)
            // Over quota: 413, nothing stored.
            try await harness.objects.quotas.setLimit(project: project, .storageBytes, limit: 5)
            let over = try await swiftCall(
                client, .put, "\(a)/c/obj?multipart-manifest=put", token: token, body: Array(JSON.array([["path": "/c/s"]]).encoded()))
            #expect(over.status.code == 413)
            #expect(try objectMaps(harness) == maps)
        }
    }
}
