import Testing

@testable import ImageDeploy

struct PlanTypesTests {
    @Test func tasksRunInSnfImageOrder() {
        #expect(CustomizationTask.allCases.first == .fixPartitionTable)
        #expect(CustomizationTask.allCases.filter(\.isUnmounted) == [.fixPartitionTable, .filesystemResizeUnmounted])
    }
}
