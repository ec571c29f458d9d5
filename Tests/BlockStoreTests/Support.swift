import BlockStore
import BlockStorePosix
import BlockStoreTesting
import Foundation

/// The backends the conformance suite runs against.
enum BackendKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case localDirectory
    case inMemory

    var description: String { rawValue }

    /// A fresh, empty backend of this kind.
    func make() throws -> any StoreBackend {
        switch self {
        case .localDirectory:
            let root = try TemporaryDirectory.make(prefix: "snf-store-test")
            try PosixBackend.initialize(root: root)
            return try PosixBackend(root: root)
        case .inMemory:
            return MemoryBackend()
        }
    }
}

let n = TestData.name
