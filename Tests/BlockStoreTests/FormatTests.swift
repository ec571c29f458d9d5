import BlockStore
import BlockStoreTesting
import Testing

@Suite("Identifiers and on-disk formats")
struct FormatTests {
    @Test func blockIDStripsTrailingZeros() {
        let abc = Array("abc".utf8)
        let id = abc.withUnsafeBytes { BlockID(hashing: $0) }
        let padded = (abc + [UInt8](repeating: 0, count: TestData.block - 3)).withUnsafeBytes { BlockID(hashing: $0) }
        #expect(id.hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(padded == id)
        let zeros = [UInt8](repeating: 0, count: 4097).withUnsafeBytes { BlockID(hashing: $0) }
        #expect(zeros == .zero && zeros.isZero)
        #expect(BlockID.zero.hex == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        // Interior zeros are content; only trailing ones are stripped.
        let inner: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0]
        #expect(inner.withUnsafeBytes { BlockID.contentLength(of: $0) } == 10)
    }

    @Test func digestHexRoundTrip() throws {
        let hex = "299285fc41a44cdb038b9fdaf494c76ca9d0c866672b2b266c1a0c17dda60a05"
        let digest = try #require(Digest(hex: hex))
        #expect(digest.hex == hex)
        #expect(Digest(hex: hex.uppercased()) == digest)
        #expect(Digest(hex: String(hex.dropLast())) == nil)
        #expect(Digest(hex: String(hex.dropLast()) + "g") == nil)
        #expect(digest.raw.withUnsafeBytes { Digest(raw: $0) } == digest)
    }

    @Test(arguments: Conformance.hashmapVectors.indices)
    func pithosVectors(index: Int) {
        let vector = Conformance.hashmapVectors[index]
        let hashmap = PithosHashmap(hashing: vector.content)
        #expect(hashmap.hashes.map(\.hex) == vector.hashes, "\(vector.name)")
        #expect(hashmap.topHash.hex == vector.top, "\(vector.name)")
    }

    @Test func topHashPadsWithZeroLeaves() throws {
        // Three leaves pad to four: top = H(H(a||b) || H(c||0^32)).
        let leaves = (1...3).map { Digest(sha256Of: [UInt8($0)]) }
        let left = Digest(sha256Of: leaves[0].raw + leaves[1].raw)
        let right = Digest(sha256Of: leaves[2].raw + [UInt8](repeating: 0, count: 32))
        #expect(PithosHashmap.topHash(of: leaves) == Digest(sha256Of: left.raw + right.raw))
        #expect(PithosHashmap.topHash(of: []) == .ofEmpty)
        #expect(PithosHashmap.topHash(of: [leaves[0]]) == leaves[0])
    }

    /// A change detector: the map body format is frozen (docs/design/store-format.md).
    @Test func mapBodyFormatIsFrozen() throws {
        let volume = try #require(VolumeID(hex: "00112233445566778899aabbccddeeff"))
        let body = MapBody(entries: [
            .zero,
            .block(try #require(BlockID(hex: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))),
            .volumeBlock(VolumeBlockID(volume: volume, epoch: 3, index: 2)),
        ])
        let bytes = body.encoded()
        #expect(bytes.count == MapBody.headerBytes + 3 * MapBody.entryBytes)
        #expect(Array(bytes[0..<20]) == Array("SNFMAP".utf8) + [0, 1, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3])
        #expect(Digest(sha256Of: bytes).hex == "e29f4864d4e55261b73a915c505936d1c2199d59c59dc31d98980c7e82526cf4")
        let decoded = try bytes.withUnsafeBytes { try MapBody(decoding: $0, what: "test") }
        #expect(decoded == body)
    }

    @Test func mapBodyRejectsDamage() {
        var bytes = MapBody(entries: [.zero, .zero]).encoded()
        bytes[MapBody.headerBytes] = 9
        #expect(throws: StoreError.self) { try bytes.withUnsafeBytes { try MapBody(decoding: $0, what: "x") } }
        let short = Array(MapBody(entries: [.zero]).encoded().dropLast())
        #expect(throws: StoreError.self) { try short.withUnsafeBytes { try MapBody(decoding: $0, what: "x") } }
    }

    @Test func recordRoundTripAndChecksum() throws {
        let record = MapRecord(
            name: n("vol-1.ext.disk0"), kind: .readWrite, sizeBytes: 10_737_418_240,
            map: MapID(hex: String(repeating: "ab", count: 32)), volume: .random(), epoch: 7, origin: "img",
            createdSeconds: 1_763_891_234)
        var bytes = record.encoded()
        #expect(try MapRecord(decoding: bytes, what: "r") == record)
        let text = String(decoding: bytes, as: UTF8.self)
        #expect(text.hasPrefix("snf-store-record 1\nname vol-1.ext.disk0\nkind rw\nsize 10737418240\n"))
        bytes[30] ^= 1
        #expect(throws: StoreError.self) { try MapRecord(decoding: bytes, what: "r") }
        #expect(throws: StoreError.self) { try MapRecord(decoding: Array(record.encoded().dropLast(5)), what: "r") }
    }

    @Test(arguments: ["", "/", "a/b", "../x", "a..b", ".hidden", "-flag", "a b", "a\u{0}b", "ünï",
                      String(repeating: "a", count: 201)])
    func invalidNames(text: String) {
        #expect(throws: StoreError.self) { try MapName(text) }
    }

    @Test(arguments: ["a", "vol1", "3f2a9c1e-0b4d-4c3a-9f1e-1234567890ab.ext.disk0", "snf-snap-1-2", "img@v1:x+y_z",
                      String(repeating: "a", count: 200)])
    func validNames(text: String) throws {
        #expect(try MapName(text).rawValue == text)
    }

    @Test func volumeBlockKeys() throws {
        let id = VolumeBlockID(volume: try #require(VolumeID(hex: "0123456789abcdef0123456789abcdef")), epoch: 1, index: 255)
        #expect(id.key == "0123456789abcdef0123456789abcdef/0000000000000001_00000000000000ff")
        #expect(VolumeBlockID(key: id.key) == id)
        #expect(VolumeBlockID(key: "../0000000000000001_00000000000000ff") == nil)
        #expect(VolumeBlockID(key: id.key + "/x") == nil)
    }
}
