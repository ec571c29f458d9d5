import NodeSupport

/// The sandbox's tools and losetup run through NodeSupport's ChildProcess (argv, never a shell;
/// a clean environment; a time limit; capped output); what stops them is a CustomizationError,
/// like every other failure of a customization step.
enum FastProcess {
    static var cleanEnvironment: [String] { ChildProcess.cleanEnvironment }
    static var toolDirectories: [String] { ChildProcess.toolDirectories }

    static func errnoText() -> String { ChildProcess.errnoText() }

    static func locate(_ name: String) throws -> String {
        do {
            return try ChildProcess.locate(name)
        } catch {
            throw CustomizationError("\(error)")
        }
    }

    static func run(
        _ executable: String, _ arguments: [String], stdin input: [UInt8] = [], timeoutSeconds: Int,
        outputLimit: Int, what: String
    ) throws -> ToolOutput {
        do {
            return try ChildProcess.run(
                executable, arguments, stdin: input, timeoutSeconds: timeoutSeconds, outputLimit: outputLimit, what: what)
        } catch {
            throw CustomizationError("\(error)")
        }
    }
}
