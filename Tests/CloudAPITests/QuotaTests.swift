import BlockStore
import CloudAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SQLKit
import Testing

/// A body delivered in chunks of `chunk` bytes, as a chunked upload arrives (no length known).
struct ChunkedBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    var bytes: [UInt8]
    var chunk: Int

    struct AsyncIterator: AsyncIteratorProtocol {
        var bytes: [UInt8]
        var chunk: Int
        var offset = 0
        mutating func next() async throws -> ByteBuffer? {
            guard offset < bytes.count else { return nil }
            let end = Swift.min(offset + chunk, bytes.count)
            defer { offset = end }
            return ByteBuffer(bytes: bytes[offset..<end])
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bytes: bytes, chunk: chunk) }
}

/// The `obj-*` map records in the store.
func objectMaps(_ harness: Harness) throws -> Int {
    try harness.objects.store.backend.list(.record, prefix: "obj-").count
}

@Suite("Quotas", .serialized)
struct QuotaTests {
    @Test("storage bytes: over-quota PUT is 413 with nothing written; replace, copy and delete charge the difference", arguments: Backend.all)
    func storageBytes(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "quota1")
            let quotas = harness.objects.quotas
            let c = "/v1/AUTH_\(project)/box"
            #expect(try await swiftCall(client, .put, c, token: token).status.code == 201)
            // Unlimited by default; usage counts what is stored.
            #expect(try await quotas.usage(project: project, .storageBytes) == QuotaUsage(resource: .storageBytes, projectLimit: nil, limit: nil, usage: 0))
            try await quotas.setLimit(project: project, .storageBytes, limit: 10_000)
            #expect(try await swiftCall(client, .put, "\(c)/a", token: token, body: randomBytes(6000)).status.code == 201)
            #expect(try await quotas.usage(project: project, .storageBytes).usage == 6000)
            let maps = try objectMaps(harness)
            let blocks = try harness.objects.store.backend.list(.block, prefix: "").count
            // 6000 + 5000 > 10000: refused before a byte is stored (Content-Length is known).
            let over = try await swiftCall(client, .put, "\(c)/b", token: token, body: randomBytes(5000))
            #expect(over.status.code == 413)
            #expect(try await swiftCall(client, .head, "\(c)/b", token: token).status == .notFound)
            #expect(try objectMaps(harness) == maps)
            #expect(try harness.objects.store.backend.list(.block, prefix: "").count == blocks)
            // A chunked upload is checked at the end: refused, its map removed, no row.
            await #expect(throws: CloudError.self) {
                var upload = ObjectStorageService.Upload()
                upload.declaredLength = nil
                _ = try await harness.objects.putObject(
                    project: project, container: "box", name: "chunked", upload: upload,
                    body: ChunkedBody(bytes: randomBytes(5000), chunk: 700))
            }
            #expect(try await swiftCall(client, .head, "\(c)/chunked", token: token).status == .notFound)
            #expect(try objectMaps(harness) == maps)
            // Replacing charges the difference: 6000 -> 9000 fits in 10000.
            #expect(try await swiftCall(client, .put, "\(c)/a", token: token, body: randomBytes(9000)).status.code == 201)
            #expect(try await quotas.usage(project: project, .storageBytes).usage == 9000)
            // A copy counts its full size (as X-Account-Bytes-Used does).
            let copy = try await swiftCall(client, .put, "\(c)/a2", token: token, headers: [HTTPField.Name("X-Copy-From")!: "box/a"])
            #expect(copy.status.code == 413)
            #expect(try objectMaps(harness) == maps)
            // The account shows the quota and the same bytes as the usage.
            let head = try await swiftCall(client, .head, "/v1/AUTH_\(project)", token: token)
            #expect(head.headers[HTTPField.Name("X-Account-Policy-Quota")!] == "10000")
            #expect(head.headers[HTTPField.Name("X-Account-Bytes-Used")!] == "9000")
            // Delete refunds.
            #expect(try await swiftCall(client, .delete, "\(c)/a", token: token).status.code == 204)
            #expect(try await quotas.usage(project: project, .storageBytes).usage == 0)
            #expect(try await swiftCall(client, .put, "\(c)/b", token: token, body: randomBytes(5000)).status.code == 201)
            // Back to the default (unlimited here).
            try await quotas.setLimit(project: project, .storageBytes, limit: nil)
            #expect(try await swiftCall(client, .put, "\(c)/big", token: token, body: randomBytes(20_000)).status.code == 201)
            #expect(try await quotas.usage(project: project, .storageBytes).usage == 25_000)
            let usage = try await quotas.usage(project: project)
            #expect(usage.map(\.resource) == QuotaResource.known)
        }
    }

    @Test("concurrent PUTs near the limit: usage is exactly the sum of the committed objects", arguments: Backend.all)
    func concurrentPuts(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "quota2")
            let quotas = harness.objects.quotas
            let c = "/v1/AUTH_\(project)/box"
            #expect(try await swiftCall(client, .put, c, token: token).status.code == 201)
            try await quotas.setLimit(project: project, .storageBytes, limit: 20_000)
            // 40 uploads of 1000-1999 bytes to 25 names (some replace each other), all at once.
            let statuses = try await withThrowingTaskGroup(of: Int.self) { group in
                for i in 0..<40 {
                    group.addTask {
                        let size = 1000 + (i * 37) % 1000
                        return Int(try await swiftCall(client, .put, "\(c)/o\(i % 25)", token: token, body: randomBytes(size)).status.code)
                    }
                }
                var all: [Int] = []
                for try await status in group { all.append(status) }
                return all
            }
            #expect(Set(statuses).isSubset(of: [201, 413]))
            #expect(statuses.contains(201) && statuses.contains(413))
            let listing = try await swiftCall(client, .get, "\(c)?format=json", token: token)
            let sizes = try #require(try body(listing).arrayValue).compactMap { entry -> Int? in
                if case .int(let n)? = entry["bytes"] { n } else { nil }
            }
            let usage = try await quotas.usage(project: project, .storageBytes).usage
            #expect(usage == Int64(sizes.reduce(0, +)))
            #expect(usage <= 20_000)
            // Every committed object has its map, and no other map is left.
            #expect(try objectMaps(harness) == sizes.count)
        }
    }

    @Test("configuration: quota_default_<resource> sets defaults; unknown resources are refused")
    func configuration() throws {
        var configuration = CloudConfiguration(dataDirectory: "/tmp/x")
        try configuration.apply(fileText: "quota_default_storage_bytes = 1000\nquota_default_volumes = 3\n", fileName: "c")
        #expect(configuration.quotaDefaults == ["storage_bytes": 1000, "volumes": 3])
        #expect(throws: ConfigurationError.self) { try configuration.apply(fileText: "quota_default_cpus = 1", fileName: "c") }
        #expect(throws: ConfigurationError.self) { try configuration.apply(fileText: "quota_default_images = -1", fileName: "c") }
    }

    @Test("defaults apply to projects without a limit of their own", arguments: Backend.all)
    func defaults(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "quota3")
            let quotas = QuotaService(database: harness.objects.database, defaultLimits: [.storageBytes: 100])
            let objects = ObjectStorageService(
                database: harness.objects.database, store: harness.objects.store,
                scratchDirectory: harness.objects.scratchDirectory, quotas: quotas, logger: testLogger)
            _ = try await objects.putContainer(project: project, name: "box", MetadataChange())
            var upload = ObjectStorageService.Upload()
            upload.declaredLength = 150
            await #expect(throws: CloudError(status: 413, message: "Upload exceeds quota.")) {
                _ = try await objects.putObject(
                    project: project, container: "box", name: "x", upload: upload, body: ChunkedBody(bytes: randomBytes(150), chunk: 64))
            }
            #expect(try await quotas.usage(project: project, .storageBytes) == QuotaUsage(resource: .storageBytes, projectLimit: nil, limit: 100, usage: 0))
            try await quotas.setLimit(project: project, .storageBytes, limit: 1000)
            _ = try await objects.putObject(
                project: project, container: "box", name: "x", upload: upload, body: ChunkedBody(bytes: randomBytes(150), chunk: 64))
            // Another resource, charged in a caller's transaction (as images and volumes will be).
            try await quotas.setLimit(project: project, .volumes, limit: 1)
            let used = try await harness.objects.database.transaction { db in
                try await quotas.charge(project: project, .volumes, delta: 1, in: db)
            }
            #expect(used == 1)
            await #expect(throws: QuotaExceeded.self) {
                try await harness.objects.database.transaction { db in
                    try await quotas.charge(project: project, .volumes, delta: 1, in: db)
                }
            }
            #expect(try await quotas.usage(project: project, .volumes).usage == 1)
            _ = token
        }
    }

    @Test("images, volumes, snapshots: counted with their rows; over the limit 413 with nothing written; deletes refund", arguments: Backend.all)
    func imagesVolumesSnapshots(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "quota-iv")
            let quotas = harness.objects.quotas
            let base = "/volume/v3/\(project)"
            try await quotas.setLimit(project: project, .images, limit: 1)
            try await quotas.setLimit(project: project, .volumes, limit: 1)
            try await quotas.setLimit(project: project, .snapshots, limit: 1)
            let image = try await uploadedImage(client, token: token, name: "one", data: randomBytes(1000))
            #expect(try await quotas.usage(project: project, .images).usage == 1)
            let records = try harness.objects.store.backend.list(.record, prefix: "").count
            // A second image: 413, no row, no map record.
            let second = try await apiCall(
                client, .post, "/image/v2/images", token: token, json: ["name": "two", "disk_format": "raw", "container_format": "bare"])
            #expect(second.status.code == 413)
            let listed = try body(try await apiCall(client, .get, "/image/v2/images", token: token))["images"]?.arrayValue ?? []
            #expect(listed.count == 1)

            let volume = try await apiCall(
                client, .post, "\(base)/volumes", token: token, json: ["volume": ["size": 1, "imageRef": .string(image)]])
            #expect(volume.status == .accepted)
            let vid = try #require(try body(volume)["volume"]?["id"]?.stringValue)
            let recordsWithVolume = try harness.objects.store.backend.list(.record, prefix: "").count
            #expect(recordsWithVolume == records + 1)
            let overVolume = try await apiCall(client, .post, "\(base)/volumes", token: token, json: ["volume": ["size": 1]])
            #expect(overVolume.status.code == 413)
            #expect(try body(overVolume)["overLimit"] != nil)
            let snap = try await apiCall(
                client, .post, "\(base)/snapshots", token: token, json: ["snapshot": ["volume_id": .string(vid), "force": true]])
            #expect(snap.status == .accepted)
            let sid = try #require(try body(snap)["snapshot"]?["id"]?.stringValue)
            let overSnap = try await apiCall(
                client, .post, "\(base)/snapshots", token: token, json: ["snapshot": ["volume_id": .string(vid), "force": true]])
            #expect(overSnap.status.code == 413)
            // A volume frozen into an image is an image too: over the images limit.
            let upload = try await apiCall(
                client, .post, "\(base)/volumes/\(vid)/action", token: token, json: ["os-volume_upload_image": ["image_name": "frozen"]])
            #expect(upload.status.code == 413)
            #expect(try harness.objects.store.backend.list(.record, prefix: "").count == recordsWithVolume + 1)
            #expect(try await quotas.usage(project: project, .volumes).usage == 1)
            #expect(try await quotas.usage(project: project, .snapshots).usage == 1)
            #expect(try await quotas.usage(project: project, .images).usage == 1)

            // Deletes refund: then the same creates fit again.
            #expect(try await apiCall(client, .delete, "\(base)/snapshots/\(sid)", token: token).status == .accepted)
            #expect(try await apiCall(client, .delete, "\(base)/volumes/\(vid)", token: token).status == .accepted)
            #expect(try await apiCall(client, .delete, "/image/v2/images/\(image)", token: token).status == .noContent)
            for resource in [QuotaResource.images, .volumes, .snapshots] {
                #expect(try await quotas.usage(project: project, resource).usage == 0, "\(resource)")
            }
            #expect(try await apiCall(client, .post, "\(base)/volumes", token: token, json: ["volume": ["size": 1]]).status == .accepted)
        }
    }
}
