import CloudAPI
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import SQLKit
import Testing

/// A database the suite runs against: SQLite always; PostgreSQL when `SNF_TEST_POSTGRES_URL`
/// names a server (`scripts/postgres up` prints one), each test in a database of its own.
struct Backend: Sendable, CustomTestStringConvertible {
    var name: String
    var testDescription: String { name }

    static let postgresURL = ProcessInfo.processInfo.environment["SNF_TEST_POSTGRES_URL"]

    static var all: [Backend] {
        var backends = [Backend(name: "sqlite")]
        if postgresURL != nil { backends.append(Backend(name: "postgresql")) }
        return backends
    }
}

/// A clock tests move forward.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var offsetSeconds = 0

    func advance(seconds: Int) { lock.withLock { offsetSeconds += seconds } }
    func now() -> Timestamp { lock.withLock { Timestamp.now().adding(seconds: offsetSeconds) } }
}

let testLogger: Logger = {
    var logger = Logger(label: "snf-cloud-test")
    logger.logLevel = .critical
    return logger
}()

/// Opens a fresh database on `backend`, bootstraps it (admin password `secret-admin`), and runs
/// `body`; removes the database afterwards.
func withDatabase<R: Sendable>(
    _ backend: Backend, _ body: (CloudConfiguration, MetadataDatabase) async throws -> R
) async throws -> R {
    try await withEmptyDatabase(backend) { configuration in
        let database = try await MetadataDatabase.open(configuration, logger: testLogger)
        do {
            let result = try await body(configuration, database)
            await database.close()
            return result
        } catch {
            await database.close()
            throw error
        }
    }
}

/// A configuration naming a database on `backend` that exists but has no schema yet (an empty
/// PostgreSQL database; a SQLite path not yet created); removed after `body`.
func withEmptyDatabase<R: Sendable>(
    _ backend: Backend, _ body: (CloudConfiguration) async throws -> R
) async throws -> R {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("snf-cloud-test-\(UUID().uuidString)").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    var configuration = CloudConfiguration(dataDirectory: directory)
    var dropName: String?
    if backend.name == "postgresql", let url = Backend.postgresURL {
        let name = "snf_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await PostgresAdmin.shared.run(url: url, "CREATE DATABASE \(name)")
        configuration.databaseURL = replacingDatabase(in: url, with: name)
        dropName = name
    }
    do {
        let result = try await body(configuration)
        try await drop(dropName)
        return result
    } catch {
        try await drop(dropName)
        throw error
    }
}

private func drop(_ name: String?) async throws {
    guard let name, let url = Backend.postgresURL else { return }
    try await PostgresAdmin.shared.run(url: url, "DROP DATABASE IF EXISTS \(name)")
}

/// `postgres://u@h:p/db?x` with `db` replaced.
func replacingDatabase(in url: String, with name: String) -> String {
    var components = URLComponents(string: url)!
    components.path = "/" + name
    return components.string!
}

/// A service with an admin bootstrapped, the router in-process, and a clock the test controls.
struct Harness: Sendable {
    var identity: IdentityService
    var objects: ObjectStorageService
    var clock: TestClock
    var app: Application<RouterResponder<BasicRequestContext>>
}

func withHarness<R: Sendable>(_ backend: Backend, _ body: @Sendable (Harness, any TestClientProtocol) async throws -> R)
    async throws -> R
{
    try await withDatabase(backend) { configuration, database in
        let clock = TestClock()
        let identity = IdentityService(database: database, tokenLifetimeSeconds: 3600, now: { clock.now() })
        _ = try await identity.bootstrap(adminPassword: "secret-admin")
        let objects = try ObjectStorageService.open(
            dataDirectory: configuration.dataDirectory, database: database, logger: testLogger)
        let router = CloudServer.makeRouter(
            identity: identity, objects: objects, configuration: configuration, logger: testLogger)
        let app = Application(router: router, logger: testLogger)
        let harness = Harness(identity: identity, objects: objects, clock: clock, app: app)
        return try await app.test(.router) { client in try await body(harness, client) }
    }
}

// MARK: Requests

func json(_ value: JSON) -> ByteBuffer { ByteBuffer(bytes: value.encoded()) }

func body(_ response: TestResponse) throws -> JSON {
    try JSON.parse(Data(response.body.readableBytesView))
}

let xSubjectToken = HTTPField.Name("X-Subject-Token")!
let xAuthToken = HTTPField.Name("X-Auth-Token")!
let xRequestID = HTTPField.Name("X-Openstack-Request-Id")!

func passwordAuth(user: String, password: String, project: String? = nil) -> JSON {
    var auth: [String: JSON] = [
        "identity": [
            "methods": ["password"],
            "password": ["user": ["name": .string(user), "domain": ["name": "Default"], "password": .string(password)]],
        ]
    ]
    if let project { auth["scope"] = ["project": ["name": .string(project), "domain": ["name": "Default"]]] }
    return ["auth": .object(auth)]
}

/// Issues a token; returns the response (status 201 expected by the caller's checks).
func issue(_ client: any TestClientProtocol, _ request: JSON) async throws -> TestResponse {
    try await client.execute(uri: "/v3/auth/tokens", method: .post, headers: [.contentType: "application/json"], body: json(request))
}

/// An admin token scoped to the admin project.
func adminToken(_ client: any TestClientProtocol) async throws -> String {
    let response = try await issue(client, passwordAuth(user: "admin", password: "secret-admin", project: "admin"))
    #expect(response.status == .created)
    return try #require(response.headers[xSubjectToken])
}

/// CREATE/DROP DATABASE one at a time: PostgreSQL refuses to copy template1 while another
/// session uses it, which parallel tests would otherwise do. Another process on the same server
/// (a second test run, the real-client tests) can still hold template1 for a moment: retried.
/// An actor alone does not serialize them (it is reentrant at every `await`): each statement
/// waits for the one before it to finish.
actor PostgresAdmin {
    static let shared = PostgresAdmin()
    private var tail: Task<Void, Never>?

    func run(url: String, _ statement: String) async throws {
        let previous = tail
        let mine = Task<Void, any Error> {
            await previous?.value
            try await self.runRetrying(url: url, statement)
        }
        tail = Task { _ = try? await mine.value }
        try await mine.value
    }

    private func runRetrying(url: String, _ statement: String) async throws {
        var attempt = 0
        while true {
            do {
                return try await runOnce(url: url, statement)
            } catch where attempt < 20 && PostgresAdmin.isTemplateBusy(error) {
                attempt += 1
                try await Task.sleep(for: .milliseconds(250))
            }
        }
    }

    /// SQLSTATE 55006 (object_in_use): "source database template1 is being accessed by other users".
    static func isTemplateBusy(_ error: any Error) -> Bool {
        let text = String(reflecting: error)
        return text.contains("55006") || text.contains("being accessed by other users")
    }

    private func runOnce(url: String, _ statement: String) async throws {
        var admin = CloudConfiguration(dataDirectory: "/nonexistent")
        admin.databaseURL = url
        let server = try await MetadataDatabase.open(admin, logger: testLogger, migrating: false)
        do {
            try await server.read { db in try await db.raw(SQLQueryString(statement)).run() }
        } catch {
            await server.close()
            throw error
        }
        await server.close()
    }
}
