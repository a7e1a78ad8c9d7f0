// A certificate authority made at start, and a server certificate for 127.0.0.1 and localhost
// signed by it: the stub providers serve TLS with it, and the notifier trusts the CA through
// RINGING_PUSH_CA_FILE, never by turning verification off.
import Crypto
public import Foundation
import SwiftASN1
import X509

public struct TestCertificates: Sendable {
    public let caPEM: String
    public let serverCertificatePEM: String
    public let serverKeyPEM: String

    public init() throws {
        let now = Date()
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName {
            OrganizationName("Ringing tests")
            CommonName("Ringing test CA")
        }
        let ca = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(caKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(7 * 86_400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(caKey))
        let serverKey = P256.Signing.PrivateKey()
        let server = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(serverKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(7 * 86_400),
            issuer: caName, subject: try DistinguishedName { CommonName("localhost") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true))
                try ExtendedKeyUsage([.serverAuth])
                SubjectAlternativeNames([.dnsName("localhost"), .ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
            },
            issuerPrivateKey: .init(caKey))
        caPEM = try ca.serializeAsPEM().pemString + "\n"
        serverCertificatePEM = try server.serializeAsPEM().pemString + "\n"
        serverKeyPEM = serverKey.pemRepresentation + "\n"
    }

    /// Writes the CA to a file (for RINGING_PUSH_CA_FILE) and returns its path.
    public func writeCA(to directory: URL) throws -> String {
        let url = directory.appendingPathComponent("push-test-ca.pem")
        try caPEM.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }
}
