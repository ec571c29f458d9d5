/// The password hashing methods for /etc/shadow, as crypt(3) prefixes.
public enum PasswordHashingMethod: String, Sendable, CaseIterable {
    case md5, sha256, sha512, blowfish

    /// The crypt(3) prefix: `$1$`, `$5$`, `$6$`, `$2b$`.
    public var cryptPrefix: String {
        switch self {
        case .md5: return "$1$"
        case .sha256: return "$5$"
        case .sha512: return "$6$"
        case .blowfish: return "$2b$"
        }
    }
}

/// The OS families snf-image knows; only Linux images can be customized here.
public enum OSFamily: String, Sendable, CaseIterable {
    case linux, windows
    case windowsLegacy = "windows-legacy"
    case freebsd, netbsd, openbsd
}

/// Image properties (snf-image §6): names case-insensitive (kept upper-cased), values strings.
public struct ImageProperties: Sendable, Equatable {
    /// By upper-case name.
    public var values: [String: String]

    public init(_ values: [String: String] = [:]) {
        self.values = [:]
        for (key, value) in values { self.values[key.uppercased()] = value }
    }

    /// Parses a JSON object; values are coerced to strings (numbers as written, booleans as
    /// `true`/`false`); `null` leaves a property unset; objects and arrays are refused.
    public init(json text: String, parameter: String) throws {
        let document: JSONValue
        do {
            document = try JSONValue.parse(text)
        } catch {
            throw DeployError.badInput("\(parameter) is not valid JSON: \(error.message)")
        }
        guard case .object(let members) = document else {
            throw DeployError.badInput("\(parameter) must be a JSON object ({\"NAME\": \"value\", ...})")
        }
        values = [:]
        for (key, value) in members {
            let name = key.uppercased()
            guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != UInt8(ascii: "=") }) else {
                throw DeployError.badInput("\(parameter): invalid property name \(key.debugDescription)")
            }
            switch value {
            case .null: values[name] = nil
            case .string(let s): values[name] = s
            case .number(let n): values[name] = n
            case .bool(let b): values[name] = b ? "true" : "false"
            case .array, .object:
                throw DeployError.badInput("\(parameter): the property \(key) must be a string, number or boolean")
            }
        }
    }

    public subscript(_ name: String) -> String? { values[name.uppercased()] }

    /// A boolean property (snf-image §6): yes/true/on/1/set are true; no/false/off/0/unset and a
    /// missing property are false; empty is false with a warning; anything else is true with a
    /// warning. Case-insensitive.
    public func boolean(_ name: String) -> (value: Bool, warning: String?) {
        guard let text = self[name] else { return (false, nil) }
        return ImageProperties.parseBoolean(text, name: name.uppercased())
    }

    public static func parseBoolean(_ text: String, name: String) -> (value: Bool, warning: String?) {
        let word = text.snfTrimmed.lowercased()
        if ["yes", "true", "on", "1", "set"].contains(word) { return (true, nil) }
        if ["no", "false", "off", "0", "unset"].contains(word) { return (false, nil) }
        if word.isEmpty { return (false, "the image property \(name) is empty: taken as false") }
        return (true, "the image property \(name) is \(text.debugDescription), not a boolean: taken as true")
    }

    /// OSFAMILY; nil when not given.
    public func osFamily() throws -> OSFamily? {
        guard let text = self["OSFAMILY"] else { return nil }
        guard let family = OSFamily(rawValue: text.lowercased()) else {
            throw DeployError.badInput("OSFAMILY \(text.debugDescription) is not one of \(OSFamily.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return family
    }

    /// ROOT_PARTITION: a partition number 1...128; nil when not given.
    public func rootPartition() throws -> Int? {
        guard let text = self["ROOT_PARTITION"] else { return nil }
        guard let number = Int(text.snfTrimmed), (1...128).contains(number) else {
            throw DeployError.badInput("ROOT_PARTITION \(text.debugDescription) is not a partition number (1-128)")
        }
        return number
    }

    /// USERS: space-separated user names; `["root"]` when not given.
    public func users() throws -> [String] {
        guard let text = self["USERS"] else { return ["root"] }
        let names = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard !names.isEmpty else { throw DeployError.badInput("USERS is empty") }
        for name in names where !ImageProperties.isValidUserName(name) {
            throw DeployError.badInput("USERS: \(name.debugDescription) is not a valid user name (^[a-z_][a-z0-9_-]*$, at most 32 characters)")
        }
        return names
    }

    static func isValidUserName(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        guard let first = bytes.first, bytes.count <= 32 else { return false }
        func lowerOrUnderscore(_ b: UInt8) -> Bool { (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b) || b == UInt8(ascii: "_") }
        guard lowerOrUnderscore(first) else { return false }
        return bytes.dropFirst().allSatisfy { lowerOrUnderscore($0) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) || $0 == UInt8(ascii: "-") }
    }

    /// PASSWD_HASHING_METHOD; sha512 when not given.
    public func hashingMethod() throws -> PasswordHashingMethod {
        guard let text = self["PASSWD_HASHING_METHOD"] else { return .sha512 }
        guard let method = PasswordHashingMethod(rawValue: text.lowercased()) else {
            throw DeployError.badInput("PASSWD_HASHING_METHOD \(text.debugDescription) is not supported (supported: \(PasswordHashingMethod.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return method
    }

    /// SWAP; nil when not given.
    public func swap() throws -> SwapRequest? {
        guard let text = self["SWAP"] else { return nil }
        return try ImageProperties.parseSwap(text)
    }

    /// `<partition>:<MiB>`: partition 1-4 (a primary partition, valid on msdos and GPT), MiB > 0.
    /// The `<disk letter>` form (a whole extra disk as swap) is not supported.
    public static func parseSwap(_ text: String) throws -> SwapRequest {
        let parts = text.snfTrimmed.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 1, parts[0].count == 1, parts[0].first!.isLetter {
            throw DeployError.badInput("SWAP=\(text): a whole disk as swap is not supported; use <partition>:<MiB>")
        }
        guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
            let number = Int(parts[0]), let size = UInt64(parts[1])
        else {
            throw DeployError.badInput("SWAP \(text.debugDescription) is not <partition>:<MiB> (for example 2:512)")
        }
        guard (1...4).contains(number) else {
            throw DeployError.badInput("SWAP=\(text): the partition number must be 1-4 (a primary partition)")
        }
        guard size > 0, size <= 16 << 20 else {
            throw DeployError.badInput("SWAP=\(text): the size must be 1 MiB to 16 TiB")
        }
        return SwapRequest(partition: number, mebibytes: size)
    }

    /// Checks every property with a syntax (what `verify` can check before any disk exists).
    public func validate() throws {
        _ = try osFamily()
        _ = try rootPartition()
        _ = try users()
        _ = try hashingMethod()
        _ = try swap()
    }
}

extension StringProtocol {
    var snfTrimmed: String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" && $0 != "\n" }) else { return "" }
        let last = scalars.lastIndex(where: { $0 != " " && $0 != "\t" && $0 != "\r" && $0 != "\n" })!
        return String(String.UnicodeScalarView(scalars[first...last]))
    }
}
