import BlockStore
import FoundationEssentials
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// `info --json`.
struct MapInfoJSON: Encodable {
    var name: String
    var kind: String
    var size: UInt64
    var blocks: UInt64
    var zero_blocks: UInt64
    var content_blocks: UInt64
    var private_blocks: UInt64
    var writable_blocks: UInt64
    var map: String?
    var volume: String?
    var epoch: UInt64?
    var origin: String?
    var created: Int64

    init(_ info: MapInfo) {
        let r = info.record
        name = r.name.rawValue
        kind = r.kind.rawValue
        size = r.sizeBytes
        blocks = info.blocks
        zero_blocks = info.zeroBlocks
        content_blocks = info.contentBlocks
        private_blocks = info.privateBlocks
        writable_blocks = info.writableBlocks
        map = r.map?.hex
        volume = r.volume?.hex
        epoch = r.kind == .readWrite ? r.epoch : nil
        origin = r.origin
        created = r.createdSeconds
    }

    /// `info` without `--json`: one "key: value" line each.
    var lines: [(String, String)] {
        [("name", name), ("kind", kind), ("size", "\(size) (\(formatBytes(size)))"), ("blocks", "\(blocks)"),
         ("zero blocks", "\(zero_blocks)"), ("content blocks", "\(content_blocks)"),
         ("private blocks", "\(private_blocks)"), ("writable blocks", "\(writable_blocks)"),
         ("map", map ?? "-"), ("volume", volume ?? "-"), ("epoch", epoch.map { "\($0)" } ?? "-"),
         ("origin", origin ?? "-"), ("created", "\(created)")]
    }
}

/// `list --json`.
struct RecordJSON: Encodable {
    var name: String
    var kind: String
    var size: UInt64
    var blocks: UInt64
    var origin: String?

    init(_ r: MapRecord) {
        name = r.name.rawValue
        kind = r.kind.rawValue
        size = r.sizeBytes
        blocks = r.blockCount
        origin = r.origin
    }
}

/// `hashmap`: the Pithos `GET ?hashmap&format=json` body plus the top hash.
struct HashmapJSON: Encodable {
    var block_size: Int
    var block_hash: String
    var bytes: UInt64
    var hashes: [String]
    var top_hash: String

    init(_ h: PithosHashmap) {
        block_size = h.blockSizeBytes
        block_hash = h.blockHash
        bytes = h.sizeBytes
        hashes = h.hashes.map(\.hex)
        top_hash = h.topHash.hex
    }
}

func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// "1.5 GiB" style sizes.
func formatBytes(_ bytes: UInt64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    if unit == 0 { return "\(bytes) B" }
    let tenths = Int((value * 10).rounded())
    return "\(tenths / 10).\(tenths % 10) \(units[unit])"
}

/// A one-line progress bar on standard error, drawn only when it is a terminal.
final class ProgressBar: Sendable {
    private struct State {
        var lastDraw: Double = 0
        var drawn = false
    }

    private let label: String
    private let start: Double
    private let state = Mutex(State())

    /// A bar when standard error is a terminal, else nil (no output at all).
    static func forTerminal(label: String) -> ProgressBar? {
        isatty(2) == 1 ? ProgressBar(label: label) : nil
    }

    private init(label: String) {
        self.label = label
        start = ProgressBar.seconds()
    }

    static func seconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// Redraws at most ten times a second.
    var update: ProgressHandler {
        { [self] done, total in
            let now = ProgressBar.seconds()
            let draw = state.withLock { s -> Bool in
                guard now - s.lastDraw >= 0.1 || done == total else { return false }
                s.lastDraw = now
                s.drawn = true
                return true
            }
            if draw { render(done: done, total: total, now: now) }
        }
    }

    private func render(done: UInt64, total: UInt64?, now: Double) {
        let elapsed = max(now - start, 0.001)
        let rate = formatBytes(UInt64(Double(done) / elapsed)) + "/s"
        var line = "\r\(label) "
        if let total, total > 0 {
            let fraction = min(1, Double(done) / Double(total))
            let filled = Int(fraction * 30)
            line += "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: 30 - filled) + "] "
            line += "\(Int(fraction * 100))% \(formatBytes(done)) / \(formatBytes(total)) \(rate)"
        } else {
            line += "\(formatBytes(done)) \(rate)"
        }
        writeStandardError(line + "\u{1b}[K")
    }

    /// Ends the bar's line.
    func finish() {
        if state.withLock({ $0.drawn }) { writeStandardError("\n") }
    }
}
