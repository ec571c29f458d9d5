import NIOCore
import NIOHTTPTypes

/// Lets a connection read up to 256 KiB from its socket at once (NIO's default stops at 64 KiB):
/// an upload then costs a quarter of the reads, event-loop turns and body chunks. The size adapts
/// per connection, down again for small requests.
final class LargeReadsHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart

    static let maximumReadBytes = 256 * 1024

    func handlerAdded(context: ChannelHandlerContext) {
        try? context.channel.syncOptions?.setOption(
            ChannelOptions.recvAllocator,
            value: AdaptiveRecvByteBufferAllocator(minimum: 2048, initial: 64 * 1024, maximum: Self.maximumReadBytes))
    }
}
