/// The name of a content-addressed block: SHA-256 of the block with its trailing zero bytes removed.
///
/// A block is logically always ``BlockStore/blockSizeBytes`` long and zero-padded, so `"abc"`,
/// `"abc\0\0\0"` and `"abc"` followed by zeros up to 4 MiB are one block with one name. The all-zero
/// block (of any length) is named ``zero`` = SHA-256 of no bytes; it is virtual, never stored.
public struct BlockID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The SHA-256 digest that names the block.
    public var digest: Digest

    public init(digest: Digest) { self.digest = digest }

    /// Parses 64 hex characters.
    public init?(hex: some StringProtocol) {
        guard let d = Digest(hex: hex) else { return nil }
        digest = d
    }

    /// The name of the block holding `bytes` (trailing zeros are stripped before hashing).
    public init(hashing bytes: UnsafeRawBufferPointer) {
        let kept = BlockID.contentLength(of: bytes)
        digest = Digest(sha256Of: UnsafeRawBufferPointer(rebasing: bytes[0..<kept]))
    }

    /// The name of the zero block: `e3b0c442…7852b855`.
    public static let zero = BlockID(digest: .ofEmpty)

    /// True for the virtual all-zero block.
    public var isZero: Bool { self == .zero }

    /// 64 lowercase hex characters.
    public var hex: String { digest.hex }
    public var description: String { digest.hex }

    public static func < (a: BlockID, b: BlockID) -> Bool { a.digest < b.digest }

    /// The length of `bytes` once trailing zero bytes are removed (0 for an all-zero buffer).
    ///
    /// Scans backwards a word at a time: a random block ends at once, an all-zero one costs one
    /// pass at memory speed.
    public static func contentLength(of bytes: UnsafeRawBufferPointer) -> Int {
        var end = bytes.count
        while end >= 8, bytes.loadUnaligned(fromByteOffset: end - 8, as: UInt64.self) == 0 {
            end -= 8
        }
        while end > 0, bytes[end - 1] == 0 {
            end -= 1
        }
        return end
    }
}
