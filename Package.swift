// swift-tools-version:6.2
//
// Synnefo in Swift: a cloud stack for Ganeti clusters.
// Libraries hold the logic; executables are thin shells around them.
import PackageDescription

let package = Package(
    name: "synnefo-swift",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "BlockStore", targets: ["BlockStore"]),
        .library(name: "BlockStorePosix", targets: ["BlockStorePosix"]),
        .executable(name: "snf-store", targets: ["ExtStorage"]),
        .executable(name: "snf-store-bench", targets: ["StoreBench"]),
        .executable(name: "snf-image", targets: ["SnfImage"]),
        .executable(name: "snf-network", targets: ["SnfNetwork"]),
        .library(name: "CloudAPI", targets: ["CloudAPI"]),
        .executable(name: "snf-cloud", targets: ["SnfCloud"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        // The cloud layer only (CloudAPI, SnfCloud, CloudAPITests). The node executables never
        // depend on these, so `swift build --product snf-store` (and snf-image, snf-network) does
        // not build NIO, Hummingbird or the database drivers.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/vapor/sql-kit", from: "3.36.0"),
        .package(url: "https://github.com/vapor/sqlite-kit", from: "4.5.2"),
        .package(url: "https://github.com/vapor/postgres-kit", from: "2.17.0"),
    ],
    targets: [
        // What is correct: blocks, maps, volumes, snapshots, hashmaps, GC, check.
        // Knows nothing of disks, Ganeti or HTTP.
        .target(
            name: "BlockStore",
            dependencies: [.product(name: "Crypto", package: "swift-crypto")]
        ),
        // How bytes reach a local directory: temp file, fsync, rename, flock.
        .target(name: "BlockStorePosix", dependencies: ["BlockStore"]),
        // What every node executable shares: child processes (argv, never a shell), the process
        // environment, writing to stdout/stderr.
        .target(name: "NodeSupport"),
        // An in-memory backend with fault injection and the conformance suite every backend passes.
        .target(name: "BlockStoreTesting", dependencies: ["BlockStore"]),
        // libfuse 3 (Debian: libfuse3-dev), for exposing volumes as files to loop devices.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The data path and the Ganeti ExtStorage provider: volume I/O with copy-on-write, the NBD
        // server, the FUSE export behind loop devices, the node daemon and its control protocol.
        .target(name: "VolumeServer", dependencies: ["BlockStore", "BlockStorePosix", "CFuse3", "NodeSupport"]),
        // snf-store: the admin CLI and the Ganeti ExtStorage verbs (dispatched on argv[0]).
        .executableTarget(
            name: "ExtStorage",
            dependencies: [
                "BlockStore", "BlockStorePosix", "VolumeServer", "NodeSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libguestfs (Debian: libguestfs-dev): the general customization path, every filesystem
        // libguestfs knows, in its appliance VM.
        .systemLibrary(name: "CGuestfs", pkgConfig: "libguestfs", providers: [.apt(["libguestfs-dev"])]),
        // libcrypt (libxcrypt; Debian: libcrypt-dev): password hashes for /etc/shadow.
        .systemLibrary(name: "CCrypt", pkgConfig: "libxcrypt", providers: [.apt(["libcrypt-dev"])]),
        // Deploying images onto Ganeti disks: the OS environment and parameters, image sources,
        // the copy (or the clone fast path), the customization plan and its two executors (a
        // sandboxed userspace editor for ext2/3/4, and libguestfs), progress events.
        .target(
            name: "ImageDeploy",
            dependencies: ["BlockStore", "BlockStorePosix", "VolumeServer", "NodeSupport", "CGuestfs", "CCrypt"]
        ),
        // snf-image: the Ganeti OS definition's scripts (create, import, export, rename, verify),
        // dispatched on argv[0], plus admin commands.
        .executableTarget(
            name: "SnfImage",
            dependencies: ["ImageDeploy", "VolumeServer", "NodeSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // NIC plumbing for Ganeti's KVM and Xen hypervisors: the NIC environment, validation, the
        // plan (routes, rules, neighbour proxies, bridge or OVS port, nftables anti-spoofing and
        // firewall profiles, DHCP and router advertisements), applying it and undoing it.
        .target(name: "NetworkSetup", dependencies: ["NodeSupport"]),
        // snf-network: Ganeti's NIC up/down scripts, the Xen vif script and the cleanup hook,
        // dispatched on argv[0].
        .executableTarget(name: "SnfNetwork", dependencies: ["NetworkSetup", "NodeSupport"]),
        // snf-store-bench: in-process timings for Benchmarks/store-bench (never run by the tests).
        .executableTarget(name: "StoreBench", dependencies: ["BlockStore", "BlockStorePosix"]),
        // The cloud API (Keystone identity, Swift object storage): HTTP routes, the metadata
        // database (one SQLKit code path over SQLite and PostgreSQL, versioned migrations),
        // passwords and tokens; objects are block-store maps.
        .target(
            name: "CloudAPI",
            dependencies: [
                "CCrypt", "BlockStore", "BlockStorePosix",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "SQLKit", package: "sql-kit"),
                .product(name: "SQLiteKit", package: "sqlite-kit"),
                .product(name: "PostgresKit", package: "postgres-kit"),
            ]
        ),
        // snf-cloud: serve, bootstrap and the admin verbs (user, project, role).
        .executableTarget(
            name: "SnfCloud",
            dependencies: [
                "CloudAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "CloudAPITests",
            dependencies: [
                "CloudAPI", "BlockStore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SQLKit", package: "sql-kit"),
            ]
        ),
        .testTarget(
            name: "BlockStoreTests",
            dependencies: ["BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
        .testTarget(
            name: "VolumeServerTests",
            dependencies: ["VolumeServer", "BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
        .testTarget(
            name: "ImageDeployTests",
            dependencies: ["ImageDeploy", "NodeSupport", "BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
        .testTarget(name: "NetworkSetupTests", dependencies: ["NetworkSetup", "NodeSupport"]),
        .testTarget(
            name: "ExtStorageTests",
            dependencies: ["ExtStorage", "BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
    ]
)
