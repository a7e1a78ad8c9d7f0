// The token service's signing keys: Ed25519, named by a `kid`, written `kid:base64url-seed`
// in configuration (public-only keys as `kid:base64url-x`).
public import Foundation
import JWTKit

/// One Ed25519 key of the token service. A key with a private part signs; a public-only key
/// (a previous key kept for rotation) only appears in the JWKS.
public struct CallTokenKey: Sendable {
    public let kid: String
    let privateKey: EdDSA.PrivateKey?
    let publicKey: EdDSA.PublicKey

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `kid:base64url` where the base64url part is a 32-byte Ed25519 private seed
    /// (`private: true`) or public key.
    public init(_ text: String, private isPrivate: Bool) throws(ParseError) {
        let parts = text.split(separator: ":", maxSplits: 1).map(String.init)
        guard parts.count == 2, !parts[0].isEmpty else {
            throw ParseError(description: "a key is written kid:base64url, got '\(text.prefix(12))…'")
        }
        guard parts[0].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == "." }) else {
            throw ParseError(description: "key id '\(parts[0])' may hold letters, digits, '-', '_' and '.' only")
        }
        kid = parts[0]
        guard let raw = Data(base64URL: parts[1]), raw.count == 32 else {
            throw ParseError(description: "key '\(kid)': the part after ':' must be 32 bytes in base64url")
        }
        do {
            if isPrivate {
                let key = try EdDSA.PrivateKey(d: parts[1], curve: .ed25519)
                privateKey = key
                publicKey = key.publicKey
            } else {
                privateKey = nil
                publicKey = try EdDSA.PublicKey(x: parts[1], curve: .ed25519)
            }
        } catch {
            throw ParseError(description: "key '\(kid)' is not a valid Ed25519 key: \(error)")
        }
    }

    /// A fresh key, in its configuration form (`kid:seed`).
    public static func generate(kid: String) throws -> String {
        let key = try EdDSA.PrivateKey(curve: .ed25519)
        return "\(kid):\(key.rawRepresentation.base64URLEncoded)"
    }

    /// The public key alone, in configuration form (for `RINGING_TOKEN_PREVIOUS_KEYS`).
    public var publicConfiguration: String { "\(kid):\(publicKey.rawRepresentation.base64URLEncoded)" }

    /// The public key as a JWK (RFC 8037), as media servers load it.
    public var jwk: [String: String] {
        [
            "kty": "OKP", "crv": "Ed25519", "x": publicKey.rawRepresentation.base64URLEncoded, "kid": kid, "alg": "EdDSA",
            "use": "sig",
        ]
    }
}

extension Data {
    init?(base64URL text: String) {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        self.init(base64Encoded: base64)
    }

    var base64URLEncoded: String {
        base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }
}

/// A JWKS document: `{"keys": [...]}`.
public struct JWKSDocument: Sendable, Codable, Hashable {
    public var keys: [[String: String]]

    public init(keys: [[String: String]]) { self.keys = keys }

    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(self)) ?? Data(), as: UTF8.self)
    }
}
