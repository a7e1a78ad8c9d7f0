// The operations surface: /healthz, /readyz and /metrics of call-control during a flow.
import CallRules
import Foundation
import RingingContract
import TestSupport
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

@Suite struct OperationsTests {
    static func get(_ port: Int, _ path: String) async throws -> (status: Int, body: String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)/\(path)")!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    @Test func healthReadinessAndMetricsDuringAFlow() async throws {
        let port = Int.random(in: 20_000...29_999)
        try await Scenario.run(httpPort: port) { s in
            #expect(try await Self.get(port, "healthz").status == 200)
            let ready = try await Self.get(port, "readyz")
            #expect(ready.status == 200, "\(ready.body)")
            #expect(ready.body.contains("database: ok") && ready.body.contains("broker (consume): ok"))

            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let call = try await s.call(alice, bob, timeout: 5)
            _ = try await s.act(.get, mallory(s), call.sessionID)
            try await alice.expect(.outgoingCallRejected, call.sessionID, timeout: .seconds(60))

            // The timer fired (alice was told), and the relay has refreshed the gauges since the
            // start (it does every second; the call rang for five).
            let metrics = try await Self.get(port, "metrics").body
            for name in [
                #"ringing_requests_total{type="call.initiate",outcome="ok"}"#,
                #"ringing_requests_total{type="call.get",outcome="forbidden"}"#,
                "ringing_request_duration_seconds_bucket", "ringing_outbox_backlog", "ringing_outbox_oldest_age_seconds",
                "ringing_ring_timers_pending", "ringing_ring_timer_lateness_seconds_bucket", "ringing_active_calls",
                #"ringing_amqp_reconnects{connection="publish"}"#,
            ] {
                #expect(metrics.contains(name), "\(name) is missing from /metrics")
            }
        }
    }

    func mallory(_ s: Scenario) async throws -> Party { try await s.party("mallory") }
}

@Suite struct TraceContextTests {
    @Test func aRequestsTraceparentFollowsTheCallIntoEventsAndNotifications() async throws {
        try await Scenario.run { s in
            let alice = try await s.party("alice")
            let bob = try await s.party("bob")
            let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            let body = try JSONEncoder().encode([
                "auth_token": alice.token, "receiver_id": bob.uid, "receiver_type": "user", "call_type": "audio",
            ])
            let reply = try await s.client.send(RequestType.initiate.rawValue, body: body, traceparent: traceparent)
            let call = try Scenario.call(reply)
            // Same trace, a new span for call-control's handling (the parent span is the request).
            let incoming = try #require(try await bob.expect(.incomingCallReceived, call.sessionID).traceparent)
            #expect(incoming.hasPrefix("00-4bf92f3577b34da6a3ce929d0e0e4736-"))
            #expect(incoming.hasSuffix("-01"))
            #expect(incoming != traceparent)
            #expect(
                try await s.expectEvent(.initiated, call.sessionID).traceparent == incoming,
                "one span: the event and the notification")
            // A request without one starts no trace.
            let carol = try await s.party("carol")
            let dave = try await s.party("dave")
            let other = try await s.call(carol, dave)
            #expect(try await dave.expect(.incomingCallReceived, other.sessionID).traceparent == nil)
        }
    }
}
