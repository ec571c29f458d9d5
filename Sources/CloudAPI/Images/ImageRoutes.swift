import BlockStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// Glance v2 over HTTP, under `/image` (the catalog's `image` endpoint, unversioned as Glance's
/// usually is): version discovery at `/image`, images at `/image/v2/images...`, schemas at
/// `/image/v2/schemas/...`. Errors use the shared `{"error": {...}}` body (clients read the status
/// and the message).
struct ImageRoutes: Sendable {
    let images: ImageService
    let identity: IdentityService
    let publicURL: String?

    static let prefix = "/image"

    func register(on router: Router<BasicRequestContext>) {
        let p = Self.prefix
        // Also answers `/image/` (the router ignores a trailing slash).
        router.get(RouterPath(p)) { request, _ in jsonResponse(versions(request), status: 300) }
        router.get(RouterPath(p + "/versions")) { request, _ in jsonResponse(versions(request)) }
        router.get(RouterPath(p + "/v2/schemas/image")) { _, _ in jsonResponse(ImageJSON.imageSchema) }
        router.get(RouterPath(p + "/v2/schemas/images")) { _, _ in jsonResponse(ImageJSON.imagesSchema) }
        router.post(RouterPath(p + "/v2/images")) { request, _ in
            let caller = try await identity.caller(request)
            var request = request
            let body = try await request.jsonObject()
            let image = try await images.create(caller, body)
            return jsonResponse(
                ImageJSON.image(image), status: 201,
                headers: [.location: request.baseURL(configured: publicURL) + p + "/v2/images/" + image.id])
        }
        router.get(RouterPath(p + "/v2/images")) { request, _ in
            let caller = try await identity.caller(request)
            let query = try Self.listQuery(request)
            let (page, more) = try await images.list(caller, query)
            var body: [String: JSON] = [
                "images": .array(page.map(ImageJSON.image)), "first": "/v2/images", "schema": "/v2/schemas/images",
            ]
            if more, let last = page.last { body["next"] = .string(Self.nextLink(request, marker: last.id, limit: query.limit)) }
            return jsonResponse(.object(body))
        }
        router.get(RouterPath(p + "/v2/images/{id}")) { request, context in
            let caller = try await identity.caller(request)
            return jsonResponse(ImageJSON.image(try await images.image(caller, id: context.parameters.get("id") ?? "")))
        }
        router.patch(RouterPath(p + "/v2/images/{id}")) { request, context in
            let caller = try await identity.caller(request)
            let type = request.headers[.contentType]?.lowercased() ?? ""
            guard type.contains("json-patch") else {
                throw CloudError(
                    status: 415, message: "Unsupported Content-Type; use application/openstack-images-v2.1-json-patch.")
            }
            var request = request
            guard let list = try await request.jsonValue().arrayValue else {
                throw CloudError.badRequest("A JSON patch is an array of operations.")
            }
            var operations: [ImageService.PatchOperation] = []
            for item in list {
                guard let o = item.objectValue, let op = o["op"]?.stringValue, let path = o["path"]?.stringValue else {
                    throw CloudError.badRequest("Each patch operation needs op and path.")
                }
                operations.append(.init(op: op, path: path, value: o["value"]))
            }
            let image = try await images.update(caller, id: context.parameters.get("id") ?? "", operations)
            return jsonResponse(ImageJSON.image(image))
        }
        router.delete(RouterPath(p + "/v2/images/{id}")) { request, context in
            let caller = try await identity.caller(request)
            try await images.delete(caller, id: context.parameters.get("id") ?? "")
            return emptyResponse(status: 204)
        }
        router.put(RouterPath(p + "/v2/images/{id}/file")) { request, context in
            let caller = try await identity.caller(request)
            var declared: Int64?
            if let length = request.headers[.contentLength] {
                guard let n = Int64(length), n >= 0 else { throw CloudError.badRequest("Invalid Content-Length.") }
                declared = n
            }
            _ = try await images.upload(
                caller, id: context.parameters.get("id") ?? "", declaredLength: declared, body: request.body)
            return emptyResponse(status: 204)
        }
        router.get(RouterPath(p + "/v2/images/{id}/file")) { request, context in
            let caller = try await identity.caller(request)
            let image = try await images.image(caller, id: context.parameters.get("id") ?? "")
            guard let entries = try await images.entries(of: image), let size = image.sizeBytes else {
                return emptyResponse(status: 204)
            }
            var headers: HTTPFields = [.contentType: "application/octet-stream", .contentLength: String(size)]
            if let md5 = image.checksum { headers[HTTPField.Name("Content-MD5")!] = md5 }
            let objects = images.objects
            let body = ResponseBody(contentLength: Int(size)) { writer in
                if size > 0 {
                    try await ObjectStorageMiddleware<BasicRequestContext>.writeBlocks(
                        objects, entries, size: size, range: 0..<size, to: &writer)
                }
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: headers, body: body)
        }
        router.put(RouterPath(p + "/v2/images/{id}/tags/{tag}")) { request, context in
            let caller = try await identity.caller(request)
            try await images.addTag(caller, id: context.parameters.get("id") ?? "", tag: Self.tag(context))
            return emptyResponse(status: 204)
        }
        router.delete(RouterPath(p + "/v2/images/{id}/tags/{tag}")) { request, context in
            let caller = try await identity.caller(request)
            try await images.removeTag(caller, id: context.parameters.get("id") ?? "", tag: Self.tag(context))
            return emptyResponse(status: 204)
        }
    }

    static func tag(_ context: BasicRequestContext) throws(CloudError) -> String {
        let raw = context.parameters.get("tag") ?? ""
        guard let tag = raw.removingPercentEncoding else { throw .badRequest("Bad URL: invalid percent-encoding.") }
        return tag
    }

    /// Glance's version list: v2.0 to v2.9, the newest CURRENT (discovery picks it).
    func versions(_ request: Request) -> JSON {
        let href = request.baseURL(configured: publicURL) + Self.prefix + "/v2/"
        let list: [JSON] = (0...9).reversed().map { minor in
            [
                "id": .string("v2.\(minor)"), "status": minor == 9 ? "CURRENT" : "SUPPORTED",
                "links": [["rel": "self", "href": .string(href)]],
            ]
        }
        return ["versions": .array(list)]
    }

    static func listQuery(_ request: Request) throws(CloudError) -> ImageService.ListQuery {
        let p = request.uri.queryParameters
        var q = ImageService.ListQuery()
        if let limit = p["limit"] {
            guard let n = Int(limit), n >= 0 else { throw .badRequest("limit param must be a non-negative integer.") }
            q.limit = min(n, ImageService.maxListLimit)
        }
        q.marker = p["marker"].map(String.init)
        q.name = p["name"].map(String.init)
        q.status = p["status"].map(String.init)
        if let v = p["visibility"].map(String.init) {
            guard ImageRules.visibilities.contains(v) || v == "all" else { throw .badRequest("Invalid visibility value: \(v).") }
            q.visibility = v == "all" ? nil : v
        }
        q.owner = p["owner"].map(String.init)
        q.tags = p[values: "tag"].map(String.init)
        let keys = ["name", "status", "size", "created_at", "updated_at", "id"]
        if let sort = p["sort"].map(String.init), let first = sort.split(separator: ",").first {
            let parts = first.split(separator: ":").map(String.init)
            guard let key = parts.first, keys.contains(key) else { throw .badRequest("Invalid sort key.") }
            q.sortKey = key
            q.ascending = parts.count > 1 && parts[1] == "asc"
        }
        if let key = p["sort_key"].map(String.init) {
            guard keys.contains(key) else { throw .badRequest("Invalid sort key: \(key).") }
            q.sortKey = key
        }
        if let dir = p["sort_dir"].map(String.init) {
            guard dir == "asc" || dir == "desc" else { throw .badRequest("Invalid sort direction: \(dir).") }
            q.ascending = dir == "asc"
        }
        return q
    }

    /// `/v2/images?<the same filters>&marker=<last>&limit=<n>`.
    static func nextLink(_ request: Request, marker: String, limit: Int) -> String {
        var items = URLComponents(string: "http://x" + request.uri.description)?.queryItems ?? []
        items.removeAll { $0.name == "marker" || $0.name == "limit" }
        items.append(URLQueryItem(name: "limit", value: String(limit)))
        items.append(URLQueryItem(name: "marker", value: marker))
        var components = URLComponents()
        components.path = "/v2/images"
        components.queryItems = items
        return components.string ?? "/v2/images?marker=\(marker)"
    }
}

/// Glance's shapes.
enum ImageJSON {
    static func image(_ i: Image) -> JSON {
        var o: [String: JSON] = [:]
        for (key, value) in i.properties { o[key] = .string(value) }
        o["id"] = .string(i.id)
        o["name"] = i.name.isEmpty ? .null : .string(i.name)
        o["status"] = .string(i.status)
        o["visibility"] = .string(i.visibility)
        o["protected"] = .bool(i.protected)
        o["os_hidden"] = false
        o["owner"] = .string(i.projectID)
        o["disk_format"] = .optional(i.diskFormat)
        o["container_format"] = .optional(i.containerFormat)
        o["min_disk"] = .int(Int(i.minDisk))
        o["min_ram"] = .int(Int(i.minRAM))
        o["size"] = i.sizeBytes.map { .int(Int($0)) } ?? .null
        o["virtual_size"] = .null
        o["checksum"] = .optional(i.checksum)
        o["os_hash_algo"] = .optional(i.hashAlgorithm)
        o["os_hash_value"] = .optional(i.hashValue)
        o["tags"] = .array(i.tags.map(JSON.string))
        o["created_at"] = .string(i.createdAt.iso8601Seconds)
        o["updated_at"] = .string(i.updatedAt.iso8601Seconds)
        o["self"] = .string("/v2/images/\(i.id)")
        o["file"] = .string("/v2/images/\(i.id)/file")
        o["schema"] = "/v2/schemas/image"
        return .object(o)
    }

    static let imageProperties: JSON = [
        "id": ["type": "string", "description": "An identifier for the image", "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"],
        "name": ["type": ["null", "string"], "description": "Descriptive name for the image", "maxLength": 255],
        "status": ["type": "string", "readOnly": true, "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "pending_delete", "deactivated"]],
        "visibility": ["type": "string", "enum": ["community", "public", "private", "shared"]],
        "protected": ["type": "boolean"],
        "os_hidden": ["type": "boolean"],
        "checksum": ["type": ["null", "string"], "readOnly": true, "maxLength": 32],
        "os_hash_algo": ["type": ["null", "string"], "readOnly": true, "maxLength": 64],
        "os_hash_value": ["type": ["null", "string"], "readOnly": true, "maxLength": 128],
        "owner": ["type": ["null", "string"], "maxLength": 255],
        "size": ["type": ["null", "integer"], "readOnly": true],
        "virtual_size": ["type": ["null", "integer"], "readOnly": true],
        "container_format": ["type": ["null", "string"], "enum": [nil, "ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed"]],
        "disk_format": ["type": ["null", "string"], "enum": [nil, "ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop"]],
        "created_at": ["type": "string", "readOnly": true],
        "updated_at": ["type": "string", "readOnly": true],
        "tags": ["type": "array", "items": ["type": "string", "maxLength": 255]],
        "direct_url": ["type": "string", "readOnly": true],
        "min_ram": ["type": "integer"],
        "min_disk": ["type": "integer"],
        "self": ["type": "string", "readOnly": true],
        "file": ["type": "string", "readOnly": true],
        "schema": ["type": "string", "readOnly": true],
        "locations": ["type": "array", "items": ["type": "object"]],
    ]

    static let imageSchema: JSON = [
        "name": "image", "properties": imageProperties, "additionalProperties": ["type": "string"],
        "links": [
            ["rel": "self", "href": "{self}"], ["rel": "enclosure", "href": "{file}"],
            ["rel": "describedby", "href": "{schema}"],
        ],
    ]

    static let imagesSchema: JSON = [
        "name": "images",
        "properties": [
            "images": ["type": "array", "items": imageSchema],
            "schema": ["type": "string"], "first": ["type": "string"], "next": ["type": "string"],
        ],
        "links": [["rel": "first", "href": "{first}"], ["rel": "next", "href": "{next}"], ["rel": "describedby", "href": "{schema}"]],
    ]
}
