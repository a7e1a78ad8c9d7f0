// An HTTP/2-only server over TLS (ALPN offers `h2` alone, as APNs does) on 127.0.0.1 that hands
// each request to an async handler: the base of the APNs and FCM stand-ins.
public import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL

public struct StubRequest: Sendable {
    public var method: String
    public var path: String
    /// Header names in lower case.
    public var headers: [String: String]
    public var body: Data
}

public struct StubResponse: Sendable {
    public var status: Int
    public var headers: [(String, String)]
    public var body: Data

    public init(status: Int, headers: [(String, String)] = [], body: Data = Data()) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public static func json(_ status: Int, _ object: Any, headers: [(String, String)] = []) -> StubResponse {
        StubResponse(
            status: status, headers: headers + [("content-type", "application/json")],
            body: (try? JSONSerialization.data(withJSONObject: object)) ?? Data())
    }
}

public final class HTTP2StubServer: Sendable {
    let channel: any Channel
    public let port: Int

    public var url: String { "https://127.0.0.1:\(port)" }

    public init(certificates: TestCertificates, handler: @escaping @Sendable (StubRequest) async -> StubResponse) async throws {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: [
                .certificate(try NIOSSLCertificate(bytes: Array(certificates.serverCertificatePEM.utf8), format: .pem))
            ],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(certificates.serverKeyPEM.utf8), format: .pem)))
        tls.applicationProtocols = ["h2"]
        let context = try NIOSSLContext(configuration: tls)
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                }.flatMap {
                    channel.configureHTTP2Pipeline(
                        mode: .server,
                        inboundStreamInitializer: { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(HTTP2FramePayloadToHTTP1ServerCodec())
                                try stream.pipeline.syncOperations.addHandler(StubStreamHandler(handler: handler))
                            }
                        }
                    ).map { _ in }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        port = channel.localAddress?.port ?? 0
    }

    public func stop() async {
        try? await channel.close()
    }
}

/// One HTTP/2 stream: collects the request, answers with the handler's response.
final class StubStreamHandler: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let handler: @Sendable (StubRequest) async -> StubResponse
    private var head: HTTPRequestHead?
    private var body = ByteBuffer()

    init(handler: @escaping @Sendable (StubRequest) async -> StubResponse) { self.handler = handler }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body.clear()
        case .body(var part):
            body.writeBuffer(&part)
        case .end:
            guard let head else { return }
            var headers: [String: String] = [:]
            for (name, value) in head.headers { headers[name.lowercased()] = value }
            let request = StubRequest(method: head.method.rawValue, path: head.uri, headers: headers, body: Data(buffer: body))
            let handler = self.handler
            let promise = context.eventLoop.makePromise(of: StubResponse.self)
            promise.completeWithTask { await handler(request) }
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            promise.futureResult.whenSuccess { response in
                let (this, context) = bound.value
                var headers = HTTPHeaders(response.headers)
                headers.replaceOrAdd(name: "content-length", value: String(response.body.count))
                context.write(
                    this.wrapOutboundOut(
                        .head(
                            HTTPResponseHead(
                                version: .http2, status: HTTPResponseStatus(statusCode: response.status), headers: headers))),
                    promise: nil)
                context.write(this.wrapOutboundOut(.body(.byteBuffer(ByteBuffer(data: response.body)))), promise: nil)
                context.writeAndFlush(this.wrapOutboundOut(.end(nil)), promise: nil)
            }
        }
    }
}
