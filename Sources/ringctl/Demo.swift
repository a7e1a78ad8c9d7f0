// ringctl demo: the seed's whole flow between two users against the running stack.
import ArgumentParser
import CallRules
import Foundation
import RingingClient
import RingingContract
import Synchronization

struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the seed's flow between two fresh users and print each callback and both call tokens.",
        discussion:
            "alice calls bob, bob's phone and tablet ring (alice sees it ringing), he answers on his phone and the tablet stops ringing, both get call tokens, alice hangs up. Exits non-zero if any step fails."
    )

    @OptionGroup var stack: StackOptions
    @Option(help: "How long to wait for each callback, in seconds.") var wait: Int = 15

    func run() async throws {
        let run = UUID().uuidString.prefix(6).lowercased()
        let alice = "demo-alice-\(run)"
        let bob = "demo-bob-\(run)"
        let limit = Duration.seconds(wait)
        try await stack.withClient(as: alice, device: "alice-phone") { aliceClient in
            try await stack.withClient(as: bob, device: "bob-phone") { bobClient in
                try await stack.withClient(as: bob, device: "bob-tablet") { tabletClient in
                    let aliceEvents = Callbacks(aliceClient, name: "alice", stack: stack)
                    let bobEvents = Callbacks(bobClient, name: "bob", stack: stack)
                    let tabletEvents = Callbacks(tabletClient, name: "bob's tablet", stack: stack)
                    try await withThrowingTaskGroup(of: Void.self) { group in
                        group.addTask { await aliceEvents.collect() }
                        group.addTask { await bobEvents.collect() }
                        group.addTask { await tabletEvents.collect() }
                        defer { group.cancelAll() }

                        stack.show("1. alice calls bob (video)")
                        let call = try await step("initiateCall") {
                            try await aliceClient.initiateCall(receiverID: bob, callType: .video)
                        }
                        try await bobEvents.expect(.incomingCallReceived, call.sessionID, status: .initiated, within: limit)
                        try await tabletEvents.expect(.incomingCallReceived, call.sessionID, status: .initiated, within: limit)
                        // bob's client sent the ring receipt when it showed the call: "Ringing…" at alice's.
                        try await aliceEvents.expect(.outgoingCallRinging, call.sessionID, status: .initiated, within: limit)

                        stack.show("2. bob answers on his phone")
                        let accepted = try await step("acceptCall") { try await bobClient.acceptCall(sessionID: call.sessionID) }
                        guard accepted.status == .ongoing else {
                            throw CleanExit.message("ringctl demo: accept left the call \(accepted.status.rawValue)")
                        }
                        try await aliceEvents.expect(.outgoingCallAccepted, call.sessionID, status: .ongoing, within: limit)
                        // The tablet stops ringing; the phone, which answered, is not told about its own answer.
                        try await tabletEvents.expect(.answeredElsewhere, call.sessionID, status: .ongoing, within: limit)

                        stack.show("3. both start the media session with a call token")
                        for (who, client) in [("alice", aliceClient), ("bob", bobClient)] {
                            let token = try await step("generateToken") {
                                try await client.generateToken(sessionID: call.sessionID)
                            }
                            stack.show(
                                "   \(who)'s call token (expires \(WireTime.format(token.expiresAt))): \(token.token)",
                                ["who": who, "token": token.token])
                        }

                        stack.show("4. alice hangs up")
                        let ended = try await step("endCall") { try await aliceClient.endCall(sessionID: call.sessionID) }
                        aliceClient.clearActiveCall()
                        try await bobEvents.expect(.callEnded, call.sessionID, status: .ended, within: limit)
                        try await tabletEvents.expect(.callEnded, call.sessionID, status: .ended, within: limit)
                        guard aliceClient.activeCall == nil else {
                            throw CleanExit.message("ringctl demo: alice still has an active call")
                        }

                        // Each callback fired exactly once.
                        for (events, expected) in [
                            (aliceEvents, [NotificationName.outgoingCallRinging, .outgoingCallAccepted]),
                            (bobEvents, [.incomingCallReceived, .callEnded]),
                            (tabletEvents, [.incomingCallReceived, .answeredElsewhere, .callEnded]),
                        ] {
                            let seen = events.names(for: call.sessionID)
                            guard seen == expected else {
                                throw CleanExit.message(
                                    "ringctl demo: \(events.name) got \(seen.map(callbackName)), expected \(expected.map(callbackName))"
                                )
                            }
                        }
                        stack.show(
                            "demo passed: the call rang, was answered, tokens were issued, and it ended after \(ended.durationSeconds ?? 0) s",
                            ["session_id": call.sessionID.uuidString.lowercased(), "status": "passed"])
                    }
                }
            }
        }
    }

    func step<T>(_ name: String, _ body: () async throws -> T) async throws -> T {
        do { return try await body() } catch {
            throw CleanExit.message("ringctl demo: \(name) failed: \(error)")
        }
    }
}

/// Records one client's callbacks and lets the demo wait for the next one.
final class Callbacks: Sendable {
    let name: String
    let client: RingingClient
    let stack: StackOptions
    private let state = Mutex<(seen: [RingingNotification], waiter: CheckedContinuation<Void, Never>?)>(([], nil))

    init(_ client: RingingClient, name: String, stack: StackOptions) {
        self.client = client
        self.name = name
        self.stack = stack
    }

    func collect() async {
        for await notification in client.notifications {
            stack.show(
                "   \(name): \(callbackName(notification.name)) (\(notification.call.status.rawValue))",
                ["who": name, "callback": callbackName(notification.name), "status": notification.call.status.rawValue])
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.seen.append(notification)
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }

    func names(for session: UUID) -> [NotificationName] {
        state.withLock { $0.seen.filter { $0.call.sessionID == session }.map(\.name) }
    }

    /// Waits until `name` arrived for `session` with `status`; fails after `limit`.
    func expect(_ expected: NotificationName, _ session: UUID, status: CallStatus, within limit: Duration) async throws {
        let deadline = ContinuousClock.now + limit
        while true {
            if let found = state.withLock({ $0.seen.first { $0.name == expected && $0.call.sessionID == session } }) {
                guard found.call.status == status else {
                    throw CleanExit.message(
                        "ringctl demo: \(name)'s \(callbackName(expected)) came with status \(found.call.status.rawValue), not \(status.rawValue)"
                    )
                }
                return
            }
            guard ContinuousClock.now < deadline else {
                throw CleanExit.message("ringctl demo: \(name) never got \(callbackName(expected)) within \(limit)")
            }
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.nextArrival() }
                group.addTask { try? await Task.sleep(until: deadline) }
                await group.next()
                group.cancelAll()
            }
        }
    }

    private func nextArrival() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let cancelled = state.withLock { state -> Bool in
                    if Task.isCancelled { return true }
                    state.waiter?.resume()
                    state.waiter = continuation
                    return false
                }
                if cancelled { continuation.resume() }
            }
        } onCancel: {
            state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }?.resume()
        }
    }
}
