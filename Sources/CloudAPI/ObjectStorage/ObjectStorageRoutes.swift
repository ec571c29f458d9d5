import BlockStore
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

extension HTTPField.Name {
    static let xTransID = HTTPField.Name("X-Trans-Id")!
    static let xTimestamp = HTTPField.Name("X-Timestamp")!
    static let xCopyFrom = HTTPField.Name("X-Copy-From")!
    static let destination = HTTPField.Name("Destination")!
    static let xFreshMetadata = HTTPField.Name("X-Fresh-Metadata")!
    static let xObjectManifest = HTTPField.Name("X-Object-Manifest")!
    static let xDeleteAt = HTTPField.Name("X-Delete-At")!
    static let xDeleteAfter = HTTPField.Name("X-Delete-After")!
    static let xObjectHash = HTTPField.Name("X-Object-Hash")!
    static let xStaticLargeObject = HTTPField.Name("X-Static-Large-Object")!
}

extension HTTPRequest.Method {
    static let copy = HTTPRequest.Method("COPY")!
}

/// Swift v1 over HTTP: `/info` and `/v1/<account>[/<container>[/<object>]]`, where the account is
/// `AUTH_<project id>` or `<project id>`.
///
/// A middleware rather than router routes: object names hold any character, `/` included and
/// trailing, and Swift has a `COPY` method; the path is parsed here, percent-decoded once.
/// Every request under `/v1` needs a token scoped to the account's project (or an admin token):
/// anything else is 403 before a row is read, whether the project exists or not. Readers may
/// read; writing needs the member role. Errors are plain text, as Swift answers them.
public struct ObjectStorageMiddleware<Context: RequestContext>: RouterMiddleware {
    let objects: ObjectStorageService
    let identity: IdentityService

    public init(objects: ObjectStorageService, identity: IdentityService) {
        self.objects = objects
        self.identity = identity
    }

    public func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let path = request.uri.path
        if path == "/healthcheck" && (request.method == .get || request.method == .head) {
            // Swift's healthcheck middleware: 200 "OK" when the proxy answers.
            var headers: HTTPFields = [:]
            headers[.contentType] = "text/plain"
            headers[.xTransID] = Self.transactionID()
            return Response(
                status: .ok, headers: headers,
                body: .init(byteBuffer: ByteBuffer(string: request.method == .head ? "" : "OK")))
        }
        if path == "/info" || path == "/info/" {
            guard request.method == .get || request.method == .head else { return Self.error(.init(status: 405, message: "Method Not Allowed"), request) }
            return jsonResponse(ObjectStorageInfo.document)
        }
        guard path == "/v1" || path.hasPrefix("/v1/") else { return try await next(request, context) }
        var response: Response
        do {
            response = try await route(request, path: path)
        } catch let error as CloudError {
            response = Self.error(error, request)
        } catch let error as StoreError where error.code == .notFound {
            response = Self.error(.notFound("Not Found"), request)
        }
        response.headers[.xTransID] = Self.transactionID()
        return response
    }

    /// Swift's transaction id: `tx`, 21 random hex digits, `-`, the Unix time in 10 hex digits
    /// (clients and tempest check the shape).
    static func transactionID() -> String {
        let random = UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "").prefix(21)
        let time = String(UInt64(Date().timeIntervalSince1970), radix: 16)
        return "tx" + random + "-" + String(repeating: "0", count: max(0, 10 - time.count)) + time
    }

}

/// `GET /info`: Swift's capabilities, and Pithos' block size and hash.
enum ObjectStorageInfo {
    /// The one storage policy: every container's blocks live in the same block store.
    static let storagePolicy = "Policy-0"

    static let document: JSON = [
        "swift": [
            "version": "2.34.0", "max_file_size": .int(Int(ObjectLimits.maxFileSizeBytes)),
            "max_object_name_length": .int(ObjectLimits.maxObjectNameBytes),
            "container_listing_limit": .int(ObjectLimits.listingLimit),
            "account_listing_limit": .int(ObjectLimits.listingLimit),
            "max_meta_name_length": .int(ObjectLimits.maxMetaNameBytes),
            "max_meta_value_length": .int(ObjectLimits.maxMetaValueBytes),
            "max_meta_count": .int(ObjectLimits.maxMetaCount),
            "max_meta_overall_size": .int(ObjectLimits.maxMetaOverallBytes),
            "max_container_name_length": .int(ObjectLimits.maxContainerNameBytes),
            "max_account_name_length": 256, "max_header_size": 8192, "extra_header_count": 0,
            "strict_cors_mode": true, "allow_account_management": false, "account_autocreate": true,
            "policies": [["name": .string(storagePolicy), "default": true]],
        ],
        "slo": [
            "max_manifest_segments": .int(ObjectStorageService.maxManifestSegments),
            "max_manifest_size": .int(ObjectStorageService.maxManifestBytes), "min_segment_size": 1,
        ],
        // X-Account-Meta-Quota-Bytes (the project's storage quota) and X-Account-Quota-Count,
        // set by a ResellerAdmin.
        "account_quotas": [:],
        "pithos": ["block_size": .int(BlockStore.blockSizeBytes), "block_hash": .string(BlockStore.blockHashName)],
    ]
}

extension ObjectStorageMiddleware {

    // MARK: Routing

    func route(_ request: Request, path: String) async throws -> Response {
        let rest = path.dropFirst("/v1".count).drop { $0 == "/" }
        let parts = rest.split(separator: "/", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        guard let accountPart = parts.first, !accountPart.isEmpty, let account = accountPart.removingPercentEncoding else {
            throw CloudError.badRequest("Bad URL: no account.")
        }
        guard let container = parts.count > 1 ? parts[1].removingPercentEncoding : "",
            let object = parts.count > 2 ? parts[2].removingPercentEncoding : ""
        else { throw CloudError.badRequest("Bad URL: invalid percent-encoding.") }
        let project = account.hasPrefix("AUTH_") ? String(account.dropFirst(5)) : account
        let write = ![.get, .head].contains(request.method)
        if container.isEmpty && !object.isEmpty { throw CloudError.badRequest("Bad URL: an object needs a container.") }
        switch try await authorize(request, project: project, write: write) {
        case .owner(let caller):
            if container.isEmpty { return try await accountRequest(request, project: project, caller: caller) }
            if object.isEmpty { return try await containerRequest(request, project: project, container: container, owner: true) }
            return try await objectRequest(request, project: project, container: container, name: object)
        case .other(let caller):
            return try await grantedRequest(request, caller: caller, project: project, container: container, object: object)
        }
    }

    /// Who a request comes from, for the account it names.
    enum Access {
        /// The account's project (or an admin or reseller admin): everything its roles allow.
        case owner(IdentityService.Authorization)
        /// Anyone else, with a token or none (nil): only what a container ACL grants.
        case other(IdentityService.Authorization?)
    }

    /// A request from outside the account's project: allowed only when the container's ACL grants
    /// it (``ContainerACL``), else 403, or 401 without a token. A missing container is the same
    /// 403/401, so nothing about the account is revealed. Readers get object GET/HEAD of objects
    /// with bytes of their own (not DLOs or SLOs read through segments, which would read other
    /// containers) and container GET/HEAD (without the ACLs); writers object PUT/POST/DELETE.
    /// Copies, manifests and Pithos calls are the owner's.
    func grantedRequest(
        _ request: Request, caller: IdentityService.Authorization?, project: String, container: String, object: String
    ) async throws -> Response {
        let denied =
            caller == nil
            ? CloudError.unauthorized("Unauthorized: this server could not verify that you are authorized to access the document you requested.")
            : CloudError.forbidden("Forbidden: access was denied to this resource.")
        guard !container.isEmpty, let acl = await objects.containerACL(project: project, name: container) else { throw denied }
        let reading = request.method == .get || request.method == .head
        func userGrant(_ list: String?) -> Bool {
            caller.map { ContainerACL.grants(list, user: $0.user, project: $0.project) } ?? false
        }
        let referer = request.headers[HTTPField.Name("Referer")!]
        if object.isEmpty {
            guard reading, Self.hasFlag(request, "update") == false,
                userGrant(acl.read) || ContainerACL.grantsReferrer(acl.read, referer: referer, listing: true)
            else { throw denied }
            return try await containerRequest(request, project: project, container: container, owner: false)
        }
        let plain = !Self.hasFlag(request, "hashmap") && Self.multipartManifest(request) == nil
            && request.headers[.xCopyFrom] == nil && request.headers[.xObjectManifest] == nil
        guard plain else { throw denied }
        if reading {
            guard userGrant(acl.read) || ContainerACL.grantsReferrer(acl.read, referer: referer, listing: false) else { throw denied }
            let found = try await objects.object(project: project, container: container, name: object)
            guard found.manifest == nil, found.slo?.concatenated ?? true else { throw denied }
            return try await objectResponse(request, project: project, found)
        }
        guard [.put, .post, .delete].contains(request.method), userGrant(acl.write) else { throw denied }
        return try await objectRequest(request, project: project, container: container, name: object)
    }

    /// 401 without a valid token; 403 unless it is scoped to `project` (with the member role to
    /// write) or is an admin's or a reseller admin's token (Swift's keystoneauth lets a user with
    /// the `ResellerAdmin` role on any project use every account), in which case the project must
    /// exist (404). Returns the caller.
    /// Without `X-Auth-Token`, or with one from another project, the caller is ``Access/other``
    /// (container ACLs decide; see ``grantedRequest``).
    func authorize(_ request: Request, project: String, write: Bool) async throws -> Access {
        guard let secret = request.headers[.xAuthToken] else { return .other(nil) }
        guard let a = try await identity.validate(secret) else {
            throw CloudError.unauthorized("Unauthorized: this server could not verify that you are authorized to access the document you requested.")
        }
        if a.project?.id == project {
            if write && !a.roles.contains(where: { $0.name == BuiltinRole.member.rawValue }) && !Self.isResellerAdmin(a) {
                throw CloudError.forbidden("Forbidden: access was denied to this resource.")
            }
            return .owner(a)
        }
        guard Self.isResellerAdmin(a) else { return .other(a) }
        guard (try? await identity.project(id: project)) != nil else { throw CloudError.notFound("Not Found") }
        return .owner(a)
    }

    /// Swift's `reseller_admin_role`: may use every account and set account quotas.
    static var resellerAdminRole: String { "ResellerAdmin" }

    /// An admin, or a holder of ``resellerAdminRole`` (on the token's project).
    static func isResellerAdmin(_ a: IdentityService.Authorization) -> Bool {
        a.isAdmin || a.roles.contains { $0.name.caseInsensitiveCompare(resellerAdminRole) == .orderedSame }
    }

    // MARK: Account

    func accountRequest(_ request: Request, project: String, caller: IdentityService.Authorization) async throws -> Response {
        switch request.method {
        case .get, .head:
            let account = try await objects.account(project: project)
            var headers = accountHeaders(account)
            if request.method == .head { return Self.empty(204, headers) }
            let query = try listingQuery(request)
            let entries = try await objects.listContainers(project: project, query)
            return listingResponse(
                request, entries, headers: &headers,
                json: { c in
                    [
                        "name": .string(c.name), "count": .int(Int(c.objectCount)), "bytes": .int(Int(c.bytesUsed)),
                        "last_modified": .string(Self.listingDate(c.modifiedAt)),
                    ]
                }, name: \.name, xml: (root: "account", name: "AUTH_\(project)", item: "container"))
        case .post:
            var change = metadataChange(request, kind: "account")
            // Swift's account quotas: only a reseller admin sets or removes them.
            let bytes = try Self.quotaHeader(request, set: "X-Account-Meta-Quota-Bytes", remove: "X-Remove-Account-Meta-Quota-Bytes")
            let count = try Self.quotaHeader(request, set: "X-Account-Quota-Count", remove: "X-Remove-Account-Quota-Count")
            change.set["quota-bytes"] = nil
            change.remove.remove("quota-bytes")
            if bytes != nil || count != nil {
                guard Self.isResellerAdmin(caller) else { throw CloudError.forbidden("Forbidden: access was denied to this resource.") }
            }
            if case .some(let limit) = count {
                if let limit { change.set[ObjectAccount.countQuotaKey] = String(limit) } else { change.remove.insert(ObjectAccount.countQuotaKey) }
            }
            try await objects.updateAccountMetadata(project: project, change)
            if case .some(let limit) = bytes { try await objects.quotas.setLimit(project: project, .storageBytes, limit: limit) }
            return Self.empty(204, [:])
        default:
            throw CloudError(status: 405, message: "Method Not Allowed")
        }
    }

    func accountHeaders(_ a: ObjectAccount) -> HTTPFields {
        var h: HTTPFields = [:]
        h[HTTPField.Name("X-Account-Container-Count")!] = String(a.containerCount)
        h[HTTPField.Name("X-Account-Object-Count")!] = String(a.objectCount)
        h[HTTPField.Name("X-Account-Bytes-Used")!] = String(a.bytesUsed)
        // One storage policy (`/info` lists it): Swift reports each policy's share of the account
        // once the account has a container in it.
        if a.containerCount > 0 {
            h[HTTPField.Name("X-Account-Storage-Policy-\(ObjectStorageInfo.storagePolicy)-Container-Count")!] = String(a.containerCount)
            h[HTTPField.Name("X-Account-Storage-Policy-\(ObjectStorageInfo.storagePolicy)-Object-Count")!] = String(a.objectCount)
            h[HTTPField.Name("X-Account-Storage-Policy-\(ObjectStorageInfo.storagePolicy)-Bytes-Used")!] = String(a.bytesUsed)
        }
        // The storage quota in force (bytes), by Pithos' name and Swift's; absent when unlimited.
        if let quota = a.quotaBytes {
            h[HTTPField.Name("X-Account-Policy-Quota")!] = String(quota)
            h[HTTPField.Name("X-Account-Meta-Quota-Bytes")!] = String(quota)
        }
        if let count = a.countQuota { h[HTTPField.Name("X-Account-Quota-Count")!] = String(count) }
        h[.xTimestamp] = Self.xTimestamp(Timestamp.now())
        for (name, value) in a.metadata.sorted(by: { $0.key < $1.key }) where !name.hasPrefix(ObjectSystemHeaders.prefix) {
            if let field = HTTPField.Name("X-Account-Meta-" + name) { h[field] = value }
        }
        return h
    }

    // MARK: Container

    func containerRequest(_ request: Request, project: String, container: String, owner: Bool) async throws -> Response {
        switch request.method {
        case .get, .head:
            let c = try await objects.container(project: project, name: container)
            var headers: HTTPFields = [:]
            headers[HTTPField.Name("X-Container-Object-Count")!] = String(c.objectCount)
            headers[HTTPField.Name("X-Container-Bytes-Used")!] = String(c.bytesUsed)
            headers[HTTPField.Name("X-Storage-Policy")!] = ObjectStorageInfo.storagePolicy
            headers[.xTimestamp] = Self.xTimestamp(c.createdAt)
            headers[.lastModified] = Self.httpDate(c.modifiedAt)
            // Pithos clients (kamaki) read these before computing a hashmap.
            headers[HTTPField.Name("X-Container-Block-Size")!] = String(BlockStore.blockSizeBytes)
            headers[HTTPField.Name("X-Container-Block-Hash")!] = BlockStore.blockHashName
            for (name, value) in c.metadata.sorted(by: { $0.key < $1.key }) where !name.hasPrefix(ObjectSystemHeaders.prefix) {
                if let field = HTTPField.Name("X-Container-Meta-" + name) { headers[field] = value }
            }
            if owner {
                // Swift shows the ACLs to the account's owner only.
                let acl = ContainerACL(metadata: c.metadata)
                if let read = acl.read { headers[HTTPField.Name("X-Container-Read")!] = read }
                if let write = acl.write { headers[HTTPField.Name("X-Container-Write")!] = write }
            }
            if request.method == .head { return Self.empty(204, headers) }
            let entries = try await objects.listObjects(project: project, container: container, listingQuery(request))
            return listingResponse(
                request, entries, headers: &headers,
                json: { o in
                    [
                        "name": .string(o.name), "hash": .string(o.etag), "bytes": .int(Int(o.sizeBytes)),
                        "content_type": .string(o.contentType), "last_modified": .string(Self.listingDate(o.modifiedAt)),
                    ]
                }, name: \.name, xml: (root: "container", name: container, item: "object"))
        case .put:
            let created = try await objects.putContainer(
                project: project, name: container, try containerMetadataChange(request))
            return Self.empty(created ? 201 : 202, [:])
        case .post:
            let hasBody = (request.headers[.contentLength].flatMap(Int64.init) ?? 0) > 0
                || request.headers[.transferEncoding]?.lowercased() == "chunked"
            if Self.hasFlag(request, "update") && hasBody {
                let hashes = try await objects.uploadBlocks(project: project, container: container, body: request.body)
                return jsonResponse(.array(hashes.map(JSON.string)), status: 202)
            }
            try await objects.updateContainerMetadata(
                project: project, name: container, try containerMetadataChange(request))
            return Self.empty(204, [:])
        case .delete:
            try await objects.deleteContainer(project: project, name: container)
            return Self.empty(204, [:])
        default:
            throw CloudError(status: 405, message: "Method Not Allowed")
        }
    }

    // MARK: Object

    func objectRequest(_ request: Request, project: String, container: String, name: String) async throws -> Response {
        switch request.method {
        case .get, .head:
            if Self.hasFlag(request, "hashmap") {
                let (object, hashmap) = try await objects.hashmap(project: project, container: container, name: name)
                var headers = objectHeaders(object, includeLength: true)
                headers[.xObjectHash] = hashmap.topHash.hex
                let body: JSON = [
                    "block_size": .int(hashmap.blockSizeBytes), "block_hash": .string(hashmap.blockHash),
                    "bytes": .int(Int(hashmap.sizeBytes)), "hashes": .array(hashmap.hashes.map { .string($0.hex) }),
                ]
                if request.method == .head { return Self.empty(200, headers) }
                return jsonResponse(body, headers: headers)
            }
            let object = try await objects.object(project: project, container: container, name: name)
            if let slo = object.slo, Self.multipartManifest(request) == "get" {
                var headers = objectHeaders(object, includeLength: true)
                let body = ByteBuffer(bytes: slo.swiftJSON.encoded())
                headers[.contentType] = "application/json; charset=utf-8"
                headers[.xStaticLargeObject] = "True"
                headers[.contentLength] = String(body.readableBytes)
                if request.method == .head { return Self.empty(200, headers) }
                return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: body))
            }
            return try await objectResponse(request, project: project, object)
        case .put:
            if Self.multipartManifest(request) == "put" {
                var r = request
                let buffer: ByteBuffer
                do {
                    buffer = try await r.collectBody(upTo: ObjectStorageService.maxManifestBytes)
                } catch {
                    throw CloudError(status: 413, message: "Manifest File > \(ObjectStorageService.maxManifestBytes) bytes")
                }
                let manifest = try JSON.parse(Data(buffer.readableBytesView))
                var upload = ObjectStorageService.Upload()
                upload.contentType = request.headers[.contentType]
                upload.metadata = try objectMetadataChange(request).applied(to: [:])
                upload.expectedETag = request.headers[.eTag]
                let stored = try await objects.putStaticManifest(
                    project: project, container: container, name: name, manifest: manifest, upload: upload)
                var headers = objectHeaders(stored, includeLength: false)
                headers[.eTag] = "\"\(stored.etag)\""
                return Self.empty(201, headers)
            }
            if Self.hasFlag(request, "hashmap") {
                var r = request
                let body = try await r.jsonObject()
                guard let bytes = body["bytes"], case .int(let size) = bytes, let list = body["hashes"]?.arrayValue else {
                    throw CloudError.badRequest("A hashmap is {\"bytes\": N, \"hashes\": [...]}.")
                }
                var upload = ObjectStorageService.Upload()
                upload.contentType = request.headers[.contentType]
                upload.metadata = try objectMetadataChange(request).applied(to: [:])
                upload.expectedETag = request.headers[.eTag]
                do {
                    let stored = try await objects.putHashmap(
                        project: project, container: container, name: name, sizeBytes: Int64(size),
                        hashes: list.compactMap(\.stringValue), upload: upload)
                    return Self.empty(201, objectHeaders(stored, includeLength: false))
                } catch let missing as MissingBlocks {
                    return jsonResponse(.array(missing.hashes.map(JSON.string)), status: 409)
                }
            }
            if let manifest = request.headers[.xObjectManifest] {
                var upload = ObjectStorageService.Upload()
                upload.contentType = request.headers[.contentType]
                upload.metadata = try objectMetadataChange(request).applied(to: [:])
                let stored = try await objects.putManifest(
                    project: project, container: container, name: name, manifest: manifest, upload: upload)
                return Self.empty(201, objectHeaders(stored, includeLength: false))
            }
            if let from = request.headers[.xCopyFrom] {
                let source = try Self.objectPath(from, header: "X-Copy-From")
                let original = try await objects.object(project: project, container: source.container, name: source.name)
                let copied = try await objects.copyObject(
                    project: project, from: source, to: (container, name), change: try copyMetadata(request),
                    contentType: request.headers[.contentType])
                return Self.empty(201, copiedHeaders(copied, from: source, original))
            }
            if let condition = request.headers[.ifNoneMatch] {
                // Swift supports only `*`: create, never replace.
                guard condition.trimmingCharacters(in: .whitespaces) == "*" else {
                    throw CloudError.badRequest("Only If-None-Match: * is supported for PUT.")
                }
                if (try? await objects.object(project: project, container: container, name: name)) != nil {
                    return Self.error(.init(status: 412, message: "Precondition Failed"), request)
                }
            }
            var upload = ObjectStorageService.Upload()
            upload.contentType = request.headers[.contentType]
            upload.metadata = try objectMetadataChange(request).applied(to: [:])
            upload.expectedETag = request.headers[.eTag]
            if let length = request.headers[.contentLength] {
                guard let n = Int64(length), n >= 0 else { throw CloudError.badRequest("Invalid Content-Length.") }
                upload.declaredLength = n
            } else if request.headers[.transferEncoding]?.lowercased() != "chunked" {
                throw CloudError(status: 411, message: "Length Required")
            }
            let stored = try await objects.putObject(
                project: project, container: container, name: name, upload: upload, body: request.body)
            return Self.empty(201, objectHeaders(stored, includeLength: false))
        case .copy:
            guard let destination = request.headers[.destination] else {
                throw CloudError.badRequest("The Destination header is required for COPY.")
            }
            let target = try Self.objectPath(destination, header: "Destination")
            let original = try await objects.object(project: project, container: container, name: name)
            let copied = try await objects.copyObject(
                project: project, from: (container, name), to: target, change: try copyMetadata(request),
                contentType: request.headers[.contentType])
            return Self.empty(201, copiedHeaders(copied, from: (container, name), original))
        case .post:
            var change = try objectMetadataChange(request)
            change.replaceAll = true
            try await objects.updateObjectMetadata(
                project: project, container: container, name: name, change, contentType: request.headers[.contentType],
                manifest: request.headers[.xObjectManifest])
            return Self.empty(202, [:])
        case .delete:
            if Self.multipartManifest(request) == "delete" {
                let report = try await objects.deleteStaticLargeObject(project: project, container: container, name: name)
                return bulkDeleteResponse(request, report)
            }
            try await objects.deleteObject(project: project, container: container, name: name)
            return Self.empty(204, [:])
        default:
            throw CloudError(status: 405, message: "Method Not Allowed")
        }
    }

    /// The value of `?multipart-manifest=` (`put`, `get`, `delete`), lowercased, or nil.
    static func multipartManifest(_ request: Request) -> String? {
        request.uri.queryParameters["multipart-manifest"].map { $0.lowercased() }
    }

    /// Swift's bulk-delete report for `?multipart-manifest=delete`: JSON when asked for
    /// (`Accept: application/json` or `format=json`), else `Key: value` lines.
    func bulkDeleteResponse(_ request: Request, _ report: SLODeleteReport) -> Response {
        let format = request.uri.queryParameters["format"].map { $0.lowercased() }
        var headers: HTTPFields = [:]
        let body: ByteBuffer
        if format == "json" || request.headers[.accept]?.contains("application/json") == true {
            let json: JSON = [
                "Number Deleted": .int(report.deleted), "Number Not Found": .int(report.notFound),
                "Response Body": "", "Response Status": "200 OK", "Errors": [],
            ]
            body = ByteBuffer(bytes: json.encoded())
            headers[.contentType] = "application/json; charset=utf-8"
        } else {
            body = ByteBuffer(
                string: "Number Deleted: \(report.deleted)\nNumber Not Found: \(report.notFound)\nResponse Body: \nResponse Status: 200 OK\nErrors: \n")
            headers[.contentType] = "text/plain; charset=utf-8"
        }
        headers[.contentLength] = String(body.readableBytes)
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: body))
    }

    /// The metadata a copy applies over the source's (all of it with `X-Fresh-Metadata: true`).
    func copyMetadata(_ request: Request) throws -> MetadataChange {
        var change = try objectMetadataChange(request)
        change.replaceAll = request.headers[.xFreshMetadata]?.lowercased() == "true"
        return change
    }

    func objectHeaders(_ o: StoredObject, includeLength: Bool) -> HTTPFields {
        var h: HTTPFields = [:]
        h[.eTag] = o.etag
        h[.lastModified] = Self.httpDate(o.modifiedAt)
        h[.xTimestamp] = Self.xTimestamp(o.modifiedAt)
        if includeLength {
            h[.contentType] = o.contentType
            if let manifest = o.manifest { h[.xObjectManifest] = manifest }
            for (name, value) in o.userMetadata.sorted(by: { $0.key < $1.key }) {
                if let field = HTTPField.Name("X-Object-Meta-" + name) { h[field] = value }
            }
            for (name, value) in o.systemHeaders.sorted(by: { $0.key < $1.key }) {
                if let field = HTTPField.Name(name) { h[field] = value }
            }
        }
        return h
    }

    /// GET and HEAD of an object, with one byte range (`Range: bytes=a-b`, `a-`, `-n`). A DLO
    /// manifest reads as its segments, one after the other; so does an SLO whose map is not the
    /// concatenation of its segments' (an SLO's ETag is the quoted MD5 of its segments' ETags).
    func objectResponse(_ request: Request, project: String, _ object: StoredObject) async throws -> Response {
        var headers = objectHeaders(object, includeLength: true)
        headers[.acceptRanges] = "bytes"
        var parts = [object]
        var direct = object.manifest == nil
        if let slo = object.slo {
            headers[.eTag] = "\"\(object.etag)\""
            headers[.xStaticLargeObject] = "True"
            if !slo.concatenated {
                parts = try await objects.staticSegments(project: project, slo)
                direct = false
            }
        } else if let manifest = object.manifest {
            parts = try await objects.segments(project: project, manifest: manifest)
            let etags = Array(parts.map(\.etag).joined().utf8)
            headers[.eTag] = "\"" + Insecure.MD5.hash(data: etags).map { String(format: "%02x", $0) }.joined() + "\""
            headers[.xObjectManifest] = manifest
        }
        let etag = (headers[.eTag] ?? object.etag).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
        if let status = Self.preconditionStatus(request, etag: etag, modified: object.modifiedAt) {
            if status == 412 { return Self.error(.init(status: 412, message: "Precondition Failed"), request) }
            // 304: the object's headers, no body.
            headers[.contentLength] = nil
            return Response(status: .notModified, headers: headers, body: ResponseBody())
        }
        let size = parts.reduce(Int64(0)) { $0 + $1.sizeBytes }
        var range = Int64(0)..<size
        var status = 200
        if let header = request.headers[.range] {
            switch Self.parseRange(header, size: size) {
            case .whole: break
            case .unsatisfiable:
                var h: HTTPFields = [:]
                h[.contentRange] = "bytes */\(size)"
                return Self.error(.init(status: 416, message: "Requested Range Not Satisfiable"), request, headers: h)
            case .range(let r):
                range = r
                status = 206
                headers[.contentRange] = "bytes \(r.lowerBound)-\(r.upperBound - 1)/\(size)"
            }
        }
        headers[.contentLength] = String(range.count)
        if request.method == .head { return Self.empty(status, headers) }
        // A plain object's map is resolved before the status goes out; a DLO's segments as they come.
        let first = direct ? try await objects.entries(of: object) : nil
        let objects = self.objects
        let span = range
        let segments = parts
        let body = ResponseBody(contentLength: Int(span.count)) { writer in
            var offset = Int64(0)
            for part in segments {
                defer { offset += part.sizeBytes }
                let lower = max(span.lowerBound, offset) - offset
                let upper = min(span.upperBound, offset + part.sizeBytes) - offset
                guard lower < upper else { continue }
                let entries: [MapEntry]
                if let first { entries = first } else { entries = try await objects.entries(of: part) }
                try await Self.writeBlocks(objects, entries, size: part.sizeBytes, range: lower..<upper, to: &writer)
            }
            try await writer.finish(nil)
        }
        return Response(status: .init(code: status), headers: headers, body: body)
    }

    /// Writes bytes `range` of a map of `size` bytes with `entries`, one verified block at a time.
    static func writeBlocks(
        _ objects: ObjectStorageService, _ entries: [MapEntry], size: Int64, range: Range<Int64>,
        to writer: inout any ResponseBodyWriter
    ) async throws {
        let blockSize = Int64(BlockStore.blockSizeBytes)
        var index = Int(range.lowerBound / blockSize)
        let last = Int((range.upperBound - 1) / blockSize)
        while index <= last {
            var block = try await objects.readBlock(entries, index: index, sizeBytes: size)
            let start = Int64(index) * blockSize
            let from = Int(max(range.lowerBound - start, 0))
            let to = Int(min(range.upperBound - start, Int64(block.readableBytes)))
            block.moveReaderIndex(forwardBy: from)
            if let slice = block.readSlice(length: to - from) { try await writer.write(slice) }
            index += 1
        }
    }

    /// True when the query names `flag` (`?hashmap`, `?update`, with or without a value).
    static func hasFlag(_ request: Request, _ flag: String) -> Bool {
        request.uri.queryParameters[Substring(flag)] != nil
    }

    enum RangeAnswer: Equatable {
        case whole
        case unsatisfiable
        case range(Range<Int64>)
    }

    /// One byte range of RFC 9110; several ranges or a malformed header are answered with the
    /// whole object (which the RFC allows).
    static func parseRange(_ header: String, size: Int64) -> RangeAnswer {
        let value = header.trimmingCharacters(in: .whitespaces)
        guard value.lowercased().hasPrefix("bytes="), !value.contains(",") else { return .whole }
        let spec = value.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard let dash = spec.firstIndex(of: "-") else { return .whole }
        let first = spec[..<dash].trimmingCharacters(in: .whitespaces)
        let second = spec[spec.index(after: dash)...].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            guard let suffix = Int64(second) else { return .whole }
            guard suffix > 0, size > 0 else { return .unsatisfiable }
            return .range(max(0, size - suffix)..<size)
        }
        guard let start = Int64(first), start >= 0 else { return .whole }
        var end = size - 1
        if !second.isEmpty {
            guard let e = Int64(second), e >= start else { return .whole }
            end = min(e, size - 1)
        }
        guard start < size else { return .unsatisfiable }
        return .range(start..<(end + 1))
    }

    /// `container/object` or `/container/object`, percent-encoded.
    /// A copy's answer: the new object's headers and, as Swift's copy middleware adds them, where
    /// it came from (`X-Copied-From`, percent-encoded) and that source's last modification.
    func copiedHeaders(_ copied: StoredObject, from source: (container: String, name: String), _ original: StoredObject)
        -> HTTPFields
    {
        var headers = objectHeaders(copied, includeLength: false)
        // Swift answers a copy with the new object's metadata.
        for (name, value) in copied.userMetadata.sorted(by: { $0.key < $1.key }) {
            if let field = HTTPField.Name("X-Object-Meta-" + name) { headers[field] = value }
        }
        let path = source.container + "/" + source.name
        headers[HTTPField.Name("X-Copied-From")!] =
            path.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? path
        headers[HTTPField.Name("X-Copied-From-Last-Modified")!] = Self.httpDate(original.modifiedAt)
        return headers
    }

    static func objectPath(_ value: String, header: String) throws(CloudError) -> (container: String, name: String) {
        let trimmed = value.drop { $0 == "/" }
        let parts = trimmed.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2, let container = String(parts[0]).removingPercentEncoding,
            let name = String(parts[1]).removingPercentEncoding, !container.isEmpty, !name.isEmpty
        else { throw .init(status: 412, message: "\(header) header must be of the form <container name>/<object name>") }
        return (container, name)
    }

    // MARK: Listings

    func listingQuery(_ request: Request) throws(CloudError) -> ListingQuery {
        let p = request.uri.queryParameters
        var q = ListingQuery()
        if let limit = p["limit"] {
            guard let n = Int(limit), n >= 0 else { throw .badRequest("limit must be a non-negative integer.") }
            guard n <= ObjectLimits.listingLimit else {
                throw .init(status: 412, message: "Maximum limit is \(ObjectLimits.listingLimit)")
            }
            q.limit = n
        }
        q.marker = p["marker"].map(String.init)
        q.endMarker = p["end_marker"].map(String.init)
        q.prefix = p["prefix"].map(String.init) ?? ""
        q.delimiter = p["delimiter"].map(String.init)
        if let d = q.delimiter, d.count > 1 { throw .init(status: 412, message: "Bad delimiter") }
        if let reverse = p["reverse"] { q.reverse = ["true", "1", "yes", "on", "t", "y"].contains(reverse.lowercased()) }
        return q
    }

    /// `format=json` (or `Accept: application/json`) gives JSON, `format=xml` (or an `Accept` of
    /// `application/xml` or `text/xml`) Swift's XML; otherwise one name per line. An empty plain
    /// listing is 204; an empty JSON or XML listing is 200 (`[]`, or the root element alone).
    func listingResponse<Item: Sendable>(
        _ request: Request, _ entries: [ListingEntry<Item>], headers: inout HTTPFields, json: (Item) -> JSON,
        name: (Item) -> String, xml: (root: String, name: String, item: String)
    ) -> Response {
        let format = request.uri.queryParameters["format"].map { $0.lowercased() }
        let accept = request.headers[.accept] ?? ""
        let wantsJSON = format == "json" || (format == nil && accept.contains("application/json"))
        if format == "xml" || (format == nil && !wantsJSON && (accept.contains("application/xml") || accept.contains("text/xml"))) {
            var text = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<\(xml.root) name=\"\(Self.xmlEscaped(xml.name))\">"
            for entry in entries {
                switch entry {
                case .item(let item):
                    guard case .object(let fields) = json(item) else { continue }
                    text += "<\(xml.item)>"
                    for key in Self.xmlFieldOrder(fields.keys) {
                        let value: String
                        switch fields[key]! {
                        case .string(let s): value = s
                        case .int(let n): value = String(n)
                        default: continue
                        }
                        text += "<\(key)>\(Self.xmlEscaped(value))</\(key)>"
                    }
                    text += "</\(xml.item)>"
                case .subdir(let prefix):
                    let escaped = Self.xmlEscaped(prefix)
                    text += "<subdir name=\"\(escaped)\"><name>\(escaped)</name></subdir>"
                }
            }
            text += "</\(xml.root)>\n"
            headers[.contentType] = "application/xml; charset=utf-8"
            return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        if wantsJSON {
            let body = JSON.array(
                entries.map { entry in
                    switch entry {
                    case .item(let item): json(item)
                    case .subdir(let prefix): ["subdir": .string(prefix)]
                    }
                })
            headers[.contentType] = "application/json; charset=utf-8"
            return Response(
                status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: body.encoded())))
        }
        if entries.isEmpty { return Self.empty(204, headers) }
        var text = ""
        for entry in entries {
            switch entry {
            case .item(let item): text += name(item) + "\n"
            case .subdir(let prefix): text += prefix + "\n"
            }
        }
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// Swift's element order in XML listings; other fields after them, sorted.
    static func xmlFieldOrder(_ keys: Dictionary<String, JSON>.Keys) -> [String] {
        let preferred = ["name", "count", "hash", "bytes", "content_type", "last_modified"]
        return preferred.filter(keys.contains) + keys.filter { !preferred.contains($0) }.sorted()
    }

    static func xmlEscaped(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(c)
            }
        }
        return out
    }

    // MARK: Metadata headers

    /// `X-<Kind>-Meta-Name: value` sets (an empty value removes), `X-Remove-<Kind>-Meta-Name` removes.
    /// Names are kept lowercased (HTTP field names are case-insensitive).
    func metadataChange(_ request: Request, kind: String) -> MetadataChange {
        var change = MetadataChange()
        let setPrefix = "x-\(kind)-meta-"
        let removePrefix = "x-remove-\(kind)-meta-"
        for field in request.headers {
            let name = field.name.canonicalName
            if name.hasPrefix(setPrefix), name.count > setPrefix.count {
                change.set[String(name.dropFirst(setPrefix.count))] = field.value
            } else if name.hasPrefix(removePrefix), name.count > removePrefix.count {
                change.remove.insert(String(name.dropFirst(removePrefix.count)))
            }
        }
        return change
    }

    /// An object's metadata change: user metadata (`X-Object-Meta-*`, empty values kept, as Swift
    /// does for objects) and the system headers Swift stores with an object
    /// (``ObjectSystemHeaders``): `Content-Disposition`, `Content-Encoding` and the like as sent,
    /// `X-Delete-At` (Unix seconds, in the future) or `X-Delete-After` (seconds from now).
    func objectMetadataChange(_ request: Request, now: Timestamp = .now()) throws(CloudError) -> MetadataChange {
        var change = metadataChange(request, kind: "object")
        change.keepsEmptyValues = true
        for name in ObjectSystemHeaders.passedThrough {
            if let field = HTTPField.Name(name), let value = request.headers[field] {
                change.set[ObjectSystemHeaders.prefix + name] = value
            }
        }
        let seconds = now.microseconds / 1_000_000
        var deleteAt: Int64?
        if let after = request.headers[.xDeleteAfter] {
            guard let n = Int64(after.trimmingCharacters(in: .whitespaces)) else {
                throw .badRequest("Non-integer X-Delete-After")
            }
            guard n >= 0 else { throw .badRequest("X-Delete-After in past") }
            guard n > 0 else { throw .badRequest("X-Delete-At in past") }
            guard n < 1 << 40 else { throw .badRequest("X-Delete-After too large") }
            deleteAt = seconds + n
        } else if let at = request.headers[.xDeleteAt] {
            // Swift accepts a fraction and keeps whole seconds.
            guard let value = Double(at.trimmingCharacters(in: .whitespaces)), value.isFinite, value < 1e15 else {
                throw .badRequest("Non-integer X-Delete-At")
            }
            guard Int64(value) > seconds else { throw .badRequest("X-Delete-At in past") }
            deleteAt = Int64(value)
        }
        if let deleteAt { change.set[ObjectSystemHeaders.prefix + "x-delete-at"] = String(deleteAt) }
        return change
    }

    /// The answer to `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` on
    /// a GET or HEAD of an object with `etag` (unquoted) modified at `modified`: nil to go on,
    /// or 304 / 412 (RFC 9110 section 13.2.2: the ETag conditions win over the dates).
    static func preconditionStatus(_ request: Request, etag: String, modified: Timestamp) -> Int? {
        func matches(_ header: String) -> Bool {
            header.split(separator: ",").contains { tag in
                var t = tag.trimmingCharacters(in: .whitespaces)
                if t == "*" { return true }
                if t.hasPrefix("W/") { t.removeFirst(2) }
                return t.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) == etag
            }
        }
        // HTTP dates have whole seconds: compare the object's time rounded down.
        let modifiedSeconds = modified.microseconds / 1_000_000
        if let header = request.headers[.ifMatch] {
            if !matches(header) { return 412 }
        } else if let header = request.headers[.ifUnmodifiedSince], let date = parseHTTPDate(header) {
            if modifiedSeconds > date { return 412 }
        }
        if let header = request.headers[.ifNoneMatch] {
            if matches(header) { return 304 }
        } else if let header = request.headers[.ifModifiedSince], let date = parseHTTPDate(header) {
            if modifiedSeconds <= date { return 304 }
        }
        return nil
    }

    /// Seconds since the epoch of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`); nil otherwise.
    static func parseHTTPDate(_ text: String) -> Int64? {
        let parts = text.split(separator: " ")
        guard parts.count == 6, parts[5] == "GMT", let day = Int32(parts[1]), let year = Int32(parts[3]) else { return nil }
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        guard let month = months.firstIndex(of: String(parts[2])) else { return nil }
        let clock = parts[4].split(separator: ":").compactMap { Int32($0) }
        guard clock.count == 3 else { return nil }
        var t = tm()
        t.tm_year = year - 1900
        t.tm_mon = Int32(month)
        t.tm_mday = day
        t.tm_hour = clock[0]
        t.tm_min = clock[1]
        t.tm_sec = clock[2]
        return Int64(timegm(&t))
    }

    /// A container's metadata change: `X-Container-Meta-*` and the ACLs (`X-Container-Read`,
    /// `X-Container-Write`; an empty value or `X-Remove-Container-Read/Write` removes).
    func containerMetadataChange(_ request: Request) throws(CloudError) -> MetadataChange {
        var change = metadataChange(request, kind: "container")
        for (header, key) in [("X-Container-Read", ContainerACL.readKey), ("X-Container-Write", ContainerACL.writeKey)] {
            if request.headers[HTTPField.Name("X-Remove-" + header.dropFirst("X-".count))!] != nil {
                change.remove.insert(key)
            } else if let value = request.headers[HTTPField.Name(header)!] {
                let trimmed = value.trimmingCharacters(in: .whitespaces)
                try ContainerACL.validate(trimmed, header: header)
                change.set[key] = trimmed
            }
        }
        return change
    }

    /// An account quota header of a POST: nil when absent, `.some(nil)` to remove (the remove
    /// header, or an empty value), `.some(n)` to set; 400 for anything but a non-negative integer.
    static func quotaHeader(_ request: Request, set: String, remove: String) throws(CloudError) -> Int64?? {
        if request.headers[HTTPField.Name(remove)!] != nil { return .some(nil) }
        guard let value = request.headers[HTTPField.Name(set)!]?.trimmingCharacters(in: .whitespaces) else { return nil }
        if value.isEmpty { return .some(nil) }
        guard let n = Int64(value), n >= 0 else { throw .badRequest("Invalid \(set): \(value)") }
        return .some(n)
    }

    // MARK: Shapes

    static func empty(_ status: Int, _ headers: HTTPFields) -> Response {
        var h = headers
        if h[.contentLength] == nil { h[.contentLength] = "0" }
        if h[.contentType] == nil { h[.contentType] = "text/html; charset=UTF-8" }
        return Response(status: .init(code: status), headers: h)
    }

    /// Swift's error answers: a short text body (none for HEAD).
    static func error(_ error: CloudError, _ request: Request, headers: HTTPFields = [:]) -> Response {
        var h = headers
        h[.contentType] = "text/plain; charset=utf-8"
        if error.status == 401 { h[.wwwAuthenticate] = "Keystone uri=\"/v3\"" }
        if request.method == .head {
            h[.contentLength] = "0"
            return Response(status: .init(code: error.status), headers: h)
        }
        return Response(
            status: .init(code: error.status), headers: h,
            body: ResponseBody(byteBuffer: ByteBuffer(string: error.message + "\n")))
    }

    /// `1700000000.12345` (X-Timestamp).
    static func xTimestamp(_ t: Timestamp) -> String {
        String(format: "%d.%05d", t.microseconds / 1_000_000, (t.microseconds % 1_000_000) / 10)
    }

    /// `2024-01-01T00:00:00.000000` (listings).
    static func listingDate(_ t: Timestamp) -> String { String(t.iso8601Microseconds.dropLast()) }

    /// `Mon, 01 Jan 2024 00:00:00 GMT` (Last-Modified), rounded up to the second as Swift does.
    static func httpDate(_ t: Timestamp) -> String {
        var seconds = time_t((t.microseconds + 999_999) / 1_000_000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(Int(parts.tm_year) + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
