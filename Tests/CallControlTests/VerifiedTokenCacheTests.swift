// Auth tokens that verified are remembered by their text until their `exp`: the same answer
// as verifying again, an expired one refused, a changed one verified afresh, the memory bounded.
import CallRules
import Foundation
import Testing

@testable import RingingAuth

@Suite struct VerifiedTokenCacheTests {
    @Test func aRememberedTokenAnswersAsBeforeUntilItsExpiry() async throws {
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        // Whole seconds: a token's `exp` is written in whole seconds.
        let minted = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        let token = try await auth.mint(uid: "alice", lifetime: .seconds(60), now: minted)
        let first = try await auth.verify(token)
        #expect(first.uid == "alice" && !first.isService)
        #expect(auth.verifiedCount == 1)
        let again = try await auth.verify(token, now: minted.addingTimeInterval(59))
        #expect(again == first)

        do {
            _ = try await auth.verify(token, now: minted.addingTimeInterval(60))
            Issue.record("an expired token was accepted from memory")
        } catch {
            #expect(error.code == .unauthenticated)
            #expect(error.message == "auth_token rejected: the token has expired")
        }
        #expect(auth.verifiedCount == 0, "forgotten once expired")
        // By the real clock it has not expired: its signature is checked again.
        #expect(try await auth.verify(token) == first)
        #expect(auth.verifiedCount == 1)
    }

    @Test func aChangedOrForgedTokenIsVerifiedAndNeverRemembered() async throws {
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        let token = try await auth.mint(uid: "bob")
        _ = try await auth.verify(token)
        // The payload changed to another user, the signature kept.
        let parts = token.split(separator: ".").map(String.init)
        let carol = try await auth.mint(uid: "carol")
        let swapped = [parts[0], carol.split(separator: ".")[1].description, parts[2]].joined(separator: ".")
        let forged = try await AuthTokens(secret: "not-the-deployment-secret-but-long-enough").mint(uid: "bob")
        for bad in [swapped, forged, token + "x"] {
            for _ in 0..<2 {
                await #expect(throws: CallError.self) { try await auth.verify(bad) }
            }
        }
        #expect(auth.verifiedCount == 1, "bob's token only")
        #expect(try await auth.verify(token).uid == "bob")
    }

    /// Swift compares non-ASCII text by canonical equivalence (U+212A KELVIN SIGN equals "K"):
    /// such a token is not looked up, and its signature does not verify.
    @Test func aTokenSpelledWithEquivalentCharactersIsNotTakenForTheRememberedOne() async throws {
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        var token = ""
        var index = 0
        while !token.contains("K") {
            token = try await auth.mint(uid: "dave-\(index)")
            index += 1
        }
        _ = try await auth.verify(token)
        let kelvin = token.replacingOccurrences(of: "K", with: "\u{212A}")
        #expect(kelvin == token, "equal as Swift strings")
        #expect(Array(kelvin.utf8) != Array(token.utf8))
        await #expect(throws: CallError.self) { try await auth.verify(kelvin) }
    }

    @Test func theMemoryIsBounded() async throws {
        let auth = try await AuthTokens(secret: AuthTokens.developmentSecret)
        for index in 0...AuthTokens.verifiedCapacity {
            let token = try await auth.mint(uid: "user-\(index)")
            #expect(try await auth.verify(token).uid == "user-\(index)")
        }
        #expect(auth.verifiedCount <= AuthTokens.verifiedCapacity)
        #expect(auth.verifiedCount >= 1)
    }
}
