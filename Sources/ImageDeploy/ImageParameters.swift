/// The image formats of snf-image; only `diskdump` (a raw whole-disk image) is implemented.
public enum ImageFormat: String, Sendable, CaseIterable {
    case diskdump, extdump, ntfsdump
}

/// The OS parameters of the snf-image OS definition (`-O name=value`, `OSP_<NAME>`).
///
/// One table, ``ImageParameters/definitions``, is the source of `parameters.list`, the names
/// `config_url` may set, and the checks of `verify`.
public struct ImageParameters: Sendable, Equatable {
    /// One OS parameter.
    public struct Definition: Sendable {
        public var name: String
        public var description: String
        /// Must be given (unless `config_url` provides it).
        public var required: Bool
    }

    public static let definitions: [Definition] = [
        Definition(name: "img_id", description: "Image to deploy: snf-store://NAME (an image or snapshot in the block store), local://NAME or NAME (a file in image_dir), http(s)://URL", required: true),
        Definition(name: "img_format", description: "Image format: diskdump (a raw whole-disk image; extdump and ntfsdump are not supported)", required: true),
        Definition(name: "img_passwd", description: "Password to set for the users in the USERS image property (hashed on the host; use --os-parameters-secret)", required: false),
        Definition(name: "img_passwd_hash", description: "crypt(3) password hash to set for the users in USERS (conflicts with img_passwd)", required: false),
        Definition(name: "auth_keys", description: "OpenSSH authorized_keys lines to add for the users in USERS", required: false),
        Definition(name: "img_properties", description: "JSON object of image properties (OSFAMILY, ROOT_PARTITION, USERS, SWAP, EXCLUDE_*...)", required: false),
        Definition(name: "inst_properties", description: "JSON object of image properties that override img_properties", required: false),
        Definition(name: "config_url", description: "URL of a JSON object whose keys set any of the other parameters (fetched with curl at create time; overrides them)", required: false),
    ]

    /// The content of `parameters.list`: `name<space>description` lines.
    public static var parametersList: String {
        definitions.map { "\($0.name) \($0.description)\n" }.joined()
    }

    /// The parameters as given (and as `config_url` overrode them), by lower-case name. Present
    /// means set, possibly empty.
    public var values: [String: String]

    /// `parameters` holds every given parameter by lower-case name; names outside the table are
    /// bad input (Ganeti rejects them first; `config_url` and `deploy` cannot add others).
    public init(_ parameters: [String: String]) throws {
        let known = Set(ImageParameters.definitions.map(\.name))
        for name in parameters.keys.sorted() where !known.contains(name) {
            throw DeployError.badInput("unknown OS parameter \(name.debugDescription) (known: \(ImageParameters.definitions.map(\.name).joined(separator: ", ")))")
        }
        values = parameters
    }

    public var configURL: String? { values["config_url"] }
    public var imageID: String? { values["img_id"] }
    public var password: String? { values["img_passwd"] }
    public var passwordHash: String? { values["img_passwd_hash"] }
    public var authorizedKeys: String? { values["auth_keys"] }

    /// `img_format`, checked: nil when unset.
    public func format() throws -> ImageFormat? {
        guard let text = values["img_format"] else { return nil }
        guard let format = ImageFormat(rawValue: text) else {
            throw DeployError.badInput("img_format \(text.debugDescription) is not one of diskdump, extdump, ntfsdump")
        }
        guard format == .diskdump else {
            throw DeployError.badInput("img_format \(text) is not supported (only diskdump, a raw whole-disk image, is implemented)")
        }
        return format
    }

    /// The image properties: `img_properties`, then `inst_properties` over them.
    public func properties() throws -> ImageProperties {
        var result = ImageProperties()
        for name in ["img_properties", "inst_properties"] {
            guard let text = values[name] else { continue }
            let parsed = try ImageProperties(json: text, parameter: name)
            result.values.merge(parsed.values) { _, new in new }
        }
        return result
    }

    /// Checks every value; with `requireImage`, also that the required parameters are set.
    /// `verify` and `create` run this (`verify` skips it when `config_url` is set).
    public func validate(requireImage: Bool) throws {
        if requireImage {
            for definition in ImageParameters.definitions where definition.required {
                guard let value = values[definition.name], !value.isEmpty else {
                    throw DeployError.badInput("the OS parameter \(definition.name) is required (-O \(definition.name)=...)")
                }
            }
        }
        if let id = imageID {
            guard !id.isEmpty else { throw DeployError.badInput("img_id is empty") }
            _ = try ImageLocator(id)
        }
        _ = try format()
        if password != nil && passwordHash != nil {
            throw DeployError.badInput("img_passwd and img_passwd_hash are both set; give one of them")
        }
        if let password {
            guard !password.isEmpty else { throw DeployError.badInput("img_passwd is set but empty (an empty password is refused; leave it unset to keep the image's passwords)") }
            guard !password.utf8.contains(0) else { throw DeployError.badInput("img_passwd contains a NUL byte") }
        }
        if let hash = passwordHash { try ImageParameters.checkPasswordHash(hash) }
        if let keys = authorizedKeys, keys.utf8.contains(0) {
            throw DeployError.badInput("auth_keys contains a NUL byte")
        }
        if let url = configURL {
            guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
                throw DeployError.badInput("config_url must be an http:// or https:// URL, got \(url.debugDescription)")
            }
        }
        try properties().validate()
    }

    /// A crypt(3) string fit for /etc/shadow: `$id$...`, printable, no ':' and no newline.
    static func checkPasswordHash(_ hash: String) throws {
        guard hash.hasPrefix("$"), hash.utf8.count >= 4, hash.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: ":") }) else {
            throw DeployError.badInput("img_passwd_hash is not a crypt(3) hash (expected $id$salt$hash, printable, without ':')")
        }
    }

    /// Applies `config_url`: fetches it with `fetch` (the document's text) and lets its keys (any
    /// case) override the given parameters. Values are coerced to strings (objects and arrays,
    /// as for `img_properties`, to their JSON text); `null` unsets a parameter.
    public func applyingConfigURL(fetch: (String) throws -> String) throws -> ImageParameters {
        guard let url = configURL else { return self }
        guard url.hasPrefix("http://") || url.hasPrefix("https://") else {
            throw DeployError.badInput("config_url must be an http:// or https:// URL, got \(url.debugDescription)")
        }
        let text = try fetch(url)
        let document: JSONValue
        do {
            document = try JSONValue.parse(text)
        } catch {
            throw DeployError.badInput("config_url \(url) did not return JSON: \(error.message)")
        }
        guard case .object(let members) = document else {
            throw DeployError.badInput("config_url \(url) did not return a JSON object")
        }
        var merged = values
        let known = Set(ImageParameters.definitions.map(\.name))
        for (rawKey, value) in members {
            let key = rawKey.lowercased()
            guard known.contains(key) else {
                throw DeployError.badInput("config_url \(url) sets \(rawKey.debugDescription), which is not a parameter of snf-image (or is not supported)")
            }
            switch value {
            case .null: merged[key] = nil
            case .string(let s): merged[key] = s
            case .number(let n): merged[key] = n
            case .bool(let b): merged[key] = b ? "true" : "false"
            case .array, .object: merged[key] = value.serialized
            }
        }
        return try ImageParameters(merged)
    }

    /// Fetches `url` with curl (a subprocess from an argument vector): at most 1 MiB of text.
    public static func fetchWithCurl(_ url: String) throws -> String {
        let bytes = try runCapturingOutput(curlBaseArguments + ["--max-time", "60", url], what: "fetching config_url \(url)")
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw DeployError.badInput("config_url \(url) returned text that is not UTF-8")
        }
        return text
    }
}
