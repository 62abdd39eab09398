// Switchboard operator console. Plain script, no build step, no network
// beyond this gateway: every page is a view over the same /v1 API that
// clients use, called with the session cookie and the CSRF token.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const CSRF = meta("csrf-token");
const ROLE = meta("console-role");
const HOME_WORKSPACE = meta("console-workspace");
const ACTIVE = new Set(["scheduled", "queued", "sending"]);
const STATUSES = ["scheduled", "queued", "sending", "sent", "delivered", "read", "undelivered", "failed", "suppressed", "expired", "canceled"];
const EVENT_TYPES = ["message.scheduled", "message.queued", "message.sending", "message.retrying", "message.sent", "message.delivered", "message.read", "message.undelivered", "message.failed", "message.suppressed", "message.expired", "message.canceled", "message.received", "contact.opted_out", "contact.opted_in", "endpoint.disabled"];
const CHANNELS = ["sms", "whatsapp", "imessage", "rcs"];

let timers = [];
let workspace = ROLE === "admin" ? (localStorage.getItem("sb.workspace") || "") : HOME_WORKSPACE;

// ---------------------------------------------------------------- helpers

/** Builds an element; strings become text nodes (never HTML). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children.flat()) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http_" + status;
    this.field = e.field;
  }
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": CSRF, "Accept": "application/json" };
  if (ROLE === "admin" && workspace) headers["X-Switchboard-Workspace"] = workspace;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (resp.status === 401 && data && data.error && data.error.code === "session_expired") {
    location.href = "/console/login?expired=1";
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function toast(text, bad) {
  const t = h("div", { class: bad ? "t bad" : "t" }, text);
  document.getElementById("toast").append(t);
  setTimeout(() => t.remove(), 5000);
}

function fail(err) {
  const msg = err instanceof ApiError ? `${err.message} (${err.code}${err.field ? ", " + err.field : ""})` : String(err);
  toast(msg, true);
}

function time(s) {
  if (!s) return "–";
  const d = new Date(s);
  return isNaN(d) ? s : d.toLocaleString();
}

function badge(s) { return h("span", { class: "badge " + s }, s); }

function field(label, input, hint) {
  const id = input.id || ("f-" + Math.random().toString(36).slice(2));
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("span", { class: "muted small" }, hint) : null);
}

function table(headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here yet.");
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", {}, rows)));
}

function every(ms, fn) { timers.push(setInterval(fn, ms)); }

function debounce(fn, ms) {
  let t;
  return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
}

function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) u.set(k, v);
  const s = u.toString();
  return s ? "?" + s : "";
}

function needWorkspace(view) {
  if (ROLE !== "admin" || workspace) return false;
  view.append(h("div", { class: "panel" }, h("p", {}, "Signed in as the admin. Choose a workspace at the top to see its messages, or open ",
    h("a", { href: "#/admin" }, "Admin"), " to manage workspaces, keys and providers.")));
  return true;
}

// ---------------------------------------------------------------- overview

function chart(series, kind) {
  const W = 600, H = 140, pad = 18;
  const max = Math.max(1, ...series.map((b) => kind === "rate" ? 1 : b.submitted));
  const bw = (W - pad) / series.length;
  const g = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": kind === "rate" ? "Delivery rate per interval" : "Messages submitted per interval" });
  g.append(svg("line", { class: "axis", x1: pad, y1: H - pad, x2: W, y2: H - pad }));
  g.append(svg("text", { x: 0, y: 10 }, kind === "rate" ? "100%" : String(max)));
  series.forEach((b, i) => {
    const x = pad + i * bw + 2, w = Math.max(1, bw - 4);
    if (kind === "rate") {
      const done = b.delivered + b.failed;
      if (!done) return;
      const hgt = (H - 2 * pad) * (b.delivered / done);
      g.append(svg("rect", { class: "bar ok", x, y: H - pad - hgt, width: w, height: hgt },
        svg("title", {}, `${Math.round(100 * b.delivered / done)}% delivered`)));
    } else {
      const ht = (H - 2 * pad) * (b.submitted / max);
      const hd = (H - 2 * pad) * (b.delivered / max);
      const hf = (H - 2 * pad) * (b.failed / max);
      g.append(svg("rect", { class: "bar", x, y: H - pad - ht, width: w, height: ht }, svg("title", {}, `${b.submitted} submitted`)));
      g.append(svg("rect", { class: "bar ok", x, y: H - pad - hd, width: w / 2, height: hd }, svg("title", {}, `${b.delivered} delivered`)));
      g.append(svg("rect", { class: "bar bad", x: x + w / 2, y: H - pad - hf, width: w / 2, height: hf }, svg("title", {}, `${b.failed} failed`)));
    }
    if (i % Math.ceil(series.length / 6) === 0) {
      const d = new Date(b.start);
      g.append(svg("text", { x, y: H - 4 }, d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
    }
  });
  return g;
}

async function pageOverview(view, _parts, params) {
  if (needWorkspace(view)) return;
  const win = params.get("window") === "day" ? "day" : "hour";
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.append(h("div", { class: "row" }, h("h1", {}, "Overview"),
    h("div", { class: "row", role: "group", "aria-label": "Window" },
      h("a", { href: "#/overview?window=hour", "aria-current": win === "hour" ? "true" : null }, "Last hour"), " · ",
      h("a", { href: "#/overview?window=day", "aria-current": win === "day" ? "true" : null }, "Last 24 hours")),
    h("span", { class: "muted small", id: "refreshed" })), body);
  const load = async () => {
    const s = await api("GET", "/v1/stats?window=" + win);
    const c = s.counts;
    const total = Object.values(c).reduce((a, b) => a + b, 0);
    const cards = h("div", { class: "cards", id: "status-cards" },
      [["submitted", total], ["delivered", c.delivered + c.read], ["failed", c.failed + c.undelivered + c.expired],
        ["in queue now", s.queue.total], ["suppressed", c.suppressed], ["canceled", c.canceled],
        ["delivery rate", s.delivery_rate === null ? "–" : (100 * s.delivery_rate).toFixed(1) + "%"]]
        .map(([l, n]) => h("div", { class: "card", "data-stat": l }, h("div", { class: "n" }, n), h("div", { class: "l" }, l))));
    const byStatus = table(["status", "messages"], STATUSES.filter((k) => c[k]).map((k) =>
      h("tr", {}, h("td", {}, h("a", { href: "#/messages?status=" + k }, badge(k))), h("td", {}, c[k]))), "No messages in this window.");
    const providers = table(["provider", "kind", "state", "attempts", "error rate", "throttled"], s.providers.map((p) =>
      h("tr", {}, h("td", { class: "mono" }, p.id), h("td", {}, p.kind || "removed"),
        h("td", {}, badge(p.status), p.link ? " " + p.link : "", p.problem ? h("div", { class: "error-text" }, p.problem) : null),
        h("td", {}, p.attempts), h("td", {}, p.error_rate === null ? "–" : (100 * p.error_rate).toFixed(1) + "%"), h("td", {}, p.throttled))),
    "No send attempts in this window.");
    const endpoints = table(["endpoint", "state", "failures in a row"], s.endpoints.map((e) =>
      h("tr", {}, h("td", {}, h("a", { href: "#/webhooks/" + e.id }, e.url)),
        h("td", {}, badge(e.enabled ? "failing" : "disabled"), e.disabled_reason ? " " + e.disabled_reason : ""),
        h("td", {}, e.consecutive_failures))), "Every endpoint is healthy.");
    body.replaceChildren(cards,
      h("div", { class: "grid" },
        h("section", { class: "panel", "aria-labelledby": "tp" }, h("h2", { id: "tp" }, "Throughput"),
          h("div", { class: "legend" }, h("span", {}, h("span", { class: "sw total" }), "submitted"), h("span", {}, h("span", { class: "sw ok" }), "delivered"), h("span", {}, h("span", { class: "sw bad" }), "failed")),
          chart(s.series, "count")),
        h("section", { class: "panel", "aria-labelledby": "dr" }, h("h2", { id: "dr" }, "Delivery rate"), chart(s.series, "rate"))),
      h("div", { class: "grid" },
        h("section", { class: "panel" }, h("h2", {}, "By status"), byStatus),
        h("section", { class: "panel" }, h("h2", {}, "Queue now"),
          table(["state", "messages"], ["scheduled", "queued", "sending"].map((k) => h("tr", {}, h("td", {}, badge(k)), h("td", { "data-queue": k }, s.queue[k])))))),
      h("section", { class: "panel" }, h("h2", {}, "Providers"), providers),
      h("section", { class: "panel" }, h("h2", {}, "Webhook endpoints failing or disabled"), endpoints));
    document.getElementById("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
  };
  await load();
  every(3000, () => load().catch(() => {}));
}

// ---------------------------------------------------------------- messages

async function pageMessages(view, parts, params) {
  if (parts[1]) return pageMessage(view, parts[1]);
  if (needWorkspace(view)) return;
  const status = h("select", { id: "filter-status", name: "status" }, h("option", { value: "" }, "any"), STATUSES.map((s) => h("option", { value: s, selected: params.get("status") === s }, s)));
  const phone = h("input", { id: "filter-phone", name: "to", value: params.get("to") || "", placeholder: "+15551234567", inputmode: "tel" });
  const ref = h("input", { id: "filter-ref", name: "client_ref", value: params.get("client_ref") || "" });
  const after = h("input", { id: "filter-after", type: "datetime-local", value: params.get("after") || "" });
  const before = h("input", { id: "filter-before", type: "datetime-local", value: params.get("before") || "" });
  const results = h("div", { id: "message-results" });
  const form = h("form", { class: "inline panel", role: "search", onsubmit: (e) => {
    e.preventDefault();
    location.hash = "#/messages" + qs({ status: status.value, to: phone.value.trim(), client_ref: ref.value.trim(), after: after.value, before: before.value });
  } }, field("Status", status), field("Phone", phone), field("Client ref", ref), field("Created after", after), field("Created before", before),
  h("button", { type: "submit", class: "primary" }, "Search"));
  view.append(h("div", { class: "row" }, h("h1", {}, "Messages"), h("a", { href: "#/send" }, "Send a message")), form, results);
  const iso = (v) => v ? new Date(v).toISOString() : "";
  const query = { status: params.get("status") || "", to: params.get("to") || "", client_ref: params.get("client_ref") || "",
    created_after: iso(params.get("after")), created_before: iso(params.get("before")), limit: 50 };
  const rows = h("tbody", {});
  let cursor = null;
  const more = h("button", { type: "button", hidden: true, onclick: () => loadPage().catch(fail) }, "Load more");
  const loadPage = async () => {
    const page = await api("GET", "/v1/messages" + qs({ ...query, cursor }));
    for (const m of page.data) {
      rows.append(h("tr", { "data-id": m.id },
        h("td", {}, h("a", { href: "#/messages/" + m.id, class: "mono" }, m.id)),
        h("td", {}, badge(m.status)), h("td", {}, h("a", { href: "#/conversations/" + encodeURIComponent(m.to) }, m.to)), h("td", {}, m.channel),
        h("td", {}, m.body.length > 60 ? m.body.slice(0, 60) + "…" : m.body), h("td", {}, m.client_ref || ""), h("td", {}, time(m.created_at))));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    if (!rows.children.length) results.replaceChildren(h("p", { class: "muted" }, "No messages match."));
  };
  results.append(h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, ["id", "status", "to", "channel", "body", "client ref", "created"].map((x) => h("th", { scope: "col" }, x)))), rows)), more);
  try { await loadPage(); } catch (e) {
    results.replaceChildren(h("p", { class: "error-text", role: "alert" }, e.message));
  }
}

async function pageMessage(view, id) {
  const box = h("div", {});
  view.append(h("p", {}, h("a", { href: "#/messages" }, "← Messages")), box);
  const load = async () => {
    const m = await api("GET", "/v1/messages/" + encodeURIComponent(id));
    const cancel = ACTIVE.has(m.status) && m.status !== "sending"
      ? h("button", { type: "button", class: "danger", id: "cancel-message", onclick: async () => {
        if (!confirm("Cancel this message?")) return;
        try { await api("POST", `/v1/messages/${m.id}/cancel`); toast("Canceled."); await load(); } catch (e) { fail(e); }
      } }, "Cancel message") : null;
    box.replaceChildren(
      h("div", { class: "row" }, h("h1", {}, "Message ", h("span", { class: "mono" }, m.id)), h("span", { id: "message-status" }, badge(m.status)), cancel),
      h("div", { class: "grid" },
        h("section", { class: "panel" }, h("h2", {}, "Details"),
          h("dl", {}, [["To", h("a", { href: "#/conversations/" + encodeURIComponent(m.to) }, m.to)], ["From", m.from || "default sender"], ["Channel", m.channel],
            ["Category", m.category + " · " + m.priority], ["Encoding", `${m.encoding}, ${m.segments} segment(s)`], ["Client ref", m.client_ref || "–"],
            ["Provider", (m.provider_id || "–") + (m.provider_message_id ? " · " + m.provider_message_id : "")],
            ["Error", m.error_code ? `${m.error_code}: ${m.error_message || ""}` : "–"], ["Created", time(m.created_at)], ["Expires", time(m.expires_at)]]
            .map(([k, v]) => [h("dt", { class: "muted small" }, k), h("dd", {}, v)])),
          h("h2", {}, "Body"), h("pre", {}, m.body)),
        h("section", { class: "panel" }, h("h2", {}, "Timeline"),
          h("ol", { class: "timeline", id: "timeline" }, (m.events || []).map((e) => h("li", { "data-type": e.type },
            h("strong", {}, e.type), " ", h("span", { class: "muted small" }, time(e.created_at)),
            e.detail ? h("div", { class: "small" }, e.detail) : null, e.error_code ? h("div", { class: "error-text" }, e.error_code) : null))))),
      h("section", { class: "panel" }, h("h2", {}, "Attempts"),
        table(["#", "provider", "started", "ms", "outcome", "error"], (m.attempts || []).map((a) => h("tr", {},
          h("td", {}, a.attempt), h("td", { class: "mono" }, a.provider_id), h("td", {}, time(a.started_at)), h("td", {}, a.duration_ms),
          h("td", {}, badge(a.outcome)), h("td", {}, a.error_class ? `${a.error_class} ${a.error_code || ""} ${a.error_message || ""}` : ""))), "No attempts yet.")));
    return m;
  };
  const m = await load();
  if (m) every(2000, () => load().catch(() => {}));
}

// ---------------------------------------------------------------- send

function segmentCounter(textarea, out, variables) {
  let asked = 0; // only the latest request's answer is shown (see pageTemplate)
  const update = debounce(async () => {
    const mine = ++asked;
    try {
      const body = { body: textarea.value };
      if (variables) body.variables = variables();
      const p = await api("POST", "/v1/messages/preview", body);
      if (mine !== asked) return p;
      out.classList.toggle("multi", p.segments > 1);
      out.textContent = `${p.characters} characters · ${p.encoding === "GSM-7" ? "GSM-7" : "UCS-2 (Unicode)"} · ${p.segments} segment${p.segments === 1 ? "" : "s"} · ${p.remaining_in_segment} left in this segment`;
      out.dataset.segments = p.segments;
      out.dataset.encoding = p.encoding;
      return p;
    } catch (e) {
      if (mine !== asked) return;
      out.textContent = e.message;
      out.dataset.segments = "";
    }
  }, 120);
  textarea.addEventListener("input", update);
  update();
  return update;
}

function pageSend(view) {
  if (needWorkspace(view)) return;
  const to = h("input", { id: "send-to", name: "to", required: true, inputmode: "tel", placeholder: "+15551234567", autocomplete: "off" });
  const channel = h("select", { id: "send-channel" }, CHANNELS.map((c) => h("option", { value: c }, c)));
  const from = h("input", { id: "send-from", placeholder: "default sender" });
  const body = h("textarea", { id: "send-body", required: true, maxlength: 1600 });
  const counter = h("p", { class: "counter", id: "send-counter", "aria-live": "polite" });
  const ref = h("input", { id: "send-ref" });
  const category = h("select", { id: "send-category" }, h("option", { value: "transactional" }, "transactional"), h("option", { value: "marketing" }, "marketing"));
  const priority = h("select", { id: "send-priority" }, ["normal", "high", "low"].map((p) => h("option", { value: p }, p)));
  const sendAt = h("input", { id: "send-at", type: "datetime-local" });
  const err = h("p", { class: "error-text", role: "alert", id: "send-error" });
  const submit = h("button", { type: "submit", class: "primary", id: "send-submit" }, "Send");
  const form = h("form", { class: "stack panel", onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    submit.disabled = true;
    const msg = { to: to.value.trim(), channel: channel.value, body: body.value, category: category.value, priority: priority.value,
      idempotency_key: "console-" + crypto.randomUUID() };
    if (from.value.trim()) msg.from = from.value.trim();
    if (ref.value.trim()) msg.client_ref = ref.value.trim();
    if (sendAt.value) msg.send_at = new Date(sendAt.value).toISOString();
    try {
      const r = await api("POST", "/v1/messages", msg);
      toast("Accepted: " + r.id);
      location.hash = "#/messages/" + r.id;
    } catch (x) {
      err.textContent = `${x.message}${x.field ? " (" + x.field + ")" : ""}`;
      submit.disabled = false;
    }
  } }, field("To", to, "E.164, e.g. +15551234567"), field("Channel", channel), field("From", from, "a sender address of this workspace; empty for the default"),
  field("Message", body), counter,
  h("div", { class: "row" }, field("Category", category), field("Priority", priority), field("Send at", sendAt, "empty: now")),
  field("Client reference", ref), err, h("div", {}, submit));
  view.append(h("h1", {}, "Send a message"), form);
  segmentCounter(body, counter);
}

// ---------------------------------------------------------------- conversations

async function pageConversations(view, parts) {
  if (needWorkspace(view)) return;
  if (parts[1]) return pageThread(view, decodeURIComponent(parts[1]));
  const phone = h("input", { id: "thread-phone", inputmode: "tel", placeholder: "+15551234567", required: true });
  view.append(h("h1", {}, "Conversations"),
    h("form", { class: "inline panel", role: "search", onsubmit: (e) => { e.preventDefault(); location.hash = "#/conversations/" + encodeURIComponent(phone.value.trim()); } },
      field("Open a number", phone), h("button", { type: "submit", class: "primary" }, "Open")));
  const list = await api("GET", "/v1/conversations?days=30");
  view.append(h("section", { class: "panel" }, h("h2", {}, "Recent (30 days)"),
    table(["number", "last message", "sent", "received"], list.data.map((c) => h("tr", {},
      h("td", {}, h("a", { href: "#/conversations/" + encodeURIComponent(c.phone) }, c.phone)), h("td", {}, time(c.last_at)), h("td", {}, c.outbound), h("td", {}, c.inbound))),
    "No conversations in the last 30 days.")));
}

async function pageThread(view, phone) {
  const thread = h("div", { class: "thread", id: "thread", "aria-live": "polite" });
  const consent = h("div", { id: "consent" });
  const channel = h("select", { id: "consent-channel" }, CHANNELS.map((c) => h("option", { value: c }, c)));
  const reply = h("textarea", { id: "reply-body", rows: 2 });
  const counter = h("p", { class: "counter", "aria-live": "polite" });
  view.append(h("p", {}, h("a", { href: "#/conversations" }, "← Conversations")), h("h1", {}, "Conversation with ", h("span", { class: "mono" }, phone)),
    h("div", { class: "grid" },
      h("section", { class: "panel" }, h("h2", {}, "Thread"), thread,
        h("form", { class: "stack", onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api("POST", "/v1/messages", { to: phone, body: reply.value, channel: channel.value, idempotency_key: "console-" + crypto.randomUUID() });
            reply.value = ""; toast("Sent."); await load();
          } catch (x) { fail(x); }
        } }, field("Reply", reply), counter, h("div", {}, h("button", { type: "submit", class: "primary" }, "Send reply")))),
      h("section", { class: "panel" }, h("h2", {}, "Consent"), consent,
        h("div", { class: "row" }, field("Channel", channel),
          h("button", { type: "button", class: "danger", id: "opt-out", onclick: () => change("opt-out") }, "Opt out"),
          h("button", { type: "button", id: "opt-in", onclick: () => change("opt-in") }, "Opt in")))));
  segmentCounter(reply, counter);
  const change = async (what) => {
    if (what === "opt-out" && !confirm(`Opt ${phone} out of ${channel.value}? Messages to it will be refused.`)) return;
    try {
      await api("POST", `/v1/contacts/${encodeURIComponent(phone)}/${what}`, { channel: channel.value, detail: "console" });
      toast(what === "opt-out" ? "Opted out." : "Opted in.");
      await load();
    } catch (e) { fail(e); }
  };
  const load = async () => {
    const enc = encodeURIComponent(phone);
    const [out, inbound, contact] = await Promise.all([
      api("GET", `/v1/messages?to=${enc}&limit=100`), api("GET", `/v1/inbound?phone=${enc}&limit=100`), api("GET", `/v1/contacts/${enc}`)]);
    const items = out.data.map((m) => ({ at: m.created_at, out: true, m })).concat(inbound.data.map((m) => ({ at: m.created_at, out: false, m })));
    items.sort((a, b) => a.at < b.at ? -1 : a.at > b.at ? 1 : 0);
    thread.replaceChildren(...(items.length ? items.map((i) => h("div", { class: "bubble " + (i.out ? "out" : "in") },
      h("div", {}, i.out ? i.m.body : i.m.text),
      h("div", { class: "meta" }, time(i.at), " · ", i.m.channel, " · ", i.out ? h("a", { href: "#/messages/" + i.m.id }, badge(i.m.status)) : (i.m.keyword ? badge("keyword " + i.m.keyword) : "received")))) : [h("p", { class: "muted" }, "No messages either way yet.")]));
    consent.replaceChildren(
      contact.consent.length ? h("p", { id: "consent-state" }, contact.consent.map((c) => h("span", {}, c.channel, " ", badge(c.state), " "))) : h("p", { class: "muted", id: "consent-state" }, "No consent recorded (the workspace's default applies)."),
      table(["when", "channel", "state", "source", "detail"], contact.history.slice().reverse().map((c) => h("tr", {},
        h("td", {}, time(c.created_at)), h("td", {}, c.channel), h("td", {}, badge(c.state)), h("td", {}, c.source), h("td", {}, c.detail || ""))), "No history."));
  };
  try { await load(); } catch (e) { thread.replaceChildren(h("p", { class: "error-text", role: "alert" }, e.message)); return; }
  every(4000, () => load().catch(() => {}));
}

// ---------------------------------------------------------------- webhooks

async function pageWebhooks(view, parts) {
  if (needWorkspace(view)) return;
  if (parts[1]) return pageEndpoint(view, parts[1]);
  const list = await api("GET", "/v1/webhooks");
  view.append(h("div", { class: "row" }, h("h1", {}, "Webhooks"), h("a", { href: "#/webhooks/new", id: "new-endpoint" }, "New endpoint")),
    table(["url", "events", "state", "failures in a row"], list.data.map((e) => h("tr", {},
      h("td", {}, h("a", { href: "#/webhooks/" + e.id }, e.url), e.description ? h("div", { class: "muted small" }, e.description) : null),
      h("td", { class: "small" }, e.event_types ? e.event_types.join(", ") : "all"),
      h("td", {}, badge(e.enabled ? "enabled" : "disabled"), e.disabled_reason ? h("div", { class: "small" }, e.disabled_reason) : null),
      h("td", {}, e.consecutive_failures))), "No endpoints yet: add one to receive events."));
}

function showSecret(where, secret) {
  where.replaceChildren(h("div", { class: "secret", role: "alert" }, "Signing secret (shown once, copy it now): ", h("code", { id: "endpoint-secret" }, secret)));
}

async function pageEndpoint(view, id) {
  const isNew = id === "new";
  const e = isNew ? { url: "", description: "", event_types: null, headers: {}, format: "standard", template: "", retry_schedule: [60, 300, 1800, 7200, 86400], timeout_ms: 30000, disable_after: 50, enabled: true }
    : await api("GET", "/v1/webhooks/" + encodeURIComponent(id));
  const secretBox = h("div", {});
  const url = h("input", { id: "wh-url", type: "url", required: true, value: e.url, placeholder: "https://crm.example.com/hooks/sms" });
  const desc = h("input", { id: "wh-description", value: e.description || "" });
  const all = h("input", { type: "checkbox", id: "wh-all", checked: !e.event_types });
  const boxes = EVENT_TYPES.map((t) => h("input", { type: "checkbox", value: t, id: "wh-ev-" + t.replace(/\./g, "-"), checked: !!(e.event_types && e.event_types.includes(t)) }));
  const headers = h("textarea", { id: "wh-headers", rows: 3, placeholder: "X-Token: abc" }, Object.entries(e.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n"));
  const format = h("select", { id: "wh-format" }, ["standard", "template"].map((f) => h("option", { value: f, selected: e.format === f }, f)));
  const template = h("textarea", { id: "wh-template", rows: 5 }, e.template || "");
  const retry = h("input", { id: "wh-retry", value: (e.retry_schedule || []).join(", ") });
  const timeout = h("input", { id: "wh-timeout", type: "number", min: 100, value: e.timeout_ms });
  const disableAfter = h("input", { id: "wh-disable-after", type: "number", min: 1, value: e.disable_after });
  const enabled = h("input", { type: "checkbox", id: "wh-enabled", checked: e.enabled });
  const err = h("p", { class: "error-text", role: "alert", id: "wh-error" });
  const read = () => {
    const hdrs = {};
    for (const line of headers.value.split("\n")) {
      if (!line.trim()) continue;
      const i = line.indexOf(":");
      if (i < 1) throw new Error(`header line "${line}" must be "Name: value"`);
      hdrs[line.slice(0, i).trim()] = line.slice(i + 1).trim();
    }
    const schedule = retry.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
    if (schedule.some((n) => !Number.isInteger(n) || n < 0)) throw new Error("retry schedule: whole seconds, comma-separated");
    return { url: url.value.trim(), description: desc.value.trim() || null,
      event_types: all.checked ? null : boxes.filter((b) => b.checked).map((b) => b.value), headers: hdrs,
      format: format.value, template: format.value === "template" ? template.value : null, retry_schedule: schedule,
      timeout_ms: Number(timeout.value), disable_after: Number(disableAfter.value), enabled: enabled.checked };
  };
  const form = h("form", { class: "stack panel", onsubmit: async (ev) => {
    ev.preventDefault(); err.textContent = "";
    try {
      const body = read();
      if (isNew) {
        const created = await api("POST", "/v1/webhooks", body);
        sessionStorage.setItem("sb.secret." + created.id, created.secret || "");
        location.hash = "#/webhooks/" + created.id;
      } else {
        await api("PATCH", "/v1/webhooks/" + e.id, body); toast("Saved.");
      }
    } catch (x) { err.textContent = x.message + (x.field ? ` (${x.field})` : ""); }
  } }, field("URL", url), field("Description", desc),
  h("fieldset", {}, h("legend", {}, "Events"), h("label", {}, all, " every event"), h("div", { class: "checks" }, boxes.map((b) => h("label", { for: b.id }, b, b.value)))),
  field("Headers", headers, "one per line, Name: value"), field("Format", format), field("Payload template", template, "for format: template (MiniJinja)"),
  h("div", { class: "row" }, field("Retry schedule (s)", retry), field("Timeout (ms)", timeout), field("Disable after failures", disableAfter)),
  h("label", { for: "wh-enabled" }, enabled, " enabled"), err, h("div", {}, h("button", { type: "submit", class: "primary", id: "wh-save" }, isNew ? "Create endpoint" : "Save")));
  const render = () => view.replaceChildren(h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), h("h1", {}, isNew ? "New endpoint" : "Endpoint"), secretBox, form);
  render();
  if (isNew) return;
  const once = sessionStorage.getItem("sb.secret." + e.id);
  if (once) { showSecret(secretBox, once); sessionStorage.removeItem("sb.secret." + e.id); }
  const log = h("div", { id: "attempt-log" });
  const act = (label, idName, fn, cls) => h("button", { type: "button", id: idName, class: cls || null, onclick: async () => { try { await fn(); } catch (x) { fail(x); } } }, label);
  const actions = h("div", { class: "row panel" },
    act("Send test event", "wh-test", async () => { const r = await api("POST", `/v1/webhooks/${e.id}/test`); toast(`Test sent: ${r.status_code || r.error || "done"}`); await loadLog(); }),
    act("Rotate secret", "wh-rotate", async () => { if (!confirm("Rotate the signing secret? The old one keeps signing for 24 hours.")) return; const r = await api("POST", `/v1/webhooks/${e.id}/rotate-secret`, {}); showSecret(secretBox, r.secret); }),
    e.enabled ? null : act("Re-enable", "wh-enable", async () => { await api("PATCH", "/v1/webhooks/" + e.id, { enabled: true }); toast("Re-enabled."); route(); }),
    act("Delete endpoint", "wh-delete", async () => { if (!confirm("Delete this endpoint?")) return; await api("DELETE", "/v1/webhooks/" + e.id); location.hash = "#/webhooks"; }, "danger"));
  // What an operator comes for first: the actions and the attempt log, then the editor.
  form.before(actions, h("section", { class: "panel" }, h("h2", {}, "Attempt log"), log), h("h2", {}, "Settings"));
  const loadLog = async () => {
    const a = await api("GET", `/v1/webhooks/${e.id}/attempts?limit=50`);
    log.replaceChildren(table(["when", "event", "trigger", "result", "ms", "response", ""], a.data.map((x) => h("tr", { "data-attempt": x.id },
      h("td", {}, time(x.created_at)), h("td", { class: "mono small" }, x.event_id), h("td", {}, x.trigger),
      h("td", {}, badge(x.status_code && x.status_code < 300 ? "success" : "failure"), " ", x.status_code || "", x.error ? h("div", { class: "error-text" }, x.error) : null),
      h("td", {}, x.duration_ms),
      h("td", {}, x.response_body ? h("details", {}, h("summary", {}, "body"), h("pre", { class: "response-body" }, x.response_body)) : ""),
      h("td", {}, h("button", { type: "button", class: "redeliver", onclick: async () => {
        try { await api("POST", `/v1/webhooks/${e.id}/redeliver`, { event_id: x.event_id }); toast("Queued for redelivery."); await loadLog(); } catch (y) { fail(y); }
      } }, "Redeliver")))), "No attempts yet."));
  };
  await loadLog();
  every(4000, () => loadLog().catch(() => {}));
}

// ---------------------------------------------------------------- templates

async function pageTemplates(view, parts) {
  if (needWorkspace(view)) return;
  if (parts[1]) return pageTemplate(view, decodeURIComponent(parts[1]));
  const list = await api("GET", "/v1/templates?limit=100");
  view.append(h("div", { class: "row" }, h("h1", {}, "Templates"), h("a", { href: "#/templates/new", id: "new-template" }, "New template")),
    table(["name", "body", "variables"], list.data.map((t) => h("tr", {},
      h("td", {}, h("a", { href: "#/templates/" + encodeURIComponent(t.id) }, t.name)), h("td", {}, t.body.length > 80 ? t.body.slice(0, 80) + "…" : t.body), h("td", {}, t.variables.join(", ")))),
    "No templates yet."));
}

async function pageTemplate(view, id) {
  const isNew = id === "new";
  const t = isNew ? { name: "", body: "", variants: {} } : await api("GET", "/v1/templates/" + encodeURIComponent(id));
  const name = h("input", { id: "tpl-name", required: true, value: t.name, pattern: "[A-Za-z0-9_.-]+" });
  const body = h("textarea", { id: "tpl-body", required: true }, t.body);
  const variants = CHANNELS.map((c) => h("textarea", { id: "tpl-variant-" + c, rows: 2, "data-channel": c }, (t.variants || {})[c] || ""));
  const samples = h("div", { class: "row", id: "tpl-samples" });
  const preview = h("pre", { id: "tpl-preview", "aria-live": "polite" });
  const counter = h("p", { class: "counter", id: "tpl-counter" });
  const err = h("p", { class: "error-text", role: "alert" });
  const values = {};
  const update = segmentCounter(body, counter, () => values);
  // Each keystroke asks for a preview; their answers may come back out of
  // order (one connection each), so only the latest request's is shown.
  let asked = 0;
  const showPreview = async () => {
    const mine = ++asked;
    let text;
    try {
      text = (await api("POST", "/v1/messages/preview", { body: body.value, variables: values })).text;
    } catch (e) { text = e.message; }
    if (mine === asked) preview.textContent = text;
  };
  const refresh = debounce(() => {
    const names = [...new Set([...body.value.matchAll(/\{\{\s*([A-Za-z0-9_]+)\s*\}\}/g)].map((m) => m[1]))];
    for (const k of Object.keys(values)) if (!names.includes(k)) delete values[k];
    samples.replaceChildren(...names.map((n) => {
      if (!(n in values)) values[n] = n === "name" ? "Ada" : "sample";
      const i = h("input", { id: "tpl-var-" + n, value: values[n] });
      i.addEventListener("input", () => { values[n] = i.value; update(); showPreview(); });
      return field(n, i);
    }));
    update();
    showPreview();
  }, 150);
  body.addEventListener("input", refresh);
  const form = h("form", { class: "stack panel", onsubmit: async (ev) => {
    ev.preventDefault(); err.textContent = "";
    const v = {};
    for (const ta of variants) if (ta.value.trim()) v[ta.dataset.channel] = ta.value;
    try {
      if (isNew) { const r = await api("POST", "/v1/templates", { name: name.value.trim(), body: body.value, variants: v }); location.hash = "#/templates/" + encodeURIComponent(r.id); }
      else { await api("PATCH", "/v1/templates/" + encodeURIComponent(t.id), { name: name.value.trim(), body: body.value, variants: v }); toast("Saved."); }
    } catch (x) { err.textContent = x.message + (x.field ? ` (${x.field})` : ""); }
  } }, field("Name", name), field("Body", body, "{{variable}} for values given at send time"), counter,
  h("details", {}, h("summary", {}, "Per-channel variants"), variants.map((ta) => field(ta.dataset.channel, ta))),
  h("h2", {}, "Preview"), samples, preview, err,
  h("div", { class: "row" }, h("button", { type: "submit", class: "primary", id: "tpl-save" }, isNew ? "Create template" : "Save"),
    isNew ? null : h("button", { type: "button", class: "danger", onclick: async () => {
      if (!confirm("Delete this template?")) return;
      try { await api("DELETE", "/v1/templates/" + encodeURIComponent(t.id)); location.hash = "#/templates"; } catch (x) { fail(x); }
    } }, "Delete")));
  view.append(h("p", {}, h("a", { href: "#/templates" }, "← Templates")), h("h1", {}, isNew ? "New template" : "Template " + t.name), form);
  refresh();
}

// ---------------------------------------------------------------- settings

async function pageSettings(view) {
  if (needWorkspace(view)) return;
  const s = await api("GET", "/v1/settings");
  const qh = s.quiet_hours || {};
  const qStart = h("input", { id: "set-quiet-start", type: "time", value: qh.start || "" });
  const qEnd = h("input", { id: "set-quiet-end", type: "time", value: qh.end || "" });
  const tz = h("input", { id: "set-timezone", value: s.default_timezone || "UTC", placeholder: "America/Chicago" });
  const replies = ["stop", "start", "help"].map((k) => {
    const v = s.keyword_replies[k];
    const ta = h("textarea", { id: "set-reply-" + k, rows: 2, "data-k": k }, v === null ? "" : v);
    const none = h("input", { type: "checkbox", id: "set-noreply-" + k, checked: v === null });
    return { k, ta, none };
  });
  const optIn = h("input", { type: "checkbox", id: "set-opt-in", checked: !!s.require_marketing_opt_in });
  const err = h("p", { class: "error-text", role: "alert" });
  view.append(h("h1", {}, "Workspace settings"), h("form", { class: "stack panel", onsubmit: async (e) => {
    e.preventDefault(); err.textContent = "";
    const body = { default_timezone: tz.value.trim() || "UTC", require_marketing_opt_in: optIn.checked,
      quiet_hours: qStart.value && qEnd.value ? { start: qStart.value, end: qEnd.value } : null, keyword_replies: {} };
    for (const r of replies) body.keyword_replies[r.k] = r.none.checked ? null : r.ta.value;
    try { await api("PATCH", "/v1/settings", body); toast("Settings saved."); } catch (x) { err.textContent = x.message + (x.field ? ` (${x.field})` : ""); }
  } },
  h("fieldset", {}, h("legend", {}, "Quiet hours for marketing messages"), h("div", { class: "row" }, field("From", qStart), field("Until", qEnd), field("Default time zone", tz)),
    h("p", { class: "muted small" }, "Leave both times empty for none. High-priority messages are never held.")),
  h("fieldset", {}, h("legend", {}, "Keyword replies"), replies.map((r) => h("div", {}, field(r.k.toUpperCase(), r.ta), h("label", { for: r.none.id }, r.none, " send no reply")))),
  h("label", { for: "set-opt-in" }, optIn, " marketing messages need a recorded opt-in"), err,
  h("div", {}, h("button", { type: "submit", class: "primary", id: "set-save" }, "Save settings"))));
}

// ---------------------------------------------------------------- admin

async function pageAdmin(view) {
  if (ROLE !== "admin") { view.append(h("p", {}, "The admin pages need the instance admin token.")); return; }
  const [wss, providers] = await Promise.all([api("GET", "/v1/workspaces"), api("GET", "/v1/providers")]);
  const wsName = h("input", { id: "new-workspace-name", required: true });
  const keysBox = h("div", { id: "keys" });
  const keysFor = async (id) => {
    const [keys, senders] = await Promise.all([api("GET", `/v1/workspaces/${id}/keys`), api("GET", `/v1/workspaces/${id}/senders`)]);
    const sChannel = h("select", { id: "sender-channel" }, CHANNELS.map((c) => h("option", { value: c }, c)));
    const sProvider = h("select", { id: "sender-provider" }, providers.data.map((p) => h("option", { value: p.id }, `${p.name} (${p.id})`)));
    const sAddress = h("input", { id: "sender-address", required: true, placeholder: "+14155550100 or a name" });
    const sPriority = h("input", { id: "sender-priority", type: "number", value: 100 });
    const sDefault = h("input", { id: "sender-default", type: "checkbox" });
    const sendersPanel = h("div", { id: "senders" }, h("h2", {}, "Senders of ", h("span", { class: "mono" }, id)),
      h("p", { class: "muted small" }, "A channel's senders are its route: the default first, then by priority; failures move a message to the next provider."),
      table(["channel", "address", "provider", "default", "priority", ""], senders.data.map((x) => h("tr", {},
        h("td", {}, x.channel), h("td", { class: "mono" }, x.address), h("td", { class: "mono" }, x.provider_id), h("td", {}, x.default ? "yes" : ""), h("td", {}, x.priority),
        h("td", {}, h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm(`Remove sender ${x.address}?`)) return;
          try { await api("DELETE", `/v1/workspaces/${id}/senders/${x.id}`); keysFor(id); } catch (e) { fail(e); }
        } }, "Remove")))), "No senders."),
      h("form", { class: "inline", onsubmit: async (e) => {
        e.preventDefault();
        try {
          await api("POST", `/v1/workspaces/${id}/senders`, { channel: sChannel.value, provider_id: sProvider.value, address: sAddress.value.trim(), default: sDefault.checked, priority: Number(sPriority.value) });
          toast("Sender added."); keysFor(id);
        } catch (x) { fail(x); }
      } }, field("Channel", sChannel), field("Provider", sProvider), field("Address", sAddress), field("Priority", sPriority),
      h("label", { for: "sender-default" }, sDefault, " default"), h("button", { type: "submit", class: "primary", id: "sender-add" }, "Add sender")));
    keysBox.replaceChildren(h("h2", {}, "API keys of ", h("span", { class: "mono" }, id)),
      h("button", { type: "button", id: "new-key", onclick: async () => {
        try { const k = await api("POST", `/v1/workspaces/${id}/keys`); keysFor(id).then(() => keysBox.prepend(h("div", { class: "secret", role: "alert" }, "New key (shown once): ", h("code", { id: "new-key-value" }, k.key)))); } catch (x) { fail(x); }
      } }, "Create key"),
      table(["key", "hint", "created", "state", ""], keys.data.map((k) => h("tr", {}, h("td", { class: "mono" }, k.id), h("td", { class: "mono" }, k.hint), h("td", {}, time(k.created_at)),
        h("td", {}, k.revoked_at ? badge("revoked") : badge("ok")),
        h("td", {}, k.revoked_at ? "" : h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm("Revoke this key? Clients using it stop working at once.")) return;
          try { await api("DELETE", `/v1/workspaces/${id}/keys/${k.id}`); keysFor(id); } catch (x) { fail(x); }
        } }, "Revoke")))), "No keys."), sendersPanel);
  };
  const editBox = h("div", { id: "provider-edit" });
  const edit = (p) => {
    const name = h("input", { id: "edit-name", value: p.name });
    const cfg = h("textarea", { id: "edit-config", rows: 3 }, JSON.stringify(p.config || {}, null, 1));
    const cred = h("textarea", { id: "edit-credentials", rows: 2, placeholder: '{"auth_token": "…"} (empty: unchanged)' });
    const rate = h("input", { id: "edit-rate", type: "number", step: "any", min: 0, value: p.rate_per_second ?? "" });
    const burst = h("input", { id: "edit-burst", type: "number", step: "any", min: 0, value: p.burst ?? "" });
    const budget = h("input", { id: "edit-budget", type: "number", min: 1, value: p.attempt_budget ?? "" });
    const err = h("p", { class: "error-text", role: "alert" });
    const num = (el) => el.value === "" ? null : Number(el.value);
    editBox.replaceChildren(h("form", { class: "stack", onsubmit: async (e) => {
      e.preventDefault(); err.textContent = "";
      try {
        const body = { name: name.value.trim(), config: JSON.parse(cfg.value || "{}"), rate_per_second: num(rate), burst: num(burst), attempt_budget: num(budget) };
        if (cred.value.trim()) body.credentials = JSON.parse(cred.value);
        await api("PATCH", "/v1/providers/" + p.id, body); toast("Provider saved."); route();
      } catch (x) { err.textContent = x.message + (x.field ? ` (${x.field})` : ""); }
    } }, h("h2", {}, "Edit ", h("span", { class: "mono" }, p.id), " (", p.kind, ")"), field("Name", name), field("Settings (JSON)", cfg),
    field("Credentials to change (JSON; others are kept)", cred),
    h("div", { class: "row" }, field("Rate per second", rate, "empty: unlimited"), field("Burst", burst), field("Attempts before failover", budget)), err,
    h("div", {}, h("button", { type: "submit", class: "primary", id: "edit-save" }, "Save provider"))));
    editBox.scrollIntoView();
  };
  const kind = h("select", { id: "prov-kind" }, ["twilio", "whatsapp", "smpp"].map((k) => h("option", { value: k }, k)));
  const pname = h("input", { id: "prov-name", required: true });
  const config = h("textarea", { id: "prov-config", rows: 3, placeholder: '{"account_sid": "AC…"}' }, "{}");
  const creds = h("textarea", { id: "prov-credentials", rows: 2, placeholder: '{"auth_token": "…"}' }, "{}");
  const perr = h("p", { class: "error-text", role: "alert" });
  view.append(h("h1", {}, "Admin"),
    h("section", { class: "panel" }, h("h2", {}, "Workspaces"),
      table(["id", "name", "location id", "created", ""], wss.data.map((w) => h("tr", {}, h("td", { class: "mono" }, w.id), h("td", {}, w.name), h("td", {}, w.location_id || ""), h("td", {}, time(w.created_at)),
        h("td", {}, h("button", { type: "button", onclick: () => keysFor(w.id).catch(fail) }, "Keys"), " ",
          h("button", { type: "button", onclick: () => { setWorkspace(w.id); location.hash = "#/overview"; } }, "Open")))), "No workspaces."),
      h("form", { class: "inline", onsubmit: async (e) => {
        e.preventDefault();
        try { const w = await api("POST", "/v1/workspaces", { name: wsName.value.trim() }); toast("Created " + w.id); route(); } catch (x) { fail(x); }
      } }, field("New workspace", wsName), h("button", { type: "submit", class: "primary" }, "Create")), keysBox),
    h("section", { class: "panel" }, h("h2", {}, "Providers"),
      table(["id", "kind", "name", "state", "rate", ""], providers.data.map((p) => h("tr", {}, h("td", { class: "mono" }, p.id), h("td", {}, p.kind), h("td", {}, p.name),
        h("td", {}, badge(p.status), p.link ? " " + p.link : "", p.problem ? h("div", { class: "error-text" }, p.problem) : null),
        h("td", {}, p.rate_per_second ? `${p.rate_per_second}/s` : "unlimited"),
        h("td", {}, p.kind === "sim" ? "built in" : h("button", { type: "button", class: "edit-provider", "data-id": p.id, onclick: () => edit(p) }, "Edit"), " ", p.kind === "sim" ? "" : h("button", { type: "button", class: "danger", onclick: async () => {
          if (!confirm("Remove provider " + p.id + "?")) return;
          try { await api("DELETE", "/v1/providers/" + p.id); route(); } catch (x) { fail(x); }
        } }, "Remove")))), "No providers."), editBox,
      h("form", { class: "stack", onsubmit: async (e) => {
        e.preventDefault(); perr.textContent = "";
        try {
          const body = { kind: kind.value, name: pname.value.trim(), config: JSON.parse(config.value || "{}"), credentials: JSON.parse(creds.value || "{}") };
          const p = await api("POST", "/v1/providers", body); toast("Added " + p.id); route();
        } catch (x) { perr.textContent = x.message + (x.field ? ` (${x.field})` : ""); }
      } }, h("h2", {}, "Add a provider"), h("div", { class: "row" }, field("Kind", kind), field("Name", pname)),
      field("Settings (JSON)", config), field("Credentials (JSON, never shown again)", creds), perr,
      h("div", {}, h("button", { type: "submit", class: "primary", id: "prov-add" }, "Add provider")))));
}

// ---------------------------------------------------------------- shell

async function setupWorkspacePicker() {
  const picker = document.getElementById("workspace-picker");
  document.getElementById("who").textContent = ROLE === "admin" ? "admin" : "workspace " + HOME_WORKSPACE;
  if (ROLE !== "admin") return;
  document.body.classList.add("admin");
  const wss = await api("GET", "/v1/workspaces");
  picker.replaceChildren(h("option", { value: "" }, "— choose —"), ...wss.data.map((w) => h("option", { value: w.id, selected: w.id === workspace }, `${w.name} (${w.id})`)));
  if (workspace && !wss.data.some((w) => w.id === workspace)) setWorkspace("");
  picker.addEventListener("change", () => { setWorkspace(picker.value); route(); });
}

function setWorkspace(id) {
  workspace = id;
  localStorage.setItem("sb.workspace", id);
  const picker = document.getElementById("workspace-picker");
  if (picker) picker.value = id;
}

const PAGES = { overview: pageOverview, messages: pageMessages, send: pageSend, conversations: pageConversations,
  webhooks: pageWebhooks, templates: pageTemplates, settings: pageSettings, admin: pageAdmin };

async function route() {
  timers.forEach(clearInterval);
  timers = [];
  const hash = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  const page = PAGES[parts[0]] ? parts[0] : "overview";
  document.querySelectorAll("nav a").forEach((a) => a.removeAttribute("aria-current"));
  const cur = document.querySelector(`nav a[data-page="${page}"]`);
  if (cur) cur.setAttribute("aria-current", "page");
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Switchboard`;
  const view = document.getElementById("view");
  view.replaceChildren();
  delete view.dataset.ready;
  view.dataset.page = page;
  try {
    await PAGES[page](view, parts, new URLSearchParams(query || ""));
  } catch (e) {
    view.append(h("p", { class: "error-text", role: "alert" }, e.message));
  }
  view.dataset.ready = page;
}

document.getElementById("menu-toggle").addEventListener("click", (e) => {
  const nav = document.getElementById("nav");
  nav.classList.toggle("open");
  e.currentTarget.setAttribute("aria-expanded", nav.classList.contains("open"));
});
window.addEventListener("hashchange", () => { document.getElementById("nav").classList.remove("open"); route(); });
setupWorkspacePicker().catch(fail).finally(route);
