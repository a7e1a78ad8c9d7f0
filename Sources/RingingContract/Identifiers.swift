// Identifiers and limits of the contract (DESIGN §1–2).

public enum Identifier {
    /// UIDs and GUIDs: `^[A-Za-z0-9_-]{1,64}$`, safe inside routing keys.
    public static func isValid(_ value: String) -> Bool {
        let utf8 = value.utf8
        guard (1...64).contains(utf8.count) else { return false }
        return utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D
        }
    }
}

public enum ContractLimits {
    /// The largest request body accepted.
    public static let maximumBodyBytes = 64 * 1024
    /// `metadata` of `call.initiate`, as JSON.
    public static let maximumMetadataBytes = 4 * 1024
    /// `message_id` length.
    public static let maximumMessageIDLength = 128
    public static let maximumDeviceIDLength = 128
    public static let timeoutSeconds = 5...300
    public static let defaultTimeoutSeconds = 45
    public static let historyLimit = 1...100
    public static let defaultHistoryLimit = 20
    public static let maximumGroupMembers = 1000
}
