import BlockStore
import BlockStoreTesting
import Testing

@Suite("Conformance: every backend passes the same suite")
struct ConformanceTests {
    @Test(arguments: BackendKind.allCases, Conformance.all)
    func conformance(backend: BackendKind, check: ConformanceCheck) throws {
        try check.run(backend.make())
    }
}
