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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
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
        // An in-memory backend with fault injection and the conformance suite every backend passes.
        .target(name: "BlockStoreTesting", dependencies: ["BlockStore"]),
        // snf-store: the admin CLI (and, later, the Ganeti ExtStorage verbs).
        .executableTarget(
            name: "ExtStorage",
            dependencies: [
                "BlockStore", "BlockStorePosix",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // snf-store-bench: in-process timings for Benchmarks/store-bench (never run by the tests).
        .executableTarget(name: "StoreBench", dependencies: ["BlockStore", "BlockStorePosix"]),
        .testTarget(
            name: "BlockStoreTests",
            dependencies: ["BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
        .testTarget(
            name: "ExtStorageTests",
            dependencies: ["ExtStorage", "BlockStore", "BlockStorePosix", "BlockStoreTesting"]
        ),
    ]
)
