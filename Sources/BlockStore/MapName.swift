/// A validated name of a map (image, snapshot, object) or volume.
///
/// Rules: 1 to 200 characters from `A-Z a-z 0-9 . _ - + : @`, starting with a letter or digit,
/// never containing `..`. So a name is always a safe single path component: no `/`, no traversal,
/// no hidden files. Ganeti's volume names (`<uuid>.ext.disk0`) and snapshot names fit.
public struct MapName: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The longest name accepted, in bytes.
    public static let maxLength = 200

    /// The name as given.
    public let rawValue: String

    /// Validates `text`. Throws ``StoreError/Code/invalidName`` with the rule it breaks.
    public init(_ text: String) throws {
        if let problem = MapName.problem(with: text) {
            throw StoreError(.invalidName, "invalid name \(MapName.quoted(text)): \(problem)")
        }
        rawValue = text
    }

    /// Why `text` is not a valid name, or nil when it is.
    public static func problem(with text: String) -> String? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty else { return "a name cannot be empty" }
        guard bytes.count <= maxLength else { return "a name has at most \(maxLength) characters" }
        guard isAlphanumeric(bytes[0]) else { return "a name starts with a letter or digit" }
        if bytes.contains(UInt8(ascii: "/")) { return "a name cannot contain '/'" }
        if text.contains("..") { return "a name cannot contain '..'" }
        for b in bytes where !(isAlphanumeric(b) || allowedPunctuation.contains(b)) {
            return "a name uses only letters, digits and . _ - + : @"
        }
        return nil
    }

    static let allowedPunctuation: Set<UInt8> = Set(".-_+:@".utf8)

    static func isAlphanumeric(_ b: UInt8) -> Bool {
        (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a)
    }

    /// `text` in quotes with control characters escaped, safe to print in one line.
    static func quoted(_ text: String) -> String {
        var out = "'"
        for scalar in text.unicodeScalars.prefix(MapName.maxLength + 20) {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\u{\(String(scalar.value, radix: 16))}"
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }

    public var description: String { rawValue }
    public static func < (a: MapName, b: MapName) -> Bool { a.rawValue < b.rawValue }
}
