// drawbridge's dashboard: the status every two seconds through POST /api
// (the admin socket's commands over HTTP), drawn with textContent only:
// nothing from the status is ever read as HTML.
"use strict";

const csrf = document.querySelector('meta[name="drawbridge-csrf"]').content;
let lastRequests = null;
// Each agent's bytes at the last refresh: its throughput since.
let lastLinks = new Map();

async function command(body) {
  const headers = { "content-type": "application/json", "x-drawbridge-csrf": csrf };
  const token = sessionStorage.getItem("drawbridge-token");
  if (token) headers.authorization = "Bearer " + token;
  const response = await fetch("/api", { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401) {
    document.getElementById("login").hidden = false;
    throw new Error("the admin token is needed");
  }
  if (!response.ok) throw new Error("HTTP " + response.status);
  return response.json();
}

function cell(row, text, kind) {
  const td = row.insertCell();
  td.textContent = text;
  if (kind) td.className = kind;
  return td;
}

function fill(id, items, draw) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const item of items) draw(body.insertRow(), item);
}

// The charts: inline SVG made here, their points in `data-series` too.
const SVG = "http://www.w3.org/2000/svg";
let range = "hour";

function amount(value) {
  for (const [size, unit] of [[1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (value >= size) return (value / size).toFixed(1) + unit;
  }
  return value.toFixed(value < 10 && value % 1 ? 1 : 0);
}

function chart(label, unit, lines) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 300 60");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  svg.dataset.series = JSON.stringify(lines);
  const top = Math.max(0, ...lines.flatMap((line) => line.values));
  lines.forEach((line, i) => {
    const n = line.values.length;
    const points = line.values.map((value, x) =>
      (n > 1 ? (x * 300) / (n - 1) : 300).toFixed(1) + "," + (58 - (top > 0 ? (value / top) * 56 : 0)).toFixed(1));
    const polyline = document.createElementNS(SVG, "polyline");
    polyline.setAttribute("points", points.join(" "));
    polyline.setAttribute("class", "line line" + (i % 4));
    svg.append(polyline);
  });
  const caption = document.createElement("figcaption");
  const now = lines.map((line) => (lines.length > 1 ? line.name + " " : "") + amount(line.values.at(-1) ?? 0)).join(", ");
  caption.textContent = label + ": now " + now + unit + ", top " + amount(top) + unit;
  figure.append(svg, caption);
  return figure;
}

// Per minute or per second from a chart's points, the last one scaled by
// the seconds it stands for so far.
function rate(chartData, values, per) {
  return values.map((value, i) =>
    (value * per) / (i === values.length - 1 ? chartData.last : chartData.every));
}

function drawHistory(history) {
  const data = history[range];
  const traffic = document.getElementById("traffic");
  traffic.replaceChildren();
  for (const site of data.sites) {
    const block = document.createElement("div");
    block.className = "site-charts";
    block.dataset.site = site.name;
    const title = document.createElement("h3");
    title.textContent = site.name;
    block.append(title,
      chart("requests", "/min", [{ name: "requests", values: rate(data, site.requests, 60) }]),
      chart("sent", "B/s", [{ name: "sent", values: rate(data, site.sent, 1) }]));
    traffic.append(block);
  }
  const ratio = data.cache_hits.map((hits, i) => {
    const all = hits + data.cache_misses[i];
    return all > 0 ? (100 * hits) / all : 0;
  });
  document.getElementById("cache-chart").replaceChildren(
    chart("hit ratio", " %", [{ name: "hit ratio", values: ratio }]));
  document.getElementById("refusals").replaceChildren(
    chart("refused", "/min", data.refusals.map((kind) => ({ name: kind.kind, values: rate(data, kind.counts, 60) }))));
}

for (const button of document.querySelectorAll("[data-range]")) {
  button.addEventListener("click", () => {
    range = button.dataset.range;
    for (const other of document.querySelectorAll("[data-range]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
    refresh();
  });
}

function duration(seconds) {
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.floor(seconds % 60);
  return (h ? h + " h " : "") + (h || m ? m + " min " : "") + s + " s";
}

function when(seconds) {
  return new Date(seconds * 1000).toLocaleString();
}

function draw(status, perMinute) {
  const now = Date.now() / 1000;
  const expiry = new Map(status.certificates.map((c) => [c.site, c]));
  fill("sites", status.sites, (row, site) => {
    row.dataset.site = site.name;
    cell(row, site.name).title = site.upstream;
    const home = site.upstream_up === null ? ["not asked yet", "unknown"]
      : site.upstream_up ? ["up", "up"] : ["DOWN", "down"];
    const since = site.up_since ? " since " + when(site.up_since) : "";
    const answer = site.upstream_up ? ", answers in " + site.answer_ms + " ms" : "";
    const homeCell = row.insertCell();
    const state = document.createElement("span");
    state.className = home[1];
    state.textContent = home[0];
    const detail = document.createElement("small");
    detail.className = "detail";
    detail.textContent = since + answer;
    homeCell.append(state, detail);
    cell(row, perMinute.has(site.name) ? perMinute.get(site.name).toFixed(0) : "…");
    cell(row, String(site.in_flight), "streams");
    cell(row, String(site.websockets), "websockets");
    const gate = site.gate === "enforce" ? site.gate_refused + " refused"
      : site.gate === "report" ? site.gate_refused + " would be refused (report)"
      : "open (gate off)";
    cell(row, gate, "gate");
    const certificate = expiry.get(site.name);
    const days = !certificate || certificate.expires === 0 ? "not issued yet"
      : Math.floor((certificate.expires - now) / 86400) + " days left";
    const failed = certificate && certificate.last_error;
    const shown = cell(row, failed ? days + "; renewal failed " + when(failed[0]) + ": " + failed[1] : days,
      failed ? "certificate down" : "certificate");
    if (failed) shown.title = failed[1];
  });
  document.getElementById("bans-none").hidden = status.bans.length > 0;
  fill("bans", status.bans, (row, ban) => {
    row.dataset.address = ban.address;
    cell(row, ban.address);
    cell(row, ban.site || "?");
    cell(row, ban.reason || "?", "why");
    cell(row, String(ban.failures));
    cell(row, when(ban.until));
    const button = document.createElement("button");
    button.textContent = "Unban";
    button.dataset.unban = ban.address;
    button.addEventListener("click", () => unban(ban.address, button));
    row.insertCell().append(button);
  });
  const { hits, misses, stale, bypass } = status.cache;
  const ratio = hits + misses > 0 ? (100 * hits / (hits + misses)).toFixed(0) + " % from the edge" : "no cache traffic yet";
  document.getElementById("cache").textContent =
    hits + " hits, " + misses + " misses, " + stale + " stale, " + bypass + " bypassed (" + ratio + ")";
  const agents = document.getElementById("agents");
  agents.replaceChildren();
  document.getElementById("agents-none").hidden = status.tunnels.length > 0;
  const links = new Map();
  for (const agent of status.tunnels) {
    const item = document.createElement("li");
    item.dataset.agent = agent.name;
    const from = agent.connections.map((c) => c.from).join(", ");
    const received = agent.connections.reduce((sum, c) => sum + c.received, 0);
    const sent = agent.connections.reduce((sum, c) => sum + c.sent, 0);
    const before = lastLinks.get(agent.name);
    links.set(agent.name, { received, sent, at: now });
    let speed = "";
    if (before && now > before.at && received >= before.received && sent >= before.sent) {
      const seconds = now - before.at;
      speed = "; from home " + amount((received - before.received) / seconds) + "B/s, to home "
        + amount((sent - before.sent) / seconds) + "B/s";
    }
    const timed = agent.connections.filter((c) => c.rtt_us > 0).map((c) => c.rtt_us);
    const trip = timed.length ? "; round trip " + (Math.min(...timed) / 1000).toFixed(1) + " ms" : "";
    item.textContent = agent.name + ": " + (agent.connections.length
      ? agent.connections.length + " connection(s) from " + from + trip + speed : "not connected")
      + (agent.unreachable.length ? "; cannot reach " + agent.unreachable.join(", ") : "");
    agents.append(item);
  }
  lastLinks = links;
  const routers = document.getElementById("routers");
  routers.replaceChildren();
  const peers = status.wireguard || [];
  document.getElementById("routers-none").hidden = peers.length > 0;
  for (const peer of peers) {
    const item = document.createElement("li");
    item.dataset.router = peer.name;
    item.dataset.up = peer.up;
    const handshake = peer.handshake_age === null ? "no handshake yet" : "last handshake " + peer.handshake_age + " s ago";
    item.textContent = peer.name + " (" + peer.address + "): " + (peer.up ? "up" : "down") + "; " + handshake
      + (peer.endpoint ? "; from " + peer.endpoint : "") + "; " + amount(peer.received) + "B from home, "
      + amount(peer.sent) + "B to home";
    routers.append(item);
  }
  document.getElementById("connections").textContent = status.connections + " open";
  document.getElementById("streams-none").hidden = status.streams.length > 0;
  fill("streams", status.streams, (row, stream) => {
    row.dataset.client = stream.client;
    const seconds = Math.max(1, now - stream.since);
    cell(row, stream.client + (stream.user ? " (" + stream.user + ")" : ""), "who");
    cell(row, stream.site + stream.path, "what").title = stream.path;
    cell(row, stream.protocol + ", " + stream.via, "how");
    cell(row, amount((stream.bytes * 8) / seconds) + "bit/s", "rate").dataset.bytes = String(stream.bytes);
    cell(row, duration(seconds), "for");
  });
  if (status.history) drawHistory(status.history);
}

async function refresh() {
  const state = document.getElementById("state");
  try {
    const reply = await command({ command: "status" });
    if (!reply.status) throw new Error(reply.error || "unexpected answer");
    const status = reply.status;
    const at = Date.now();
    const perMinute = new Map();
    if (lastRequests) {
      const minutes = (at - lastRequests.at) / 60000;
      for (const site of status.sites) {
        const before = lastRequests.counts.get(site.name);
        if (before !== undefined && minutes > 0) perMinute.set(site.name, (site.requests - before) / minutes);
      }
    }
    lastRequests = { at, counts: new Map(status.sites.map((s) => [s.name, s.requests])) };
    draw(status, perMinute);
    state.textContent = "live, updated " + new Date(at).toLocaleTimeString();
    state.className = "live";
  } catch (error) {
    state.textContent = "not connected: " + error.message;
    state.className = "down";
  }
}

async function unban(address, button) {
  button.disabled = true;
  try {
    const reply = await command({ command: "bans_remove", address });
    if (reply.error) throw new Error(reply.error);
  } catch (error) {
    document.getElementById("state").textContent = "unban failed: " + error.message;
  }
  await refresh();
}

document.getElementById("ban").addEventListener("submit", async (event) => {
  event.preventDefault();
  const address = document.getElementById("ban-address").value.trim();
  const seconds = Number(document.getElementById("ban-for").value);
  try {
    const reply = await command({ command: "bans_add", address, seconds });
    if (reply.error) throw new Error(reply.error);
    document.getElementById("ban-address").value = "";
  } catch (error) {
    document.getElementById("state").textContent = "ban failed: " + error.message;
  }
  await refresh();
});

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("drawbridge-token", document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});

refresh();
setInterval(refresh, 2000);
