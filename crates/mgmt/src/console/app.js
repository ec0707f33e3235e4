// Warren's web console: plain JavaScript over the management API (/api, RabbitMQ's paths).
// Credentials stay in sessionStorage; the open page refreshes every second.
"use strict";

const state = { auth: sessionStorage.getItem("warren-auth"), page: "overview", vhost: null };

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: { "Authorization": "Basic " + state.auth, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401) {
    const e = await r.json().catch(() => ({}));
    throw Object.assign(new Error(e.reason || "not authorised"), { status: 401 });
  }
  const text = await r.text();
  const data = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error((data && data.reason) || r.statusText);
  return data;
}

const get = path => api("GET", path);
const seg = s => encodeURIComponent(s);
const rate = v => (v && v.rate !== undefined ? v.rate : 0);
const fmt = n => (typeof n === "number" ? (Number.isInteger(n) ? n.toLocaleString() : n.toFixed(1)) : esc(n));

function table(id, headers, rows) {
  const el = document.getElementById(id);
  el.innerHTML = "<tr>" + headers.map(h => `<th>${esc(h)}</th>`).join("") + "</tr>" +
    rows.map(r => "<tr>" + r.map(c => (typeof c === "object" && c !== null && "html" in c)
      ? `<td>${c.html}</td>`
      : `<td class="${typeof c === "number" ? "num" : ""}">${fmt(c)}</td>`).join("") + "</tr>").join("");
}

function card(label, value) {
  return `<div class="card">${esc(label)}<b>${fmt(value)}</b></div>`;
}

function status(msg) {
  document.getElementById("status-line").textContent = msg || "";
}

// --- pages -------------------------------------------------------------------------------

// --- charts: the totals' history (RabbitMQ's `samples`, newest first), drawn as SVG -----------

const CHART_AGE = 600, CHART_INCR = 5;

// Per-second rates between consecutive samples, oldest first: [[timestamp, rate], ...].
function ratesOf(details) {
  const s = (details && details.samples) || [];
  const out = [];
  for (let i = s.length - 1; i > 0; i--) {
    const dt = (s[i - 1].timestamp - s[i].timestamp) / 1000;
    if (dt > 0) out.push([s[i - 1].timestamp, Math.max(0, (s[i - 1].sample - s[i].sample) / dt)]);
  }
  return out;
}

// The values themselves, oldest first.
function valuesOf(details) {
  return ((details && details.samples) || []).map(x => [x.timestamp, x.sample]).reverse();
}

// Draws `series` ([{name, color, points: [[t, v]]}]) in the element `id`: time on x (the last
// CHART_AGE seconds up to `now`), values on y from 0, a legend with each series' last value.
function chart(id, series, now, size) {
  const { W, H } = size || { W: 760, H: 200 };
  const L = 56, R = 150, T = 10, B = 24;
  const max = Math.max(1, ...series.flatMap(s => s.points.map(p => p[1])));
  const top = niceCeil(max);
  const x = t => L + (W - L - R) * Math.min(1, Math.max(0, 1 - (now - t) / (CHART_AGE * 1000)));
  const y = v => T + (H - T - B) * (1 - v / top);
  let svg = `<svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" data-max="${top}">`;
  for (let i = 0; i <= 4; i++) {
    const v = top * i / 4, yy = y(v).toFixed(1);
    svg += `<line class="grid" x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}"/>` +
      `<text x="${L - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle">${fmtAxis(v)}</text>`;
  }
  for (let m = 0; m <= 10; m += 2) {
    const xx = x(now - m * 60000).toFixed(1);
    svg += `<text x="${xx}" y="${H - 6}" text-anchor="middle">${m ? "-" + m + " min" : "now"}</text>`;
  }
  svg += `<line class="axis" x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}"/>`;
  series.forEach((s, i) => {
    const pts = s.points.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    if (pts) svg += `<polyline data-series="${esc(s.name)}" stroke="${s.color}" points="${pts}"/>`;
    const last = s.points.length ? s.points[s.points.length - 1][1] : 0;
    const ly = T + 14 + i * 18;
    svg += `<g class="legend"><rect x="${W - R + 12}" y="${ly - 9}" width="10" height="10" fill="${s.color}"/>` +
      `<text x="${W - R + 28}" y="${ly}">${esc(s.name)} ${fmtAxis(last)}</text></g>`;
  });
  document.getElementById(id).innerHTML = svg + "</svg>";
}

function niceCeil(v) {
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function fmtAxis(v) {
  return v >= 10000 ? (v / 1000).toFixed(0) + "k" : v >= 100 ? v.toFixed(0) : v.toFixed(1).replace(/\.0$/, "");
}

async function overview() {
  const history = `msg_rates_age=${CHART_AGE}&msg_rates_incr=${CHART_INCR}`;
  const [o, nodes] = await Promise.all([get(`/api/overview?${history}`),
    get(`/api/nodes?${history}`).catch(() => [])]);
  document.getElementById("overview-raft").innerHTML =
    card("leader", o.raft.leader || "none") + card("term", o.raft.term) +
    card("committed index", o.raft.committed_index ?? "-") + card("applied index", o.raft.applied_index ?? "-") +
    card("answered by", o.node);
  document.getElementById("nodes-cards").innerHTML = nodes.map(nodeCard).join("");
  nodes.forEach(nodeCharts);
  const qt = o.queue_totals, ms = o.message_stats, ot = o.object_totals;
  document.getElementById("overview-totals").innerHTML =
    card("messages", qt.messages) + card("ready", qt.messages_ready) + card("unacked", qt.messages_unacknowledged) +
    card("publish/s", rate(ms.publish_details)) + card("confirm/s", rate(ms.confirm_details)) +
    card("deliver/s", rate(ms.deliver_get_details)) +
    card("ack/s", rate(ms.ack_details)) + card("connections", ot.connections) + card("channels", ot.channels) +
    card("queues", ot.queues) + card("exchanges", ot.exchanges) + card("consumers", ot.consumers);
  charts("chart-rates", "chart-queued", ms, qt);
}

// The two charts of a page: message rates from `stats` (a `message_stats`) and queued messages
// from `counts` (an object with `messages_ready_details` and `messages_unacknowledged_details`).
function charts(ratesId, queuedId, stats, counts) {
  const now = Date.now();
  chart(ratesId, rateLines(stats), now);
  chart(queuedId, [
    { name: "ready", color: "#3d6bb3", points: valuesOf(counts.messages_ready_details) },
    { name: "unacked", color: "#d9822b", points: valuesOf(counts.messages_unacknowledged_details) },
  ], now);
}

// The rate lines of a `message_stats`: each counter it has samples of.
function rateLines(stats) {
  return [
    ["publish", "#3d6bb3", stats.publish_details],
    ["confirm", "#7048e8", stats.confirm_details],
    ["deliver", "#2f9e44", stats.deliver_get_details],
    ["ack", "#d9822b", stats.ack_details],
    ["redeliver", "#b00020", stats.redeliver_details],
  ].filter(([, , d]) => d && d.samples).map(([name, color, d]) => ({ name, color, points: ratesOf(d) }));
}

// A node card's charts: what its own clients did, its memory, and the messages queued in the
// queues it serves (its transient queues; the replicated ones if it leads).
function nodeCharts(n) {
  const id = n.name.replace(/[^a-z0-9]/gi, "-"), now = Date.now(), size = { W: 420, H: 140 };
  if (!document.getElementById(`node-rates-${id}`)) return;
  chart(`node-rates-${id}`, rateLines(n.message_stats || {}), now, size);
  // The watermark is in the card's text: drawn here, a default one (60 % of the machine) would
  // flatten the memory line against the axis.
  const mib = valuesOf(n.mem_used_details).map(([t, v]) => [t, v / 1048576]);
  chart(`node-memory-${id}`, [{ name: "memory MiB", color: "#3d6bb3", points: mib }], now, size);
  const qt = n.queue_totals || {};
  chart(`node-queued-${id}`, [
    { name: "ready", color: "#3d6bb3", points: valuesOf(qt.messages_ready_details) },
    { name: "unacked", color: "#d9822b", points: valuesOf(qt.messages_unacknowledged_details) },
  ], now, size);
}

// One node of the cluster: its role and Raft position, and its resources against their limits
// (every member answers the node serving the page; a member that does not is shown as such).
function nodeCard(n) {
  const mb = b => (b == null ? "-" : Math.round(b / 1048576).toLocaleString() + " MB");
  const gb = b => (b == null ? "-" : (b / 1e9).toFixed(1) + " GB");
  const alarm = on => (on ? ' <span class="alarm">alarm</span>' : "");
  return `<div class="node-card${n.running ? "" : " down"}" data-node="${esc(n.name)}" data-role="${esc(n.raft.role)}">` +
    `<h3>${esc(n.name)} <small>${esc(n.raft.role)}${n.running ? "" : " · not answering"}</small></h3><dl>` +
    `<dt>memory</dt><dd data-field="memory">${mb(n.mem_used)} of ${mb(n.mem_limit)}${alarm(n.mem_alarm)}</dd>` +
    `<dt>disk free</dt><dd data-field="disk">${gb(n.disk_free)} (limit ${gb(n.disk_free_limit)})${alarm(n.disk_free_alarm)}</dd>` +
    `<dt>file descriptors</dt><dd data-field="fds">${n.fd_used ?? "-"} of ${n.fd_total ?? "unlimited"}</dd>` +
    `<dt>Raft</dt><dd data-field="raft">term ${n.raft.term ?? "-"}, matched ${n.raft.matched_index ?? "-"}, lag ${n.raft.lag ?? "-"}</dd>` +
    `<dt>AMQP, gRPC</dt><dd>${esc(n.raft.amqp_address)}, ${esc(n.raft.grpc_address)}</dd></dl>` +
    `<div class="chart node-chart" id="node-rates-${esc(n.name.replace(/[^a-z0-9]/gi, "-"))}"></div>` +
    `<div class="chart node-chart" id="node-memory-${esc(n.name.replace(/[^a-z0-9]/gi, "-"))}"></div>` +
    `<div class="chart node-chart" id="node-queued-${esc(n.name.replace(/[^a-z0-9]/gi, "-"))}"></div></div>`;
}

function button(label, action) {
  return { html: `<button data-action="${esc(action)}">${esc(label)}</button>` };
}

async function queues() {
  const qs = await get("/api/queues");
  const link = q => ({ html: `<a href="#queue/${seg(q.vhost)}/${seg(q.name)}">${esc(q.name)}</a>` });
  table("queues-table", ["vhost", "name", "policy", "ready", "unacked", "total", "consumers", "publish/s", "deliver/s", "ack/s", "leader", ""],
    qs.map(q => [q.vhost, link(q), [q.policy, q.operator_policy].filter(Boolean).join(", "), q.messages_ready, q.messages_unacknowledged, q.messages, q.consumers,
      rate(q.message_stats.publish_details), rate(q.message_stats.deliver_get_details), rate(q.message_stats.ack_details),
      q.leader, { html: button("Purge", `purge|${q.vhost}|${q.name}`).html + " " + button("Delete", `delete-queue|${q.vhost}|${q.name}`).html }]));
}

// One queue's page (#queue/VHOST/NAME): its figures and chart, consumers, bindings, arguments
// and policy, and get, purge and delete.
async function queue() {
  const [vhost, name] = state.args;
  const path = `/api/queues/${seg(vhost)}/${seg(name)}`;
  const [q, bs] = await Promise.all([get(`${path}?msg_rates_age=${CHART_AGE}&msg_rates_incr=${CHART_INCR}`),
    get(`${path}/bindings`)]);
  document.getElementById("queue-title").textContent = `Queue ${q.name} (vhost ${q.vhost})`;
  const ms = q.message_stats || {};
  document.getElementById("queue-cards").innerHTML =
    card("type", q.type) + card("messages", q.messages) + card("ready", q.messages_ready) +
    card("unacked", q.messages_unacknowledged) + card("consumers", q.consumers) +
    card("publish/s", rate(ms.publish_details)) + card("deliver/s", rate(ms.deliver_get_details)) +
    card("ack/s", rate(ms.ack_details)) + card("leader", q.leader || q.node || "-");
  charts("chart-queue-rates", "chart-queue-queued", ms, q);
  table("queue-consumers", ["tag", "channel", "ack required", "prefetch", "active"],
    (q.consumer_details || []).map(k => [k.consumer_tag, k.channel_details.name, k.ack_required ? "yes" : "no",
      k.prefetch_count, k.active === false ? "waiting" : "yes"]));
  table("queue-bindings", ["source", "routing key", "arguments"],
    bs.map(b => [b.source || "(AMQP default)", b.routing_key, JSON.stringify(b.arguments || {})]));
  const args = Object.entries(q.arguments || {}).map(([k, v]) => ["argument", k, JSON.stringify(v)]);
  const policy = Object.entries(q.effective_policy_definition || {}).map(([k, v]) => ["policy", k, JSON.stringify(v)]);
  table("queue-arguments", ["from", "key", "value"],
    [["flags", "durable, auto-delete, exclusive", [q.durable, q.auto_delete, q.exclusive].map(f => (f ? "yes" : "no")).join(", ")],
      ["policy", "name", [q.policy, q.operator_policy].filter(Boolean).join(", ") || "none"], ...args, ...policy]);
}

async function exchanges() {
  const [xs, bs] = await Promise.all([get("/api/exchanges"), get("/api/bindings")]);
  table("exchanges-table", ["vhost", "name", "type", "durable", "in/s", "out/s"],
    xs.map(x => [x.vhost, x.name || "(AMQP default)", x.type, x.durable ? "yes" : "no",
      rate(x.message_stats.publish_in_details), rate(x.message_stats.publish_out_details)]));
  table("bindings-table", ["vhost", "source", "destination", "type", "routing key"],
    bs.map(b => [b.vhost, b.source || "(AMQP default)", b.destination, b.destination_type, b.routing_key]));
}

async function connections() {
  const [cs, chs, ks] = await Promise.all([get("/api/connections"), get("/api/channels"), get("/api/consumers")]);
  table("connections-table", ["name", "node", "user", "vhost", "channels", "protocol", "client", ""],
    cs.map(c => [c.name, c.node, c.user, c.vhost, c.channels, c.protocol,
      (c.client_properties && (c.client_properties.product || c.client_properties.connection_name)) || "",
      button("Close", `close|${c.name}`)]));
  table("channels-table", ["channel", "user", "consumers", "unacked", "prefetch", "confirm"],
    chs.map(c => [c.name, c.user, c.consumer_count, c.messages_unacknowledged, c.prefetch_count, c.confirm ? "yes" : "no"]));
  table("consumers-table", ["queue", "tag", "channel", "ack required", "prefetch"],
    ks.map(k => [`${k.queue.name} (${k.queue.vhost})`, k.consumer_tag, k.channel_details.name, k.ack_required ? "yes" : "no", k.prefetch_count]));
}

async function users() {
  const [us, ps] = await Promise.all([get("/api/users"), get("/api/permissions")]);
  table("users-table", ["name", "tags", ""], us.map(u => [u.name, (u.tags || []).join(", "), button("Delete", `delete-user|${u.name}`)]));
  table("permissions-table", ["user", "vhost", "configure", "write", "read"], ps.map(p => [p.user, p.vhost, p.configure, p.write, p.read]));
}

async function policies() {
  const [ps, ops] = await Promise.all([get("/api/policies"), get("/api/operator-policies")]);
  const rows = list => list.map(p => [p.vhost, p.name, p.pattern, p["apply-to"], JSON.stringify(p.definition), p.priority]);
  const headers = ["vhost", "name", "pattern", "apply to", "definition", "priority"];
  table("policies-table", headers, rows(ps));
  table("operator-policies-table", headers, rows(ops));
}

// --- the live topology ----------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";

async function topology() {
  const [xs, bs, qs, vhosts] = await Promise.all([get("/api/exchanges"), get("/api/bindings"), get("/api/queues"), get("/api/vhosts")]);
  const select = document.getElementById("topology-vhost");
  const names = vhosts.map(v => v.name);
  if (!state.vhost || !names.includes(state.vhost)) state.vhost = names.includes("/") ? "/" : names[0];
  if (select.options.length !== names.length) {
    select.innerHTML = names.map(n => `<option>${esc(n)}</option>`).join("");
  }
  select.value = state.vhost;
  const v = state.vhost;
  const queues = qs.filter(q => q.vhost === v);
  // Flow along each (exchange, queue) pair: what the queue received from that exchange.
  const flow = {};
  for (const q of queues) for (const i of q.incoming || []) {
    flow[i.exchange.name + "\u0000" + q.name] = { count: i.stats.publish, rate: rate(i.stats.publish_details) };
  }
  const edges = bs.filter(b => b.vhost === v && b.source !== "").map(b => ({
    from: b.source, to: b.destination, toQueue: b.destination_type === "queue", key: b.routing_key,
    flow: b.destination_type === "queue" ? flow[b.source + "\u0000" + b.destination] : undefined,
  }));
  // The default exchange routes to every queue by name: drawn only where messages went that way.
  for (const q of queues) {
    const f = flow["\u0000" + q.name];
    if (f && f.count > 0) edges.push({ from: "", to: q.name, toQueue: true, key: q.name, flow: f });
  }
  const used = new Set(edges.flatMap(e => [e.from, e.toQueue ? null : e.to]));
  const exchanges = xs.filter(x => x.vhost === v && (used.has(x.name) || !(x.name === "" || x.name.startsWith("amq."))));
  draw(exchanges, queues, edges);
}

function el(name, attrs, parent) {
  const e = document.createElementNS(SVG, name);
  for (const [k, val] of Object.entries(attrs)) e.setAttribute(k, val);
  if (parent) parent.appendChild(e);
  return e;
}

function draw(exchanges, queues, edges) {
  const W = 220, H = 46, gap = 22, left = 30, right = 560;
  const rows = Math.max(exchanges.length, queues.length, 1);
  const height = rows * (H + gap) + 40;
  const svg = el("svg", { width: right + W + 40, height, viewBox: `0 0 ${right + W + 40} ${height}`, id: "topology-svg" });
  const pos = {};
  exchanges.forEach((x, i) => { pos["x:" + x.name] = { x: left, y: 20 + i * (H + gap) }; });
  queues.forEach((q, i) => { pos["q:" + q.name] = { x: right, y: 20 + i * (H + gap) }; });
  for (const e of edges) {
    const a = pos["x:" + e.from], b = pos[(e.toQueue ? "q:" : "x:") + e.to];
    if (!a || !b) continue;
    const r = e.flow ? e.flow.rate : 0;
    const g = el("g", { class: "edge" + (r > 0 ? " active" : ""), "data-source": e.from, "data-destination": e.to, "data-rate": r }, svg);
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = e.toQueue ? b.x : b.x + W, y2 = b.y + H / 2;
    const mid = (x1 + x2) / 2;
    const d = e.toQueue ? `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` : `M${x1},${y1} C${x1 + 80},${y1} ${x2 + 80},${y2} ${x2},${y2}`;
    const path = el("path", { d }, g);
    // Labelled near the destination, where edges from one exchange have fanned out.
    const label = el("text", e.toQueue ? { x: x2 - 8, y: y2 - 6, "text-anchor": "end" } : { x: x1 + 90, y: (y1 + y2) / 2 }, g);
    label.textContent = (e.key ? e.key + "  " : "") + (e.flow ? r.toFixed(1) + " msg/s" : "");
    if (r > 0) {
      // Dots travel the edge; more dots and faster for higher rates (capped so it stays legible).
      const dots = Math.min(6, Math.max(1, Math.round(Math.log2(r + 1))));
      const dur = Math.max(0.6, 3 / Math.log2(r + 2));
      for (let i = 0; i < dots; i++) {
        const c = el("circle", { r: 4, class: "flow" }, g);
        const m = el("animateMotion", { dur: dur + "s", repeatCount: "indefinite", begin: (-i * dur / dots) + "s", path: d }, c);
        m.setAttribute("rotate", "auto");
      }
    }
  }
  for (const x of exchanges) {
    const p = pos["x:" + x.name];
    const g = el("g", { class: "node node-exchange", "data-name": x.name, transform: `translate(${p.x},${p.y})` }, svg);
    el("rect", { width: W, height: H, rx: 8 }, g);
    const t = el("text", { x: 10, y: 18 }, g);
    t.textContent = (x.name || "(AMQP default)") + "  [" + x.type + "]";
    const s = el("text", { x: 10, y: 36 }, g);
    s.textContent = "in " + rate(x.message_stats.publish_in_details).toFixed(1) + " msg/s";
  }
  for (const q of queues) {
    const p = pos["q:" + q.name];
    const g = el("g", { class: "node node-queue", "data-name": q.name, "data-messages": q.messages, transform: `translate(${p.x},${p.y})` }, svg);
    el("rect", { width: W, height: H, rx: 8 }, g);
    const t = el("text", { x: 10, y: 18 }, g);
    t.textContent = q.name;
    const s = el("text", { x: 10, y: 36 }, g);
    s.textContent = `${q.messages} msgs · ${q.consumers} consumers · out ${rate(q.message_stats.deliver_get_details).toFixed(1)}/s`;
  }
  const holder = document.getElementById("topology-graph");
  holder.replaceChildren(svg);
}

// --- actions and forms ----------------------------------------------------------------------

document.addEventListener("click", async ev => {
  const action = ev.target.dataset && ev.target.dataset.action;
  if (!action) return;
  const [what, a, b] = action.split("|");
  try {
    if (what === "purge") await api("DELETE", `/api/queues/${seg(a)}/${seg(b)}/contents`);
    if (what.startsWith("queue-")) await queueAction(what);
    if (what === "delete-queue" && confirm(`Delete queue ${b}?`)) await api("DELETE", `/api/queues/${seg(a)}/${seg(b)}`);
    if (what === "close" && confirm(`Close connection ${a}?`)) await api("DELETE", `/api/connections/${seg(a)}`);
    if (what === "delete-user" && confirm(`Delete user ${a}?`)) await api("DELETE", `/api/users/${seg(a)}`);
    refresh();
  } catch (e) { status(e.message); }
});

// The queue page's buttons.
async function queueAction(what) {
  const [vhost, name] = state.args;
  const path = `/api/queues/${seg(vhost)}/${seg(name)}`;
  if (what === "queue-purge") await api("DELETE", `${path}/contents`);
  if (what === "queue-delete" && confirm(`Delete queue ${name}?`)) {
    await api("DELETE", path);
    location.hash = "#queues";
  }
  if (what === "queue-get") {
    const count = Number(document.getElementById("queue-get-count").value) || 1;
    const requeue = document.getElementById("queue-get-requeue").checked;
    const got = await api("POST", `${path}/get`,
      { count, ackmode: requeue ? "ack_requeue_true" : "ack_requeue_false", encoding: "auto", truncate: 50000 });
    table("queue-got", ["#", "routing key", "redelivered", "payload"],
      got.map((m, i) => [i + 1, m.routing_key, m.redelivered ? "yes" : "no", m.payload]));
  }
}

function form(id, handler) {
  document.getElementById(id).addEventListener("submit", async ev => {
    ev.preventDefault();
    const data = Object.fromEntries(new FormData(ev.target).entries());
    try { await handler(data); status(""); refresh(); } catch (e) { status(e.message); }
  });
}

form("user-form", d => api("PUT", `/api/users/${seg(d.name)}`, { password: d.password, tags: d.tags }));
form("permission-form", d => api("PUT", `/api/permissions/${seg(d.vhost)}/${seg(d.user)}`, { configure: d.configure, write: d.write, read: d.read }));
form("publish-form", async d => {
  const r = await api("POST", `/api/exchanges/${seg(d.vhost)}/${seg(d.exchange || "amq.default")}/publish`,
    { routing_key: d.routing_key, payload: d.payload, payload_encoding: "string", properties: {} });
  document.getElementById("publish-result").textContent = r.routed ? "Message published and routed." : "Message published but not routed.";
});
form("get-form", async d => {
  const ms = await api("POST", `/api/queues/${seg(d.vhost)}/${seg(d.queue)}/get`,
    { count: Number(d.count), ackmode: d.ackmode, encoding: "auto" });
  table("get-result", ["#", "routing key", "exchange", "redelivered", "payload"],
    ms.map((m, i) => [i + 1, m.routing_key, m.exchange || "(AMQP default)", m.redelivered ? "yes" : "no", m.payload]));
  if (ms.length === 0) status("Queue is empty.");
});

document.getElementById("topology-vhost").addEventListener("change", ev => { state.vhost = ev.target.value; refresh(); });

document.getElementById("login-form").addEventListener("submit", async ev => {
  ev.preventDefault();
  const d = Object.fromEntries(new FormData(ev.target).entries());
  state.auth = btoa(d.user + ":" + d.password);
  try {
    await get("/api/whoami");
    sessionStorage.setItem("warren-auth", state.auth);
    document.getElementById("login-error").textContent = "";
    show();
  } catch (e) {
    state.auth = null;
    document.getElementById("login-error").textContent = e.message;
  }
});

// --- navigation and refresh -----------------------------------------------------------------

const pages = { overview, topology, queues, queue, exchanges, connections, users, policies, publish: async () => {} };
let busy = false;

async function refresh() {
  if (!state.auth || busy) return;
  busy = true;
  try {
    const [o, me] = await Promise.all([get("/api/overview"), get("/api/whoami")]);
    document.getElementById("cluster-line").textContent =
      `leader ${o.raft.leader || "none"} · term ${o.raft.term} · node ${o.node}`;
    document.getElementById("whoami").textContent = `${me.name} (${(me.tags || []).join(", ") || "no tags"})`;
    await pages[state.page]();
    status("");
    document.body.dataset.loaded = state.page;
  } catch (e) {
    if (e.status === 401) { state.auth = null; sessionStorage.removeItem("warren-auth"); show(); }
    status(e.message);
  } finally {
    busy = false;
  }
}

function show() {
  // `#page`, or `#queue/VHOST/NAME` (each part percent-encoded).
  const [page, ...args] = (location.hash || "#overview").slice(1).split("/");
  state.page = pages[page] && (page !== "queue" || args.length === 2) ? page : "overview";
  state.args = args.map(decodeURIComponent);
  document.getElementById("queue-got").innerHTML = "";
  document.getElementById("login").hidden = !!state.auth;
  for (const s of document.querySelectorAll("section.page")) s.hidden = !state.auth || s.id !== state.page;
  const tab = state.page === "queue" ? "queues" : state.page;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.getAttribute("href") === "#" + tab);
  refresh();
}

window.addEventListener("hashchange", show);
setInterval(refresh, 1000);
show();
