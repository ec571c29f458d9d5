import HTTPTypes
import Hummingbird
import Logging

/// The `snf-cloud serve` process: the database, the services, and the HTTP application that
/// mounts them. Built here so that tests run the same router in-process.
public enum CloudServer {
    /// The router with every service mounted (identity so far) and the request-id/error middleware.
    public static func makeRouter(
        identity: IdentityService, configuration: CloudConfiguration, logger: Logger
    ) -> Router<BasicRequestContext> {
        let router = Router(context: BasicRequestContext.self)
        router.add(middleware: OpenStackMiddleware(logger: logger))
        IdentityRoutes(identity: identity, publicURL: configuration.publicURL, region: configuration.region)
            .register(on: router)
        return router
    }

    /// Opens the database, builds the application and serves until SIGINT/SIGTERM.
    public static func run(configuration: CloudConfiguration, logger: Logger) async throws {
        let database = try await MetadataDatabase.open(configuration, logger: logger)
        logger.info("metadata database: \(database.dialect.rawValue) at \(database.displayLocation)")
        let identity = IdentityService(database: database, tokenLifetimeSeconds: configuration.tokenLifetimeSeconds)
        let app = Application(
            router: makeRouter(identity: identity, configuration: configuration, logger: logger),
            configuration: .init(
                address: .hostname(configuration.listenHost, port: configuration.listenPort), serverName: "snf-cloud"),
            logger: logger)
        do {
            try await app.runService()
        } catch {
            await database.close()
            throw error
        }
        await database.close()
    }
}
