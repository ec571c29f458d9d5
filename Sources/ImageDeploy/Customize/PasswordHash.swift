// Password hashes for /etc/shadow: crypt(3) from libxcrypt (crypt_gensalt_rn for a new random
// salt, crypt_rn to hash), thread-safe (private struct crypt_data, no static buffers).

import CCrypt

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

public enum PasswordHasher {
    /// PASSWD_HASHING_METHOD names and their crypt(3) prefixes.
    public static let prefixes: [String: String] = [
        "sha512": "$6$", "sha256": "$5$", "md5": "$1$", "blowfish": "$2b$", "yescrypt": "$y$", "sha1": "$sha1",
    ]

    /// The crypt(3) string of `password` with a new random salt. `method` is a
    /// PASSWD_HASHING_METHOD value (sha512, the default when empty; sha256, md5, blowfish,
    /// yescrypt, sha1), case-insensitive.
    public static func hash(_ password: String, method: String) throws -> String {
        let name = method.isEmpty ? "sha512" : method.lowercased()
        guard let prefix = prefixes[name] else {
            throw CustomizationError(
                "unknown password hashing method \(method) (known: \(prefixes.keys.sorted().joined(separator: ", ")))")
        }
        guard !password.utf8.contains(0) else { throw CustomizationError("the password contains a NUL byte") }
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        // count 0: the method's default cost; rbytes nil: libxcrypt draws the salt from the OS.
        guard crypt_gensalt_rn(prefix, 0, nil, 0, &setting, Int32(setting.count)) != nil else {
            throw CustomizationError("crypt_gensalt (\(name)) failed: \(String(cString: strerror(errno)))")
        }
        let end = setting.firstIndex(of: 0) ?? setting.count
        return try crypt(password, setting: String(decoding: setting[..<end].map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }

    /// crypt(3) of `password` with `setting` (a salt or a whole crypt string, as for checking
    /// a password against a hash).
    public static func crypt(_ password: String, setting: String) throws -> String {
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer {
            memset(data, 0, MemoryLayout<crypt_data>.size)  // the password went through it
            data.deallocate()
        }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        guard let result = crypt_rn(password, setting, data, Int32(MemoryLayout<crypt_data>.size)) else {
            throw CustomizationError("crypt failed for setting \(setting.prefix(8))...: \(String(cString: strerror(errno)))")
        }
        let text = String(cString: result)
        guard !text.hasPrefix("*") else { throw CustomizationError("crypt rejected the setting \(setting.prefix(8))...") }
        return text
    }

    /// Whether `password` matches the crypt string `hash`.
    public static func verify(_ password: String, hash: String) -> Bool {
        guard let again = try? crypt(password, setting: hash) else { return false }
        // Compare without an early exit.
        let a = Array(again.utf8)
        let b = Array(hash.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
