import Testing

@testable import NetworkSetup

@Suite struct AddressTests {
    @Test func macParsing() {
        #expect(MACAddress("aa:00:00:12:34:56")?.description == "aa:00:00:12:34:56")
        #expect(MACAddress("AA:00:00:12:34:5") == nil)
        #expect(MACAddress("aa:00:00:12:34:56:78") == nil)
        #expect(MACAddress("aa-00-00-12-34-56") == nil)
        #expect(MACAddress("01:00:5e:00:00:01")!.isMulticast)
    }
}
