import NodeSupport

/// The sandbox's tools and losetup run through NodeSupport's ChildProcess (argv, never a shell;
/// a clean environment; a time limit; capped output).
typealias FastProcess = ChildProcess
