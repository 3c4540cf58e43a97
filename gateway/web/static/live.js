// Live data for one person: the gateway's WebSocket stream when it exists, else polling.
// Feature detection: try the stream; if it cannot be opened (no such endpoint, refused), poll
// every `pollMs` and retry the stream now and then. While the stream is open, a slow poll still
// runs as a safety net, so a silently dead socket never freezes the screen.

import { currentSession } from "./api.js";

const STREAM_PATH = "/api/v1/stream";
const STREAM_RETRY_MS = 60000;
const SAFETY_POLL_MS = 60000;

export function openLiveFeed(personId, { pollMs, poll, onReading, onEvent, onMode }) {
  let closed = false;
  let socket = null;
  let pollTimer = null;
  let retryTimer = null;

  const startPolling = (everyMs) => {
    clearInterval(pollTimer);
    pollTimer = setInterval(() => { if (!closed) poll().catch(() => {}); }, everyMs);
  };

  const tryStream = () => {
    const session = currentSession();
    if (closed || !session || typeof WebSocket === "undefined") return;
    const url = new URL(STREAM_PATH, location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    try {
      socket = new WebSocket(url);
    } catch {
      return;
    }
    socket.addEventListener("open", () => {
      // The token goes in the first message, never in the URL (URLs end up in logs).
      socket.send(JSON.stringify({ type: "auth", access_token: session.access }));
    });
    socket.addEventListener("message", (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "ready" && !opened) {
        socket.send(JSON.stringify({ type: "subscribe", person_ids: [personId] }));
      } else if (msg.type === "subscribed" && msg.person_ids.includes(personId)) {
        opened = true;
        onMode("stream");
        startPolling(Math.max(pollMs * 4, SAFETY_POLL_MS));
        poll().catch(() => {}); // whatever arrived between the first load and the subscription
      } else if (msg.type === "gap") {
        poll().catch(() => {}); // the server dropped messages for us: reload
      } else if (msg.person_id === personId) {
        if (msg.type === "reading") onReading(msg.data);
        else onEvent(msg);
      }
    });
    socket.addEventListener("close", () => {
      socket = null;
      if (closed) return;
      onMode("poll");
      startPolling(pollMs);
      if (opened) poll().catch(() => {});
      clearTimeout(retryTimer);
      retryTimer = setTimeout(tryStream, STREAM_RETRY_MS);
    });
  };

  onMode("poll");
  startPolling(pollMs);
  tryStream();
  return {
    close() {
      closed = true;
      clearInterval(pollTimer);
      clearTimeout(retryTimer);
      if (socket) socket.close();
    },
  };
}
