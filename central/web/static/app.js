// Gridpatrol control room: live updates over server-sent events, acknowledge
// without a reload, a banner and a beep for every new alarm. No framework, no
// build step: the server renders the pages, this only keeps them current.
(function () {
  "use strict";
  const cfgEl = document.getElementById("gp-config");
  if (!cfgEl) return;
  const cfg = JSON.parse(cfgEl.textContent);
  const page = document.body.dataset.page;
  const live = (window.gpLive = { seen: {}, beeps: 0, connected: false, messages: 0 });

  function t(key, values) {
    let text = (cfg.i18n && cfg.i18n[key]) || key;
    if (values) for (const k in values) text = text.split("{" + k + "}").join(values[k]);
    return text;
  }
  const clockFmt = new Intl.DateTimeFormat(cfg.lang, { timeZone: cfg.tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  const fmtClock = (ms) => (ms ? clockFmt.format(new Date(Number(ms))) : "–");
  function ago(ms) {
    if (!ms) return "";
    const s = Math.max(0, Math.round((Date.now() - Number(ms)) / 1000));
    if (s < 60) return t("{n} s ago", { n: s });
    if (s < 3600) return t("{n} min ago", { n: Math.floor(s / 60) });
    if (s < 86400) return t("{n} h ago", { n: Math.floor(s / 3600) });
    return t("{n} d ago", { n: Math.floor(s / 86400) });
  }
  function refreshAgo(root) {
    (root || document).querySelectorAll("[data-ago]").forEach((el) => { el.textContent = ago(el.dataset.ago); });
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // --- sound -----------------------------------------------------------------
  // Browsers start audio suspended until the page has been clicked once; the
  // button says so, so a fresh shift is never silent without knowing it.
  let audioCtx = null;
  let soundOn = localStorage.getItem("gp-sound") !== "off";
  const soundBtn = document.getElementById("sound");
  function audio() {
    if (!audioCtx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) return null;
      audioCtx = new AC();
      audioCtx.onstatechange = showSound;
    }
    return audioCtx;
  }
  function showSound() {
    if (!soundBtn) return;
    const suspended = !audioCtx || audioCtx.state !== "running";
    soundBtn.classList.toggle("attention", soundOn && suspended);
    soundBtn.setAttribute("aria-pressed", String(soundOn && !suspended));
    soundBtn.textContent = !soundOn ? t("Sound off") : suspended ? t("Enable sound") : t("Sound on");
  }
  function beep() {
    if (!soundOn) return;
    const c = audio();
    if (!c) return;
    if (c.state === "suspended") c.resume();
    const t0 = c.currentTime + 0.02;
    [880, 660, 880, 660].forEach((hz, i) => {
      const osc = c.createOscillator();
      const gain = c.createGain();
      osc.type = "square";
      osc.frequency.value = hz;
      const at = t0 + i * 0.22;
      gain.gain.setValueAtTime(0.0001, at);
      gain.gain.exponentialRampToValueAtTime(0.25, at + 0.01);
      gain.gain.exponentialRampToValueAtTime(0.0001, at + 0.2);
      osc.connect(gain).connect(c.destination);
      osc.start(at);
      osc.stop(at + 0.21);
    });
    live.beeps += 1;
  }
  if (soundBtn) {
    soundBtn.addEventListener("click", () => {
      const c = audio();
      if (soundOn && c && c.state !== "running") c.resume();
      else soundOn = !soundOn;
      localStorage.setItem("gp-sound", soundOn ? "on" : "off");
      showSound();
    });
    audio();
    showSound();
  }
  document.addEventListener("click", () => { if (soundOn && audioCtx && audioCtx.state === "suspended") audioCtx.resume(); }, { once: true });

  // --- alarms ----------------------------------------------------------------
  const activeIds = new Set((cfg.active || []).map(Number));
  const badge = document.getElementById("alarm-count");
  function showCount() {
    if (badge) {
      badge.textContent = String(activeIds.size);
      badge.classList.toggle("hot", activeIds.size > 0);
    }
    const count = document.getElementById("active-count");
    if (count) count.textContent = String(activeIds.size);
    const section = document.querySelector(".active-alarms");
    if (section) section.classList.toggle("quiet", activeIds.size === 0);
    const none = document.getElementById("no-active");
    if (none) none.hidden = activeIds.size > 0;
    document.title = (activeIds.size ? "(" + activeIds.size + ") " : "") + document.title.replace(/^\(\d+\) /, "");
  }

  const KINDS = ["panic", "alarm", "tamper", "agent-offline", "agent-flapping", "suspicious"];
  function kindName(kind) {
    return KINDS.includes(kind) ? t("kind-" + kind) : t("Unknown kind: {kind}", { kind: kind });
  }
  const banner = document.getElementById("banner");
  let bannerAlarm = null;
  function showBanner(a) {
    if (!banner) return;
    bannerAlarm = a.id;
    document.getElementById("banner-text").textContent =
      [kindName(a.kind), a.source, a.agent_name || a.agent, a.unit_name].filter(Boolean).join(" · ");
    document.getElementById("banner-go").href = "/#alarm-" + a.id;
    const ack = document.getElementById("banner-ack");
    if (ack) {
      ack.dataset.id = a.id;
      ack.action = "/alarms/" + a.id + "/ack";
      ack.querySelector("button").disabled = false;
    }
    banner.hidden = false;
    banner.style.animation = "none"; // restart the flashing for each new alarm
    void banner.offsetWidth;
    banner.style.animation = "";
  }
  if (banner) document.getElementById("banner-close").addEventListener("click", () => { banner.hidden = true; });

  async function fetchCard(id) {
    const r = await fetch("/fragments/alarm/" + id, { credentials: "same-origin" });
    if (!r.ok) return null;
    const tpl = document.createElement("template");
    tpl.innerHTML = (await r.text()).trim();
    return tpl.content.firstElementChild;
  }
  // Cards stay put: panics first, then by the time raised (oldest first), so
  // a new alarm or an escalation never moves Acknowledge under the cursor.
  function cardKey(card) {
    return [card.dataset.kind === "panic" ? 0 : 1, Number(card.dataset.raised) || 0, Number(card.dataset.id) || 0];
  }
  function before(a, b) {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
    return false;
  }
  function insertSorted(list, card, newestFirst) {
    // Active: panics first, then oldest raised first. Recent: newest first.
    const key = newestFirst ? [-Number(card.dataset.id)] : cardKey(card);
    for (const other of list.children) {
      if (!other.classList.contains("alarm")) continue;
      const k = newestFirst ? [-Number(other.dataset.id)] : cardKey(other);
      if (before(key, k)) {
        list.insertBefore(card, other);
        return;
      }
    }
    list.append(card);
  }
  async function placeAlarm(a) {
    const activeList = document.getElementById("active-list");
    const own = document.getElementById("alarm-page");
    if (own && Number(own.dataset.id) === a.id) { // an alarm's own page: its card is brought up to date in place
      const fresh = await fetchCard(a.id);
      const old = document.getElementById("alarm-" + a.id);
      if (fresh && old) { old.replaceWith(fresh); refreshAgo(fresh); }
      return;
    }
    if (!activeList) return;
    const card = await fetchCard(a.id);
    if (!card) return;
    const old = document.getElementById("alarm-" + a.id);
    const target = a.state === "active" ? activeList : document.getElementById("recent-list");
    if (old && target && old.parentElement === target) old.replaceWith(card); // in place
    else {
      if (old) old.remove();
      if (target) insertSorted(target, card, target !== activeList);
    }
    refreshAgo(card);
    if (a.state === "active" && !old) {
      card.classList.add("fresh");
      setTimeout(() => card.classList.remove("fresh"), 8000);
    }
    live.seen[a.id + ":" + a.state] = performance.timeOrigin + performance.now();
  }
  function onAlarm(a) {
    const isNew = a.state === "active" && !activeIds.has(a.id);
    if (a.state === "active") activeIds.add(a.id);
    else activeIds.delete(a.id);
    showCount();
    if (isNew) {
      showBanner(a);
      beep();
    } else if (a.state !== "active" && bannerAlarm === a.id && banner) {
      banner.hidden = true;
    }
    if (page !== "alarms") live.seen[a.id + ":" + a.state] = performance.timeOrigin + performance.now();
    return placeAlarm(a);
  }

  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (!form.classList || !form.classList.contains("ack")) return;
    ev.preventDefault();
    const id = Number(form.dataset.id);
    const btn = form.querySelector("button");
    if (btn) btn.disabled = true;
    try {
      const r = await fetch("/api/alarms/" + id + "/ack", {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": cfg.csrf, Accept: "application/json" },
      });
      const body = await r.json().catch(() => ({}));
      const alarm = r.ok ? body : body.alarm;
      if (alarm) await onAlarm(alarm);
      else if (btn) btn.disabled = false;
    } catch (e) {
      if (btn) btn.disabled = false;
    }
  });

  // --- agents ----------------------------------------------------------------
  let agentTimer = null;
  function onAgent(a) {
    const row = document.getElementById("agent-" + a.agent);
    if (row) {
      row.className = "s-" + a.state;
      const state = row.querySelector(".state");
      state.className = "state s-" + a.state;
      state.textContent = t(a.state);
      const seen = row.querySelector(".seen");
      if (seen && a.last_seen) {
        seen.querySelector("time").textContent = fmtClock(a.last_seen);
        seen.querySelector(".ago").dataset.ago = a.last_seen;
      }
      if (a.outbox_depth !== null && a.outbox_depth !== undefined) row.querySelector(".outbox").textContent = a.outbox_depth;
      if (a.reconnects !== null && a.reconnects !== undefined) row.querySelector(".reconnects").textContent = a.reconnects;
      refreshAgo(row);
      row.classList.add("fresh");
    } else if (page === "agents") softReload();
    if (page === "alarms") {
      clearTimeout(agentTimer);
      agentTimer = setTimeout(softReloadPart, 500, ["h-agents"]);
    }
    live.seen["agent:" + a.agent + ":" + a.state] = performance.timeOrigin + performance.now();
  }

  // --- events ----------------------------------------------------------------
  function onEvent(e) {
    const feed = document.getElementById("scan-feed");
    if (feed && e.kind === "scan") {
      const li = el("li", "fresh");
      li.append(el("time", "", fmtClock(e.ts)), " ", el("b", "", e.source), " " + (e.agent_name || e.agent) + " ",
        el("code", "", e.tag || ""));
      if (e.member) li.append(" ", el("span", "member", e.member));
      feed.prepend(li);
      while (feed.children.length > 20) feed.lastElementChild.remove();
    }
    const table = document.getElementById("events");
    if (table && table.dataset.live) {
      const f = table.dataset;
      if ((f.filterAgent && f.filterAgent !== e.agent) || (f.filterKind && f.filterKind !== e.kind) ||
          (f.filterSource && f.filterSource !== e.source)) return;
      const tr = el("tr", "k-" + e.kind + " fresh");
      const skip = new Set(["agent", "eseq", "kind", "source", "ts", "received_ts", "replayed", "unplanned", "agent_name", "member"]);
      const details = Object.keys(e).filter((k) => !skip.has(k)).map((k) => k + "=" + (Array.isArray(e[k]) ? e[k].join(" ") : e[k])).join(" ");
      const cells = [fmtClock(e.ts), null, (e.agent_name || e.agent) + " #" + e.eseq, e.source, details, fmtClock(e.received_ts)];
      cells.forEach((text, i) => {
        const td = el("td");
        if (i === 1) td.append(el("span", "kind k-" + e.kind, t(e.kind)));
        else td.textContent = text;
        tr.append(td);
      });
      const body = table.tBodies[0];
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      body.prepend(tr);
      while (body.rows.length > 300) body.lastElementChild.remove();
    }
    live.seen["event:" + e.agent + ":" + e.eseq] = performance.timeOrigin + performance.now();
  }

  // --- reloading parts of a page without losing it ---------------------------
  let reloadTimer = null;
  async function fetchPage() {
    const r = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (r.redirected && new URL(r.url).pathname === "/login") { location.reload(); return null; }
    return r.ok ? new DOMParser().parseFromString(await r.text(), "text/html") : null;
  }
  // A team's page (a leader's phone): its rounds are read again every few seconds.
  if (page === "team") setInterval(() => softReload(), 3000);
  function softReload() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(async () => {
      const doc = await fetchPage();
      const main = doc && doc.getElementById("main");
      if (main) {
        document.getElementById("main").replaceChildren(...main.childNodes);
        refreshAgo();
      }
    }, 1000);
  }
  async function softReloadPart(ids) {
    const doc = await fetchPage();
    if (!doc) return;
    ids.forEach((id) => {
      const fresh = doc.getElementById(id);
      const old = document.getElementById(id);
      if (fresh && old) old.closest("section").replaceWith(fresh.closest("section"));
    });
    refreshAgo();
  }

  // --- the stream ------------------------------------------------------------
  // One stream per browser: a SharedWorker (live-worker.js) holds it for every
  // tab, so ten tabs use one connection and leave the others for pages and
  // Acknowledge. Where SharedWorker is missing (Android Chrome), each tab
  // falls back to its own EventSource.
  const liveEl = document.getElementById("live");
  function showLive(on) {
    live.connected = on;
    if (!liveEl) return;
    liveEl.classList.toggle("on", on);
    const label = liveEl.querySelector("span");
    label.textContent = on ? label.dataset.on : label.dataset.off;
  }
  let hadError = false;
  const handlers = {
    alarm: (a) => { live.messages++; onAlarm(a); },
    agent: (a) => { live.messages++; onAgent(a); },
    event: (e) => { live.messages++; onEvent(e); },
    refresh: (d) => {
      if (["units", "report", "route"].includes(page)) softReload();
      // A flood of scans was too many to send one by one: read the lists again.
      else if (d && d.topic === "events") {
        if (page === "events") softReload();
        else if (document.getElementById("scan-feed")) softReloadPart(["scan-feed"]);
      }
    },
  };
  function onStatus(on) {
    showLive(on);
    if (on && hadError) resync();
    hadError = hadError || !on;
    if (on) hadError = false;
  }
  function connectShared() {
    const worker = new SharedWorker("/static/live-worker.js?v=" + (cfg.asset || ""), { name: "gridpatrol-live" });
    const port = worker.port;
    live.shared = true;
    // A worker that never answers (a browser that blocks it, a broken script)
    // must not leave the tab deaf: fall back to a stream of the tab's own.
    let heard = false;
    const fallback = setTimeout(() => {
      if (heard) return;
      port.close();
      live.shared = false;
      connect();
    }, 10000);
    worker.onerror = () => { if (!heard) { clearTimeout(fallback); port.close(); live.shared = false; connect(); } };
    port.onmessage = (m) => {
      heard = true;
      clearTimeout(fallback);
      const msg = m.data || {};
      if (msg.type === "status") onStatus(msg.on);
      else if (msg.type === "resync") location.reload();
      else if (msg.type === "closed") resync();
      else if (msg.type === "pong") live.tabs = msg.tabs;
      else if (handlers[msg.type]) handlers[msg.type](msg.data);
    };
    port.start();
    port.postMessage({ type: "join", session: cfg.csrf });
    window.addEventListener("pagehide", () => port.postMessage({ type: "leave" }));
    live.ping = () => port.postMessage({ type: "ping" });
  }
  function connect() {
    const es = new EventSource("/api/stream");
    live.shared = false;
    es.addEventListener("hello", () => onStatus(true));
    for (const name in handlers) es.addEventListener(name, (m) => handlers[name](JSON.parse(m.data)));
    es.addEventListener("resync", () => { es.close(); location.reload(); });
    es.onerror = () => {
      onStatus(false);
      if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    };
  }
  // After a gap in the stream, what was missed is fetched rather than guessed.
  async function resync() {
    const r = await fetch("/api/alarms?limit=1000", { credentials: "same-origin" });
    if (r.status === 401) { location.reload(); return; }
    if (!r.ok) return;
    const alarms = await r.json();
    const now = new Set(alarms.map((a) => a.id));
    alarms.forEach((a) => { if (!activeIds.has(a.id)) onAlarm(a); });
    [...activeIds].filter((id) => !now.has(id)).forEach((id) => activeIds.delete(id));
    showCount();
    softReload();
  }

  showCount();
  refreshAgo();
  setInterval(refreshAgo, 5000);
  if (window.SharedWorker && !window.gpNoSharedWorker) {
    try { connectShared(); } catch (e) { connect(); }
  } else connect();
})();
