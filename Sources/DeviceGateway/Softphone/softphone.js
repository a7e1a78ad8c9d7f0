/*
 * Ringing web softphone: plain JavaScript, no build step, nothing from elsewhere (the page's
 * Content-Security-Policy allows only this gateway).
 *
 * Sign-in: POST /v1/dev/token {"uid"} → {"ok":true,"uid","auth_token","expires_at"} where the
 * gateway runs with the development secret; where that route is 404 the user pastes an auth
 * token instead. uid, token and this tab's device id ("web-…") live in sessionStorage.
 *
 * One WebSocket, ws(s)://<this host>/v1/ws (DESIGN §7):
 *   → {"type":"hello","auth_token":JWT,"device_id":"web-…"}              the first frame
 *   ← {"type":"welcome","uid","device_id","calls":[Call]}                  calls I ring in or am in now
 *   ← {"type":"notification","name":N,"notification":{event_id,…,call}}    after the welcome
 *   → {"type":"request","id":ID,"request":"call.accept","body":{…}}        no auth_token in the body
 *   ← {"type":"reply","id":ID,"reply":{"ok":true,…} | {"ok":false,"error":{code,message,field?,status?}}}
 * Notifications are deduplicated by event_id + name, and dropped when their call's sequence is
 * lower than the one this page already has. The socket reconnects by itself (0.5 s doubling to
 * 10 s, with jitter); requests still without a reply are sent again with the same id (the
 * server answers a repeated id with the original reply), and every welcome is applied as the
 * truth about what rings and what is ongoing. Close code 4001 (token expired or invalid) goes
 * back to sign-in.
 *
 * Showing an incoming call plays a Web Audio ring tone and sends the ring receipt
 * (call.ringing, DESIGN §10) once per call; the caller then sees "Ringing…".
 */
"use strict";

(() => {
  // ---------------------------------------------------------------- small helpers

  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;

  /** Builds an element: el("div", {class, text, testid, attrs, on}, ...children). */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    if (props.class) node.className = props.class;
    if (props.text !== undefined) node.textContent = props.text;
    if (props.testid) node.dataset.testid = props.testid;
    for (const [name, value] of Object.entries(props.attrs || {})) node.setAttribute(name, value);
    for (const [name, handler] of Object.entries(props.on || {})) node.addEventListener(name, handler);
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function randomId(length) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
  }

  function mmss(seconds) {
    const s = Math.max(0, Math.floor(seconds || 0));
    const h = Math.floor(s / 3600);
    const m = String(Math.floor((s % 3600) / 60)).padStart(2, "0");
    const rest = `${m}:${String(s % 60).padStart(2, "0")}`;
    return h > 0 ? `${h}:${rest}` : rest;
  }

  function errorText(error) {
    if (!error) return "no answer from the server";
    const field = error.field ? ` (field: ${error.field})` : "";
    const status = error.status ? ` [call is ${error.status}]` : "";
    return `${error.message || error.code}${field}${status}`;
  }

  /** The `sub` of a JWT, or null: only to show who a pasted token signs in. */
  function jwtSubject(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
      return typeof claims.sub === "string" ? claims.sub : null;
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- state

  const idle = () => ({ phase: "idle", session: null, peer: "", text: "", cancelWanted: false });

  const state = {
    uid: null,
    token: null,
    deviceId: store.getItem("ringing.device") || `web-${randomId(12)}`,
    connection: "signed out",
    outgoing: idle(), // phase: idle → calling → ringing → done (or → ongoing)
    ringing: new Map(), // session id → call, the calls this page rings for
    ongoing: null, // { call, token, tokenError }
    incomingText: "",
    endedText: "",
    history: [],
  };
  store.setItem("ringing.device", state.deviceId);

  const sequences = new Map(); // session id → highest call sequence seen
  const seenEvents = new Set(); // event_id|name of the notifications handled
  const receipts = new Set(); // sessions whose ring receipt was sent

  /** Records a call's sequence; false when it is older than what this page has. */
  function fresh(call) {
    const known = sequences.get(call.session_id);
    if (known !== undefined && call.sequence < known) return false;
    sequences.set(call.session_id, Math.max(known || 0, call.sequence || 0));
    return true;
  }

  const me = (call) => (call.participants || []).find((p) => p.uid === state.uid);
  const peerOf = (call) =>
    call.initiator === state.uid
      ? call.receiver_type === "group" ? `group ${call.receiver_id}` : call.receiver_id
      : call.initiator;

  // ---------------------------------------------------------------- ring tone (Web Audio)

  const tone = {
    context: null,
    nodes: null,
    timer: null,
    /** Creates or resumes the AudioContext: call it from a click so autoplay rules allow it. */
    unlock() {
      try {
        if (!this.context) {
          this.context = new (window.AudioContext || window.webkitAudioContext)();
          this.context.addEventListener("statechange", () => render()); // the "blocked" hint
        }
        if (this.context.state === "suspended") this.context.resume().catch(() => {});
      } catch {
        this.context = null;
      }
    },
    get blocked() {
      return !this.context || this.context.state !== "running";
    },
    /** 440 + 480 Hz, 2 s on, 4 s off: the North American ring-back cadence. */
    start() {
      if (this.nodes) return;
      this.unlock();
      const ctx = this.context;
      if (!ctx) return;
      const gain = ctx.createGain();
      gain.gain.value = 0;
      gain.connect(ctx.destination);
      const oscillators = [440, 480].map((frequency) => {
        const osc = ctx.createOscillator();
        osc.frequency.value = frequency;
        osc.connect(gain);
        osc.start();
        return osc;
      });
      const burst = () => {
        const t = ctx.currentTime;
        gain.gain.setValueAtTime(0, t);
        gain.gain.linearRampToValueAtTime(0.12, t + 0.03);
        gain.gain.setValueAtTime(0.12, t + 1.97);
        gain.gain.linearRampToValueAtTime(0, t + 2);
      };
      burst();
      this.timer = setInterval(burst, 6000);
      this.nodes = { gain, oscillators };
    },
    stop() {
      clearInterval(this.timer);
      if (!this.nodes) return;
      for (const osc of this.nodes.oscillators) {
        osc.stop();
        osc.disconnect();
      }
      this.nodes.gain.disconnect();
      this.nodes = null;
    },
  };

  // ---------------------------------------------------------------- the socket

  const conn = { ws: null, welcomed: false, attempt: 0, timer: null, retryAt: 0, countdown: null };
  const pending = new Map(); // request id → { type, body, resolve, retries }
  let requestCounter = 0;

  function connect() {
    clearTimeout(conn.timer);
    clearInterval(conn.countdown);
    setConnection("connecting");
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    conn.ws = ws;
    conn.welcomed = false;
    ws.addEventListener("open", () => {
      ws.send(JSON.stringify({ type: "hello", auth_token: state.token, device_id: state.deviceId }));
    });
    ws.addEventListener("message", (event) => {
      if (ws === conn.ws) onFrame(event.data);
    });
    ws.addEventListener("close", (event) => {
      if (ws === conn.ws) onClose(event);
    });
  }

  function onClose(event) {
    conn.ws = null;
    conn.welcomed = false;
    if (!state.token) return; // signed out
    if (event.code === 4001) {
      signOut(`Signed out: ${event.reason || "the auth token expired or is not valid"}. Sign in again.`);
      return;
    }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    const ceiling = Math.min(10000, 500 * 2 ** conn.attempt);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    conn.attempt += 1;
    conn.retryAt = Date.now() + delay;
    conn.timer = setTimeout(connect, delay);
    const show = () => setConnection(`reconnecting in ${Math.max(1, Math.ceil((conn.retryAt - Date.now()) / 1000))} s`);
    show();
    conn.countdown = setInterval(show, 250);
  }

  /** Reconnects at once when the browser says it is back online. */
  window.addEventListener("online", () => {
    if (state.token && !conn.ws) connect();
  });

  function onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.type === "welcome") onWelcome(frame);
    else if (frame.type === "notification") onNotification(frame.name, frame.notification);
    else if (frame.type === "reply") onReply(frame.id, frame.reply);
  }

  /** Sends a request; resolves with its reply (sent again after a reconnect, same id). */
  function request(type, body) {
    requestCounter += 1;
    const id = `${state.deviceId}-${Date.now().toString(36)}-${requestCounter}`;
    return new Promise((resolve) => {
      pending.set(id, { type, body, resolve, retries: 0 });
      transmit(id);
    });
  }

  function transmit(id) {
    const entry = pending.get(id);
    if (!entry || !conn.welcomed || conn.ws.readyState !== WebSocket.OPEN) return;
    conn.ws.send(JSON.stringify({ type: "request", id, request: entry.type, body: entry.body }));
  }

  function onReply(id, reply) {
    const entry = pending.get(id);
    if (!entry) return;
    // "unavailable" is transient and the request may still apply: ask again with the same id.
    if (reply && reply.ok === false && reply.error && reply.error.code === "unavailable" && entry.retries < 3) {
      entry.retries += 1;
      setTimeout(() => transmit(id), 1000 * entry.retries);
      return;
    }
    pending.delete(id);
    entry.resolve(reply || { ok: false, error: { code: "unavailable", message: "empty reply" } });
  }

  // ---------------------------------------------------------------- welcome: the snapshot

  function onWelcome(frame) {
    conn.welcomed = true;
    conn.attempt = 0;
    clearInterval(conn.countdown);
    state.uid = frame.uid;
    setConnection("connected");
    const unanswered = [...pending.keys()]; // sent before this socket: send again, same ids
    applySnapshot(frame.calls || []);
    for (const id of unanswered) transmit(id);
    refreshHistory();
    render();
  }

  function applySnapshot(calls) {
    const live = new Set();
    for (const call of calls) {
      live.add(call.session_id);
      fresh(call);
      const mine = me(call);
      if (call.initiator === state.uid && call.status === "initiated") adoptOutgoing(call);
      else if (mine && mine.status === "ringing") startRinging(call);
      else if (mine && mine.status === "accepted" && call.status === "ongoing") enterOngoing(call);
    }
    // What ended while this page was away: stop it, and look up how it ended.
    for (const id of [...state.ringing.keys()]) {
      if (!live.has(id)) stopRinging(id, "Missed: the call ended while this page was offline");
    }
    if (state.ongoing && !live.has(state.ongoing.call.session_id)) lookUp(state.ongoing.call.session_id);
    const out = state.outgoing;
    if ((out.phase === "calling" || out.phase === "ringing") && out.session && !live.has(out.session)) lookUp(out.session);
  }

  function lookUp(sessionId) {
    request("call.get", { session_id: sessionId }).then((reply) => {
      if (reply.ok) applyFinished(reply.call);
      else if (state.ongoing && state.ongoing.call.session_id === sessionId) endOngoing(null);
    });
  }

  /** A call this page showed, now known to be over (or answered). */
  function applyFinished(call) {
    if (call.status === "ended") endOngoing(call);
    else if (call.initiator === state.uid) applyOutgoingCall(call);
  }

  // ---------------------------------------------------------------- notifications

  const handlers = {
    "incoming_call.received": (call) => startRinging(call),
    "incoming_call.canceled": (call) => {
      const mine = me(call);
      const why = call.status === "cancelled" ? "Caller cancelled" : mine && mine.status === "missed" ? "Missed" : "Missed call";
      stopRinging(call.session_id, `${why} (${call.initiator})`);
      refreshHistory();
    },
    "incoming_call.answered_elsewhere": (call, n) => {
      if (n.device_id !== state.deviceId) stopRinging(call.session_id, "Answered on another device");
    },
    "incoming_call.rejected_elsewhere": (call, n) => {
      if (n.device_id !== state.deviceId) stopRinging(call.session_id, "Declined on another device");
    },
    "outgoing_call.ringing": (call) => {
      if (isMyOutgoing(call)) setOutgoing("ringing", "Ringing…");
    },
    "outgoing_call.accepted": (call) => {
      if (isMyOutgoing(call)) enterOngoing(call);
    },
    "outgoing_call.rejected": (call) => {
      if (isMyOutgoing(call)) applyOutgoingCall(call);
      else refreshHistory();
    },
    "call.ended": (call) => endOngoing(call),
    "call.participant_joined": (call) => updateCall(call),
    "call.participant_left": (call) => updateCall(call),
  };

  function onNotification(name, notification) {
    if (!notification || !notification.call) return;
    const key = `${notification.event_id}|${name}`;
    if (seenEvents.has(key)) return;
    seenEvents.add(key);
    if (seenEvents.size > 1000) seenEvents.delete(seenEvents.values().next().value);
    if (!fresh(notification.call)) return;
    const handler = handlers[name];
    if (handler) handler(notification.call, notification);
    render();
  }

  function updateCall(call) {
    if (state.ongoing && state.ongoing.call.session_id === call.session_id) state.ongoing.call = call;
    if (state.ringing.has(call.session_id)) state.ringing.set(call.session_id, call);
  }

  // ---------------------------------------------------------------- outgoing calls

  function isMyOutgoing(call) {
    const out = state.outgoing;
    if (out.phase !== "calling" && out.phase !== "ringing") return false;
    if (out.session === call.session_id) return true;
    // A notification may overtake the reply to call.initiate.
    if (out.session === null && call.initiator === state.uid) {
      out.session = call.session_id;
      return true;
    }
    return false;
  }

  function setOutgoing(phase, text) {
    Object.assign(state.outgoing, { phase, text });
    render();
  }

  function adoptOutgoing(call) {
    const rang = (call.participants || []).some((p) => p.role !== "initiator" && p.rang_at);
    state.outgoing = { ...idle(), phase: rang ? "ringing" : "calling", session: call.session_id, peer: peerOf(call) };
    state.outgoing.text = rang ? "Ringing…" : "Calling…";
  }

  function placeCall(event) {
    event.preventDefault();
    if (!conn.welcomed || isBusy()) return;
    tone.unlock();
    const form = $("dial-form");
    const receiverId = $("callee").value.trim();
    const body = {
      receiver_id: receiverId,
      receiver_type: form.elements["receiver-type"].value,
      call_type: form.elements["call-type"].value,
      timeout_s: Number($("timeout").value || 45),
    };
    state.outgoing = { ...idle(), phase: "calling", text: "Calling…", peer: body.receiver_type === "group" ? `group ${receiverId}` : receiverId };
    state.endedText = "";
    render();
    request("call.initiate", body).then(onInitiated);
  }

  function onInitiated(reply) {
    if (!reply.ok) {
      setOutgoing("done", `Call failed: ${errorText(reply.error)}`);
      return;
    }
    const call = reply.call;
    if (call.initiator !== state.uid) {
      // Glare: my call accepted the callee's ringing call to me instead.
      state.outgoing = idle();
      enterOngoing(call);
      return;
    }
    state.outgoing.session = call.session_id;
    if (state.outgoing.cancelWanted) cancelCall();
    else if (fresh(call)) applyOutgoingCall(call);
  }

  const outcomes = { rejected: "Declined", busy: "Busy", unanswered: "No answer", cancelled: "Cancelled" };

  function applyOutgoingCall(call) {
    if (call.status === "initiated") {
      if (state.outgoing.phase !== "ringing") adoptOutgoing(call);
    } else if (call.status === "ongoing") {
      enterOngoing(call);
    } else {
      setOutgoing("done", outcomes[call.status] || `Call ${call.status}`);
      refreshHistory();
    }
    render();
  }

  function cancelCall() {
    const out = state.outgoing;
    if (!out.session) {
      out.cancelWanted = true; // sent once the reply to call.initiate names the session
      setOutgoing(out.phase, "Cancelling…");
      return;
    }
    const session = out.session;
    request("call.reject", { session_id: session, status: "cancelled" }).then((reply) => {
      if (state.outgoing.session !== session) return;
      if (reply.ok) applyOutgoingCall(reply.call);
      else if (state.outgoing.phase !== "done") state.outgoing.text = `Could not cancel: ${errorText(reply.error)}`;
      render();
    });
  }

  const isBusy = () => state.outgoing.phase === "calling" || state.outgoing.phase === "ringing" || state.ongoing !== null;

  // ---------------------------------------------------------------- incoming calls

  function startRinging(call) {
    const id = call.session_id;
    if (state.ongoing && state.ongoing.call.session_id === id) return;
    const already = state.ringing.has(id);
    state.ringing.set(id, call);
    if (already) return;
    state.incomingText = "";
    tone.start();
    if (!receipts.has(id)) {
      receipts.add(id); // the ring receipt: this page shows the ring (DESIGN §10)
      request("call.ringing", { session_id: id });
    }
    render();
  }

  function stopRinging(id, text) {
    if (!state.ringing.delete(id)) return false;
    if (text) state.incomingText = text;
    if (state.ringing.size === 0) tone.stop();
    render();
    return true;
  }

  /** Accept, decline or busy: the answer to the ringing call `id`. */
  function answer(id, action) {
    tone.unlock();
    const labels = { accept: "Answering…", rejected: "Declining…", busy: "Sending busy…" };
    stopRinging(id, labels[action]);
    const request_ =
      action === "accept"
        ? request("call.accept", { session_id: id })
        : request("call.reject", { session_id: id, status: action });
    request_.then((reply) => {
      if (!reply.ok) state.incomingText = `Could not ${action === "accept" ? "accept" : "answer"}: ${errorText(reply.error)}`;
      else if (action === "accept") {
        state.incomingText = "Accepted";
        fresh(reply.call);
        enterOngoing(reply.call);
      } else {
        state.incomingText = action === "busy" ? "Busy" : "Declined";
        refreshHistory();
      }
      render();
    });
  }

  // ---------------------------------------------------------------- ongoing calls

  let ticker = null;

  function enterOngoing(call) {
    if (state.ringing.delete(call.session_id) && state.ringing.size === 0) tone.stop();
    if (state.outgoing.session === call.session_id) state.outgoing = idle();
    const same = state.ongoing && state.ongoing.call.session_id === call.session_id;
    state.ongoing = { call, token: same ? state.ongoing.token : null, tokenError: null };
    state.endedText = "";
    if (!same) fetchCallToken(call.session_id);
    clearInterval(ticker);
    ticker = setInterval(renderDuration, 1000);
    render();
  }

  function fetchCallToken(sessionId) {
    request("token.generate", { session_id: sessionId }).then((reply) => {
      const ongoing = state.ongoing;
      if (!ongoing || ongoing.call.session_id !== sessionId) return;
      if (reply.ok) ongoing.token = reply.token;
      else ongoing.tokenError = errorText(reply.error);
      render();
    });
  }

  function endCall() {
    const ongoing = state.ongoing;
    if (!ongoing) return;
    const session = ongoing.call.session_id;
    request("call.end", { session_id: session }).then((reply) => {
      if (reply.ok) endOngoing(reply.call);
      else if (reply.error && reply.error.code === "invalid_state") lookUp(session);
      else if (state.ongoing) state.ongoing.tokenError = `Could not end: ${errorText(reply.error)}`;
      render();
    });
  }

  const reasons = { connection_lost: "connection lost", max_duration: "maximum duration", unanswered: "unanswered" };

  /** The ongoing call is over: `call` says how (null when unknown). */
  function endOngoing(call) {
    if (!state.ongoing || (call && state.ongoing.call.session_id !== call.session_id)) {
      refreshHistory();
      return;
    }
    const parts = ["Call ended"];
    if (call) {
      parts.push(mmss(call.duration_s));
      if (call.end_reason) parts.push(reasons[call.end_reason] || call.end_reason);
      else if (call.ended_by) parts.push(call.ended_by === state.uid ? "you hung up" : `${call.ended_by} hung up`);
    }
    state.endedText = parts.join(" · ");
    state.ongoing = null;
    clearInterval(ticker);
    refreshHistory();
    render();
  }

  // ---------------------------------------------------------------- history

  let historyTimer = null;

  function refreshHistory() {
    clearTimeout(historyTimer);
    historyTimer = setTimeout(() => {
      if (!state.token) return;
      request("call.history", { limit: 20 }).then((reply) => {
        if (reply.ok) state.history = reply.calls || [];
        renderHistory();
      });
    }, 150);
  }

  // ---------------------------------------------------------------- rendering

  function setConnection(text) {
    state.connection = text;
    const node = $("connection");
    node.textContent = text;
    node.className = `connection state-${text.split(" ")[0].replace(/\W/g, "") || "signed"}`;
  }

  function render() {
    renderIncoming();
    renderOngoing();
    renderOutgoing();
    renderNotices();
    $("dial-form").hidden = isBusy(); // a phone hides its dialer during a call
    $("call-button").disabled = !conn.welcomed;
  }

  /** Rebuilds a slot only when what it shows changed (so buttons stay the same elements). */
  function fillSlot(slot, key, build) {
    if (slot.dataset.key === key) return;
    slot.dataset.key = key;
    slot.replaceChildren();
    if (key) slot.append(build());
  }

  function renderIncoming() {
    const [id, call] = state.ringing.entries().next().value || [];
    const key = call ? `${id}/${call.sequence}/${tone.blocked}` : "";
    fillSlot($("incoming-slot"), key, () => incomingPanel(id, call));
  }

  function incomingPanel(id, call) {
    const group = call.receiver_type === "group" ? ` · group ${call.receiver_id}` : "";
    const button = (text, cls, testid, action) =>
      el("button", { class: `btn ${cls}`, text, testid, attrs: { type: "button" }, on: { click: () => answer(id, action) } });
    return (
      el("section", { class: "card incoming", testid: "incoming", attrs: { "data-session": id } },
        el("div", { class: "kind", text: `Incoming ${call.call_type} call${group}` }),
        el("div", { class: "avatar", text: call.initiator.slice(0, 1) }),
        el("div", { class: "caller", text: call.initiator, testid: "incoming-caller" }),
        el("div", { class: "sub", text: call.call_type === "video" ? "Video call" : "Audio call" }),
        el("div", { class: "actions" },
          button("Accept", "btn-accept", "accept-button", "accept"),
          button("Decline", "btn-decline", "decline-button", "rejected"),
          button("Busy", "btn-busy", "busy-button", "busy")),
        tone.blocked ? el("div", { class: "muted-hint", text: "The browser blocks the ring tone until you click this page." }) : null));
  }

  function renderOngoing() {
    const ongoing = state.ongoing;
    const key = ongoing ? `${ongoing.call.session_id}/${ongoing.call.sequence}/${ongoing.token}/${ongoing.tokenError}` : "";
    fillSlot($("ongoing-slot"), key, () => ongoingPanel(ongoing));
  }

  function ongoingPanel(ongoing) {
    const call = ongoing.call;
    const members = call.receiver_type === "group"
      ? el("ul", { class: "participants", testid: "participants" },
        ...(call.participants || []).map((p) => el("li", {}, el("span", { text: p.uid }), el("span", { text: p.status }))))
      : null;
    const token = ongoing.token
      ? el("div", { class: "token-row" },
        el("code", { class: "token", text: `${ongoing.token.slice(0, 28)}…`, testid: "call-token", attrs: { title: "call token (JWT)" } }),
        el("button", { class: "btn btn-quiet btn-small", text: "Copy", testid: "copy-token", attrs: { type: "button" }, on: { click: copyToken } }))
      : el("div", { class: "hint", text: ongoing.tokenError ? `Call token: ${ongoing.tokenError}` : "Fetching the call token…" });
    return (
      el("section", { class: "card ongoing", testid: "ongoing", attrs: { "data-session": call.session_id } },
        el("div", { class: "kind", text: `${call.call_type} call · ongoing` }),
        el("div", { class: "avatar", text: peerOf(call).slice(0, 1) }),
        el("div", { class: "peer", text: peerOf(call), testid: "ongoing-peer" }),
        el("div", { class: "duration", text: durationText(call), testid: "duration", attrs: { id: "duration" } }),
        members,
        token,
        el("div", { class: "hint", text: "The media session itself is out of scope: a media server would take this token." }),
        el("button", { class: "btn btn-end", text: "End call", testid: "end-button", attrs: { type: "button" }, on: { click: endCall } })));
  }

  const durationText = (call) => (call.answered_at ? mmss((Date.now() - Date.parse(call.answered_at)) / 1000) : "00:00");

  function renderDuration() {
    const node = $("duration");
    if (node && state.ongoing) node.textContent = durationText(state.ongoing.call);
  }

  function copyToken(event) {
    const token = state.ongoing && state.ongoing.token;
    if (!token || !navigator.clipboard) return;
    navigator.clipboard.writeText(token).then(
      () => (event.target.textContent = "Copied"),
      () => (event.target.textContent = "Copy failed"));
  }

  function renderOutgoing() {
    const out = state.outgoing;
    const card = $("outgoing");
    card.hidden = out.phase === "idle";
    card.className = `card outgoing phase-${out.phase}`;
    $("outgoing-peer").textContent = out.peer;
    $("outgoing-state").textContent = out.text;
    $("cancel-button").hidden = out.phase !== "calling" && out.phase !== "ringing";
  }

  function renderNotices() {
    const incoming = $("incoming-state");
    incoming.textContent = state.incomingText;
    incoming.hidden = !state.incomingText;
    const ended = $("call-ended");
    ended.textContent = state.endedText;
    ended.hidden = !state.endedText;
  }

  function renderHistory() {
    const list = $("history");
    list.replaceChildren(...state.history.map(historyRow));
    $("history-empty").hidden = state.history.length > 0;
  }

  function historyRow(call) {
    const outgoing = call.initiator === state.uid;
    const when = new Date(call.initiated_at);
    const time = when.toDateString() === new Date().toDateString()
      ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : when.toLocaleDateString([], { month: "short", day: "numeric" });
    const what = `${outgoing ? "Outgoing" : "Incoming"} ${call.call_type} · ${call.status}${call.end_reason ? ` (${reasons[call.end_reason] || call.end_reason})` : ""}`;
    return el("li", {
      class: `history-row status-${call.status}`, testid: "history-row",
      attrs: { "data-session": call.session_id, "data-status": call.status, "data-direction": outgoing ? "outgoing" : "incoming" },
    },
    el("span", { class: "dir", text: outgoing ? "↗" : "↙", attrs: { title: outgoing ? "outgoing" : "incoming" } }),
    el("span", { class: "who", text: peerOf(call) }),
    el("span", { class: "when", text: time }),
    el("span", { class: "what", text: what }),
    el("span", { class: "len", text: call.duration_s != null ? mmss(call.duration_s) : "—" }));
  }

  // ---------------------------------------------------------------- sign in and out

  function showSignIn(message, tokenForm = false) {
    $("signin").hidden = false;
    $("main").hidden = true;
    $("dev-form").hidden = tokenForm;
    $("token-form").hidden = !tokenForm;
    $("signin-error").textContent = message || "";
  }

  async function devSignIn(event) {
    event.preventDefault();
    tone.unlock();
    const uid = $("signin-uid").value.trim();
    $("signin-error").textContent = "";
    let response;
    try {
      response = await fetch("/v1/dev/token", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ uid }),
      });
    } catch (error) {
      $("signin-error").textContent = `The gateway did not answer: ${error.message}`;
      return;
    }
    if (response.status === 404) {
      showSignIn("This gateway runs with a real auth secret, so there is no sign-in by user id: paste an auth token issued for you.", true);
      return;
    }
    const body = await response.json().catch(() => null);
    if (!body || !body.ok) {
      $("signin-error").textContent = body ? errorText(body.error) : `HTTP ${response.status}`;
      return;
    }
    signIn(body.uid, body.auth_token);
  }

  function tokenSignIn(event) {
    event.preventDefault();
    tone.unlock();
    const token = $("signin-token").value.trim();
    const uid = jwtSubject(token);
    if (!uid) {
      $("signin-error").textContent = "That is not an auth token: expected a JWT whose sub is your user id.";
      return;
    }
    signIn(uid, token);
  }

  function signIn(uid, token) {
    state.uid = uid;
    state.token = token;
    store.setItem("ringing.uid", uid);
    store.setItem("ringing.token", token);
    $("signin").hidden = true;
    $("main").hidden = false;
    $("signed-in-as").textContent = uid;
    $("device-id").textContent = `device ${state.deviceId}`;
    render();
    connect();
  }

  function signOut(message) {
    state.token = null;
    store.removeItem("ringing.uid");
    store.removeItem("ringing.token");
    clearTimeout(conn.timer);
    clearInterval(conn.countdown);
    clearInterval(ticker);
    const ws = conn.ws;
    conn.ws = null;
    conn.welcomed = false;
    if (ws) ws.close(1000, "signed out");
    tone.stop();
    pending.clear();
    Object.assign(state, { uid: null, outgoing: idle(), ongoing: null, incomingText: "", endedText: "", history: [] });
    state.ringing.clear();
    setConnection("signed out");
    render();
    renderHistory();
    showSignIn(typeof message === "string" ? message : "");
  }

  function start() {
    $("dev-form").addEventListener("submit", devSignIn);
    $("token-form").addEventListener("submit", tokenSignIn);
    $("use-token").addEventListener("click", (e) => { e.preventDefault(); showSignIn("", true); });
    $("use-dev").addEventListener("click", (e) => { e.preventDefault(); showSignIn("", false); });
    $("signout").addEventListener("click", () => signOut(""));
    $("dial-form").addEventListener("submit", placeCall);
    $("cancel-button").addEventListener("click", cancelCall);
    $("history-refresh").addEventListener("click", refreshHistory);
    // After a reload there was no sign-in click: the first click unlocks the ring tone.
    const unlock = () => { tone.unlock(); render(); };
    document.addEventListener("pointerdown", unlock, { once: true });
    document.addEventListener("keydown", unlock, { once: true });

    const uid = store.getItem("ringing.uid");
    const token = store.getItem("ringing.token");
    if (uid && token) signIn(uid, token);
    else showSignIn("");
  }

  /** Read-only debug information, for tests and the curious. */
  Object.defineProperty(window, "ringing", {
    value: Object.freeze({
      get deviceId() { return state.deviceId; },
      get uid() { return state.uid; },
      get connection() { return state.connection; },
      get toneOn() { return tone.nodes !== null; },
      get state() {
        return {
          outgoing: { ...state.outgoing },
          ringing: [...state.ringing.keys()],
          ongoing: state.ongoing ? state.ongoing.call.session_id : null,
          pendingRequests: pending.size,
        };
      },
    }),
  });

  start();
})();
