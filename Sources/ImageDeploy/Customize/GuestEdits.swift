// The text edits of the customization tasks, as pure functions on file bytes: the same for every
// DiskEditor. Lines are edited as bytes, so whatever is not edited stays byte-for-byte (other
// encodings, comments, a missing final newline).

/// A file as lines of bytes (split on "\n"), remembering whether it ended with a newline.
struct GuestLines: Equatable {
    var lines: [[UInt8]]
    var endsWithNewline: Bool

    init(_ bytes: [UInt8]) {
        if bytes.isEmpty {
            lines = []
            endsWithNewline = true
            return
        }
        var parts = bytes.split(separator: 10, omittingEmptySubsequences: false).map(Array.init)
        endsWithNewline = bytes.last == 10
        if endsWithNewline { parts.removeLast() }
        lines = parts
    }

    var bytes: [UInt8] {
        var out: [UInt8] = []
        for (index, line) in lines.enumerated() {
            out += line
            if index < lines.count - 1 || endsWithNewline { out.append(10) }
        }
        return out
    }

    /// Adds a line at the end (a file that did not end with a newline gets one first).
    mutating func append(_ line: [UInt8]) {
        lines.append(line)
        endsWithNewline = true
    }
}

public enum GuestEdits {
    /// One /etc/passwd entry.
    public struct PasswdEntry: Sendable, Equatable {
        public var name: String
        public var uid: UInt32
        public var gid: UInt32
        public var home: String
    }

    static func isBlank(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 }

    /// Whitespace-separated fields of a line (spaces and tabs).
    static func fields(_ line: [UInt8]) -> [[UInt8]] {
        line.split(whereSeparator: isBlank).map(Array.init)
    }

    // MARK: Hostname

    /// Checks an instance name for /etc/hostname and /etc/hosts: RFC 1123 labels (letters,
    /// digits, hyphens, not at either end of a label), dot-separated, at most 253 bytes.
    public static func validateHostname(_ name: String) throws {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        let valid =
            !name.isEmpty && name.utf8.count <= 253
            && labels.allSatisfy { label in
                !label.isEmpty && label.utf8.count <= 63 && label.first != "-" && label.last != "-"
                    && label.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7a) || $0 == 0x2d }
            }
        guard valid else { throw CustomizationError("invalid hostname \"\(printable(name))\"") }
    }

    /// The short name: the first label.
    public static func shortHostname(_ name: String) -> String {
        String(name.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
    }

    /// /etc/hostname: the short name and a newline.
    public static func hostnameFile(_ name: String) -> [UInt8] {
        Array((shortHostname(name) + "\n").utf8)
    }

    /// /etc/hosts with the 127.0.1.1 line set for `name`: `127.0.1.1\t<fqdn> <short>` when the
    /// name has a domain, else `127.0.1.1\t<name>`. The first 127.0.1.1 line is replaced and any
    /// further ones (older names) removed; without one, it goes after the last 127.0.0.1 line
    /// (or first). Everything else is kept byte-for-byte. A missing file (nil) becomes a
    /// localhost line plus ours.
    public static func hosts(_ original: [UInt8]?, hostname name: String) -> [UInt8] {
        let short = shortHostname(name)
        let entry = Array((short == name ? "127.0.1.1\t\(name)" : "127.0.1.1\t\(name) \(short)").utf8)
        guard let original else { return Array("127.0.0.1\tlocalhost\n".utf8) + entry + [10] }
        var file = GuestLines(original)
        let address = Array("127.0.1.1".utf8)
        let loopback = Array("127.0.0.1".utf8)
        var replaced = false
        var lastLoopback: Int? = nil
        var result: [[UInt8]] = []
        for line in file.lines {
            let first = fields(line).first
            if first == address {
                if !replaced {
                    result.append(entry)
                    replaced = true
                }
                continue
            }
            if first == loopback { lastLoopback = result.count }
            result.append(line)
        }
        if !replaced {
            let position = lastLoopback.map { $0 + 1 } ?? 0
            result.insert(entry, at: position)
            if position == result.count - 1 { file.endsWithNewline = true }  // our line ends the file
        }
        file.lines = result
        return file.bytes
    }

    // MARK: Accounts

    /// The /etc/passwd entry of `user`, nil if it has none. Throws on a malformed entry.
    public static func passwdEntry(_ passwd: [UInt8], user: String) throws -> PasswdEntry? {
        let wanted = Array(user.utf8)
        for line in GuestLines(passwd).lines {
            let parts = line.split(separator: 58, omittingEmptySubsequences: false)
            guard parts.count >= 1, Array(parts[0]) == wanted else { continue }
            guard parts.count >= 7,
                let uid = UInt32(String(decoding: parts[2], as: UTF8.self)),
                let gid = UInt32(String(decoding: parts[3], as: UTF8.self))
            else { throw CustomizationError("malformed /etc/passwd entry for \(user)") }
            let home = String(decoding: parts[5], as: UTF8.self)
            return PasswdEntry(name: user, uid: uid, gid: gid, home: home)
        }
        return nil
    }

    /// Checks a home directory from /etc/passwd before it is used as a guest path: absolute, no
    /// "." or ".." components, no control characters, not "/".
    public static func validateHome(_ home: String, user: String) throws {
        let components = home.split(separator: "/", omittingEmptySubsequences: false).dropFirst()
        guard home.hasPrefix("/"), home != "/", !components.contains(".."), !components.contains("."),
            home.utf8.allSatisfy({ $0 >= 0x20 && $0 != 0x7f })
        else { throw CustomizationError("user \(user) has an unusable home directory \"\(printable(home))\"") }
    }

    /// Checks a crypt(3) string for /etc/shadow: printable, no ":" and no whitespace.
    public static func validatePasswordHash(_ hash: String) throws {
        guard !hash.isEmpty, hash.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7f && $0 != 58 }) else {
            throw CustomizationError("the password hash is not a crypt(3) string")
        }
    }

    /// Days since 1970-01-01 (the "last change" field of /etc/shadow).
    public static func daysSinceEpoch(_ seconds: Int) -> Int { seconds / 86400 }

    /// /etc/shadow with `user`'s hash (field 2) set and its last change (field 3) set to
    /// `today`; the rest of the line and the file stay as they were. A user without a line gets
    /// `user:hash:today:0:99999:7:::` at the end.
    public static func shadow(_ original: [UInt8], user: String, hash: String, today: Int) throws -> [UInt8] {
        try validatePasswordHash(hash)
        var file = GuestLines(original)
        let wanted = Array(user.utf8)
        var found = false
        for index in file.lines.indices {
            var parts = file.lines[index].split(separator: 58, omittingEmptySubsequences: false).map(Array.init)
            guard parts.first == wanted else { continue }
            while parts.count < 3 { parts.append([]) }
            parts[1] = Array(hash.utf8)
            parts[2] = Array(String(today).utf8)
            file.lines[index] = Array(parts.joined(separator: [58]))
            found = true
        }
        if !found { file.append(Array("\(user):\(hash):\(today):0:99999:7:::".utf8)) }
        return file.bytes
    }

    // MARK: fstab

    /// /etc/fstab with `UUID=<uuid> none swap sw 0 0` added, unless a line with the same fields
    /// is already there (then the bytes are returned unchanged).
    public static func fstabAddingSwap(_ original: [UInt8]?, uuid: String) -> [UInt8] {
        let line = Array("UUID=\(uuid) none swap sw 0 0".utf8)
        var file = GuestLines(original ?? [])
        if file.lines.contains(where: { fields($0) == fields(line) }) { return original ?? [] }
        file.append(line)
        return file.bytes
    }

    // MARK: authorized_keys

    /// The key lines of `keys` (non-empty, not comments), each checked for control characters.
    public static func keyLines(_ keys: String) throws -> [[UInt8]] {
        var result: [[UInt8]] = []
        for raw in keys.utf8.split(separator: 10, omittingEmptySubsequences: true) {
            var line = Array(raw)
            while let last = line.last, last == 13 || isBlank(last) { line.removeLast() }
            while let first = line.first, isBlank(first) { line.removeFirst() }
            if line.isEmpty || line.first == 0x23 { continue }
            guard line.allSatisfy({ $0 >= 0x20 || $0 == 0x09 }), !line.contains(0x7f) else {
                throw CustomizationError("an SSH key line has control characters")
            }
            result.append(line)
        }
        return result
    }

    /// authorized_keys with every line of `keys` that is not there yet appended; nil when
    /// nothing needs adding (the file stays untouched).
    public static func authorizedKeys(_ existing: [UInt8]?, adding keys: String) throws -> [UInt8]? {
        var file = GuestLines(existing ?? [])
        func normalized(_ line: [UInt8]) -> [UInt8] {
            var line = line
            while let last = line.last, last == 13 || isBlank(last) { line.removeLast() }
            while let first = line.first, isBlank(first) { line.removeFirst() }
            return line
        }
        var present = Set(file.lines.map(normalized))
        var changed = false
        for key in try keyLines(keys) where !present.contains(key) {
            file.append(key)
            present.insert(key)
            changed = true
        }
        return changed ? file.bytes : nil
    }

    // MARK: SSH host keys

    /// The names in /etc/ssh that are host keys: ssh_host_*_key and ssh_host_*_key.pub.
    public static func sshHostKeyNames(_ names: [String]) -> [String] {
        names.filter { name in
            let base = name.hasSuffix(".pub") ? String(name.dropLast(4)) : name
            return base.hasPrefix("ssh_host_") && base.hasSuffix("_key") && base.count > "ssh_host__key".count
        }.sorted()
    }

    // MARK: Helpers

    /// Text safe to put in a message (control characters escaped).
    static func printable(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\x" + String(scalar.value, radix: 16)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
