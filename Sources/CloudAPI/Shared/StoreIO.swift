import NIOPosix

/// The threads that make blocking block-store calls (reading and writing block files, fsync,
/// publishing maps). They are apart from NIO's singleton pool, which has one thread per core and
/// does the CPU work (the MD5 of uploads, password hashing): a request waiting for the disk never
/// holds up one that needs the CPU, and several waits for the disk overlap.
enum StoreIO {
    static let threadCount = 16

    static let pool: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: threadCount)
        pool.start()
        return pool
    }()

    /// Runs `body` on a store thread and returns its result.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await pool.runIfActive(body)
    }
}
