import Crypto

/// A SHA-256 digest: 32 bytes, shown as 64 lowercase hex characters.
///
/// Stored as four big-endian words so that it is a cheap, hashable value.
public struct Digest: Hashable, Comparable, Sendable, CustomStringConvertible {
    var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    /// The digest of exactly 32 raw bytes.
    /// - Precondition: `raw.count == 32`.
    public init(raw: UnsafeRawBufferPointer) {
        precondition(raw.count == 32, "a SHA-256 digest has 32 bytes")
        w0 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        w1 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        w2 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
        w3 = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 24, as: UInt64.self))
    }

    /// SHA-256 of `bytes`, exactly as given.
    public init(sha256Of bytes: UnsafeRawBufferPointer) {
        var hasher = SHA256()
        hasher.update(bufferPointer: bytes)
        self = hasher.finalize().withUnsafeBytes { Digest(raw: $0) }
    }

    /// SHA-256 of `bytes`, exactly as given.
    public init(sha256Of bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { Digest(sha256Of: $0) }
    }

    /// Parses 64 hex characters (either case).
    public init?(hex: some StringProtocol) {
        let utf8 = Array(hex.utf8)
        guard utf8.count == 64 else { return nil }
        var words: [UInt64] = [0, 0, 0, 0]
        for (i, c) in utf8.enumerated() {
            guard let v = hexValue(c) else { return nil }
            words[i / 16] = words[i / 16] << 4 | UInt64(v)
        }
        (w0, w1, w2, w3) = (words[0], words[1], words[2], words[3])
    }

    /// The 32 raw bytes.
    public var raw: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBytes { write(to: $0) }
        return out
    }

    /// Writes the 32 raw bytes at the start of `buffer`.
    public func write(to buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= 32)
        buffer.storeBytes(of: w0.bigEndian, toByteOffset: 0, as: UInt64.self)
        buffer.storeBytes(of: w1.bigEndian, toByteOffset: 8, as: UInt64.self)
        buffer.storeBytes(of: w2.bigEndian, toByteOffset: 16, as: UInt64.self)
        buffer.storeBytes(of: w3.bigEndian, toByteOffset: 24, as: UInt64.self)
    }

    /// 64 lowercase hex characters.
    public var hex: String { hexString(w0) + hexString(w1) + hexString(w2) + hexString(w3) }

    /// The first 12 hex characters, for messages.
    public var shortHex: String { String(hex.prefix(12)) }

    public var description: String { hex }

    public static func < (a: Digest, b: Digest) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    /// SHA-256 of no bytes: `e3b0c442…7852b855`.
    public static let ofEmpty = Digest(sha256Of: [])
}

@inline(__always)
func hexValue(_ c: UInt8) -> UInt8? {
    switch c {
    case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
    case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
    default: return nil
    }
}

/// `value` as exactly 16 lowercase hex digits.
func hexString(_ value: UInt64) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out = [UInt8](repeating: 0, count: 16)
    var v = value
    for i in stride(from: 15, through: 0, by: -1) {
        out[i] = digits[Int(v & 0xf)]
        v >>= 4
    }
    return String(decoding: out, as: UTF8.self)
}

/// Parses exactly 16 hex digits.
func parseHex64(_ text: some StringProtocol) -> UInt64? {
    let utf8 = Array(text.utf8)
    guard utf8.count == 16 else { return nil }
    var v: UInt64 = 0
    for c in utf8 {
        guard let d = hexValue(c) else { return nil }
        v = v << 4 | UInt64(d)
    }
    return v
}
