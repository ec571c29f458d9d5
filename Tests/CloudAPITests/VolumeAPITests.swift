import BlockStore
import CloudAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import Testing

let gib = 1 << 30

/// The content-addressed and zero entries of a map, for "these share every block" comparisons.
func entries(_ harness: Harness, _ name: String) throws -> [MapEntry] {
    try harness.objects.store.resolvedEntries(of: try MapName(name)).entries
}

@Suite("Cinder volumes in-process", .serialized)
struct VolumeAPITests {
    @Test("volume from image, snapshot, volume from snapshot and volume: thin clones sharing blocks", arguments: Backend.all)
    func clones(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "alice")
            let base = "/volume/v3/\(project)"
            let data = randomBytes(2 * BlockStore.blockSizeBytes + 1)
            let image = try await uploadedImage(client, token: token, name: "base", data: data)
            let blocks = try blockCount(harness)
            #expect(blocks == 3)
            let imageEntries = try entries(harness, "img-\(image)")

            let created = try await apiCall(
                client, .post, "\(base)/volumes", token: token,
                json: ["volume": ["size": 1, "name": "root", "imageRef": .string(image)]])
            #expect(created.status == .accepted)
            #expect(created.headers[HTTPField.Name("OpenStack-API-Version")!] == "volume 3.0")
            let volume = try #require(try body(created)["volume"])
            #expect(volume["status"] == "available")
            #expect(volume["bootable"] == "true")
            #expect(volume["size"] == 1)
            let vid = try #require(volume["id"]?.stringValue)
            let volumeEntries = try entries(harness, "vol-\(vid)")
            #expect(volumeEntries.count == gib / BlockStore.blockSizeBytes)
            #expect(Array(volumeEntries.prefix(imageEntries.count)) == imageEntries)
            #expect(volumeEntries.dropFirst(imageEntries.count).allSatisfy { $0 == .zero })
            #expect(try harness.objects.store.record(named: try MapName("vol-\(vid)"))?.kind == .readWrite)

            let snap = try await apiCall(
                client, .post, "\(base)/snapshots", token: token,
                json: ["snapshot": ["volume_id": .string(vid), "name": "s1", "force": true]])
            #expect(snap.status == .accepted)
            let sid = try #require(try body(snap)["snapshot"]?["id"]?.stringValue)
            #expect(try body(snap)["snapshot"]?["status"] == "available")
            #expect(try entries(harness, "snap-\(sid)") == volumeEntries)

            let fromSnap = try await apiCall(
                client, .post, "\(base)/volumes", token: token, json: ["volume": ["snapshot_id": .string(sid), "size": 2]])
            #expect(fromSnap.status == .accepted)
            let v2 = try #require(try body(fromSnap)["volume"]?["id"]?.stringValue)
            #expect(try body(fromSnap)["volume"]?["snapshot_id"] == .string(sid))
            #expect(Array(try entries(harness, "vol-\(v2)").prefix(volumeEntries.count)) == volumeEntries)

            let fromVolume = try await apiCall(
                client, .post, "\(base)/volumes", token: token, json: ["volume": ["source_volid": .string(vid)]])
            #expect(fromVolume.status == .accepted)
            let v3 = try #require(try body(fromVolume)["volume"]?["id"]?.stringValue)
            #expect(try entries(harness, "vol-\(v3)") == volumeEntries)
            // No transient map left behind, and not one block written by any of this.
            #expect(try harness.objects.store.list().map(\.name.rawValue).filter { $0.hasPrefix("clone-") }.isEmpty)
            #expect(try blockCount(harness) == blocks)

            // An image from the snapshot and one from the volume: EXCLUDE_ALL_TASKS, no new block.
            let fromSnapshot = try await apiCall(
                client, .post, "/image/v2/images", token: token, json: ["name": "snap-image", "snf_source_snapshot": .string(sid)])
            #expect(fromSnapshot.status == .created)
            #expect(try body(fromSnapshot)["EXCLUDE_ALL_TASKS"] == "yes")
            #expect(try body(fromSnapshot)["size"] == .int(gib))
            let upload = try await apiCall(
                client, .post, "\(base)/volumes/\(vid)/action", token: token,
                json: ["os-volume_upload_image": ["image_name": "vol-image", "disk_format": "raw", "container_format": "bare"]])
            #expect(upload.status == .accepted)
            let uploaded = try #require(try body(upload)["os-volume_upload_image"]?["image_id"]?.stringValue)
            let shown = try body(try await apiCall(client, .get, "/image/v2/images/\(uploaded)", token: token))
            #expect(shown["status"] == "active")
            #expect(shown["EXCLUDE_ALL_TASKS"] == "yes")
            #expect(try entries(harness, "img-\(uploaded)") == volumeEntries)
            #expect(try blockCount(harness) == blocks)

            // Lists and show.
            let list = try body(try await apiCall(client, .get, "\(base)/volumes/detail", token: token))
            #expect(list["volumes"]?.arrayValue?.count == 3)
            let page = try body(try await apiCall(client, .get, "\(base)/volumes?limit=2", token: token))
            #expect(page["volumes"]?.arrayValue?.count == 2)
            #expect(page["volumes_links"]?.arrayValue?.first?["rel"] == "next")
            let snaps = try body(try await apiCall(client, .get, "\(base)/snapshots/detail", token: token))
            #expect(snaps["snapshots"]?.arrayValue?.count == 1)
            let renamed = try await apiCall(
                client, .put, "\(base)/volumes/\(vid)", token: token, json: ["volume": ["name": "boot", "description": "d"]])
            #expect(try body(renamed)["volume"]?["name"] == "boot")
        }
    }

    @Test("extend, and deletes: a volume with snapshots is 400; maps go with their rows", arguments: Backend.all)
    func extendAndDelete(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "alice")
            let base = "/volume/v3/\(project)"
            let created = try await apiCall(client, .post, "\(base)/volumes", token: token, json: ["volume": ["size": 1]])
            let vid = try #require(try body(created)["volume"]?["id"]?.stringValue)
            #expect(try harness.objects.store.record(named: try MapName("vol-\(vid)"))?.sizeBytes == UInt64(gib))
            let extend = try await apiCall(
                client, .post, "\(base)/volumes/\(vid)/action", token: token, json: ["os-extend": ["new_size": 3]])
            #expect(extend.status == .accepted)
            #expect(try body(try await apiCall(client, .get, "\(base)/volumes/\(vid)", token: token))["volume"]?["size"] == 3)
            #expect(try harness.objects.store.record(named: try MapName("vol-\(vid)"))?.sizeBytes == UInt64(3 * gib))
            let shrink = try await apiCall(
                client, .post, "\(base)/volumes/\(vid)/action", token: token, json: ["os-extend": ["new_size": 2]])
            #expect(shrink.status == .badRequest)
            #expect(try body(shrink)["badRequest"]?["code"] == 400)

            let snap = try await apiCall(client, .post, "\(base)/snapshots", token: token, json: ["snapshot": ["volume_id": .string(vid)]])
            let sid = try #require(try body(snap)["snapshot"]?["id"]?.stringValue)
            #expect(try body(snap)["snapshot"]?["size"] == 3)
            #expect(try await apiCall(client, .delete, "\(base)/volumes/\(vid)", token: token).status == .badRequest)
            let clone = try await apiCall(client, .post, "\(base)/volumes", token: token, json: ["volume": ["snapshot_id": .string(sid)]])
            let cid = try #require(try body(clone)["volume"]?["id"]?.stringValue)
            #expect(try await apiCall(client, .delete, "\(base)/snapshots/\(sid)", token: token).status == .accepted)
            #expect(try harness.objects.store.record(named: try MapName("snap-\(sid)")) == nil)
            #expect(try await apiCall(client, .get, "\(base)/snapshots/\(sid)", token: token).status == .notFound)
            // The clone outlives its snapshot.
            #expect(try harness.objects.store.record(named: try MapName("vol-\(cid)"))?.sizeBytes == UInt64(3 * gib))
            #expect(try await apiCall(client, .delete, "\(base)/volumes/\(vid)", token: token).status == .accepted)
            #expect(try await apiCall(client, .get, "\(base)/volumes/\(vid)", token: token).status == .notFound)
            #expect(try harness.objects.store.record(named: try MapName("vol-\(vid)")) == nil)
            #expect(try await apiCall(client, .delete, "\(base)/volumes/\(vid)", token: token).status == .notFound)
            #expect(try await apiCall(client, .delete, "\(base)/volumes/\(cid)", token: token).status == .accepted)
        }
    }

    @Test("isolation: other projects 403 on the URL, 404 on ids; readers read only; catalog", arguments: Backend.all)
    func isolation(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (alice, aliceToken) = try await projectMember(harness, client, name: "alice")
            let (bob, bobToken) = try await projectMember(harness, client, name: "bob")
            let (carol, readerToken) = try await projectMember(harness, client, name: "carol", role: "reader")
            let created = try await apiCall(
                client, .post, "/volume/v3/\(alice)/volumes", token: aliceToken, json: ["volume": ["size": 1]])
            let vid = try #require(try body(created)["volume"]?["id"]?.stringValue)
            let snap = try await apiCall(
                client, .post, "/volume/v3/\(alice)/snapshots", token: aliceToken, json: ["snapshot": ["volume_id": .string(vid)]])
            let sid = try #require(try body(snap)["snapshot"]?["id"]?.stringValue)
            // Bob on Alice's URL: 403 whatever the id.
            for path in ["/volumes/\(vid)", "/volumes/detail", "/snapshots/\(sid)", "/volumes/\(UUID().uuidString)"] {
                #expect(try await apiCall(client, .get, "/volume/v3/\(alice)\(path)", token: bobToken).status == .forbidden)
            }
            // Bob on his own URL with Alice's ids: 404, nothing revealed.
            let bobBase = "/volume/v3/\(bob)"
            #expect(try await apiCall(client, .get, "\(bobBase)/volumes/\(vid)", token: bobToken).status == .notFound)
            #expect(try await apiCall(client, .delete, "\(bobBase)/volumes/\(vid)", token: bobToken).status == .notFound)
            #expect(try await apiCall(client, .get, "\(bobBase)/snapshots/\(sid)", token: bobToken).status == .notFound)
            let steal = try await apiCall(client, .post, "\(bobBase)/volumes", token: bobToken, json: ["volume": ["snapshot_id": .string(sid)]])
            #expect(steal.status == .notFound)
            let stealVolume = try await apiCall(client, .post, "\(bobBase)/volumes", token: bobToken, json: ["volume": ["source_volid": .string(vid)]])
            #expect(stealVolume.status == .notFound)
            let stealSnapshot = try await apiCall(client, .post, "\(bobBase)/snapshots", token: bobToken, json: ["snapshot": ["volume_id": .string(vid)]])
            #expect(stealSnapshot.status == .notFound)
            let imageFromSnapshot = try await apiCall(
                client, .post, "/image/v2/images", token: bobToken, json: ["name": "x", "snf_source_snapshot": .string(sid)])
            #expect(imageFromSnapshot.status == .notFound)
            // Alice's private image is not Bob's origin.
            let image = try await uploadedImage(client, token: aliceToken, name: "private", data: [9])
            let fromImage = try await apiCall(client, .post, "\(bobBase)/volumes", token: bobToken, json: ["volume": ["size": 1, "imageRef": .string(image)]])
            #expect(fromImage.status == .notFound)
            let list = try body(try await apiCall(client, .get, "\(bobBase)/volumes/detail", token: bobToken))
            #expect(list["volumes"]?.arrayValue?.isEmpty == true)
            // A reader lists but cannot create.
            #expect(try await apiCall(client, .get, "/volume/v3/\(carol)/volumes", token: readerToken).status == .ok)
            #expect(try await apiCall(client, .post, "/volume/v3/\(carol)/volumes", token: readerToken, json: ["volume": ["size": 1]]).status == .forbidden)
            // An admin reaches any existing project; an unknown one is 404.
            let admin = try await adminToken(client)
            #expect(try await apiCall(client, .get, "/volume/v3/\(alice)/volumes/\(vid)", token: admin).status == .ok)
            #expect(try await apiCall(client, .get, "/volume/v3/\(UUID().uuidString)/volumes", token: admin).status == .notFound)
            #expect(try await apiCall(client, .get, "\(bobBase)/volumes", token: nil).status == .unauthorized)
            // The catalog lists image and volumev3 with the project in the volume URL.
            let issued = try await issue(client, passwordAuth(user: "alice", password: "pw-alice-123", project: "alice"))
            let catalog = try #require(try body(issued)["token"]?["catalog"]?.arrayValue)
            let volume = try #require(catalog.first { $0["type"] == "volumev3" })
            let url = try #require(volume["endpoints"]?.arrayValue?.first { $0["interface"] == "public" }?["url"]?.stringValue)
            #expect(url.hasSuffix("/volume/v3/\(alice)"))
            #expect(catalog.contains { $0["type"] == "image" })
            // Discovery.
            #expect(try await apiCall(client, .get, "/volume/", token: nil).status.code == 300)
            #expect(try body(try await apiCall(client, .get, "/volume/v3", token: nil))["versions"]?.arrayValue?.first?["id"] == "v3.0")
        }
    }

    @Test("bad input: JSON, sizes, names, sources", arguments: Backend.all)
    func badInput(backend: Backend) async throws {
        try await withHarness(backend) { harness, client in
            let (project, token) = try await projectMember(harness, client, name: "alice")
            let base = "/volume/v3/\(project)"
            let badJSON = try await client.execute(
                uri: "\(base)/volumes", method: .post, headers: [xAuthToken: token, .contentType: "application/json"],
                body: ByteBuffer(string: "{\"volume\": "))
            #expect(badJSON.status == .badRequest)
            #expect(try body(badJSON)["badRequest"] != nil)
            let image = try await uploadedImage(client, token: token, name: "img", data: [1])
            let cases: [JSON] = [
                [:], ["volume": "x"], ["volume": [:]], ["volume": ["size": 0]], ["volume": ["size": -1]], ["volume": ["size": "big"]],
                ["volume": ["size": 1, "name": "new\nline"]], ["volume": ["size": 1, "name": .string(String(repeating: "v", count: 256))]],
                ["volume": ["size": 1, "imageRef": .string(image), "snapshot_id": .string(UUID().uuidString)]],
                ["volume": ["size": 1, "metadata": ["k": 1]]], ["volume": ["size": 2_000_000]],
            ]
            for request in cases {
                #expect(try await apiCall(client, .post, "\(base)/volumes", token: token, json: request).status == .badRequest, "\(request)")
            }
            let noImage = try await apiCall(client, .post, "\(base)/volumes", token: token, json: ["volume": ["size": 1, "imageRef": .string(UUID().uuidString)]])
            #expect(noImage.status == .notFound)
            #expect(try body(noImage)["itemNotFound"]?["code"] == 404)
            #expect(try await apiCall(client, .get, "\(base)/volumes/not-a-uuid", token: token).status == .notFound)
            let noAction = try await apiCall(client, .post, "\(base)/volumes/\(UUID().uuidString)/action", token: token, json: ["os-frobnicate": [:]])
            #expect(noAction.status == .badRequest)
            let noVolume = try await apiCall(client, .post, "\(base)/snapshots", token: token, json: ["snapshot": ["name": "x"]])
            #expect(noVolume.status == .badRequest)
            #expect(try harness.objects.store.list().filter { $0.name.rawValue.hasPrefix("vol-") }.isEmpty)
        }
    }
}
