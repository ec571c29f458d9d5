import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let openstackAPIVersion = HTTPField.Name("OpenStack-API-Version")!
}

/// Cinder v3 over HTTP, under `/volume` (the catalog's `volumev3` endpoint is
/// `<public_url>/volume/v3/<project id>`): version discovery at `/volume` and `/volume/v3`,
/// volumes, snapshots, one volume type and one availability zone under `/volume/v3/{project}`.
///
/// The URL's project must be the token's (or the token an admin's, and the project must exist);
/// anything else is 403 before any row is read. Readers read; writing needs the member role.
/// A volume or snapshot of another project is 404 (every query names the URL's project).
/// Errors have Cinder's shape, `{"badRequest": {"code": 400, "message": "..."}}`; every answer
/// carries `OpenStack-API-Version: volume 3.0` (the only microversion served).
struct VolumeRoutes: Sendable {
    let volumes: VolumeService
    let identity: IdentityService
    let publicURL: String?

    static let prefix = "/volume"
    static let microversion = "3.0"

    func register(on router: Router<BasicRequestContext>) {
        let p = Self.prefix
        // Also `/volume/` and `/volume/v3/` (the router ignores a trailing slash).
        router.get(RouterPath(p)) { request, _ in
            Self.versioned(jsonResponse(["versions": [version(request)]], status: 300))
        }
        router.get(RouterPath(p + "/v3")) { request, _ in Self.versioned(jsonResponse(["versions": [version(request)]])) }
        let base = p + "/v3/{project}"
        route(router, .get, base) { request, context, caller, project in
            // `GET .../v3/<project>`: what keystoneauth tries first during discovery.
            jsonResponse(["versions": [version(request)]])
        }
        route(router, .get, base + "/volumes") { request, _, _, project in
            try await listVolumes(request, project: project, detail: false)
        }
        route(router, .get, base + "/volumes/detail") { request, _, _, project in
            try await listVolumes(request, project: project, detail: true)
        }
        route(router, .post, base + "/volumes", write: true) { request, _, caller, project in
            var request = request
            let body = try await request.jsonObject()
            let v = try body.requiredObject("volume", in: "the request")
            var r = VolumeService.CreateRequest()
            if let size = v["size"], !size.isNull {
                guard let n = size.integerValue else { throw CloudError.badRequest("Invalid input received: size must be an integer.") }
                r.sizeGiB = n
            }
            r.name = try Self.text(v, "name") ?? ""
            r.description = try Self.text(v, "description") ?? ""
            r.imageRef = try v.string("imageRef", in: "volume")
            r.snapshotID = try v.string("snapshot_id", in: "volume")
            r.sourceVolumeID = try v.string("source_volid", in: "volume")
            r.metadata = try Self.metadata(v) ?? [:]
            let volume = try await volumes.create(caller, project: project, r)
            return jsonResponse(["volume": VolumeJSON.volume(volume, base: link(request, project))], status: 202)
        }
        route(router, .get, base + "/volumes/{id}") { request, context, _, project in
            let volume = try await volumes.volume(project: project, id: context.parameters.get("id") ?? "")
            return jsonResponse(["volume": VolumeJSON.volume(volume, base: link(request, project))])
        }
        route(router, .put, base + "/volumes/{id}", write: true) { request, context, _, project in
            var request = request
            let v = try await request.jsonObject().requiredObject("volume", in: "the request")
            let volume = try await volumes.update(
                project: project, id: context.parameters.get("id") ?? "", name: try Self.text(v, "name"),
                description: try Self.text(v, "description"), metadata: try Self.metadata(v))
            return jsonResponse(["volume": VolumeJSON.volume(volume, base: link(request, project))])
        }
        route(router, .delete, base + "/volumes/{id}", write: true) { _, context, _, project in
            try await volumes.delete(project: project, id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 202)
        }
        route(router, .post, base + "/volumes/{id}/action", write: true) { request, context, caller, project in
            var request = request
            let body = try await request.jsonObject()
            let id = context.parameters.get("id") ?? ""
            if let extend = try body.object("os-extend", in: "the request") {
                guard let size = extend["new_size"]?.integerValue else {
                    throw CloudError.badRequest("Invalid input received: os-extend needs new_size (GiB).")
                }
                _ = try await volumes.extend(project: project, id: id, newSizeGiB: size)
                return emptyResponse(status: 202)
            }
            if let upload = try body.object("os-volume_upload_image", in: "the request") {
                guard let name = try upload.string("image_name", in: "os-volume_upload_image") else {
                    throw CloudError.badRequest("Invalid input received: os-volume_upload_image needs image_name.")
                }
                try ResourceNames.check(name, what: "image name")
                let visibility = try upload.string("visibility", in: "os-volume_upload_image") ?? "private"
                guard ImageRules.visibilities.contains(visibility) else {
                    throw CloudError.badRequest("Invalid input received: visibility must be private, public, shared or community.")
                }
                if visibility == "public" && !caller.isAdmin { throw CloudError.forbidden("Only an admin may make an image public.") }
                let disk = try upload.string("disk_format", in: "os-volume_upload_image")
                let container = try upload.string("container_format", in: "os-volume_upload_image")
                if let disk, !ImageRules.diskFormats.contains(disk) { throw CloudError.badRequest("Invalid disk_format \(disk).") }
                if let container, !ImageRules.containerFormats.contains(container) {
                    throw CloudError.badRequest("Invalid container_format \(container).")
                }
                let (volume, image) = try await volumes.uploadToImage(
                    caller, project: project, id: id, imageName: name, diskFormat: disk, containerFormat: container,
                    visibility: visibility, protected: try upload.bool("protected", in: "os-volume_upload_image") ?? false)
                return jsonResponse(
                    [
                        "os-volume_upload_image": [
                            "id": .string(volume.id), "updated_at": .string(VolumeJSON.date(volume.updatedAt)),
                            "status": .string(volume.status), "display_description": .string(volume.description),
                            "size": .int(Int(volume.sizeGiB)), "volume_type": VolumeJSON.volumeType,
                            "image_id": .string(image.id), "image_name": .string(image.name),
                            "container_format": .optional(image.containerFormat), "disk_format": .optional(image.diskFormat),
                            "visibility": .string(image.visibility), "protected": .bool(image.protected),
                        ]
                    ], status: 202)
            }
            throw CloudError.badRequest("Invalid input received: supported actions are os-extend and os-volume_upload_image.")
        }
        route(router, .get, base + "/snapshots") { request, _, _, project in
            try await listSnapshots(request, project: project, detail: false)
        }
        route(router, .get, base + "/snapshots/detail") { request, _, _, project in
            try await listSnapshots(request, project: project, detail: true)
        }
        route(router, .post, base + "/snapshots", write: true) { request, _, _, project in
            var request = request
            let s = try await request.jsonObject().requiredObject("snapshot", in: "the request")
            guard let volumeID = try s.string("volume_id", in: "snapshot") else {
                throw CloudError.badRequest("Invalid input received: snapshot needs volume_id.")
            }
            _ = try s.bool("force", in: "snapshot")  // no attachments here: every available volume can be snapshotted
            let snapshot = try await volumes.createSnapshot(
                project: project, volumeID: volumeID, name: try Self.text(s, "name") ?? "",
                description: try Self.text(s, "description") ?? "", metadata: try Self.metadata(s) ?? [:])
            return jsonResponse(["snapshot": VolumeJSON.snapshot(snapshot, base: link(request, project))], status: 202)
        }
        route(router, .get, base + "/snapshots/{id}") { request, context, _, project in
            let snapshot = try await volumes.snapshot(project: project, id: context.parameters.get("id") ?? "")
            return jsonResponse(["snapshot": VolumeJSON.snapshot(snapshot, base: link(request, project))])
        }
        route(router, .put, base + "/snapshots/{id}", write: true) { request, context, _, project in
            var request = request
            let s = try await request.jsonObject().requiredObject("snapshot", in: "the request")
            let snapshot = try await volumes.updateSnapshot(
                project: project, id: context.parameters.get("id") ?? "", name: try Self.text(s, "name"),
                description: try Self.text(s, "description"), metadata: try Self.metadata(s))
            return jsonResponse(["snapshot": VolumeJSON.snapshot(snapshot, base: link(request, project))])
        }
        route(router, .delete, base + "/snapshots/{id}", write: true) { _, context, _, project in
            try await volumes.deleteSnapshot(project: project, id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 202)
        }
        route(router, .get, base + "/types") { _, _, _, _ in jsonResponse(["volume_types": [VolumeJSON.volumeTypeEntity]]) }
        route(router, .get, base + "/types/{id}") { _, context, _, _ in
            let id = context.parameters.get("id") ?? ""
            guard id == "default" || id == VolumeJSON.volumeTypeID || id == "snf-store" else {
                throw CloudError.notFound("Volume type \(id) could not be found.")
            }
            return jsonResponse(["volume_type": VolumeJSON.volumeTypeEntity])
        }
        route(router, .get, base + "/os-availability-zone") { _, _, _, _ in
            jsonResponse(["availabilityZoneInfo": [["zoneName": "nova", "zoneState": ["available": true]]]])
        }
    }

    /// Registers `handler` for `path`: authorizes the caller for the URL's project, renders
    /// errors in Cinder's shape and adds the microversion headers.
    func route(
        _ router: Router<BasicRequestContext>, _ method: HTTPRequest.Method, _ path: String, write: Bool = false,
        _ handler: @escaping @Sendable (Request, BasicRequestContext, Caller, String) async throws -> Response
    ) {
        router.on(RouterPath(path), method: method) { request, context in
            let response: Response
            do {
                let project = context.parameters.get("project") ?? ""
                let caller = try await authorize(request, project: project, write: write)
                response = try await handler(request, context, caller, project)
            } catch let error as CloudError where error.status != 401 {
                response = Self.fault(error)
            }
            return Self.versioned(response)
        }
    }

    func authorize(_ request: Request, project: String, write: Bool) async throws -> Caller {
        let caller = try await identity.caller(request)
        if caller.projectID != project {
            guard caller.isAdmin else { throw CloudError.forbidden("Policy doesn't allow this operation on another project.") }
            guard (try? await identity.project(id: project)) != nil else {
                throw CloudError.notFound("Project \(project) could not be found.")
            }
        }
        if write && !caller.canWrite { throw CloudError.forbidden("Policy doesn't allow this operation to be performed.") }
        return caller
    }

    static func versioned(_ response: Response) -> Response {
        var response = response
        response.headers[.openstackAPIVersion] = "volume \(microversion)"
        response.headers[.vary] = "OpenStack-API-Version"
        return response
    }

    /// Cinder's fault body.
    static func fault(_ error: CloudError) -> Response {
        let name =
            switch error.status {
            case 400: "badRequest"
            case 403: "forbidden"
            case 404: "itemNotFound"
            case 409: "conflict"
            case 413: "overLimit"
            case 415: "unsupportedMediaType"
            default: "computeFault"
            }
        return jsonResponse([name: ["code": .int(error.status), "message": .string(error.message)]], status: error.status)
    }

    func link(_ request: Request, _ project: String) -> String {
        request.baseURL(configured: publicURL) + Self.prefix + "/v3/" + project
    }

    func version(_ request: Request) -> JSON {
        [
            "id": "v3.0", "status": "CURRENT", "version": .string(Self.microversion), "min_version": "3.0",
            "updated": "2023-07-17T00:00:00Z",
            "links": [["rel": "self", "href": .string(request.baseURL(configured: publicURL) + Self.prefix + "/v3/")]],
            "media-types": [["base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"]],
        ]
    }

    static func text(_ o: [String: JSON], _ key: String) throws(CloudError) -> String? {
        guard let value = try o.string(key, in: "the request") else { return nil }
        try ResourceNames.check(value, what: key)
        return value
    }

    static func metadata(_ o: [String: JSON]) throws(CloudError) -> [String: String]? {
        guard let value = o["metadata"], !value.isNull else { return nil }
        guard let object = value.objectValue, object.count <= 128 else {
            throw .badRequest("Invalid input received: metadata must be an object of at most 128 strings.")
        }
        var result: [String: String] = [:]
        for (key, item) in object {
            guard let s = item.stringValue, !key.isEmpty, key.utf8.count <= 255, s.utf8.count <= 255 else {
                throw .badRequest("Invalid input received: metadata keys and values are strings of at most 255 bytes.")
            }
            result[key] = s
        }
        return result
    }

    struct Page: Sendable {
        var limit: Int?
        var marker: String?
        var ascending = false
        var sortKey = "created_at"
    }

    static func page(_ request: Request) throws(CloudError) -> Page {
        let p = request.uri.queryParameters
        var page = Page()
        if let limit = p["limit"] {
            guard let n = Int(limit), n >= 0 else { throw .badRequest("Invalid input received: limit must be a non-negative integer.") }
            page.limit = n
        }
        page.marker = p["marker"].map(String.init)
        if let sort = p["sort"].map(String.init), let first = sort.split(separator: ",").first {
            let parts = first.split(separator: ":").map(String.init)
            page.sortKey = parts[0]
            page.ascending = parts.count > 1 && parts[1] == "asc"
        }
        if let key = p["sort_key"] { page.sortKey = String(key) }
        if let dir = p["sort_dir"] { page.ascending = dir == "asc" }
        guard ["created_at", "updated_at", "name", "id", "size", "status"].contains(page.sortKey) else {
            throw .badRequest("Invalid input received: unknown sort key \(page.sortKey).")
        }
        return page
    }

    /// Sorts (then by id), skips past `marker`, cuts at `limit`; true when more follow.
    static func paged<T>(
        _ items: [T], _ page: Page, id: (T) -> String, key: (T) -> String
    ) throws(CloudError) -> ([T], Bool) {
        var sorted = items.sorted { a, b in
            let (ka, kb) = (key(a), key(b))
            if ka != kb { return page.ascending ? ka < kb : ka > kb }
            return page.ascending ? id(a) < id(b) : id(a) > id(b)
        }
        if let marker = page.marker {
            guard let index = sorted.firstIndex(where: { id($0) == marker.lowercased() }) else {
                throw .badRequest("Invalid input received: marker \(marker) not found.")
            }
            sorted.removeFirst(index + 1)
        }
        guard let limit = page.limit else { return (sorted, false) }
        return (Array(sorted.prefix(limit)), sorted.count > limit)
    }

    static func nextLink(_ request: Request, base: String, path: String, marker: String, limit: Int?) -> JSON {
        var items = URLComponents(string: "http://x" + request.uri.description)?.queryItems ?? []
        items.removeAll { $0.name == "marker" }
        items.append(URLQueryItem(name: "marker", value: marker))
        var components = URLComponents(string: base + path) ?? URLComponents()
        components.queryItems = items
        return [["rel": "next", "href": .string(components.string ?? base + path)]]
    }

    func listVolumes(_ request: Request, project: String, detail: Bool) async throws -> Response {
        let page = try Self.page(request)
        let q = request.uri.queryParameters
        var all = try await volumes.volumes(project: project)
        if let name = q["name"] { all = all.filter { $0.name == String(name) } }
        if let status = q["status"] { all = all.filter { $0.status == String(status) } }
        let (items, more) = try Self.paged(all, page, id: \.id) { v in
            switch page.sortKey {
            case "name": v.name
            case "status": v.status
            case "id": v.id
            case "size": String(format: "%020lld", v.sizeGiB)
            case "updated_at": String(format: "%020lld", v.updatedAt.microseconds)
            default: String(format: "%020lld", v.createdAt.microseconds)
            }
        }
        let base = link(request, project)
        var body: [String: JSON] = [
            "volumes": .array(items.map { detail ? VolumeJSON.volume($0, base: base) : VolumeJSON.summary($0, base: base) })
        ]
        if more, let last = items.last {
            body["volumes_links"] = Self.nextLink(
                request, base: base, path: detail ? "/volumes/detail" : "/volumes", marker: last.id, limit: page.limit)
        }
        return jsonResponse(.object(body))
    }

    func listSnapshots(_ request: Request, project: String, detail: Bool) async throws -> Response {
        let page = try Self.page(request)
        let q = request.uri.queryParameters
        var all = try await volumes.snapshots(project: project)
        if let name = q["name"] { all = all.filter { $0.name == String(name) } }
        if let status = q["status"] { all = all.filter { $0.status == String(status) } }
        if let volume = q["volume_id"] { all = all.filter { $0.volumeID == String(volume) } }
        let (items, more) = try Self.paged(all, page, id: \.id) { s in
            switch page.sortKey {
            case "name": s.name
            case "status": s.status
            case "id": s.id
            case "size": String(format: "%020lld", s.sizeGiB)
            case "updated_at": String(format: "%020lld", s.updatedAt.microseconds)
            default: String(format: "%020lld", s.createdAt.microseconds)
            }
        }
        let base = link(request, project)
        var body: [String: JSON] = ["snapshots": .array(items.map { VolumeJSON.snapshot($0, base: base) })]
        if more, let last = items.last {
            body["snapshots_links"] = Self.nextLink(
                request, base: base, path: detail ? "/snapshots/detail" : "/snapshots", marker: last.id, limit: page.limit)
        }
        return jsonResponse(.object(body))
    }
}

/// Cinder's shapes.
enum VolumeJSON {
    static let volumeTypeID = "5f3a8a52-0c3e-4f5e-9d7c-5e5b1c7a0001"
    static let volumeType: JSON = "snf-store"
    static let volumeTypeEntity: JSON = [
        "id": .string(volumeTypeID), "name": volumeType, "description": "Thin volumes on the snf-store block store",
        "is_public": true, "extra_specs": [:], "os-volume-type-access:is_public": true, "qos_specs_id": nil,
    ]

    /// `2024-01-01T00:00:00.000000` (Cinder prints no zone).
    static func date(_ t: Timestamp) -> String { String(t.iso8601Microseconds.dropLast()) }

    static func links(_ base: String, _ kind: String, _ id: String) -> JSON {
        [["rel": "self", "href": .string("\(base)/\(kind)/\(id)")], ["rel": "bookmark", "href": .string("\(base)/\(kind)/\(id)")]]
    }

    static func summary(_ v: Volume, base: String) -> JSON {
        ["id": .string(v.id), "name": .string(v.name), "links": links(base, "volumes", v.id)]
    }

    static func volume(_ v: Volume, base: String) -> JSON {
        var o: [String: JSON] = [
            "id": .string(v.id), "name": .string(v.name), "description": .string(v.description), "status": .string(v.status),
            "size": .int(Int(v.sizeGiB)), "volume_type": volumeType, "bootable": .string(v.bootable ? "true" : "false"),
            "multiattach": false, "encrypted": false, "snapshot_id": .optional(v.snapshotID),
            "source_volid": .optional(v.sourceVolumeID), "attachments": [], "availability_zone": "nova",
            "metadata": .object(v.metadata.mapValues(JSON.string)), "created_at": .string(date(v.createdAt)),
            "updated_at": .string(date(v.updatedAt)), "user_id": .string(v.userID),
            "os-vol-tenant-attr:tenant_id": .string(v.projectID), "replication_status": nil, "consistencygroup_id": nil,
            "links": links(base, "volumes", v.id),
        ]
        if let image = v.imageID { o["volume_image_metadata"] = ["image_id": .string(image)] }
        return .object(o)
    }

    static func snapshot(_ s: VolumeSnapshot, base: String) -> JSON {
        [
            "id": .string(s.id), "name": .string(s.name), "description": .string(s.description),
            "volume_id": .string(s.volumeID), "status": .string(s.status), "size": .int(Int(s.sizeGiB)),
            "created_at": .string(date(s.createdAt)), "updated_at": .string(date(s.updatedAt)),
            "metadata": .object(s.metadata.mapValues(JSON.string)), "progress": "100%",
            "os-extended-snapshot-attributes:project_id": .string(s.projectID),
            "os-extended-snapshot-attributes:progress": "100%",
        ]
    }
}
