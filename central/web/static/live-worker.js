// One live stream per browser, shared by every tab of the dashboard.
//
// Browsers allow six HTTP/1.1 connections per host. With an EventSource in
// each tab, the sixth tab used them all: Acknowledge hung, a seventh tab did
// not load, and the live dot stayed green. This SharedWorker holds the one
// /api/stream of the browser and hands each message to every tab (port) that
// joined. A tab joins with its session's key; a tab of another session (a
// logout and a new login) makes the worker reconnect as that session.
"use strict";
const ports = new Set();
let es = null;
let session = null;
let connected = false;
let retryTimer = null;

function broadcast(msg) {
  for (const port of ports) {
    try { port.postMessage(msg); } catch (e) { ports.delete(port); }
  }
}

function open() {
  clearTimeout(retryTimer);
  if (es) es.close();
  es = new EventSource("/api/stream");
  es.addEventListener("hello", (m) => {
    connected = true;
    broadcast({ type: "status", on: true, hello: JSON.parse(m.data || "{}") });
  });
  for (const name of ["alarm", "agent", "event", "refresh"]) {
    es.addEventListener(name, (m) => broadcast({ type: name, data: JSON.parse(m.data) }));
  }
  es.addEventListener("resync", () => {
    broadcast({ type: "resync" });
    es.close();
    retryTimer = setTimeout(open, 1000);
  });
  es.onerror = () => {
    connected = false;
    broadcast({ type: "status", on: false });
    // EventSource retries by itself unless the server refused (401 after a logout): then ask the tabs.
    if (es.readyState === EventSource.CLOSED) {
      broadcast({ type: "closed" });
      retryTimer = setTimeout(open, 3000);
    }
  };
}

self.onconnect = (ev) => {
  const port = ev.ports[0];
  ports.add(port);
  port.onmessage = (m) => {
    const msg = m.data || {};
    if (msg.type === "join") {
      if (msg.session !== session || !es) {
        session = msg.session;
        connected = false;
        open();
      } else {
        port.postMessage({ type: "status", on: connected });
      }
    } else if (msg.type === "leave") {
      ports.delete(port);
    } else if (msg.type === "ping") {
      port.postMessage({ type: "pong", tabs: ports.size, on: connected });
    }
  };
  port.start();
};
