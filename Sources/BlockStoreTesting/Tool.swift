import Foundation

/// Runs external programs for the tests (qemu-io, qemu-img, losetup, umount): found in the
/// system directories, output captured; fails when they exit non-zero or report a failure.
public enum Tool {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func available(_ name: String) -> Bool {
        ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].contains { FileManager.default.isExecutableFile(atPath: $0 + name) }
    }

    @discardableResult
    public static func run(_ name: String, _ arguments: [String]) throws -> String {
        guard let dir = ["/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/"].first(where: { FileManager.default.isExecutableFile(atPath: $0 + name) }) else {
            throw Failure(description: "\(name) is not installed")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: dir + name)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard process.terminationStatus == 0, !text.contains("failed"), !text.contains("Pattern verification") else {
            throw Failure(description: "\(name) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): \(text)")
        }
        return text
    }
}
