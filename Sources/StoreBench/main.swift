// snf-store-bench: in-process timings that a shell cannot take precisely (millisecond-scale
// operations without process start-up). Used by Benchmarks/store-bench; never by the tests.
//
//   snf-store-bench clone ROOT ORIGIN RUNS   median and p90 of cloneVolume(ORIGIN), microseconds
import BlockStore
import BlockStorePosix

#if canImport(Glibc)
import Glibc
#endif

func microseconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) * 1e6 + Double(t.tv_nsec) / 1e3
}

func fail(_ message: String) -> Never {
    var line = "snf-store-bench: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    exit(2)
}

let arguments = CommandLine.arguments
if arguments.count == 6, arguments[1] == "export", let workers = Int(arguments[5]), workers > 0 {
    // snf-store-bench export ROOT NAME FILE WORKERS: seconds to export with a store of WORKERS
    // workers (export itself uses at most one per core).
    do {
        let store = BlockStore(backend: try PosixBackend(root: arguments[2]), workers: workers)
        let start = microseconds()
        try store.export(try MapName(arguments[3]), to: try FileSink(path: arguments[4]))
        print("seconds=\((microseconds() - start) / 1e6) workers=\(workers)")
    } catch {
        fail("\(error)")
    }
    exit(0)
}
guard arguments.count == 5, arguments[1] == "clone", let runs = Int(arguments[4]), runs > 0 else {
    fail("usage: snf-store-bench clone ROOT ORIGIN RUNS | export ROOT NAME FILE WORKERS")
}
do {
    let store = BlockStore(backend: try PosixBackend(root: arguments[2]))
    let origin = try MapName(arguments[3])
    var samples: [Double] = []
    for run in 0..<runs {
        let name = try MapName("bench-clone-\(getpid())-\(run)")
        let start = microseconds()
        try store.cloneVolume(from: origin, named: name)
        samples.append(microseconds() - start)
        try store.remove(name)
    }
    samples.sort()
    let median = samples[samples.count / 2]
    let p90 = samples[min(samples.count - 1, samples.count * 9 / 10)]
    print("median_us=\(Int(median)) p90_us=\(Int(p90)) runs=\(runs)")
} catch {
    fail("\(error)")
}
