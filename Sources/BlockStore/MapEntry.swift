/// What one block-sized slot of a map refers to.
public enum MapEntry: Hashable, Sendable {
    /// The virtual all-zero block: never stored, reads as zeros, costs no I/O.
    case zero
    /// A content-addressed, shared, read-only block.
    case block(BlockID)
    /// A private block written by a volume (copy-on-write target).
    case volumeBlock(VolumeBlockID)

    /// The Pithos hash of the entry when it can be known without reading data
    /// (zero and content-addressed entries), else nil.
    public var knownBlockID: BlockID? {
        switch self {
        case .zero: return .zero
        case .block(let id): return id
        case .volumeBlock: return nil
        }
    }
}
