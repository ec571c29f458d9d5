// The addresses a NIC carries: MAC, IPv4 and IPv6 addresses and networks, and the EUI-64 address
// SLAAC gives a guest. Parsing is strict (what Ganeti writes), and every value prints in the one
// canonical form the kernel tools print back.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    /// Six two-digit hexadecimal groups separated by colons, e.g. `aa:00:00:12:34:56`.
    public init?(_ text: String) {
        let groups = text.split(separator: ":", omittingEmptySubsequences: false)
        guard groups.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for group in groups {
            guard group.count == 2, group.allSatisfy(\.isHexDigit), let byte = UInt8(group, radix: 16) else { return nil }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 6)
        self.bytes = bytes
    }

    public var description: String { bytes.map(hex2).joined(separator: ":") }
    /// Group bit set: a multicast or broadcast address, never a NIC's own.
    public var isMulticast: Bool { bytes[0] & 1 == 1 }
    public var isZero: Bool { bytes.allSatisfy { $0 == 0 } }

    /// The modified EUI-64 interface identifier (RFC 4291 appendix A): the universal/local bit
    /// flipped and ff:fe inserted in the middle.
    public var eui64InterfaceID: [UInt8] {
        [bytes[0] ^ 0x02, bytes[1], bytes[2], 0xff, 0xfe, bytes[3], bytes[4], bytes[5]]
    }

    /// The address with only the bits of `mask` kept.
    public func masked(by mask: MACAddress) -> MACAddress {
        MACAddress(bytes: zip(bytes, mask.bytes).map { $0 & $1 })
    }
}

/// `address/length` into its two parts, the length in 0...maximum written in decimal digits.
func splitPrefix(_ text: String, maximum: Int) -> (String, Int)? {
    let parts = text.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 2, (1...3).contains(parts[1].count), parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
        let length = Int(parts[1]), (0...maximum).contains(length)
    else { return nil }
    return (String(parts[0]), length)
}

func hex2(_ byte: UInt8) -> String {
    let digits = Array("0123456789abcdef")
    return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
}

/// An IPv4 address.
public struct IPv4Address: Hashable, Sendable, CustomStringConvertible {
    public var value: UInt32

    /// Dotted decimal, as inet_pton reads it (four parts, no leading zeros).
    public init?(_ text: String) {
        var address = in_addr()
        guard text.utf8.count <= 15, inet_pton(AF_INET, text, &address) == 1 else { return nil }
        value = UInt32(bigEndian: address.s_addr)
    }

    public init(value: UInt32) { self.value = value }

    public var description: String {
        "\(value >> 24).\((value >> 16) & 255).\((value >> 8) & 255).\(value & 255)"
    }
}

/// An IPv4 network `address/prefix` whose host bits are zero.
public struct IPv4Network: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv4Address
    public var prefixLength: Int

    public init?(_ text: String) {
        guard let (head, length) = splitPrefix(text, maximum: 32), let address = IPv4Address(head) else { return nil }
        self.address = address
        self.prefixLength = length
        guard address.value & ~mask == 0 else { return nil }
    }

    public var mask: UInt32 { prefixLength == 0 ? 0 : UInt32.max << UInt32(32 - prefixLength) }
    public var netmask: IPv4Address { IPv4Address(value: mask) }
    public func contains(_ ip: IPv4Address) -> Bool { ip.value & mask == address.value }
    public var description: String { "\(address)/\(prefixLength)" }
}

/// An IPv6 address.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]

    public init?(_ text: String) {
        var address = in6_addr()
        guard text.utf8.count <= 45, inet_pton(AF_INET6, text, &address) == 1 else { return nil }
        bytes = withUnsafeBytes(of: &address) { Array($0) }
    }

    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16)
        self.bytes = bytes
    }

    /// The canonical text form (RFC 5952, as inet_ntop and `ip` print it).
    public var description: String {
        var address = in6_addr()
        withUnsafeMutableBytes(of: &address) { $0.copyBytes(from: bytes) }
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        guard inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count)) != nil else { return "::" }
        return String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// An IPv6 network `address/prefix` whose host bits are zero.
public struct IPv6Network: Hashable, Sendable, CustomStringConvertible {
    public var address: IPv6Address
    public var prefixLength: Int

    public init?(_ text: String) {
        guard let (head, length) = splitPrefix(text, maximum: 128), let address = IPv6Address(head) else { return nil }
        self.address = address
        self.prefixLength = length
        for bit in length..<128 where address.bytes[bit / 8] & (0x80 >> UInt8(bit % 8)) != 0 { return nil }
    }

    public var description: String { "\(address)/\(prefixLength)" }

    public func contains(_ ip: IPv6Address) -> Bool {
        for bit in 0..<prefixLength {
            let m: UInt8 = 0x80 >> UInt8(bit % 8)
            if ip.bytes[bit / 8] & m != address.bytes[bit / 8] & m { return false }
        }
        return true
    }

    /// The address SLAAC gives a NIC with `mac` in this /64: the prefix, then the modified EUI-64.
    public func eui64(_ mac: MACAddress) -> IPv6Address {
        IPv6Address(bytes: Array(address.bytes[0..<8]) + mac.eui64InterfaceID)
    }

    /// The link-local address a guest derives from `mac` (fe80::/64 + EUI-64).
    public static func linkLocal(_ mac: MACAddress) -> IPv6Address {
        IPv6Address(bytes: [0xfe, 0x80, 0, 0, 0, 0, 0, 0] + mac.eui64InterfaceID)
    }
}
