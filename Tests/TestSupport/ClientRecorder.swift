// The client library's callbacks as a test sees them: recorded in order, each awaitable.
public import CallRules
public import Foundation
public import RingingClient
public import RingingContract
import Synchronization
import Testing

/// Records the callbacks a client's delegate receives, and lets a test wait for one.
public final class Recorder: RingingClientDelegate {
    public init() {}

    private let calls = Mutex<(log: [(String, Call, String?)], waiters: [CheckedContinuation<Void, Never>])>(([], []))

    public func onIncomingCallReceived(_ call: Call) { record("incoming", call) }
    public func onOutgoingCallRinging(_ call: Call, deviceID: String?) { record("ringing", call, deviceID) }
    public func onOutgoingCallAccepted(_ call: Call) { record("accepted", call) }
    public func onOutgoingCallRejected(_ call: Call) { record("rejected", call) }
    public func onIncomingCallCanceled(_ call: Call) { record("canceled", call) }
    public func onCallEndedMessageReceived(_ call: Call) { record("ended", call) }
    public func onCallAnsweredElsewhere(_ call: Call, deviceID: String?) { record("answeredElsewhere", call, deviceID) }
    public func onCallRejectedElsewhere(_ call: Call, deviceID: String?) { record("rejectedElsewhere", call, deviceID) }
    public func onConnectionStateChanged(_ state: ConnectionState) {
        states.withLock { $0.append(state) }
    }

    private let states = Mutex<[ConnectionState]>([])

    /// Every connection state reported, in order.
    public var connectionStates: [ConnectionState] { states.withLock { $0 } }

    private func record(_ name: String, _ call: Call, _ detail: String? = nil) {
        let waiters = calls.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.log.append((name, call, detail))
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The callbacks about `session`, as "name:status[:detail]".
    public func log(_ session: UUID) -> [String] {
        calls.withLock {
            $0.log.filter { $0.1.sessionID == session }.map { name, call, detail in
                [name, call.status.rawValue, detail].compactMap { $0 }.joined(separator: ":")
            }
        }
    }

    /// Waits until the callback `name` about `session` has been called.
    public func wait(for name: String, _ session: UUID) async throws {
        try await withDeadline(.seconds(30), "the callback \(name)") {
            while !self.log(session).contains(where: { $0.hasPrefix(name + ":") }) {
                await withTaskCancellationHandler {
                    await withCheckedContinuation { continuation in
                        let now = self.calls.withLock { state -> Bool in
                            if Task.isCancelled || state.log.contains(where: { $0.0 == name && $0.1.sessionID == session }) {
                                return true
                            }
                            state.waiters.append(continuation)
                            return false
                        }
                        if now { continuation.resume() }
                    }
                } onCancel: {
                    for waiter in self.calls.withLock({ state -> [CheckedContinuation<Void, Never>] in
                        defer { state.waiters = [] }
                        return state.waiters
                    }) { waiter.resume() }
                }
                try Task.checkCancellation()
            }
        }
    }
}

/// A client of the library for one user and device, with its callbacks recorded.
public struct Device: Sendable {
    public let client: RingingClient
    public let recorder: Recorder

    public init(client: RingingClient, recorder: Recorder) {
        self.client = client
        self.recorder = recorder
    }

    /// Waits until the notification reached this client's delegate.
    public func expect(_ name: NotificationName, _ session: UUID) async throws {
        let callback: String
        switch name {
        case .incomingCallReceived: callback = "incoming"
        case .outgoingCallRinging: callback = "ringing"
        case .outgoingCallAccepted: callback = "accepted"
        case .outgoingCallRejected: callback = "rejected"
        case .incomingCallCanceled: callback = "canceled"
        case .callEnded: callback = "ended"
        case .answeredElsewhere: callback = "answeredElsewhere"
        case .rejectedElsewhere: callback = "rejectedElsewhere"
        case .participantJoined, .participantLeft: callback = name.rawValue
        }
        try await recorder.wait(for: callback, session)
    }
}

/// The seed's flow with the client library, whatever the transport: alice's phone calls bob,
/// whose phone and tablet ring; the phone answers, the tablet stops ringing, both sides get
/// call tokens, alice hangs up. Checks each device's callbacks (each exactly once, none about
/// a device's own answer) and returns the call.
public enum SeedFlow {
    @discardableResult
    public static func run(caller: Device, phone: Device, tablet: Device, bob: String) async throws -> Call {
        let call = try await caller.client.initiateCall(receiverID: bob, callType: .video)
        #expect(caller.client.activeCall?.sessionID == call.sessionID, "the caller is active while it rings")
        try await phone.expect(.incomingCallReceived, call.sessionID)
        try await tablet.expect(.incomingCallReceived, call.sessionID)
        // The library sent the ring receipt when it handed the call to the app: "Ringing…".
        try await caller.expect(.outgoingCallRinging, call.sessionID)

        let accepted = try await phone.client.acceptCall(sessionID: call.sessionID)
        #expect(accepted.status == .ongoing)
        try await caller.expect(.outgoingCallAccepted, call.sessionID)
        try await tablet.expect(.answeredElsewhere, call.sessionID)
        // The tablet's late accept is refused with the call's state.
        await #expect { try await tablet.client.acceptCall(sessionID: call.sessionID) } throws: { error in
            (error as? RingingError)?.code == .invalidState && (error as? RingingError)?.status == .ongoing
        }
        let callerToken = try await caller.client.generateToken(sessionID: call.sessionID)
        let calleeToken = try await phone.client.generateToken(sessionID: call.sessionID)
        #expect(callerToken.token != calleeToken.token)
        #expect(try await phone.client.getActiveCall()?.sessionID == call.sessionID)

        let ended = try await caller.client.endCall(sessionID: call.sessionID)
        #expect(ended.status == .ended)
        caller.client.clearActiveCall()
        #expect(caller.client.activeCall == nil)
        try await phone.expect(.callEnded, call.sessionID)
        try await tablet.expect(.callEnded, call.sessionID)

        // A barrier: a later call's notification means everything before it arrived.
        let barrier = try await caller.client.initiateCall(receiverID: bob)
        try await phone.expect(.incomingCallReceived, barrier.sessionID)
        try await tablet.expect(.incomingCallReceived, barrier.sessionID)
        let callerLog = caller.recorder.log(call.sessionID)
        #expect(
            callerLog == ["ringing:initiated:bob-phone", "accepted:ongoing"]
                || callerLog == ["ringing:initiated:bob-tablet", "accepted:ongoing"], "\(callerLog)")
        #expect(
            phone.recorder.log(call.sessionID) == ["incoming:initiated", "ended:ended"],
            "the phone that answered is not told it was answered elsewhere")
        #expect(
            tablet.recorder.log(call.sessionID) == ["incoming:initiated", "answeredElsewhere:ongoing:bob-phone", "ended:ended"])
        let history = try await tablet.client.callHistory(limit: 10, direction: .incoming)
        #expect(history.calls.map(\.sessionID).contains(call.sessionID))
        // Errors come back with their code and field.
        await #expect { try await caller.client.initiateCall(receiverID: "not a uid") } throws: { error in
            (error as? RingingError)?.code == .invalidRequest && (error as? RingingError)?.field == "receiver_id"
        }
        return call
    }
}
