import BlockStore

/// Deterministic test data.
public enum TestData {
    /// `count` pseudo-random bytes from `seed` (the same seed gives the same bytes).
    public static func random(_ count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset + 8 <= raw.count {
                raw.storeBytes(of: rng.next(), toByteOffset: offset, as: UInt64.self)
                offset += 8
            }
            while offset < raw.count {
                raw[offset] = UInt8(truncatingIfNeeded: rng.next())
                offset += 1
            }
        }
        return bytes
    }

    /// 4 MiB.
    public static let block = BlockStore.blockSizeBytes

    /// Shorthand for a valid name.
    public static func name(_ text: String) -> MapName {
        try! MapName(text)
    }
}

/// A failed conformance expectation.
public struct ConformanceFailure: Error, CustomStringConvertible {
    public var message: String
    public var line: UInt
    public var description: String { "line \(line): \(message)" }
}

/// Throws a ``ConformanceFailure`` unless `condition` holds.
public func require(_ condition: Bool, _ message: @autoclosure () -> String, line: UInt = #line) throws {
    if !condition { throw ConformanceFailure(message: message(), line: line) }
}

/// Runs `body` and requires it to throw a ``StoreError`` with `code`.
public func requireError<T>(_ code: StoreError.Code, line: UInt = #line, _ body: () throws -> T) throws {
    do {
        _ = try body()
    } catch let error as StoreError {
        try require(error.code == code, "expected a \(code) error, got \(error.code): \(error.message)", line: line)
        return
    }
    throw ConformanceFailure(message: "expected a \(code) error, got success", line: line)
}
