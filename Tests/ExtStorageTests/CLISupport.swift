import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation
import Testing

/// Runs the built `snf-store` binary the way an operator or Ganeti would.
struct CLI {
    struct Result {
        var status: Int32
        var stderr: String
        var stdoutBytes: Data
        /// Standard output as text (decoded on use: exports are large and binary).
        var stdout: String { String(decoding: stdoutBytes, as: UTF8.self) }
    }

    /// The binary next to the test bundle (override with `SNF_STORE_BIN`).
    static let binary: String = {
        if let path = ProcessInfo.processInfo.environment["SNF_STORE_BIN"] { return path }
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("snf-store").path
    }()

    let root: String

    /// A fresh, initialized store in a temporary directory.
    static func withNewStore() throws -> CLI {
        let cli = CLI(root: try temporaryDirectory("snf-store-cli") + "/store")
        let result = try cli.run(["init"])
        try #require(result.status == 0, "init: \(result.stderr)")
        return cli
    }

    /// Children that exit without reading their input must not kill the test process.
    static let ignoreBrokenPipes: Void = { signal(SIGPIPE, SIG_IGN) }()

    /// Starts `snf-store ARGS --root ROOT` without waiting.
    func start(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) throws
        -> (Process, Pipe, Pipe)
    {
        CLI.ignoreBrokenPipes
        let process = Process()
        process.executableURL = URL(fileURLWithPath: CLI.binary)
        process.arguments = arguments.isEmpty ? [] : [arguments[0], "--root", root] + arguments.dropFirst()
        process.environment = environment ?? ["PATH": "/usr/bin:/bin"]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if let stdin {
            let input = Pipe()
            process.standardInput = input
            try process.run()
            DispatchQueue.global().async {
                try? input.fileHandleForWriting.write(contentsOf: stdin)
                try? input.fileHandleForWriting.close()
            }
        } else {
            process.standardInput = FileHandle.nullDevice
            try process.run()
        }
        return (process, out, err)
    }

    /// Runs `snf-store ARGS --root ROOT` and waits.
    @discardableResult
    func run(_ arguments: [String], stdin: Data? = nil, environment: [String: String]? = nil) throws -> Result {
        let (process, out, err) = try start(arguments, stdin: stdin, environment: environment)
        return CLI.collect(process, out, err)
    }

    static func collect(_ process: Process, _ out: Pipe, _ err: Pipe) -> Result {
        // Drain both pipes concurrently so that a full pipe never blocks the child.
        let errData = LockedBox(Data())
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.set(err.fileHandleForReading.readDataToEndOfFile())
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        let status = process.terminationReason == .uncaughtSignal ? -process.terminationStatus : process.terminationStatus
        return Result(status: status, stderr: String(decoding: errData.get(), as: UTF8.self), stdoutBytes: outData)
    }

    /// Runs and requires exit status 0.
    @discardableResult
    func ok(_ arguments: [String], stdin: Data? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> Result {
        let result = try run(arguments, stdin: stdin)
        #expect(result.status == 0, "snf-store \(arguments.joined(separator: " ")): \(result.stderr)", sourceLocation: sourceLocation)
        return result
    }

    /// The bytes `export NAME -` prints.
    func exported(_ name: String) throws -> Data {
        try ok(["export", name, "-"]).stdoutBytes
    }

    /// Every file under the store with a digest of its content, except locks and scratch files:
    /// what "changes nothing" compares.
    func inventory() throws -> [String] {
        let base = URL(fileURLWithPath: root)
        var out: [String] = []
        let walker = FileManager.default.enumerator(at: base, includingPropertiesForKeys: [.isRegularFileKey])!
        for case let url as URL in walker {
            let relative = String(url.path.dropFirst(base.path.count + 1))
            if relative.hasPrefix("locks/") || relative.hasPrefix("tmp/") { continue }
            guard (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true else { continue }
            let data = try Data(contentsOf: url)
            out.append(relative + " " + data.withUnsafeBytes { Digest(sha256Of: $0).shortHex })
        }
        return out.sorted()
    }

    /// Writes `data` to a new temporary file and returns its path.
    func file(_ data: Data) throws -> String {
        let path = try temporaryDirectory("snf-store-data") + "/data"
        try data.write(to: URL(fileURLWithPath: path))
        return path
    }
}

final class LockedBox<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ value: T) { self.value = value }
    func get() -> T { lock.withLock { value } }
    func set(_ v: T) { lock.withLock { value = v } }
    func update(_ body: (inout T) -> Void) { lock.withLock { body(&value) } }
}

func temporaryDirectory(_ prefix: String) throws -> String {
    try TemporaryDirectory.make(prefix: prefix)
}

/// Deterministic random bytes.
func randomData(_ count: Int, seed: UInt64) -> Data {
    Data(TestData.random(count, seed: seed))
}

/// Parses JSON output.
func json(_ text: String) throws -> Any {
    try JSONSerialization.jsonObject(with: Data(text.utf8))
}

let mebibyte = 1 << 20
let blockSize = 4 << 20
