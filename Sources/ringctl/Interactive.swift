// ringctl listen / call / demo: the seed's flow from terminals.
import ArgumentParser
import CallRules
import Dispatch
import Foundation
import RingingClient
import RingingContract

/// The seed's callback name for a notification.
func callbackName(_ name: NotificationName) -> String {
    switch name {
    case .incomingCallReceived: "onIncomingCallReceived"
    case .outgoingCallRinging: "onOutgoingCallRinging"
    case .outgoingCallAccepted: "onOutgoingCallAccepted"
    case .outgoingCallRejected: "onOutgoingCallRejected"
    case .incomingCallCanceled: "onIncomingCallCanceled"
    case .callEnded: "onCallEndedMessageReceived"
    case .answeredElsewhere: "onCallAnsweredElsewhere"
    case .rejectedElsewhere: "onCallRejectedElsewhere"
    case .participantJoined: "onParticipantJoined"
    case .participantLeft: "onParticipantLeft"
    }
}

/// What a terminal session reacts to.
enum Input: Sendable {
    case notification(RingingNotification)
    case line(String)
    case endOfInput
    case interrupt
}

/// The terminal in raw mode while `listen` runs: single keys act at once, without Enter and
/// without echo. Ctrl-C still interrupts (ISIG stays on); the settings come back on exit, on
/// Ctrl-C and on any other way out.
enum RawTerminal {
    nonisolated(unsafe) private static var saved: termios?

    /// Switches stdin to raw mode when it is a terminal; returns whether it did.
    static func enable() -> Bool {
        guard isatty(STDIN_FILENO) == 1 else { return false }
        var settings = termios()
        guard tcgetattr(STDIN_FILENO, &settings) == 0 else { return false }
        saved = settings
        settings.c_lflag &= ~tcflag_t(ICANON | ECHO)
        withUnsafeMutableBytes(of: &settings.c_cc) { cc in
            cc[Int(VMIN)] = 1
            cc[Int(VTIME)] = 0
        }
        guard tcsetattr(STDIN_FILENO, TCSANOW, &settings) == 0 else { return false }
        atexit { RawTerminal.restore() }
        return true
    }

    static func restore() {
        guard var settings = saved else { return }
        _ = tcsetattr(STDIN_FILENO, TCSANOW, &settings)
        saved = nil
    }
}

/// Merges notifications, keys (one at a time in a raw terminal, else typed lines; read on a
/// thread of their own) and Ctrl-C into one stream.
func inputs(from client: RingingClient, keyboard: Bool, interrupt: Bool) -> AsyncStream<Input> {
    let (stream, continuation) = AsyncStream<Input>.makeStream()
    let forward = Task {
        for await notification in client.notifications { continuation.yield(.notification(notification)) }
    }
    if keyboard {
        let raw = RawTerminal.enable()
        let thread = Thread {
            if raw {
                var byte: UInt8 = 0
                while read(STDIN_FILENO, &byte, 1) == 1 {
                    if byte == 4 { break }  // Ctrl-D
                    let key = String(UnicodeScalar(byte)).lowercased().trimmingCharacters(in: .whitespacesAndNewlines)
                    if !key.isEmpty { continuation.yield(.line(key)) }
                }
            } else {
                while let line = readLine() { continuation.yield(.line(line.trimmingCharacters(in: .whitespaces).lowercased())) }
            }
            continuation.yield(.endOfInput)
        }
        thread.start()
    }
    var source: (any DispatchSourceSignal)?
    if interrupt {
        signal(SIGINT, SIG_IGN)
        let signalSource = DispatchSource.makeSignalSource(signal: SIGINT)
        signalSource.setEventHandler { continuation.yield(.interrupt) }
        signalSource.resume()
        source = signalSource
    }
    nonisolated(unsafe) let keep = source
    continuation.onTermination = { _ in
        forward.cancel()
        keep?.cancel()
        RawTerminal.restore()
    }
    return stream
}

struct Listen: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show incoming calls live and answer them from the keyboard.",
        discussion:
            "Press a to accept, r to reject, b to answer busy, e to end the call, q (or Ctrl-C) to quit: in a terminal each key acts at once; from a pipe, one key per line."
    )

    @Argument(help: "The user to listen as.") var uid: String
    @Option(help: "This device's id (other devices of the user see it).") var device: String = "ringctl-listen"
    @OptionGroup var stack: StackOptions

    func run() async throws {
        try await stack.withClient(as: uid, device: device) { client in
            stack.show("listening as \(uid) — a: accept, r: reject, b: busy, e: end, q: quit", ["uid": uid])
            var ringing: Call?
            var current: Call?
            defer { RawTerminal.restore() }
            for await input in inputs(from: client, keyboard: true, interrupt: true) {
                switch input {
                case .notification(let notification):
                    let call = notification.call
                    describe(notification)
                    switch notification.name {
                    case .incomingCallReceived: ringing = call
                    case .incomingCallCanceled, .answeredElsewhere, .rejectedElsewhere:
                        if ringing?.sessionID == call.sessionID { ringing = nil }
                        if notification.name == .answeredElsewhere, notification.deviceID == device { current = call }
                    case .callEnded: if current?.sessionID == call.sessionID { current = nil }
                    default: break
                    }
                case .line(let line):
                    do {
                        switch line {
                        case "a", "accept":
                            guard let call = ringing else {
                                stack.show("nothing is ringing")
                                continue
                            }
                            current = try await client.acceptCall(sessionID: call.sessionID)
                            ringing = nil
                            stack.show(
                                "accepted: the call is \(current!.status.rawValue)",
                                ["session_id": call.sessionID.uuidString.lowercased()])
                        case "r", "reject", "b", "busy":
                            guard let call = ringing else {
                                stack.show("nothing is ringing")
                                continue
                            }
                            let status: RejectStatus = line.hasPrefix("b") ? .busy : .rejected
                            let result = try await client.rejectCall(sessionID: call.sessionID, status: status)
                            ringing = nil
                            stack.show(
                                "declined: the call is \(result.status.rawValue)",
                                ["session_id": call.sessionID.uuidString.lowercased()])
                        case "e", "end":
                            guard let call = current ?? client.activeCall else {
                                stack.show("no call to end")
                                continue
                            }
                            let result = try await client.endCall(sessionID: call.sessionID)
                            current = nil
                            client.clearActiveCall()
                            stack.show(
                                "ended after \(result.durationSeconds ?? 0) s",
                                ["session_id": call.sessionID.uuidString.lowercased()])
                        case "q", "quit":
                            return
                        case "":
                            continue
                        default:
                            stack.show("unknown key '\(line)': a accept, r reject, b busy, e end, q quit")
                        }
                    } catch let error as RingingError {
                        stack.show("refused: \(error)", ["error": error.code.rawValue])
                    }
                case .endOfInput, .interrupt:
                    return
                }
            }
        }
    }

    func describe(_ notification: RingingNotification) {
        let call = notification.call
        let who = call.initiator
        let text: String
        switch notification.name {
        case .incomingCallReceived:
            text = "incoming \(call.callType.rawValue) call from \(who) — a to accept, r to reject, b busy"
        case .incomingCallCanceled: text = "\(who) stopped calling (\(call.status.rawValue))"
        case .answeredElsewhere: text = "answered on \(notification.deviceID ?? "another device")"
        case .rejectedElsewhere: text = "declined on \(notification.deviceID ?? "another device")"
        case .outgoingCallRinging: text = "ringing on \(notification.deviceID ?? "\(call.receiverID)'s device")…"
        case .callEnded:
            let why = call.endReason.map { ", \($0.rawValue.replacingOccurrences(of: "_", with: " "))" } ?? ""
            text = "the call ended (\(call.durationSeconds ?? 0) s\(why))"
        case .outgoingCallAccepted: text = "\(call.receiverID) answered"
        case .outgoingCallRejected: text = "the call was not answered: \(call.status.rawValue)"
        case .participantJoined: text = "\(notification.actor ?? "someone") joined"
        case .participantLeft:
            let lost = call.participants.filter { $0.leftReason == .connectionLost }.map(\.uid)
            text = notification.actor.map { "\($0) left" } ?? "\(lost.joined(separator: ", ")) lost the connection"
        }
        stack.show(
            text,
            [
                "callback": callbackName(notification.name), "session_id": call.sessionID.uuidString.lowercased(),
                "status": call.status.rawValue,
            ])
    }
}

struct Place: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "call",
        abstract: "Place a call and show each state change live; Ctrl-C cancels (or ends) it.")

    @Argument(help: "Who to call: a user id, or a group id with --group.") var target: String
    @Option(name: .customLong("as"), help: "The caller.") var caller: String =
        ProcessInfo.processInfo.environment["RINGING_UID"] ?? "alice"
    @Flag(help: "Call a group.") var group = false
    @Flag(help: "A video call (audio by default).") var video = false
    @Option(help: "Ring for this many seconds (5…300).") var timeout: Int = 45
    @OptionGroup var stack: StackOptions

    func run() async throws {
        guard (5...300).contains(timeout) else { throw ValidationError("--timeout must be from 5 to 300 seconds") }
        try await stack.withClient(as: caller, device: "ringctl-call") { client in
            let events = inputs(from: client, keyboard: false, interrupt: true)
            let call = try await client.initiateCall(
                receiverID: target, receiverType: group ? .group : .user, callType: video ? .video : .audio, timeout: timeout)
            let session = call.sessionID
            if call.status.isTerminal {
                stack.show(
                    "\(target) is \(call.status.rawValue)",
                    ["session_id": session.uuidString.lowercased(), "status": call.status.rawValue])
                return
            }
            stack.show(
                "calling \(target)… (Ctrl-C cancels)",
                ["session_id": session.uuidString.lowercased(), "status": call.status.rawValue])
            var status = call.status
            for await input in events {
                switch input {
                case .notification(let notification) where notification.call.sessionID == session:
                    status = notification.call.status
                    stack.show(
                        "\(callbackName(notification.name)): the call is \(status.rawValue)",
                        ["callback": callbackName(notification.name), "status": status.rawValue])
                    if status.isTerminal { return }
                case .interrupt:
                    let result =
                        status == .ongoing
                        ? try await client.endCall(sessionID: session)
                        : try await client.rejectCall(sessionID: session, status: .cancelled)
                    stack.show(
                        "\(status == .ongoing ? "ended" : "cancelled"): the call is \(result.status.rawValue)",
                        ["status": result.status.rawValue])
                    return
                default:
                    continue
                }
            }
        }
    }
}
