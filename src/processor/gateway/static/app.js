// The race-control page: one WebSocket to the gateway, the stage drawn on an SVG
// (no map tiles needed), the leaderboard and the alerts feed. Plain JS, no build step.
"use strict";

const isPublic = location.pathname.startsWith("/public") ||
  new URLSearchParams(location.search).get("view") === "public";
const params = new URLSearchParams(location.search);
const state = {
  config: { directus_url: "", interval_ms: 500 },
  sub: null, seq: null, socket: null, retry: 0,
  entries: new Map(), positions: new Map(), alerts: new Map(),
  board: null, geometry: null, project: null,
};
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "";
  const tenths = Math.floor(ms / 100);
  const h = Math.floor(tenths / 36000), m = Math.floor((tenths % 36000) / 600);
  const s = Math.floor((tenths % 600) / 10), t = tenths % 10;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return (h ? h + ":" : "") + mm + ":" + String(s).padStart(2, "0") + "." + t;
}
function fmtGap(ms) { return ms ? "+" + fmtMs(ms) : ""; }
function fmtTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return isNaN(d) ? String(iso) : d.toLocaleTimeString([], { hour12: false });
}
function setStatus(text) { $("status").textContent = text; }

// -- connecting ---------------------------------------------------------------------

function connect() {
  if (state.socket) { state.socket.onclose = null; state.socket.close(); }
  const q = new URLSearchParams();
  if (state.sub.stage) q.set("stage", state.sub.stage);
  if (state.sub.event) q.set("event", state.sub.event);
  const token = isPublic ? "" : sessionStorage.getItem("gateway-token") || "";
  if (token) q.set("token", token);
  if (state.seq) q.set("since", state.seq);
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/ws?${q}`);
  state.socket = ws;
  setStatus("connecting…");
  ws.onopen = () => { state.retry = 0; setStatus("live"); };
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    if (ev.code === 1008 || ev.code === 4401) { setStatus("refused: check the token"); return; }
    const delay = Math.min(5000, 250 * 2 ** state.retry++);
    setStatus(`reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    setTimeout(async () => { if (await probe().catch(() => true)) connect(); }, delay);
  };
}

async function probe() {
  // A refused WebSocket only says "closed": ask over HTTP once to show why.
  const q = new URLSearchParams();
  if (state.sub.stage) q.set("stage", state.sub.stage);
  if (state.sub.event) q.set("event", state.sub.event);
  const token = isPublic ? "" : sessionStorage.getItem("gateway-token") || "";
  const resp = await fetch(`/check?${q}`, {
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  });
  if (!resp.ok) {
    const body = await resp.json().catch(() => ({ error: resp.statusText }));
    setStatus(`refused: ${body.error}`);
    return false;
  }
  return true;
}

// -- messages -----------------------------------------------------------------------

function handle(msg) {
  switch (msg.type) {
    case "snapshot": return onSnapshot(msg);
    case "change": return onChange(msg);
    case "board": state.board = msg.board; return drawBoard();
    case "positions": return onPositions(msg.positions);
    default: return undefined;
  }
}

function onSnapshot(msg) {
  state.seq = msg.seq;
  state.entries = new Map(msg.entries.map((e) => [e.entry, e]));
  state.board = msg.board;
  state.geometry = msg.geometry;
  state.alerts = new Map((msg.alerts || []).map((a) => [a.id, a]));
  $("title").textContent = (isPublic ? "" : "Race control — ") + msg.event.name;
  drawMap(); drawBoard(); drawAlerts();
}

function onChange(msg) {
  state.seq = msg.seq;
  if (msg.collection !== "alerts") return;
  const held = state.alerts.get(msg.id);
  if (held && held._version && held._version > msg.version) return; // an older state
  if (msg.change === "deleted") state.alerts.delete(msg.id);
  else state.alerts.set(msg.id, { ...msg.data, _version: msg.version });
  drawAlerts(); drawCars();
}

function onPositions(items) {
  for (const p of items) state.positions.set(p.entry ?? p.device, p);
  drawCars();
}

// -- the map ------------------------------------------------------------------------

function coordsOf(geometry) {
  if (!geometry) return [];
  if (geometry.type === "Point") return [geometry.coordinates];
  if (geometry.type === "LineString") return geometry.coordinates;
  if (geometry.type === "Polygon") return geometry.coordinates.flat();
  return [];
}

function drawMap() {
  const map = $("map");
  map.replaceChildren();
  const g = state.geometry || { stages: [], geofences: [] };
  const pts = [];
  for (const s of g.stages) pts.push(...coordsOf(s.route));
  for (const f of g.geofences) pts.push(...coordsOf(f.geometry));
  if (!pts.length) { state.project = null; return; }
  const lons = pts.map((p) => p[0]), lats = pts.map((p) => p[1]);
  const lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
  const k = Math.cos((lat0 * Math.PI) / 180);
  const minX = Math.min(...lons) * k, maxX = Math.max(...lons) * k;
  const minY = Math.min(...lats), maxY = Math.max(...lats);
  const pad = 40, w = 1000 - 2 * pad, h = 700 - 2 * pad;
  const scale = Math.min(w / (maxX - minX || 1e-6), h / (maxY - minY || 1e-6));
  const ox = pad + (w - (maxX - minX) * scale) / 2, oy = pad + (h - (maxY - minY) * scale) / 2;
  state.project = ([lon, lat]) => [ox + (lon * k - minX) * scale, oy + (maxY - lat) * scale];
  const P = state.project;
  for (const s of g.stages) {
    if (!s.route) continue;
    svg("polyline", { class: "route", points: s.route.coordinates.map((c) => P(c).join(",")).join(" ") }, map);
  }
  for (const f of g.geofences) {
    const geo = f.geometry || {};
    if (geo.type === "LineString") {
      const [a, b] = [P(geo.coordinates[0]), P(geo.coordinates[geo.coordinates.length - 1])];
      svg("line", { class: `gate ${f.kind}`, x1: a[0], y1: a[1], x2: b[0], y2: b[1] }, map);
      const t = svg("text", { class: "gate-label", x: b[0] + 6, y: b[1] - 6 }, map);
      t.textContent = f.name;
    } else if (geo.type === "Polygon") {
      svg("polygon", { class: `zone ${f.kind}`, points: geo.coordinates[0].map((c) => P(c).join(",")).join(" ") }, map);
    } else if (geo.type === "Point") {
      const [x, y] = P(geo.coordinates);
      const r = f.radius_m ? Math.max(4, (f.radius_m / 111320) * scale) : 6;
      svg("circle", { class: `zone ${f.kind}`, cx: x, cy: y, r }, map);
    }
  }
  svg("g", { id: "cars" }, map);
  drawCars();
}

function rowsByEntry() {
  const rows = new Map();
  for (const r of (state.board && state.board.rows) || []) rows.set(r.entry, r);
  return rows;
}

function openAlertEntries() {
  const out = new Set();
  for (const a of state.alerts.values()) if (a.status === "open" && a.entry) out.add(a.entry);
  return out;
}

function drawCars() {
  const layer = $("cars");
  if (!layer || !state.project) return;
  const rows = rowsByEntry(), alerting = openAlertEntries();
  const seen = new Set();
  for (const [key, p] of state.positions) {
    const id = `car-${String(key).replace(/[^A-Za-z0-9_-]/g, "_")}`;
    seen.add(id);
    let car = document.getElementById(id);
    if (!car) {
      car = svg("g", { id, class: "car", tabindex: "0", role: "img" }, layer);
      svg("circle", { r: 11 }, car);
      svg("text", {}, car);
    }
    const row = rows.get(p.entry);
    const status = row ? row.status : "idle";
    car.setAttribute("class", `car ${status}${alerting.has(p.entry) ? " alerting" : ""}`);
    car.dataset.entry = p.entry ?? "";
    const [x, y] = state.project([p.lon, p.lat]);
    car.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
    car.querySelector("text").textContent = p.number ?? "?";
    const speed = p.speed === null || p.speed === undefined ? "" : `, ${Math.round(p.speed)} km/h`;
    car.setAttribute("aria-label", `car ${p.number ?? p.device}: ${status}${speed}`);
  }
  for (const car of [...layer.children]) if (!seen.has(car.id)) car.remove();
}

// -- the leaderboard ----------------------------------------------------------------

function drawBoard() {
  const body = $("leaderboard").querySelector("tbody");
  body.replaceChildren();
  const board = state.board;
  if (!board) return;
  $("board-title").textContent = board.kind === "stage"
    ? `Leaderboard — ${board.stage_name}` : `Classification — ${board.event_name}`;
  for (const r of board.rows) {
    const tr = document.createElement("tr");
    tr.className = r.status || "";
    tr.dataset.entry = r.entry;
    const split = (r.splits || []).filter((s) => s.elapsed_ms !== null).slice(-1)[0];
    const time = r.total_ms ?? r.elapsed_ms;
    const cells = [
      r.rank ?? "", r.number, r.crew, r.status ?? (r.reason || ""),
      fmtMs(time), fmtGap(r.gap_leader_ms),
      split ? `${split.name} ${fmtMs(split.elapsed_ms)}` : "",
    ];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 2) td.className = "crew";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  }
  drawCars();
}

// -- alerts -------------------------------------------------------------------------

function drawAlerts() {
  const list = $("alerts");
  if (isPublic) return;
  list.replaceChildren();
  const alerts = [...state.alerts.values()].sort((a, b) =>
    String(b.started_at).localeCompare(String(a.started_at)));
  for (const a of alerts) {
    const li = document.createElement("li");
    li.className = `${a.severity} ${a.status}`;
    li.dataset.kind = a.kind;
    li.dataset.id = a.id;
    const entry = state.entries.get(a.entry);
    const sev = document.createElement("span");
    sev.className = "severity";
    sev.textContent = a.severity;
    const what = document.createElement("strong");
    what.textContent = `${a.kind.replace(/_/g, " ")} — car ${entry ? entry.number : a.entry ?? "?"}`;
    const meta = document.createElement("div");
    meta.className = "alert-meta";
    meta.textContent = `${fmtTime(a.started_at)} · ${a.status}${a.note ? " · " + a.note : ""}`;
    li.append(sev, what, meta);
    if (a.status === "open") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "Acknowledge";
      button.setAttribute("aria-label", `Acknowledge ${a.kind} of car ${entry ? entry.number : a.entry}`);
      button.addEventListener("click", () => acknowledge(a, button));
      li.appendChild(button);
    }
    list.appendChild(li);
  }
}

async function acknowledge(alert, button) {
  const token = $("directus-token").value.trim();
  if (!state.config.directus_url) { setStatus("no Directus configured for this gateway"); return; }
  if (!token) {
    setStatus("enter your Directus token to acknowledge");
    $("alerts-title").parentElement.querySelector("details").open = true;
    $("directus-token").focus();
    return;
  }
  button.disabled = true;
  try {
    const resp = await fetch(`${state.config.directus_url}/items/alerts/${alert.id}`, {
      method: "PATCH",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify({ status: "acknowledged", note: "acknowledged from the race-control page" }),
    });
    if (!resp.ok) throw new Error(`Directus answered ${resp.status}`);
    state.alerts.set(alert.id, { ...alert, status: "acknowledged" });
    drawAlerts(); drawCars();
    setStatus(`alert ${alert.id} acknowledged`);
  } catch (err) {
    button.disabled = false;
    setStatus(`acknowledge failed: ${err.message}`);
  }
}

// -- start --------------------------------------------------------------------------

async function start(ev) {
  if (ev) ev.preventDefault();
  const stage = $("stage").value.trim(), event = $("event").value.trim();
  if (!stage && !event) { setStatus("give a stage or an event"); return; }
  if (!isPublic && $("token").value) sessionStorage.setItem("gateway-token", $("token").value);
  const sub = { stage: stage || null, event: event || null };
  if (!state.sub || state.sub.stage !== sub.stage || state.sub.event !== sub.event) {
    state.seq = null; state.positions.clear();
  }
  state.sub = sub;
  const u = new URLSearchParams(location.search);
  stage ? u.set("stage", stage) : u.delete("stage");
  event ? u.set("event", event) : u.delete("event");
  history.replaceState(null, "", `${location.pathname}?${u}`);
  if (await probe()) connect();
}

async function init() {
  if (isPublic) { document.body.classList.add("public"); $("title").textContent = "Live"; }
  try { state.config = await (await fetch("/config.json")).json(); } catch (_) { /* defaults */ }
  $("stage").value = params.get("stage") || "";
  $("event").value = params.get("event") || "";
  $("connect").addEventListener("submit", start);
  if ((params.get("stage") || params.get("event")) &&
      (isPublic || sessionStorage.getItem("gateway-token"))) start();
}

init();
