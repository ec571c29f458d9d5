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

enum TemporaryDirectory {
    /// A new directory under the system's temporary directory.
    static func make(prefix: String) throws -> String {
        var template = Array("\(NSTemporaryDirectory())/\(prefix)-XXXXXX".utf8CString)
        guard let path = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
            throw StoreError(.io, "cannot create a temporary directory")
        }
        return String(cString: path)
    }
}

let n = TestData.name
