#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a fixed number of worker threads and waits for all of them.
///
/// Plain threads, not the Swift concurrency pool, on purpose: workers block in `fsync` and
/// `pread`, and blocking the cooperative pool's two threads would stall hashing.
package enum Workers {
    /// How many workers import uses: enough to keep every core hashing while others wait in
    /// fsync, and a fixed limit (each holds one 4 MiB buffer).
    static var defaultCount: Int { min(coreCount + 2, 16) }

    /// Online cores: the width for work that never waits for the disk (hashing cached data,
    /// copying into the page cache), where more threads than cores only contend.
    static var coreCount: Int { max(Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))), 1) }

    /// Calls `body(worker)` for `worker` in `0..<count`, each on its own thread.
    package static func run(count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        precondition(count >= 1)
        if count == 1 {
            body(0)
            return
        }
        final class Job: @unchecked Sendable {
            let run: () -> Void
            init(_ run: @escaping () -> Void) { self.run = run }
        }
        #if canImport(Darwin)
        var threads: [pthread_t?] = []
        #else
        var threads: [pthread_t] = []
        #endif
        for worker in 0..<count {
            let job = Unmanaged.passRetained(Job { body(worker) }).toOpaque()
            #if canImport(Darwin)
            var thread: pthread_t?
            #else
            var thread = pthread_t()
            #endif
            let rc = pthread_create(&thread, nil, { context in
                let job = Unmanaged<Job>.fromOpaque(context!).takeRetainedValue()
                job.run()
                return nil
            }, job)
            if rc != 0 {
                // Could not start a thread: run this share of the work here instead.
                Unmanaged<Job>.fromOpaque(job).takeRetainedValue().run()
                continue
            }
            threads.append(thread)
        }
        for thread in threads {
            #if canImport(Darwin)
            pthread_join(thread!, nil)
            #else
            pthread_join(thread, nil)
            #endif
        }
    }
}

/// A buffer of one block, aligned for direct I/O, owned by one worker.
final class BlockBuffer {
    let pointer: UnsafeMutableRawBufferPointer

    init(count: Int) {
        pointer = .allocate(byteCount: count, alignment: 4096)
    }

    deinit { pointer.deallocate() }

    /// The first `count` bytes.
    func prefix(_ count: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: pointer[0..<count])
    }
}
