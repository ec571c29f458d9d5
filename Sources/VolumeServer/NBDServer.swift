import BlockStore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// An NBD server for one device on a Unix socket: fixed-newstyle handshake (`NBD_OPT_GO`,
/// `NBD_OPT_INFO`, `NBD_OPT_EXPORT_NAME`, `NBD_OPT_LIST`), simple replies, and the commands READ,
/// WRITE (with FUA), FLUSH, WRITE_ZEROES and DISC. Several clients may connect at once (live
/// migration, `qemu-img`), each served by its own thread; flush is device-wide, so the server
/// advertises `NBD_FLAG_CAN_MULTI_CONN`.
///
/// Each connection reads every request that has already arrived and answers reads and flushes in
/// order, sending all their replies in one write before it waits for more: a deep queue (qemu
/// keeps up to 16 requests in flight per disk) costs about one system call per request for the
/// data itself. Writes go to a few worker threads per connection (so that several are in flight
/// at once, as with a raw file), except at queue depth 1, where the thread hop would only add
/// latency.
/// Protocol reference: https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md
public final class NBDServer: Sendable {
    /// The socket clients connect to (`nbd:unix:<path>` for qemu).
    public let socketPath: String
    let device: any VolumeIO
    let readOnly: Bool
    let exportName: String
    private let listener: Mutex<Int32?>
    private let threads = Mutex<[JoinableThread]>([])
    private let clients = Mutex<Set<Int32>>([])
    /// Connections currently open.
    public var connectionCount: Int { clients.withLock { $0.count } }
    /// Connections accepted since start.
    public let connectionsAccepted = Atomic<Int>(0)

    /// The largest request accepted (qemu's default maximum is 32 MiB).
    static let maxRequestBytes = 32 * 1024 * 1024

    /// Starts listening on `socketPath` (replacing a stale socket file).
    public init(socketPath: String, device: any VolumeIO, readOnly: Bool, exportName: String) throws {
        self.socketPath = socketPath
        self.device = device
        self.readOnly = readOnly
        self.exportName = exportName
        let fd = try UnixSocket.listen(at: socketPath)
        self.listener = Mutex(fd)
        let acceptor = JoinableThread.start { [self] in acceptLoop(fd) }
        threads.withLock { $0.append(acceptor) }
    }

    /// Closes the socket and every connection, waits for their threads, removes the socket file.
    /// Idempotent.
    public func stop() {
        guard let fd = listener.withLock({ l -> Int32? in let fd = l; l = nil; return fd }) else { return }
        shutdown(fd, Int32(SHUT_RDWR))
        clients.withLock { for c in $0 { shutdown(c, Int32(SHUT_RDWR)) } }
        // Joining may find new connection threads appended meanwhile; loop until none are left.
        while let thread = threads.withLock({ $0.popLast() }) {
            thread.join()
        }
        close(fd)
        unlink(socketPath)
    }

    private func acceptLoop(_ listenFD: Int32) {
        while true {
            let fd = accept(listenFD, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                return  // shut down
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let stopped = listener.withLock { $0 == nil }
            if stopped {
                close(fd)
                return
            }
            var size: Int32 = 4 * 1024 * 1024
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            clients.withLock { _ = $0.insert(fd) }
            connectionsAccepted.wrappingAdd(1, ordering: .relaxed)
            let thread = JoinableThread.start { [self] in
                let connection = Connection(fd: fd, server: self)
                connection.run()
                clients.withLock { _ = $0.remove(fd) }
                close(fd)
            }
            threads.withLock { $0.append(thread) }
        }
    }
}

// MARK: - Wire constants

enum NBD {
    static let magic: UInt64 = 0x4e42_444d_4147_4943  // "NBDMAGIC"
    static let optionMagic: UInt64 = 0x4948_4156_454f_5054  // "IHAVEOPT"
    static let replyOptionMagic: UInt64 = 0x0003_e889_0455_65a9
    static let requestMagic: UInt32 = 0x2560_9513
    static let simpleReplyMagic: UInt32 = 0x6744_6698

    static let flagFixedNewstyle: UInt16 = 1
    static let flagNoZeroes: UInt16 = 2

    static let optExportName: UInt32 = 1
    static let optAbort: UInt32 = 2
    static let optList: UInt32 = 3
    static let optInfo: UInt32 = 6
    static let optGo: UInt32 = 7

    static let repAck: UInt32 = 1
    static let repServer: UInt32 = 2
    static let repInfo: UInt32 = 3
    static let repErrUnsupported: UInt32 = 0x8000_0001
    static let repErrInvalid: UInt32 = 0x8000_0003
    static let repErrUnknown: UInt32 = 0x8000_0006

    static let infoExport: UInt16 = 0
    static let infoBlockSize: UInt16 = 3

    static let txHasFlags: UInt16 = 1
    static let txReadOnly: UInt16 = 2
    static let txSendFlush: UInt16 = 4
    static let txSendFUA: UInt16 = 8
    static let txSendWriteZeroes: UInt16 = 64
    static let txCanMultiConn: UInt16 = 256

    static let cmdRead: UInt16 = 0
    static let cmdWrite: UInt16 = 1
    static let cmdDisconnect: UInt16 = 2
    static let cmdFlush: UInt16 = 3
    static let cmdWriteZeroes: UInt16 = 6
    static let cmdFlagFUA: UInt16 = 1

    static let EPERM: UInt32 = 1
    static let EIO: UInt32 = 5
    static let EINVAL: UInt32 = 22
    static let ENOSPC: UInt32 = 28
}

// MARK: - One connection

/// A write waiting for a worker.
private struct WriteJob {
    var cookie: UInt64
    var offset: UInt64
    /// The data (4 KiB-aligned, owned by the job), or nil for WRITE_ZEROES of `count` bytes.
    var data: UnsafeMutableRawBufferPointer?
    var count: Int
    var fua: Bool
}

private struct WriteQueue {
    var jobs: [WriteJob] = []
    var inFlight = 0
    var closing = false
}

/// A client connection: buffered input, batched output, writes on worker threads.
///
/// `@unchecked Sendable`: the input and output buffers belong to the connection's own thread;
/// the worker threads touch only `writes` (a condition lock), the device (thread-safe) and the
/// socket's sending side, which `sending` serializes with the connection thread's sends.
private final class Connection: @unchecked Sendable {
    static let writeWorkers = 4
    let writes = ConditionLock(WriteQueue())
    let sending = Mutex<Void>(())
    var workers: [JoinableThread] = []
    let fd: Int32
    let server: NBDServer
    var input: UnsafeMutableRawBufferPointer
    var inStart = 0
    var inEnd = 0
    var output: UnsafeMutableRawBufferPointer
    var outEnd = 0
    var noZeroes = false

    init(fd: Int32, server: NBDServer) {
        self.fd = fd
        self.server = server
        input = .allocate(byteCount: 1 << 20, alignment: 4096)
        output = .allocate(byteCount: 1 << 20, alignment: 4096)
    }

    deinit {
        input.deallocate()
        output.deallocate()
    }

    struct Closed: Error {}

    func run() {
        do {
            try handshake()
            try transmission()
        } catch {
            _ = flushOutput()
        }
        writes.withLock { $0.closing = true }
        for worker in workers { worker.join() }
        for job in writes.withLock({ $0.jobs }) { job.data?.deallocate() }
    }

    // MARK: Writes on workers

    func enqueue(_ job: WriteJob) {
        if workers.isEmpty {
            for _ in 0..<Connection.writeWorkers {
                workers.append(JoinableThread.start { [self] in work() })
            }
        }
        writes.withLock { q in
            q.jobs.append(job)
            q.inFlight += 1
        }
    }

    /// Waits until every queued write has been answered.
    func drainWrites() {
        writes.withLock(when: { $0.inFlight == 0 }) { _ in }
    }

    private func work() {
        let device = server.device
        while true {
            let next: WriteJob? = writes.withLock(when: { !$0.jobs.isEmpty || $0.closing }) { q in
                q.jobs.isEmpty ? nil : q.jobs.removeFirst()
            }
            guard let job = next else { return }
            var code: UInt32 = 0
            do {
                if let data = job.data {
                    try device.write(at: job.offset, from: UnsafeRawBufferPointer(data), fua: job.fua)
                } else {
                    try writeZeroes(at: job.offset, count: job.count, fua: job.fua)
                }
            } catch {
                code = NBDServer.errorNumber(error, reading: false)
            }
            job.data?.deallocate()
            var reply = [UInt8](repeating: 0, count: 16)
            reply.withUnsafeMutableBytes { raw in
                raw.baseAddress!.storeBE(NBD.simpleReplyMagic, at: 0)
                raw.baseAddress!.storeBE(code, at: 4)
                raw.baseAddress!.storeBE(job.cookie, at: 8)
            }
            sending.withLock { _ in
                _ = reply.withUnsafeBytes { UnixSocket.sendAll(fd, $0) }
            }
            writes.withLock { $0.inFlight -= 1 }
        }
    }

    // MARK: Buffered I/O

    /// Makes `count` bytes available at `input[inStart...]`, sending pending replies before it waits.
    func need(_ count: Int) throws {
        if inEnd - inStart >= count { return }
        if inStart > 0 {
            let have = inEnd - inStart
            if have > 0 { memmove(input.baseAddress!, input.baseAddress! + inStart, have) }
            inStart = 0
            inEnd = have
        }
        if count > input.count {
            let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: count, alignment: 4096)
            bigger.baseAddress!.copyMemory(from: input.baseAddress!, byteCount: inEnd)
            input.deallocate()
            input = bigger
        }
        while inEnd < count {
            // Take what has arrived without waiting; before waiting, answer what we have.
            var n = recv(fd, input.baseAddress! + inEnd, input.count - inEnd, Int32(MSG_DONTWAIT))
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                guard flushOutput() else { throw Closed() }
                n = recv(fd, input.baseAddress! + inEnd, input.count - inEnd, 0)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw Closed()
            }
            if n == 0 { throw Closed() }
            inEnd += n
        }
    }

    /// Fills `data` with the next bytes of input: what is buffered, then straight from the socket
    /// (sending pending replies before it waits).
    func receivePayload(into data: UnsafeMutableRawBufferPointer) throws {
        let buffered = min(inEnd - inStart, data.count)
        if buffered > 0 {
            data.baseAddress!.copyMemory(from: input.baseAddress! + inStart, byteCount: buffered)
            inStart += buffered
        }
        var done = buffered
        while done < data.count {
            var n = recv(fd, data.baseAddress! + done, data.count - done, Int32(MSG_DONTWAIT))
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                guard flushOutput() else { throw Closed() }
                n = recv(fd, data.baseAddress! + done, data.count - done, 0)
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw Closed()
            }
            if n == 0 { throw Closed() }
            done += n
        }
    }

    /// Reserves `count` bytes of output and returns where they start.
    func reserve(_ count: Int) throws -> UnsafeMutableRawPointer {
        if outEnd + count > output.count {
            if outEnd > 0 && outEnd + count > 8 << 20 {
                guard flushOutput() else { throw Closed() }
            }
            if outEnd + count > output.count {
                let bigger = UnsafeMutableRawBufferPointer.allocate(byteCount: max(outEnd + count, output.count * 2), alignment: 4096)
                if outEnd > 0 { bigger.baseAddress!.copyMemory(from: output.baseAddress!, byteCount: outEnd) }
                output.deallocate()
                output = bigger
            }
        }
        let at = output.baseAddress! + outEnd
        outEnd += count
        return at
    }

    func flushOutput() -> Bool {
        guard outEnd > 0 else { return true }
        let ok = sending.withLock { _ in UnixSocket.sendAll(fd, UnsafeRawBufferPointer(rebasing: output[0..<outEnd])) }
        outEnd = 0
        return ok
    }

    func u16(_ at: Int) -> UInt16 { UnsafeRawPointer(input.baseAddress! + inStart).loadBE(at: at, as: UInt16.self) }
    func u32(_ at: Int) -> UInt32 { UnsafeRawPointer(input.baseAddress! + inStart).loadBE(at: at, as: UInt32.self) }
    func u64(_ at: Int) -> UInt64 { UnsafeRawPointer(input.baseAddress! + inStart).loadBE(at: at, as: UInt64.self) }

    // MARK: Handshake

    var transmissionFlags: UInt16 {
        var flags = NBD.txHasFlags | NBD.txSendFlush | NBD.txSendFUA | NBD.txCanMultiConn
        if server.readOnly { flags |= NBD.txReadOnly } else { flags |= NBD.txSendWriteZeroes }
        return flags
    }

    func handshake() throws {
        let hello = try reserve(18)
        hello.storeBE(NBD.magic, at: 0)
        hello.storeBE(NBD.optionMagic, at: 8)
        hello.storeBE(NBD.flagFixedNewstyle | NBD.flagNoZeroes, at: 16)
        guard flushOutput() else { throw Closed() }
        try need(4)
        let clientFlags = u32(0)
        inStart += 4
        noZeroes = clientFlags & UInt32(NBD.flagNoZeroes) != 0
        while true {
            try need(16)
            guard u64(0) == NBD.optionMagic else { throw Closed() }
            let option = u32(8)
            let length = Int(u32(12))
            guard length <= 1 << 20 else { throw Closed() }
            inStart += 16
            try need(length)
            let data = UnsafeRawBufferPointer(start: input.baseAddress! + inStart, count: length)
            inStart += length
            switch option {
            case NBD.optExportName:
                let name = String(decoding: data, as: UTF8.self)
                guard name.isEmpty || name == server.exportName else { throw Closed() }
                let reply = try reserve(noZeroes ? 10 : 134)
                reply.storeBE(server.device.sizeBytes, at: 0)
                reply.storeBE(transmissionFlags, at: 8)
                if !noZeroes { memset(reply + 10, 0, 124) }
                guard flushOutput() else { throw Closed() }
                return
            case NBD.optInfo, NBD.optGo:
                guard data.count >= 6 else {
                    try optionReply(option, NBD.repErrInvalid)
                    continue
                }
                let nameLength = Int(UnsafeRawPointer(data.baseAddress!).loadBE(at: 0, as: UInt32.self))
                guard 4 + nameLength + 2 <= data.count else {
                    try optionReply(option, NBD.repErrInvalid)
                    continue
                }
                let name = String(decoding: UnsafeRawBufferPointer(rebasing: data[4..<(4 + nameLength)]), as: UTF8.self)
                guard name.isEmpty || name == server.exportName else {
                    try optionReply(option, NBD.repErrUnknown)
                    continue
                }
                let requests = Int(UnsafeRawPointer(data.baseAddress!).loadBE(at: 4 + nameLength, as: UInt16.self))
                var wantsBlockSize = false
                for i in 0..<requests where 4 + nameLength + 2 + 2 * i + 2 <= data.count {
                    let info = UnsafeRawPointer(data.baseAddress!).loadBE(at: 4 + nameLength + 2 + 2 * i, as: UInt16.self)
                    if info == NBD.infoBlockSize { wantsBlockSize = true }
                }
                let export = try optionReplyHeader(option, NBD.repInfo, length: 12)
                export.storeBE(NBD.infoExport, at: 0)
                export.storeBE(server.device.sizeBytes, at: 2)
                export.storeBE(transmissionFlags, at: 10)
                if wantsBlockSize {
                    let sizes = try optionReplyHeader(option, NBD.repInfo, length: 14)
                    sizes.storeBE(NBD.infoBlockSize, at: 0)
                    sizes.storeBE(UInt32(1), at: 2)
                    sizes.storeBE(UInt32(4096), at: 6)
                    sizes.storeBE(UInt32(NBDServer.maxRequestBytes), at: 10)
                }
                try optionReply(option, NBD.repAck)
                guard flushOutput() else { throw Closed() }
                if option == NBD.optGo { return }
            case NBD.optAbort:
                try optionReply(option, NBD.repAck)
                throw Closed()
            case NBD.optList:
                let name = Array(server.exportName.utf8)
                let entry = try optionReplyHeader(option, NBD.repServer, length: 4 + name.count)
                entry.storeBE(UInt32(name.count), at: 0)
                name.withUnsafeBytes { (entry + 4).copyMemory(from: $0.baseAddress!, byteCount: name.count) }
                try optionReply(option, NBD.repAck)
            default:
                // Structured replies, meta contexts, TLS, extended headers: not offered.
                try optionReply(option, NBD.repErrUnsupported)
            }
            guard flushOutput() else { throw Closed() }
        }
    }

    func optionReplyHeader(_ option: UInt32, _ type: UInt32, length: Int) throws -> UnsafeMutableRawPointer {
        let header = try reserve(20 + length)
        header.storeBE(NBD.replyOptionMagic, at: 0)
        header.storeBE(option, at: 8)
        header.storeBE(type, at: 12)
        header.storeBE(UInt32(length), at: 16)
        return header + 20
    }

    func optionReply(_ option: UInt32, _ type: UInt32) throws {
        _ = try optionReplyHeader(option, type, length: 0)
    }

    // MARK: Transmission

    func transmission() throws {
        let device = server.device
        while true {
            try need(28)
            guard u32(0) == NBD.requestMagic else { throw Closed() }
            let flags = u16(4)
            let type = u16(6)
            let cookie = u64(8)
            let offset = u64(16)
            let length = Int(u32(24))
            inStart += 28
            switch type {
            case NBD.cmdRead:
                guard length <= NBDServer.maxRequestBytes else {
                    try reply(cookie, NBD.EINVAL)
                    continue
                }
                let header = try reserve(16 + length)
                let data = UnsafeMutableRawBufferPointer(start: header + 16, count: length)
                var code: UInt32 = 0
                do { try device.read(at: offset, into: data) } catch { code = NBDServer.errorNumber(error, reading: true) }
                header.storeBE(NBD.simpleReplyMagic, at: 0)
                header.storeBE(code, at: 4)
                header.storeBE(cookie, at: 8)
                if code != 0 { outEnd -= length }  // no payload after an error
            case NBD.cmdWrite:
                guard length <= NBDServer.maxRequestBytes else { throw Closed() }
                if length >= 64 * 1024 && !server.readOnly && inEnd - inStart < length {
                    // A large payload still arriving: receive it straight into its own buffer.
                    let data = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 4096)
                    do {
                        try receivePayload(into: data)
                    } catch {
                        data.deallocate()
                        throw error
                    }
                    enqueue(WriteJob(cookie: cookie, offset: offset, data: data, count: length, fua: flags & NBD.cmdFlagFUA != 0))
                    continue
                }
                try need(length)
                if server.readOnly {
                    inStart += length
                    try reply(cookie, NBD.EPERM)
                    continue
                }
                let fua = flags & NBD.cmdFlagFUA != 0
                if inEnd - inStart - length < 28 && writes.withLock({ $0.inFlight == 0 }) {
                    // Nothing else to do meanwhile (queue depth 1): write here, without a thread hop.
                    let data = UnsafeRawBufferPointer(start: input.baseAddress! + inStart, count: length)
                    inStart += length
                    var code: UInt32 = 0
                    do { try device.write(at: offset, from: data, fua: fua) } catch { code = NBDServer.errorNumber(error, reading: false) }
                    try reply(cookie, code)
                    continue
                }
                let data = UnsafeMutableRawBufferPointer.allocate(byteCount: max(length, 1), alignment: 4096)
                data.baseAddress!.copyMemory(from: input.baseAddress! + inStart, byteCount: length)
                inStart += length
                enqueue(WriteJob(
                    cookie: cookie, offset: offset, data: UnsafeMutableRawBufferPointer(rebasing: data[0..<length]),
                    count: length, fua: flags & NBD.cmdFlagFUA != 0))
            case NBD.cmdFlush:
                // Covers every write answered before it (and the ones still in flight).
                drainWrites()
                var code: UInt32 = 0
                do { try device.flush() } catch { code = NBDServer.errorNumber(error, reading: false) }
                try reply(cookie, code)
            case NBD.cmdWriteZeroes:
                if server.readOnly {
                    try reply(cookie, NBD.EPERM)
                } else {
                    enqueue(WriteJob(cookie: cookie, offset: offset, data: nil, count: length, fua: flags & NBD.cmdFlagFUA != 0))
                }
            case NBD.cmdDisconnect:
                _ = flushOutput()
                drainWrites()
                try? device.flush()
                throw Closed()
            default:
                try reply(cookie, NBD.EINVAL)
            }
        }
    }

    func reply(_ cookie: UInt64, _ error: UInt32) throws {
        let header = try reserve(16)
        header.storeBE(NBD.simpleReplyMagic, at: 0)
        header.storeBE(error, at: 4)
        header.storeBE(cookie, at: 8)
    }

    func writeZeroes(at offset: UInt64, count: Int, fua: Bool) throws {
        if let device = server.device as? VolumeDevice {
            try device.writeZeroes(at: offset, count: count, fua: fua)
            return
        }
        let chunk = 1 << 20
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zeros.deallocate() }
        memset(zeros.baseAddress!, 0, chunk)
        var done = 0
        while done < count {
            let n = min(chunk, count - done)
            try server.device.write(at: offset + UInt64(done), from: UnsafeRawBufferPointer(rebasing: zeros[0..<n]), fua: fua)
            done += n
        }
    }
}

extension NBDServer {
    /// The NBD error number for a failed request.
    static func errorNumber(_ error: any Error, reading: Bool) -> UInt32 {
        guard let store = error as? StoreError else { return NBD.EIO }
        switch store.code {
        case .outOfRange: return reading ? NBD.EINVAL : NBD.ENOSPC
        case .wrongKind: return NBD.EPERM
        case .noSpace: return NBD.ENOSPC
        default: return NBD.EIO
        }
    }
}
