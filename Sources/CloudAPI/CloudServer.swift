import HTTPTypes
import Hummingbird
import Logging

/// The `snf-cloud serve` process: the database, the services, and the HTTP application that
/// mounts them. Built here so that tests run the same router in-process.
public enum CloudServer {
    /// The router with every service mounted (identity; object storage, images and volumes when
    /// `objects` is given: all three share its block store) and the request-id/error middleware.
    public static func makeRouter(
        identity: IdentityService, objects: ObjectStorageService? = nil, configuration: CloudConfiguration,
        logger: Logger
    ) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: OpenStackMiddleware(logger: logger))
        IdentityRoutes(
            identity: identity, publicURL: configuration.publicURL, region: configuration.region,
            objectStorage: objects != nil, imagesAndVolumes: objects != nil
        ).register(on: router)
        if let objects {
            let images = ImageService(database: objects.database, objects: objects, logger: logger)
            ImageRoutes(images: images, identity: identity, publicURL: configuration.publicURL).register(on: router)
            let volumes = VolumeService(
                database: objects.database, store: objects.store, quotas: objects.quotas, logger: logger)
            VolumeRoutes(volumes: volumes, identity: identity, publicURL: configuration.publicURL).register(on: router)
        }
        // Object storage parses its own paths (`/info`, `/v1/...`), which no route matches.
        if let objects { router.add(middleware: ObjectStorageMiddleware(objects: objects, identity: identity)) }
        return router
    }

    /// How often `serve` removes expired objects.
    static let expirerIntervalSeconds = 60

    /// Opens the database, builds the application and serves until SIGINT/SIGTERM.
    public static func run(configuration: CloudConfiguration, logger: Logger) async throws {
        let database = try await MetadataDatabase.open(configuration, logger: logger)
        logger.info("metadata database: \(database.dialect.rawValue) at \(database.displayLocation)")
        let identity = IdentityService(database: database, tokenLifetimeSeconds: configuration.tokenLifetimeSeconds)
        let objects: ObjectStorageService
        do {
            objects = try ObjectStorageService.open(
                dataDirectory: configuration.dataDirectory, storeDirectory: configuration.storeDirectory,
                database: database, quotas: QuotaService(database: database, configuration: configuration), logger: logger)
        } catch {
            await database.close()
            throw error
        }
        logger.info("block store: \(configuration.storeDirectory)")
        let app = Application(
            router: makeRouter(identity: identity, objects: objects, configuration: configuration, logger: logger),
            server: .http1(configuration: .init(additionalChannelHandlers: [LargeReadsHandler(), ExpectContinueHandler()])),
            configuration: .init(
                address: .hostname(configuration.listenHost, port: configuration.listenPort), serverName: "snf-cloud"),
            logger: logger)
        // The object expirer: removes objects past their X-Delete-At (rows, maps, quota).
        let expirer = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(expirerIntervalSeconds))
                if Task.isCancelled { break }
                do {
                    let removed = try await objects.removeExpiredObjects()
                    if removed > 0 { logger.info("expirer: removed \(removed) expired object(s)") }
                } catch {
                    logger.warning("expirer: \(error)")
                }
            }
        }
        do {
            try await app.runService()
        } catch {
            expirer.cancel()
            await expirer.value
            await database.close()
            throw error
        }
        expirer.cancel()
        await expirer.value
        await database.close()
    }
}
