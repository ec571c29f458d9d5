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
    /// (``BlockStore/putBlock(_:)``: once, crash-safe) on NIO's blocking pool while the next one
    /// is read, at most ``blocksInFlight`` at a time; the MD5 of the whole body is computed on the
    /// pool too, block after block in order (a chain of tasks), so reading, MD5, SHA-256 and the
    /// disk all overlap. Nothing names the blocks yet: the caller publishes a map of them
    /// (``BlockStore/createMap(named:sizeBytes:blocks:)``) or leaves them to garbage collection.
    /// - Throws: 413 past `limit` bytes (checked as bytes arrive), the body's and the store's errors.
    func streamBlocks<Body: AsyncSequence & Sendable>(_ body: Body, limit: Int64) async throws -> StreamedBlocks
    where Body.Element == ByteBuffer {
        let blockSize = BlockStore.blockSizeBytes
        let store = self.store
        return try await withThrowingTaskGroup(of: (Int, BlockID).self) { group in
            var md5Chain = Task<Insecure.MD5, any Error> { Insecure.MD5() }
            var size: Int64 = 0
            var blocks: [BlockID] = []
            var running = 0
            var filling = ByteBuffer()
            filling.reserveCapacity(blockSize)

            func submit(_ block: ByteBuffer, group: inout ThrowingTaskGroup<(Int, BlockID), any Error>) async throws {
                if running >= Self.blocksInFlight, let (index, id) = try await group.next() {
                    blocks[index] = id
                    running -= 1
                }
                let index = blocks.count
                blocks.append(.zero)
                running += 1
                let previous = md5Chain
                let md5 = Task<Insecure.MD5, any Error> {
                    let before = try await previous.value
                    return try await NIOThreadPool.singleton.runIfActive {
                        var after = before
                        block.withUnsafeReadableBytes { after.update(bufferPointer: $0) }
                        return after
                    }
                }
                md5Chain = md5
                group.addTask {
                    let id = try await NIOThreadPool.singleton.runIfActive {
                        try block.withUnsafeReadableBytes { try store.putBlock($0) }
                    }
                    // Done only once this block is in the MD5 too: bounds the chain's memory.
                    _ = try await md5.value
                    return (index, id)
                }
            }

            for try await chunk in body {
                size += Int64(chunk.readableBytes)
                guard size <= limit else { throw CloudError(status: 413, message: "Your request is too large.") }
                var rest = chunk
                while rest.readableBytes > 0 {
                    var part = rest.readSlice(length: min(blockSize - filling.readableBytes, rest.readableBytes))!
                    filling.writeBuffer(&part)
                    if filling.readableBytes == blockSize {
                        try await submit(filling, group: &group)
                        filling = ByteBuffer()
                        filling.reserveCapacity(blockSize)
                    }
                }
            }
            if filling.readableBytes > 0 { try await submit(filling, group: &group) }
            while let (index, id) = try await group.next() { blocks[index] = id }
            let hex = try await md5Chain.value.finalize().map { String(format: "%02x", $0) }.joined()
            return StreamedBlocks(blocks: blocks, sizeBytes: size, md5: hex)
        }
    }
}
