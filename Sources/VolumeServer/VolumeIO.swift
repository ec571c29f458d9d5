/// Random-access I/O on one attached volume: what the NBD server and the FUSE export serve.
///
/// Implementations are thread-safe: the FUSE export calls them from several threads at once.
/// Offsets and lengths are in bytes and need no alignment; callers never pass a range that ends
/// past ``sizeBytes`` (they answer such requests with an error themselves).
public protocol VolumeIO: AnyObject, Sendable {
    /// The volume's current size in bytes (grows when the volume is grown while attached).
    var sizeBytes: UInt64 { get }

    /// Fills `buffer` with the bytes at `offset`. Never-written blocks read as zeros without I/O.
    func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws

    /// Writes `bytes` at `offset` (copy-on-write at block granularity). With `fua` the bytes are on
    /// stable storage when this returns; otherwise after the next ``flush()``.
    func write(at offset: UInt64, from bytes: UnsafeRawBufferPointer, fua: Bool) throws

    /// Makes every completed write durable.
    func flush() throws
}
