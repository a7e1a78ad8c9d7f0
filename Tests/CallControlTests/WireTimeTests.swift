// Times read back: the direct reading of what WireTime writes against Foundation's ISO 8601
// format style, which reads every other form.
import Foundation
import Testing

@testable import RingingContract

@Suite struct WireTimeTests {
    func style(_ text: String) -> Date? {
        (try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text))
            ?? (try? Date.ISO8601FormatStyle().parse(text))
    }

    /// The same instant. With milliseconds the two readings may differ in the last bits of
    /// the double: near 2001 (the reference date, where a double resolves nanoseconds) the
    /// format style reads `2001-01-02T22:09:58.623Z` as 166198.62300000002 s, where the
    /// nearest double to the instant, which the direct reading gives, is 166198.623 (about 1
    /// in 15,000 random times).
    static func same(_ a: Date?, _ b: Date?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return abs(a.timeIntervalSince(b)) < 1e-6
    }

    @Test func whatIsWrittenReadsBackAsTheFormatStyleReadsIt() {
        var generator = SystemRandomNumberGenerator()
        var instants: [Date] = [
            Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1_764_152_107.123),
            Date(timeIntervalSince1970: 951_782_400), Date(timeIntervalSince1970: 4_107_542_399.999),
            Date(timeIntervalSince1970: -62_135_596_800), Date(timeIntervalSince1970: 253_402_300_799.999),
        ]
        for _ in 0..<3000 {
            instants.append(Date(timeIntervalSince1970: Double.random(in: -2e9...5e9, using: &generator)))
        }
        for _ in 0..<500 {
            instants.append(Date(timeIntervalSince1970: Double.random(in: -62_135_596_800...253_402_300_799, using: &generator)))
        }
        for instant in instants {
            let text = WireTime.format(instant)
            #expect(Self.same(WireTime.parse(text), style(text)), "\(text)")
            let whole = String(text.prefix(19)) + "Z"
            #expect(WireTime.parse(whole) == style(whole), "\(whole)")
            // From 1583 on (the Gregorian calendar) without the format style.
            guard instant.timeIntervalSince1970 >= -12_212_553_600 else { continue }
            let direct = WireTime.parseWritten(text)
            #expect(direct != nil && Self.same(direct, style(text)), "\(text)")
            #expect(WireTime.parseWritten(whole) == style(whole), "\(whole)")
        }
    }

    @Test(arguments: [
        "2026-11-26T10:35:07+01:00", "2026-11-26T10:35:07.1234Z", "2026-11-26T10:35:07.12Z", "2026-11-26 10:35:07.123Z",
        "2026-02-29T00:00:00.000Z", "2024-02-29T00:00:00.000Z", "2026-13-01T00:00:00.000Z", "2026-04-31T00:00:00.000Z",
        "2026-11-26T24:00:00.000Z", "2026-11-26T10:60:00.000Z", "2026-11-26T10:35:60.000Z", "0000-01-01T00:00:00.000Z",
        "2026-11-26T10:35:07.123Z", "２０２６-11-26T10:35:07.123Z", "", "not a time",
    ])
    func otherFormsReadAsTheFormatStyleReadsThem(_ text: String) {
        #expect(Self.same(WireTime.parse(text), style(text)), "\(text)")
        if let direct = WireTime.parseWritten(text) { #expect(Self.same(direct, style(text))) }
    }
}
