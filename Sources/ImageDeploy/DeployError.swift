#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A deploy failure: its message becomes the last line on standard error (and an `image-error`
/// event); its kind the exit status (2 for bad input, which changes nothing; 1 otherwise).
public struct DeployError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The environment, a parameter, an image property or the command line is wrong.
        case badInput
        /// The operation itself failed (I/O, a missing image, a subprocess).
        case failure
    }
    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public static func badInput(_ message: String) -> DeployError { DeployError(.badInput, message) }
    public static func failure(_ message: String) -> DeployError { DeployError(.failure, message) }

    /// A failed system call on `path`, with `strerror(errno)`.
    static func errno(_ what: String, _ path: String, code: Int32 = Glibc.errno) -> DeployError {
        DeployError(.failure, "cannot \(what) \(path): \(String(cString: strerror(code)))")
    }

    public var description: String { message }

    /// The exit status Ganeti sees.
    public var exitStatus: Int32 { kind == .badInput ? 2 : 1 }
}
