import BlockStore
import Crypto
import NIOCore
import NIOPosix

/// What ``ObjectStorageService/streamBlocks(_:limit:)`` stored.
struct StreamedBlocks: Sendable {
    /// One id per 4 MiB block of the body, in order (``BlockID/zero`` for all-zero blocks, which
    /// are never stored); empty for an empty body.
    var blocks: [BlockID]
    var sizeBytes: Int64
    /// MD5 of the body, lowercase hex.
    var md5: String

    /// The content-addressed blocks, as hex (what `object_blocks` records).
    var storedHashes: Set<String> { Set(blocks.filter { !$0.isZero }.map(\.hex)) }
}

extension ObjectStorageService {
    /// How many 4 MiB blocks may be hashed and written at once while the next one is read: the
    /// memory a streamed upload holds is about this many blocks plus the one being filled.
    static let blocksInFlight = 3

    /// Stores a request body straight into the block store, a block at a time as it arrives: the
    /// body is cut into 4 MiB blocks; each full block is hashed (SHA-256, its id) and written
    /// (``BlockStore/putBlock(_:)``: once, crash-safe) on a store thread (``StoreIO``) while the
    /// next one is read, at most ``blocksInFlight`` at a time; the MD5 of the whole body is
    /// computed on NIO's pool (CPU work, never waiting for the disk), block after block in order
    /// (a chain of tasks), so reading, MD5, SHA-256 and the disk all overlap. Nothing names the blocks yet: the caller publishes a map of them
    /// (``BlockStore/createMap(named:sizeBytes:blocks:)``) or leaves them to garbage collection.
    /// - Throws: 413 past `limit` bytes (checked as bytes arrive), the body's and the store's errors.
    func streamBlocks<Body: AsyncSequence & Sendable>(_ body: Body, limit: Int64) async throws -> StreamedBlocks
    where Body.Element == ByteBuffer {
        let store = self.store
        return try await withThrowingTaskGroup(of: (Int, BlockID, UploadBlock).self) { group in
            var md5Chain = Task<Insecure.MD5, any Error> { Insecure.MD5() }
            var size: Int64 = 0
            var blocks: [BlockID] = []
            var running = 0
            // Page-aligned buffers, reused: the store writes them with O_DIRECT.
            var spare: [UploadBlock] = []
            var filling = UploadBlock()

            func submit(_ block: UploadBlock, group: inout ThrowingTaskGroup<(Int, BlockID, UploadBlock), any Error>)
                async throws
            {
                if running >= Self.blocksInFlight, let (index, id, done) = try await group.next() {
                    blocks[index] = id
                    running -= 1
                    done.count = 0
                    spare.append(done)
                }
                let index = blocks.count
                blocks.append(.zero)
                running += 1
                let previous = md5Chain
                let md5 = Task<Insecure.MD5, any Error> {
                    let before = try await previous.value
                    return try await NIOThreadPool.singleton.runIfActive {
                        var after = before
                        after.update(bufferPointer: block.bytes)
                        return after
                    }
                }
                md5Chain = md5
                group.addTask {
                    let id = try await StoreIO.run { try store.putBlock(block.bytes) }
                    // Done only once this block is in the MD5 too: then the buffer is free.
                    _ = try await md5.value
                    return (index, id, block)
                }
            }

            for try await chunk in body {
                size += Int64(chunk.readableBytes)
                guard size <= limit else { throw CloudError(status: 413, message: "Your request is too large.") }
                var rest = chunk
                while rest.readableBytes > 0 {
                    if filling.append(&rest) {
                        try await submit(filling, group: &group)
                        filling = spare.popLast() ?? UploadBlock()
                    }
                }
            }
            if filling.count > 0 { try await submit(filling, group: &group) }
            while let (index, id, _) = try await group.next() { blocks[index] = id }
            let hex = try await md5Chain.value.finalize().map { String(format: "%02x", $0) }.joined()
            return StreamedBlocks(blocks: blocks, sizeBytes: size, md5: hex)
        }
    }
}

/// One block of an upload being filled: a page-aligned 4 MiB buffer (the store writes aligned
/// buffers with O_DIRECT). Filled by the request's task, then only read, by the MD5 and the
/// store's tasks, until the upload takes it back to fill again.
final class UploadBlock: @unchecked Sendable {
    let storage: UnsafeMutableRawBufferPointer
    var count = 0

    init() {
        storage = .allocate(byteCount: BlockStore.blockSizeBytes, alignment: 4096)
    }

    deinit { storage.deallocate() }

    /// The bytes filled so far.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: storage[0..<count]) }

    /// Moves bytes from `chunk` until the block is full; true when it is.
    func append(_ chunk: inout ByteBuffer) -> Bool {
        let n = min(storage.count - count, chunk.readableBytes)
        chunk.withUnsafeReadableBytes { source in
            UnsafeMutableRawBufferPointer(rebasing: storage[count..<(count + n)])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: source[0..<n]))
        }
        chunk.moveReaderIndex(forwardBy: n)
        count += n
        return count == storage.count
    }
}
