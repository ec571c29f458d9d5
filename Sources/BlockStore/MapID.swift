/// The name of a stored map body: SHA-256 of its encoding (see ``MapBody``).
///
/// Map bodies are immutable and content-addressed like blocks, which is what makes a thin clone
/// O(1): the clone's record points at its origin's body instead of copying it.
public struct MapID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// The SHA-256 digest of the encoded body.
    public var digest: Digest

    public init(digest: Digest) { self.digest = digest }

    /// Parses 64 hex characters.
    public init?(hex: some StringProtocol) {
        guard let d = Digest(hex: hex) else { return nil }
        digest = d
    }

    /// 64 lowercase hex characters.
    public var hex: String { digest.hex }
    public var description: String { digest.hex }
    public static func < (a: MapID, b: MapID) -> Bool { a.digest < b.digest }
}
