import CCrypt
import Crypto
import Foundation
import NIOPosix

/// Password hashes in crypt(3) form, made and checked by libxcrypt: yescrypt (`$y$`, the Debian 12
/// default for /etc/shadow) with a random salt from the kernel. A database copy gives an attacker
/// a slow, salted hash per user, never a password.
public enum PasswordHash {
    /// The longest password accepted, in bytes: hashing is deliberately slow, so an unbounded
    /// input would be a cheap denial of service.
    public static let maximumLengthBytes = 4096

    /// Hashes `password` with a new salt. Runs on NIO's blocking thread pool (yescrypt takes tens
    /// of milliseconds and must not hold an async executor thread).
    public static func make(_ password: String) async throws -> String {
        try check(password)
        return try await NIOThreadPool.singleton.runIfActive {
            var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
            guard crypt_gensalt_rn("$y$", 0, nil, 0, &setting, Int32(setting.count)) != nil else {
                throw CloudError(status: 500, message: "The password hashing library could not make a salt.")
            }
            let settingString = String(decoding: setting.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard let hash = crypt(password, setting: settingString) else {
                throw CloudError(status: 500, message: "The password hashing library failed.")
            }
            return hash
        }
    }

    /// True when `password` matches `hash` (compared in constant time).
    public static func verify(_ password: String, hash: String) async -> Bool {
        guard (try? check(password)) != nil else { return false }
        let computed: String?? = try? await NIOThreadPool.singleton.runIfActive { crypt(password, setting: hash) }
        guard let computed, let computed else { return false }
        return constantTimeEqual(Array(computed.utf8), Array(hash.utf8))
    }

    static func check(_ password: String) throws(CloudError) {
        if password.isEmpty { throw .badRequest("The password must not be empty.") }
        if password.utf8.count > maximumLengthBytes {
            throw .badRequest("The password is longer than \(maximumLengthBytes) bytes.")
        }
        if password.utf8.contains(0) { throw .badRequest("The password must not contain a NUL character.") }
    }

    /// crypt_r(3) with a heap-allocated, zeroed `crypt_data` (about 32 KiB); nil on failure
    /// (libxcrypt answers failures with a string starting with `*`).
    private static func crypt(_ password: String, setting: String) -> String? {
        let data = UnsafeMutableRawPointer.allocate(
            byteCount: MemoryLayout<crypt_data>.size, alignment: MemoryLayout<crypt_data>.alignment)
        memset(data, 0, MemoryLayout<crypt_data>.size)
        defer {
            // The scratch area held the password: wipe it before freeing.
            memset(data, 0, MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        let typed = data.bindMemory(to: crypt_data.self, capacity: 1)
        guard let out = crypt_r(password, setting, typed) else { return nil }
        let result = String(cString: out)
        return result.hasPrefix("*") ? nil : result
    }
}

/// Bearer secrets (tokens): 256 random bits from the kernel, shown to the client once, stored
/// only as their SHA-256.
public enum TokenSecret {
    /// A new secret, 43 characters of base64url.
    public static func make() -> String {
        var generator = SystemRandomNumberGenerator()  // getrandom(2) on Linux
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return base64URL(bytes)
    }

    /// The SHA-256 of a secret, in hex: the database key for a token.
    public static func digest(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// A short random id (Keystone's `audit_ids` entries are 22 characters of base64url).
    static func auditID() -> String {
        var generator = SystemRandomNumberGenerator()
        return base64URL((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }

    static func base64URL(_ bytes: [UInt8]) -> String {
        Data(bytes).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// Compares two byte strings in time that depends only on their lengths.
func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in 0..<a.count { difference |= a[i] ^ b[i] }
    return difference == 0
}

/// A new Keystone-style id: a random UUID as 32 lowercase hex digits.
func newID() -> String {
    UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
}
