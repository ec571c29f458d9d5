import BlockStore
import Foundation
import Logging
import NIOPosix
import SQLKit

/// Volumes and snapshots (Cinder v3) below HTTP, on the block store's volume API. Every volume
/// is a read-write map `vol-<id>`, every snapshot a read-only map `snap-<id>`:
/// - empty volume: `createVolume` (nothing stored; every block reads as zeros);
/// - from an image: `cloneVolume(from: img-<image id>)`; from a snapshot: `cloneVolume(from:
///   snap-<id>)`; from a volume: a transient snapshot of it, cloned, then its record dropped.
///   Each writes one record and shares every block with its origin;
/// - snapshot: `snapshot(vol-<id>, as: snap-<id>)` (the volume copies on write from then on);
/// - volume → image (`os-volume_upload_image`): `snapshot(vol-<id>, as: img-<image id>)`;
/// - extend: `grow`; delete: the map record goes, blocks stay for `snf-store gc`.
///
/// All of these finish within the request, so a volume or snapshot is `available` when the
/// response goes out; `creating`/`deleting`/`extending` are the row's state while the store
/// works (what a crashed process leaves behind). Rows are written before the map (`creating`)
/// and removed after it, so a map never lacks its row for long; a failure removes both.
public struct VolumeService: Sendable {
    public let database: MetadataDatabase
    public let store: BlockStore
    /// Charges `volumes`, `snapshots` and (`os-volume_upload_image`) `images`: with the row's
    /// insert, refunded with its delete, so usage is the number of rows.
    public let quotas: QuotaService
    let logger: Logger

    public init(database: MetadataDatabase, store: BlockStore, quotas: QuotaService? = nil, logger: Logger) {
        self.database = database
        self.store = store
        self.quotas = quotas ?? QuotaService(database: database)
        self.logger = logger
    }

    static let gib: Int64 = 1 << 30
    /// 1 PiB, far beyond any disk Ganeti makes; keeps sizes in range of every integer type.
    static let maxSizeGiB: Int64 = 1 << 20

    static func volumeMap(_ id: String) throws -> MapName { try MapName("vol-" + id) }
    static func snapshotMap(_ id: String) throws -> MapName { try MapName("snap-" + id) }

    static func volumeNotFound(_ id: String) -> CloudError { .notFound("Volume \(id) could not be found.") }
    static func snapshotNotFound(_ id: String) -> CloudError { .notFound("Snapshot \(id) could not be found.") }

    /// Runs a store operation on the blocking pool, turning the store's errors into API errors.
    func inStore<T: Sendable>(_ body: @escaping @Sendable (BlockStore) throws -> T) async throws -> T {
        let store = self.store
        do {
            return try await StoreIO.run { try body(store) }
        } catch let error as StoreError {
            switch error.code {
            case .notFound: throw CloudError.notFound("The source's data no longer exists.")
            case .busy: throw CloudError.conflict("The volume is in use (attached on a node); try again later.")
            case .invalidArgument, .outOfRange: throw CloudError.badRequest(error.message)
            default: throw error
            }
        }
    }

    func removeMap(_ name: MapName) async {
        do {
            try await inStore { store in
                do { try store.remove(name) } catch let error as StoreError where error.code == .notFound {}
            }
        } catch {
            logger.warning("could not remove a volume or snapshot map", metadata: ["map": "\(name)", "error": "\(error)"])
        }
    }

    // MARK: Volumes

    public func volume(project: String, id: String) async throws -> Volume {
        guard ResourceNames.isUUID(id) else { throw Self.volumeNotFound(id) }
        guard let found = try await database.read({ db in try await VolumeTables.volume(id: id.lowercased(), project: project, db) })
        else { throw Self.volumeNotFound(id) }
        return found
    }

    public func volumes(project: String) async throws -> [Volume] {
        try await database.read { db in try await VolumeTables.volumes(project: project, db) }
    }

    struct CreateRequest: Sendable {
        var sizeGiB: Int64?
        var name = ""
        var description = ""
        var imageRef: String?
        var snapshotID: String?
        var sourceVolumeID: String?
        var metadata: [String: String] = [:]
    }

    /// Where a new volume's data comes from.
    enum Origin: Sendable {
        case empty
        case map(MapName)
        /// A volume: snapshot it under this transient name, clone the snapshot, drop its record.
        case volume(MapName, transient: MapName)
    }

    func create(_ c: Caller, project: String, _ r: CreateRequest) async throws -> Volume {
        let sources = [r.imageRef, r.snapshotID, r.sourceVolumeID].compactMap { $0 }
        guard sources.count <= 1 else {
            throw CloudError.badRequest("Give at most one of imageRef, snapshot_id and source_volid.")
        }
        if let size = r.sizeGiB, !(1...Self.maxSizeGiB).contains(size) {
            throw CloudError.badRequest("Invalid input received: size must be an integer from 1 to \(Self.maxSizeGiB) (GiB).")
        }
        let now = Timestamp.now()
        var volume = Volume(
            id: ResourceNames.newID(), projectID: project, userID: c.userID, name: r.name, description: r.description,
            status: "creating", sizeGiB: r.sizeGiB ?? 0, mapName: "", imageID: nil, snapshotID: nil, sourceVolumeID: nil,
            bootable: false, metadata: r.metadata, createdAt: now, updatedAt: now)
        let map = try Self.volumeMap(volume.id)
        volume.mapName = map.rawValue
        // The source is checked and the row written in one transaction, with the source's row
        // locked (PostgreSQL), so a concurrent delete of the source waits or wins cleanly.
        let (row, origin) = try await database.transaction { [volume] db -> (Volume, Origin) in
            var volume = volume
            var origin = Origin.empty
            var minimumBytes: Int64 = 0
            if let ref = r.imageRef {
                guard ResourceNames.isUUID(ref), let image = try await ImageTables.image(id: ref.lowercased(), forUpdate: true, db),
                    ImageService.readable(image, by: c)
                else { throw CloudError.notFound("Image \(ref) could not be found.") }
                guard image.status == "active", let imageMap = image.mapName else {
                    throw CloudError.badRequest("Image \(ref) is not active (status \(image.status)).")
                }
                volume.imageID = image.id
                volume.bootable = true
                minimumBytes = max(image.sizeBytes ?? 0, image.minDisk * Self.gib)
                origin = .map(try MapName(imageMap))
            } else if let sid = r.snapshotID {
                guard ResourceNames.isUUID(sid),
                    let snapshot = try await VolumeTables.snapshot(id: sid.lowercased(), project: project, forUpdate: true, db)
                else { throw Self.snapshotNotFound(sid) }
                guard snapshot.status == "available" else {
                    throw CloudError.badRequest("Snapshot \(sid) is not available (status \(snapshot.status)).")
                }
                volume.snapshotID = snapshot.id
                if volume.sizeGiB == 0 { volume.sizeGiB = snapshot.sizeGiB }
                minimumBytes = snapshot.sizeGiB * Self.gib
                origin = .map(try MapName(snapshot.mapName))
            } else if let vid = r.sourceVolumeID {
                guard ResourceNames.isUUID(vid),
                    let source = try await VolumeTables.volume(id: vid.lowercased(), project: project, forUpdate: true, db)
                else { throw Self.volumeNotFound(vid) }
                guard source.status == "available" else {
                    throw CloudError.badRequest("Volume \(vid) is not available (status \(source.status)).")
                }
                volume.sourceVolumeID = source.id
                volume.bootable = source.bootable
                if volume.sizeGiB == 0 { volume.sizeGiB = source.sizeGiB }
                minimumBytes = source.sizeGiB * Self.gib
                origin = .volume(try MapName(source.mapName), transient: try MapName("clone-" + volume.id))
            }
            guard volume.sizeGiB > 0 else {
                throw CloudError.badRequest("Invalid input received: size is required (GiB) for a volume without a snapshot or source volume.")
            }
            guard volume.sizeGiB * Self.gib >= minimumBytes else {
                let needed = (minimumBytes + Self.gib - 1) / Self.gib
                throw CloudError.badRequest(
                    "Invalid input received: the volume needs at least \(needed) GiB to hold its source, not \(volume.sizeGiB).")
            }
            try await quotas.chargeOpenStack(project: project, .volumes, delta: 1, in: db)
            try await VolumeTables.insert(volume, db)
            return (volume, origin)
        }
        let bytes = UInt64(row.sizeGiB * Self.gib)
        do {
            try await inStore { store in
                switch origin {
                case .empty:
                    try store.createVolume(named: map, sizeBytes: bytes)
                case .map(let source):
                    try store.cloneVolume(from: source, named: map, sizeBytes: bytes)
                case .volume(let source, let transient):
                    try store.snapshot(source, as: transient)
                    defer { try? store.remove(transient) }
                    try store.cloneVolume(from: transient, named: map, sizeBytes: bytes)
                }
            }
        } catch {
            try? await database.transaction { db in
                try await quotas.charge(project: project, .volumes, delta: -1, in: db)
                try await VolumeTables.deleteVolume(id: row.id, project: project, db)
            }
            throw error
        }
        return try await setStatus(row, "available")
    }

    func setStatus(_ volume: Volume, _ status: String, sizeGiB: Int64? = nil) async throws -> Volume {
        var next = volume
        next.status = status
        if let sizeGiB { next.sizeGiB = sizeGiB }
        next.updatedAt = Timestamp.now()
        try await database.transaction { [next] db in try await VolumeTables.update(next, db) }
        return next
    }

    /// Moves a volume from one of `from` to `to` (400 from any other status, as Cinder answers).
    func transition(project: String, id: String, from: Set<String>, to: String, check: (@Sendable (Volume, SQLDatabaseBox) async throws -> Void)? = nil)
        async throws -> Volume
    {
        guard ResourceNames.isUUID(id) else { throw Self.volumeNotFound(id) }
        return try await database.transaction { db in
            guard var volume = try await VolumeTables.volume(id: id.lowercased(), project: project, forUpdate: true, db) else {
                throw Self.volumeNotFound(id)
            }
            guard from.contains(volume.status) else {
                throw CloudError.badRequest("Invalid volume: volume \(id) is \(volume.status); it must be \(from.sorted().joined(separator: " or ")).")
            }
            try await check?(volume, SQLDatabaseBox(db: db))
            volume.status = to
            volume.updatedAt = Timestamp.now()
            try await VolumeTables.update(volume, db)
            return volume
        }
    }

    func update(project: String, id: String, name: String?, description: String?, metadata: [String: String]?) async throws -> Volume {
        guard ResourceNames.isUUID(id) else { throw Self.volumeNotFound(id) }
        return try await database.transaction { db in
            guard var volume = try await VolumeTables.volume(id: id.lowercased(), project: project, forUpdate: true, db) else {
                throw Self.volumeNotFound(id)
            }
            if let name { volume.name = name }
            if let description { volume.description = description }
            if let metadata { volume.metadata = metadata }
            volume.updatedAt = Timestamp.now()
            try await VolumeTables.update(volume, db)
            return volume
        }
    }

    /// Deletes a volume: 400 while it has snapshots (as Cinder) or is busy.
    func delete(project: String, id: String) async throws {
        let volume = try await transition(project: project, id: id, from: ["available", "error"], to: "deleting") { volume, box in
            let count = try await VolumeTables.snapshotCount(volume: volume.id, box.db)
            guard count == 0 else {
                throw CloudError.badRequest("Invalid volume: volume \(id) has \(count) dependent snapshots; delete them first.")
            }
        }
        do {
            let map = try MapName(volume.mapName)
            try await inStore { store in
                do { try store.remove(map) } catch let error as StoreError where error.code == .notFound {}
            }
        } catch {
            _ = try? await setStatus(volume, "available")
            throw error
        }
        try await database.transaction { db in
            try await quotas.charge(project: project, .volumes, delta: -1, in: db)
            try await VolumeTables.deleteVolume(id: volume.id, project: project, db)
        }
    }

    /// `os-extend`: grows the volume to `newSizeGiB` (400 unless larger).
    func extend(project: String, id: String, newSizeGiB: Int64) async throws -> Volume {
        let volume = try await transition(project: project, id: id, from: ["available"], to: "extending") { volume, _ in
            guard newSizeGiB > volume.sizeGiB, newSizeGiB <= Self.maxSizeGiB else {
                throw CloudError.badRequest("Invalid input received: new size \(newSizeGiB) must be larger than the current \(volume.sizeGiB) GiB (at most \(Self.maxSizeGiB)).")
            }
        }
        do {
            let map = try MapName(volume.mapName)
            let bytes = UInt64(newSizeGiB * Self.gib)
            try await inStore { store in _ = try store.grow(map, toSizeBytes: bytes) }
        } catch {
            _ = try? await setStatus(volume, "available")
            throw error
        }
        return try await setStatus(volume, "available", sizeGiB: newSizeGiB)
    }

    /// `os-volume_upload_image`: the volume's current content frozen as a new active image
    /// (`img-<image id>`, sharing every block), with `EXCLUDE_ALL_TASKS=yes`.
    func uploadToImage(
        _ c: Caller, project: String, id: String, imageName: String, diskFormat: String?, containerFormat: String?,
        visibility: String, protected: Bool
    ) async throws -> (Volume, Image) {
        let volume = try await self.volume(project: project, id: id)
        guard volume.status == "available" else {
            throw CloudError.badRequest("Invalid volume: volume \(id) is \(volume.status); it must be available.")
        }
        let now = Timestamp.now()
        let imageID = ResourceNames.newID()
        let imageMap = try ImageService.mapName(forImage: imageID)
        var image = Image(
            id: imageID, projectID: project, name: imageName, status: "saving", visibility: visibility,
            protected: protected, diskFormat: diskFormat ?? "raw", containerFormat: containerFormat ?? "bare", minDisk: volume.sizeGiB,
            minRAM: 0, sizeBytes: nil, checksum: nil, hashAlgorithm: nil, hashValue: nil, mapName: nil,
            properties: ["EXCLUDE_ALL_TASKS": "yes", "snf_source_volume": volume.id], tags: [], createdAt: now, updatedAt: now)
        try await database.transaction { [image, quotas] db in
            try await quotas.chargeOpenStack(project: project, .images, delta: 1, in: db)
            try await ImageTables.insert(image, db)
        }
        do {
            let map = try MapName(volume.mapName)
            let record = try await inStore { store in try store.snapshot(map, as: imageMap) }
            image.sizeBytes = Int64(record.sizeBytes)
        } catch {
            try? await database.transaction { [quotas] db in
                try await quotas.charge(project: project, .images, delta: -1, in: db)
                try await ImageTables.delete(id: imageID, db)
            }
            throw error
        }
        image.status = "active"
        image.mapName = imageMap.rawValue
        image.updatedAt = Timestamp.now()
        try await database.transaction { [image] db in try await ImageTables.update(image, db) }
        return (volume, image)
    }

    // MARK: Snapshots

    public func snapshot(project: String, id: String) async throws -> VolumeSnapshot {
        guard ResourceNames.isUUID(id) else { throw Self.snapshotNotFound(id) }
        guard let found = try await database.read({ db in try await VolumeTables.snapshot(id: id.lowercased(), project: project, db) })
        else { throw Self.snapshotNotFound(id) }
        return found
    }

    public func snapshots(project: String) async throws -> [VolumeSnapshot] {
        try await database.read { db in try await VolumeTables.snapshots(project: project, db) }
    }

    func createSnapshot(
        project: String, volumeID: String, name: String, description: String, metadata: [String: String]
    ) async throws -> VolumeSnapshot {
        guard ResourceNames.isUUID(volumeID) else { throw Self.volumeNotFound(volumeID) }
        let now = Timestamp.now()
        let id = ResourceNames.newID()
        let map = try Self.snapshotMap(id)
        let (snapshot, volumeMap) = try await database.transaction { db -> (VolumeSnapshot, MapName) in
            guard let volume = try await VolumeTables.volume(id: volumeID.lowercased(), project: project, forUpdate: true, db) else {
                throw Self.volumeNotFound(volumeID)
            }
            guard volume.status == "available" else {
                throw CloudError.badRequest("Invalid volume: volume \(volumeID) is \(volume.status); it must be available.")
            }
            let snapshot = VolumeSnapshot(
                id: id, projectID: project, volumeID: volume.id, name: name, description: description, status: "creating",
                sizeGiB: volume.sizeGiB, mapName: map.rawValue, metadata: metadata, createdAt: now, updatedAt: now)
            try await quotas.chargeOpenStack(project: project, .snapshots, delta: 1, in: db)
            try await VolumeTables.insert(snapshot, db)
            return (snapshot, try MapName(volume.mapName))
        }
        do {
            try await inStore { store in _ = try store.snapshot(volumeMap, as: map) }
        } catch {
            try? await database.transaction { db in
                try await quotas.charge(project: project, .snapshots, delta: -1, in: db)
                try await VolumeTables.deleteSnapshot(id: id, project: project, db)
            }
            throw error
        }
        var done = snapshot
        done.status = "available"
        done.updatedAt = Timestamp.now()
        try await database.transaction { [done] db in try await VolumeTables.update(done, db) }
        return done
    }

    func updateSnapshot(project: String, id: String, name: String?, description: String?, metadata: [String: String]?) async throws
        -> VolumeSnapshot
    {
        guard ResourceNames.isUUID(id) else { throw Self.snapshotNotFound(id) }
        return try await database.transaction { db in
            guard var snapshot = try await VolumeTables.snapshot(id: id.lowercased(), project: project, forUpdate: true, db) else {
                throw Self.snapshotNotFound(id)
            }
            if let name { snapshot.name = name }
            if let description { snapshot.description = description }
            if let metadata { snapshot.metadata = metadata }
            snapshot.updatedAt = Timestamp.now()
            try await VolumeTables.update(snapshot, db)
            return snapshot
        }
    }

    /// Deletes a snapshot; volumes cloned from it keep their data (their own map records).
    func deleteSnapshot(project: String, id: String) async throws {
        guard ResourceNames.isUUID(id) else { throw Self.snapshotNotFound(id) }
        let snapshot = try await database.transaction { db -> VolumeSnapshot in
            guard var snapshot = try await VolumeTables.snapshot(id: id.lowercased(), project: project, forUpdate: true, db) else {
                throw Self.snapshotNotFound(id)
            }
            guard ["available", "error"].contains(snapshot.status) else {
                throw CloudError.badRequest("Invalid snapshot: snapshot \(id) is \(snapshot.status).")
            }
            snapshot.status = "deleting"
            snapshot.updatedAt = Timestamp.now()
            try await VolumeTables.update(snapshot, db)
            return snapshot
        }
        await removeMap(try MapName(snapshot.mapName))
        try await database.transaction { db in
            try await quotas.charge(project: project, .snapshots, delta: -1, in: db)
            try await VolumeTables.deleteSnapshot(id: snapshot.id, project: project, db)
        }
    }
}

/// A session handed to a check inside a transaction.
struct SQLDatabaseBox: Sendable {
    let db: any SQLDatabase
}

