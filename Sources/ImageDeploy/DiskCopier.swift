import VolumeServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// Streams an image onto an instance disk.
///
/// The disk (a block device or a regular file) is opened read-write, never truncated or created;
/// an image larger than the disk is refused before anything is written. The source is read on the
/// caller's thread while a writer thread writes the previous chunk (two 4 MiB buffers in flight).
/// An all-zero chunk is written only where the disk does not already read as zeros (the disk is
/// read to find out: it is never assumed to be empty). Progress (`image-copy-progress`) every
/// `progressInterval` seconds and once at the end; fsync before returning.
public struct DiskCopier {
    /// What a copy did.
    public struct Outcome: Sendable, Equatable {
        /// Image bytes copied (the image size).
        public var bytes: UInt64
        /// Bytes written to the disk (less than `bytes` where zeros were already there).
        public var writtenBytes: UInt64
        /// Seconds the copy took.
        public var seconds: Double
    }

    public var progressInterval: Double
    /// Buffers in flight between the reader and the writer.
    public var buffers: Int

    public init(progressInterval: Double = 3, buffers: Int = 3) {
        self.progressInterval = progressInterval
        self.buffers = max(2, buffers)
    }

    /// Copies `source` onto the disk at `diskPath`.
    public func copy(from source: any ImageSource, toDisk diskPath: String, progress: any ProgressSink) throws -> Outcome {
        let started = monotonicSeconds()
        let disk = try DiskFile(path: diskPath)
        defer { disk.close() }
        let total = source.sizeBytes
        guard total <= disk.sizeBytes else {
            throw DeployError.badInput(
                "the image \(source.description) is \(total) bytes (\(mebibytes(total)) MiB), larger than the disk \(diskPath) of \(disk.sizeBytes) bytes (\(mebibytes(disk.sizeBytes)) MiB); give the instance a larger disk")
        }
        let pipeline = CopyPipeline(buffers: buffers, chunkBytes: ImageSources.chunkBytes)
        let writerState = WriterState(disk: disk, total: total, interval: progressInterval, progress: progress)
        let writer = JoinableThread.start {
            pipeline.consume { offset, bytes in try writerState.write(offset: offset, bytes) }
        }
        var expected: UInt64 = 0
        var readError: (any Error)?
        do {
            try source.stream { offset, chunk in
                guard offset == expected else {
                    throw DeployError.failure("internal error: \(source.description) skipped from \(expected) to \(offset)")
                }
                guard offset + UInt64(chunk.count) <= total else {
                    throw DeployError.failure("\(source.description) holds more than its \(total) bytes")
                }
                try pipeline.produce(offset: offset, chunk)
                expected += UInt64(chunk.count)
            }
            if expected != total {
                throw DeployError.failure("\(source.description) ended after \(expected) of \(total) bytes")
            }
        } catch {
            readError = error
        }
        pipeline.finish()
        writer.join()
        if let failure = pipeline.failure { throw failure }
        if let readError { throw readError }
        guard fsync(disk.fd) == 0 else { throw DeployError.errno("flush", diskPath) }
        progress.emit(.copyProgress(position: total, total: total))
        return Outcome(bytes: total, writtenBytes: writerState.written, seconds: monotonicSeconds() - started)
    }

    /// The writer's side: the disk, the zero check, progress timing. Used by the writer thread only.
    private final class WriterState: @unchecked Sendable {
        let disk: DiskFile
        let total: UInt64
        let interval: Double
        let progress: any ProgressSink
        var written: UInt64 = 0
        var lastReport: Double
        let scratch: UnsafeMutableRawBufferPointer

        init(disk: DiskFile, total: UInt64, interval: Double, progress: any ProgressSink) {
            self.disk = disk
            self.total = total
            self.interval = interval
            self.progress = progress
            lastReport = monotonicSeconds()
            scratch = .allocate(byteCount: ImageSources.chunkBytes, alignment: 4096)
        }

        deinit { scratch.deallocate() }

        func write(offset: UInt64, _ bytes: UnsafeRawBufferPointer) throws {
            var needed = true
            if chunkIsAllZero(bytes) {
                let current = UnsafeMutableRawBufferPointer(rebasing: scratch[0..<bytes.count])
                try disk.readFully(current, at: offset)
                needed = !chunkIsAllZero(UnsafeRawBufferPointer(current))
            }
            if needed {
                try disk.writeFully(bytes, at: offset)
                written += UInt64(bytes.count)
            }
            let now = monotonicSeconds()
            if now - lastReport >= interval {
                lastReport = now
                progress.emit(.copyProgress(position: offset + UInt64(bytes.count), total: total))
            }
        }
    }
}

/// True when every byte of `bytes` is zero.
func chunkIsAllZero(_ bytes: UnsafeRawBufferPointer) -> Bool {
    guard let base = bytes.baseAddress else { return true }
    let words = bytes.count / 8
    var index = 0
    // Eight words at a time, OR-ed together: one branch per 64 bytes.
    while index + 8 <= words {
        var acc: UInt64 = 0
        for k in 0..<8 { acc |= base.loadUnaligned(fromByteOffset: (index + k) * 8, as: UInt64.self) }
        if acc != 0 { return false }
        index += 8
    }
    while index < words {
        if base.loadUnaligned(fromByteOffset: index * 8, as: UInt64.self) != 0 { return false }
        index += 1
    }
    for i in (words * 8)..<bytes.count where bytes[i] != 0 { return false }
    return true
}

func mebibytes(_ bytes: UInt64) -> String {
    let tenths = (bytes * 10 + (1 << 19)) >> 20
    return "\(tenths / 10).\(tenths % 10)"
}

func monotonicSeconds() -> Double {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
}

/// An instance disk (block device or regular file), opened read-write without truncation.
final class DiskFile: @unchecked Sendable {
    let path: String
    private(set) var fd: Int32
    let sizeBytes: UInt64
    let isBlockDevice: Bool

    init(path: String, writable: Bool = true) throws {
        self.path = path
        let fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            if errno == ENOENT { throw DeployError.badInput("the disk \(path) does not exist") }
            throw DeployError.errno("open the disk", path)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Glibc.close(fd)
            throw DeployError.errno("stat the disk", path)
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            sizeBytes = UInt64(info.st_size)
            isBlockDevice = false
        case S_IFBLK:
            var size: UInt64 = 0
            // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
            guard ioctl(fd, 0x8008_1272, &size) == 0 else {
                Glibc.close(fd)
                throw DeployError.errno("get the size of the disk", path)
            }
            sizeBytes = size
            isBlockDevice = true
        default:
            Glibc.close(fd)
            throw DeployError.badInput("the disk \(path) is neither a block device nor a regular file")
        }
        self.fd = fd
    }

    func close() {
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit { close() }

    func readFully(_ buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < buffer.count {
            let n = pread(fd, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw DeployError.errno("read the disk", path) }
            if n == 0 {
                // A regular file may end before its nominal size: the rest reads as zeros.
                memset(buffer.baseAddress! + done, 0, buffer.count - done)
                return
            }
            done += n
        }
    }

    func writeFully(_ bytes: UnsafeRawBufferPointer, at offset: UInt64) throws {
        var done = 0
        while done < bytes.count {
            let n = pwrite(fd, bytes.baseAddress! + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DeployError.errno("write to the disk", path) }
            done += n
        }
    }
}

/// A bounded hand-off of chunks from one producer thread to one consumer thread.
final class CopyPipeline: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private let storage: [UnsafeMutableRawBufferPointer]
    private var free: [Int]
    private var full: [(buffer: Int, offset: UInt64, count: Int)] = []
    private var finished = false
    private var failureStorage: (any Error)?

    init(buffers: Int, chunkBytes: Int) {
        storage = (0..<buffers).map { _ in .allocate(byteCount: chunkBytes, alignment: 4096) }
        free = Array(0..<buffers)
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&changed, nil)
    }

    deinit {
        for buffer in storage { buffer.deallocate() }
        pthread_cond_destroy(&changed)
        pthread_mutex_destroy(&mutex)
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    var failure: (any Error)? { locked { failureStorage } }

    /// Copies `chunk` into a free buffer (waiting for one) and queues it. Throws the consumer's
    /// failure, if any, so the producer stops.
    func produce(offset: UInt64, _ chunk: UnsafeRawBufferPointer) throws {
        let index: Int = try locked {
            while free.isEmpty && failureStorage == nil { pthread_cond_wait(&changed, &mutex) }
            if let failureStorage { throw failureStorage }
            return free.removeLast()
        }
        storage[index].copyMemory(from: chunk)
        locked {
            full.append((index, offset, chunk.count))
            pthread_cond_broadcast(&changed)
        }
    }

    /// No more chunks.
    func finish() {
        locked {
            finished = true
            pthread_cond_broadcast(&changed)
        }
    }

    /// Runs `body` on each queued chunk in order until ``finish()`` and the queue is empty, or
    /// until `body` throws (recorded as the failure).
    func consume(_ body: (UInt64, UnsafeRawBufferPointer) throws -> Void) {
        while true {
            let item: (buffer: Int, offset: UInt64, count: Int)? = locked {
                while full.isEmpty && !finished { pthread_cond_wait(&changed, &mutex) }
                return full.isEmpty ? nil : full.removeFirst()
            }
            guard let item else { return }
            do {
                try body(item.offset, UnsafeRawBufferPointer(rebasing: storage[item.buffer][0..<item.count]))
            } catch {
                locked {
                    failureStorage = error
                    pthread_cond_broadcast(&changed)
                }
                return
            }
            locked {
                free.append(item.buffer)
                pthread_cond_broadcast(&changed)
            }
        }
    }
}
