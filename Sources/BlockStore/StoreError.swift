/// The one error type the block store throws.
///
/// `code` is what callers switch on; `message` is one sentence for an operator that names the
/// object at fault and, where there is one, the fix. Modelled on NIO's `FileSystemError`: the code
/// is a struct wrapping a private enum so that new codes do not break callers.
public struct StoreError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure this is.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        enum Base: String, Sendable {
            case invalidName, invalidArgument, notFound, alreadyExists, wrongKind, outOfRange
            case notAStore, corrupt, missing, noSpace, io, busy
        }
        let base: Base

        /// A map or volume name breaks the naming rules (see ``MapName``).
        public static let invalidName = Code(base: .invalidName)
        /// A size, offset or other argument is not acceptable.
        public static let invalidArgument = Code(base: .invalidArgument)
        /// No map or volume has that name.
        public static let notFound = Code(base: .notFound)
        /// A map or volume already has that name.
        public static let alreadyExists = Code(base: .alreadyExists)
        /// The operation needs a read-only map and got a volume, or the reverse.
        public static let wrongKind = Code(base: .wrongKind)
        /// A write or size reaches past what the volume allows.
        public static let outOfRange = Code(base: .outOfRange)
        /// The directory holds no initialized store.
        public static let notAStore = Code(base: .notAStore)
        /// Stored data does not match its hash or does not parse.
        public static let corrupt = Code(base: .corrupt)
        /// Data a map refers to is absent from the store.
        public static let missing = Code(base: .missing)
        /// The backend ran out of space.
        public static let noSpace = Code(base: .noSpace)
        /// Any other input/output failure of the backend.
        public static let io = Code(base: .io)
        /// The map or volume is held by someone else (attached by the node daemon, or being
        /// changed by another command) for longer than the store waits; retrying later may work.
        public static let busy = Code(base: .busy)

        /// True for errors caused by the caller's input: they change nothing in the store.
        public var isBadInput: Bool {
            switch base {
            case .invalidName, .invalidArgument, .notFound, .alreadyExists, .wrongKind, .outOfRange, .notAStore:
                return true
            case .corrupt, .missing, .noSpace, .io, .busy:
                return false
            }
        }

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// One sentence naming the object at fault and the cause.
    public var message: String
    /// The lower-level error behind this one, if any (an ``Errno`` for backend failures).
    public var cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.cause = cause
    }

    public var description: String { message }
}

/// A POSIX error number with its text, kept as the ``StoreError/cause`` of backend failures.
public struct Errno: Error, Sendable, Hashable, CustomStringConvertible {
    /// The raw `errno` value.
    public var rawValue: Int32
    public init(_ rawValue: Int32) { self.rawValue = rawValue }
    public var description: String { String(cString: strerror(rawValue)) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
