import Foundation

/// A point in time as microseconds since the Unix epoch: what the database stores (BIGINT) and
/// what Keystone prints (`2025-01-01T10:00:00.000000Z`).
public struct Timestamp: Sendable, Hashable, Comparable {
    public var microseconds: Int64

    public init(microseconds: Int64) { self.microseconds = microseconds }

    public static func now() -> Timestamp {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Timestamp(microseconds: Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000)
    }

    public static func < (a: Timestamp, b: Timestamp) -> Bool { a.microseconds < b.microseconds }

    public func adding(seconds: Int) -> Timestamp {
        Timestamp(microseconds: microseconds + Int64(seconds) * 1_000_000)
    }

    /// `YYYY-MM-DDThh:mm:ss.uuuuuuZ`, UTC (Keystone v3).
    public var iso8601Microseconds: String {
        let (seconds, micros) = splitSeconds()
        return "\(Self.dateTime(seconds)).\(String(format: "%06d", micros))Z"
    }

    /// `YYYY-MM-DDThh:mm:ssZ`, UTC (Keystone v2.0, Glance).
    public var iso8601Seconds: String { "\(Self.dateTime(splitSeconds().0))Z" }

    private func splitSeconds() -> (Int64, Int) {
        var seconds = microseconds / 1_000_000
        var micros = microseconds % 1_000_000
        if micros < 0 {
            seconds -= 1
            micros += 1_000_000
        }
        return (seconds, Int(micros))
    }

    private static func dateTime(_ seconds: Int64) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02d", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }
}
