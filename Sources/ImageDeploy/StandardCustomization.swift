/// The customization the `snf-image` executable wires into a deploy: the configured path
/// (`customizer = auto | fast | guestfs` in image.conf) driven by the TaskRunner, and password
/// hashes from libxcrypt.
public enum StandardCustomization {
    /// Runs `plan` on `diskPath`: `fast` uses the sandboxed ext editor, `guestfs` libguestfs,
    /// `auto` the fast one when it can handle the disk (an msdos or GPT label, an ext2/3/4 root)
    /// and libguestfs otherwise. Every task is timed out by `config.taskTimeoutSeconds`.
    public static func customize(diskPath: String, plan: CustomizationPlan, config: ImageConfig, progress: any ProgressSink) throws {
        let editor = try chooseEditor(diskPath: diskPath, plan: plan, config: config, progress: progress)
        defer { try? editor.close() }
        try TaskRunner(plan: plan, progress: progress).run(on: editor)
        try editor.close()
    }

    static func chooseEditor(diskPath: String, plan: CustomizationPlan, config: ImageConfig, progress: any ProgressSink) throws -> any DiskEditor {
        let timeout = config.taskTimeoutSeconds
        switch config.customizer {
        case .fast:
            return try FastExtEditor(disk: diskPath, sandboxUser: config.sandboxUser, timeoutSeconds: timeout)
        case .guestfs:
            progress.emit(.info("Customizing with libguestfs (customizer = guestfs)."))
            return try GuestfsEditor(disk: diskPath, timeoutSeconds: timeout)
        case .auto:
            let fast = try FastExtEditor(disk: diskPath, sandboxUser: config.sandboxUser, timeoutSeconds: timeout)
            if try fast.canCustomize(rootPartition: plan.rootPartition) {
                progress.emit(.info("Customizing with the sandboxed ext editor (ext2/3/4 root on an msdos or GPT disk)."))
                return fast
            }
            try fast.close()
            guard GuestfsEditor.canHandle(disk: diskPath) else {
                throw CustomizationError("the disk needs libguestfs (its root is not ext2/3/4 on an msdos or GPT label), and libguestfs is not usable on this node")
            }
            progress.emit(.info("Customizing with libguestfs (the fast ext editor cannot handle this disk)."))
            return try GuestfsEditor(disk: diskPath, timeoutSeconds: timeout)
        }
    }

    /// Hashes `img_passwd` with `method` (crypt(3) through libxcrypt, a fresh random salt).
    public static func hashPassword(_ password: String, method: PasswordHashingMethod) throws -> String {
        try PasswordHasher.hash(password, method: method.rawValue)
    }
}
