// Mantle console: a single-page app over Mantle's public JSON APIs. The token lives in
// sessionStorage and travels only in the Authorization header (never in a URL, never in a
// cookie, so no request is sent with ambient credentials and CSRF has nothing to ride on).
// Every piece of user-supplied text reaches the page through textContent or the DOM-building
// Markdown renderer below: no HTML string is ever parsed, so a model card cannot run script.

import { releasesView } from "/console/releases.js";
import { retrievalView } from "/console/retrieval.js";

const TOKEN_KEY = "mantle.token";
const state = { token: sessionStorage.getItem(TOKEN_KEY), me: null, admin: false, timers: [], gen: 0 };

// ---------- DOM helpers ----------

function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "href") el.setAttribute("href", safeHref(value));
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Links: http(s), in-page and same-site paths only; anything else (javascript:, data:...) goes nowhere. */
function safeHref(url) {
  const text = String(url).trim();
  if (/^https?:\/\//i.test(text) || text.startsWith("#") || (text.startsWith("/") && !text.startsWith("//"))) return text;
  return "#";
}

function badge(status) {
  const word = String(status || "unknown");
  return h("span", { class: `badge ${word.replace(/[^a-z]/g, "")}`, text: word });
}

function bytes(n) {
  if (n === undefined || n === null) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function when(text) {
  if (!text) return "";
  const t = new Date(text);
  return isNaN(t) ? String(text) : t.toISOString().replace("T", " ").slice(0, 19) + "Z";
}

function table(headers, rows, label) {
  return h("table", { "aria-label": label },
    h("thead", {}, h("tr", {}, headers.map((c) => h("th", { scope: "col", class: c.startsWith("#") ? "num" : null, text: c.replace(/^#/, "") })))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", { class: typeof c === "number" ? "num" : null }, c))))));
}

function field(label, input) {
  return h("label", {}, label, input);
}

/** Shows a view, unless a later navigation started since `gen` (slow views never overwrite newer ones). */
function view(gen, title, ...children) {
  if (gen !== state.gen) return;
  const main = document.getElementById("main");
  main.replaceChildren(h("h1", { text: title }), ...children);
  document.title = `${title} · Mantle`;
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert", text: String(err.message || err) });
}

// ---------- API ----------

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers, credentials: "omit", cache: "no-store" });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!response.ok) {
    const message = (body && (body.error?.message || body.error || body.message)) || `${response.status} ${response.statusText}`;
    const err = new Error(typeof message === "string" ? message : JSON.stringify(message));
    err.status = response.status;
    throw err;
  }
  return body;
}

// ---------- Markdown (safe by construction: builds DOM nodes, never parses HTML) ----------

function inline(text) {
  const out = [];
  const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*\s][^*]*\*)|(!?\[[^\]]*\]\([^)\s]*\))/g;
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    if (match.index > last) out.push(text.slice(last, match.index));
    const token = match[0];
    if (match[1]) out.push(h("code", { text: token.slice(1, -1) }));
    else if (match[2]) out.push(h("strong", {}, ...inline(token.slice(2, -2))));
    else if (match[3]) out.push(h("em", {}, ...inline(token.slice(1, -1))));
    else {
      const image = token.startsWith("!");
      const label = token.slice(image ? 2 : 1, token.indexOf("]"));
      const url = token.slice(token.indexOf("](") + 2, -1);
      // Images are not fetched (no third-party requests); they show as links.
      out.push(h("a", { href: url, rel: "noopener noreferrer nofollow", text: image ? `[image: ${label}]` : label }));
    }
    last = match.index + token.length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

function markdown(source) {
  const root = h("div", { class: "markdown" });
  let text = String(source || "").replace(/\r\n/g, "\n");
  const front = text.match(/^---\n([\s\S]*?)\n---\n?/);
  if (front) {
    root.append(h("pre", { class: "json", "aria-label": "Card metadata", text: front[1] }));
    text = text.slice(front[0].length);
  }
  const lines = text.split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith("```")) {
      const code = [];
      i++;
      while (i < lines.length && !lines[i].startsWith("```")) code.push(lines[i++]);
      i++;
      root.append(h("pre", {}, h("code", { text: code.join("\n") })));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      root.append(h(`h${Math.min(6, heading[1].length + 1)}`, {}, ...inline(heading[2])));
      i++;
      continue;
    }
    if (/^\s*([-*+]|\d+\.)\s+/.test(line)) {
      const ordered = /^\s*\d+\./.test(line);
      const list = h(ordered ? "ol" : "ul");
      while (i < lines.length && /^\s*([-*+]|\d+\.)\s+/.test(lines[i])) {
        list.append(h("li", {}, ...inline(lines[i].replace(/^\s*([-*+]|\d+\.)\s+/, ""))));
        i++;
      }
      root.append(list);
      continue;
    }
    if (!line.trim()) { i++; continue; }
    const para = [];
    while (i < lines.length && lines[i].trim() && !/^(#{1,6}\s|```|\s*([-*+]|\d+\.)\s)/.test(lines[i])) para.push(lines[i++]);
    root.append(h("p", {}, ...inline(para.join(" "))));
  }
  return root;
}

// ---------- sign-in ----------

async function signIn(token) {
  state.token = token;
  const me = await api("/api/whoami-v2");
  state.me = me;
  // Site admins are the tokens the admin API answers; nothing console-only decides it.
  state.admin = await api("/api/admin/deployments").then(() => true, () => false);
  sessionStorage.setItem(TOKEN_KEY, token);
  renderChrome();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  Object.assign(state, { token: null, me: null, admin: false });
  renderChrome();
  location.hash = "#/signin";
}

function renderChrome() {
  const signedIn = Boolean(state.me);
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("signout").hidden = !signedIn;
  for (const el of document.querySelectorAll("[data-admin]")) el.hidden = !state.admin;
  const role = state.me?.auth?.accessToken?.role;
  document.getElementById("who").textContent = signedIn ? `${state.me.name} · ${role} token${state.admin ? " · site admin" : ""}` : "";
}

function signInView(problem) {
  const gen = state.gen;
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true, "aria-describedby": "token-help" });
  const status = h("p", { role: "status" });
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    status.textContent = "Signing in…";
    try {
      await signIn(input.value.trim());
      location.hash = "#/hub";
    } catch (err) {
      state.token = null;
      status.replaceChildren(errorBox(err.status === 401 ? "That token is not valid." : err));
    }
  } },
  field("Mantle token", input),
  h("p", { class: "muted", id: "token-help", text: "Kept in this tab only (sessionStorage) and sent in the Authorization header." }),
  h("button", { type: "submit", text: "Sign in" }), status);
  view(gen, "Sign in", problem ? errorBox(problem) : null, form);
  input.focus();
}

// ---------- hub ----------

async function hubView() {
  const gen = state.gen;
  view(gen, "Hub", h("p", { role: "status", text: "Loading repositories…" }));
  const repos = await api("/api/models?limit=200");
  const rows = [];
  const body = h("tbody");
  const list = h("table", { "aria-label": "Repositories" },
    h("thead", {}, h("tr", {}, ["Repository", "Owner", "Visibility", "Last commit", "Format", "Verdict"].map((c) => h("th", { scope: "col", class: c === "Last commit" ? "hide-narrow" : null, text: c })))), body);
  for (const repo of repos) {
    const commit = h("td", { class: "hide-narrow" });
    const format = h("td");
    const verdict = h("td", {}, badge("…"));
    body.append(h("tr", {}, h("td", {}, h("a", { href: `#/repo/${repo.id}`, text: repo.id })), h("td", { text: repo.author }), h("td", {}, badge(repo.private ? "private" : "public")), commit, format, verdict));
    rows.push(Promise.all([
      api(`/api/models/${repo.id}`).then((info) => { commit.textContent = `${info.sha.slice(0, 8)} · ${when(info.lastModified)}`; }, () => {}),
      api(`/api/models/${repo.id}/vetting/main`).then((v) => {
        format.textContent = Object.keys(v.formats || {}).join(", ");
        verdict.replaceChildren(badge(v.blocked ? "blocked" : v.status));
      }, () => verdict.replaceChildren(badge("none"))),
    ]));
  }
  view(gen, "Hub", h("div", { class: "card" }, repos.length ? list : h("p", { text: "No repositories you can see yet." })));
  await Promise.all(rows);
}

async function repoView(id, tab = "card") {
  const gen = state.gen;
  view(gen, id, h("p", { role: "status", text: "Loading…" }));
  // Any revision: a branch, a tag or a commit (`?rev=`), main by default.
  const rev = new URLSearchParams(location.hash.split("?")[1] || "").get("rev") || "main";
  const at = encodeURIComponent(rev);
  const [info, refs, commits, verdict] = await Promise.all([
    api(rev === "main" ? `/api/models/${id}` : `/api/models/${id}/revision/${at}`),
    api(`/api/models/${id}/refs`).catch(() => ({ branches: [], tags: [] })),
    api(`/api/models/${id}/commits/${at}`).catch(() => []),
    api(`/api/models/${id}/vetting/${at}`).catch(() => null),
  ]);
  const tabs = ["card", "files", "history", "vetting"];
  const suffix = rev === "main" ? "" : `?rev=${at}`;
  const panel = h("div", { class: "card", role: "tabpanel", id: "panel" });
  const bar = h("div", { class: "tabs", role: "tablist", "aria-label": "Repository" }, tabs.map((t) => h("button", { type: "button", role: "tab", "aria-selected": String(t === tab), "aria-controls": "panel", text: t[0].toUpperCase() + t.slice(1), onclick: () => { location.hash = `#/repo/${id}/${t}${suffix}`; } })));
  const names = [...refs.branches.map((b) => b.name), ...refs.tags.map((t) => t.name)];
  if (!names.includes(rev)) names.push(rev);
  const picker = h("select", { id: "revision", onchange: (e) => { location.hash = `#/repo/${id}/${tab}${e.target.value === "main" ? "" : `?rev=${encodeURIComponent(e.target.value)}`}`; } }, names.map((n) => h("option", { value: n, selected: n === rev, text: n.length === 40 ? n.slice(0, 12) : n })));
  const summary = h("div", { class: "row" }, field("Revision", picker), h("p", {}, badge(info.private ? "private" : "public"), " ", verdict ? badge(verdict.blocked ? "blocked" : verdict.status) : null, h("span", { class: "muted", text: `  ${info.sha.slice(0, 12)} · ${when(info.lastModified)} · by ${info.author}` })));
  view(gen, id, summary, bar, panel);
  if (tab === "card") {
    const readme = await fetch(`/${id}/resolve/${at}/README.md`, { headers: state.token ? { Authorization: `Bearer ${state.token}` } : {}, credentials: "omit" });
    panel.append(readme.ok ? markdown(await readme.text()) : h("p", { class: "muted", text: "No model card." }));
  } else if (tab === "files") {
    const byPath = new Map((verdict?.files || []).map((f) => [f.path, f]));
    panel.append(table(["File", "#Size", "Format", "Verdict"], info.siblings.map((s) => {
      const v = byPath.get(s.rfilename);
      return [s.rfilename, bytes(s.size ?? s.lfs?.size), v?.format || "", v ? badge(v.findings.length ? v.findings.map((f) => f.level).sort().pop() : v.status) : ""];
    }), "Files"));
  } else if (tab === "history") {
    panel.append(h("h2", { text: "Commits" }), table(["Commit", "Title", "Authors", "Date", "Vetting"], commits.map((c) => [h("code", { text: c.id.slice(0, 12) }), c.title, (c.authors || []).map((a) => a.user).join(", "), when(c.date), h("a", { href: `#/repo/${id}/vetting?rev=${c.id}`, text: "verdict", "aria-label": `Verdict of ${c.id.slice(0, 12)}` })]), "Commits"));
    panel.append(h("h2", { text: "Branches and tags" }), table(["Kind", "Name", "Commit"], [...refs.branches.map((b) => ["branch", b.name, h("code", { text: b.targetCommit.slice(0, 12) })]), ...refs.tags.map((t) => ["tag", t.name, h("code", { text: t.targetCommit.slice(0, 12) })])], "Branches and tags"));
  } else {
    panel.append(vettingPanel(id, verdict));
  }
  if (state.admin) panel.after(deployForm(id, rev, info.sha));
}

function vettingPanel(id, verdict) {
  if (!verdict) return h("p", { text: "No verdict for this revision." });
  const findings = [];
  for (const file of verdict.files) for (const f of file.findings) findings.push({ file, f, overridden: false });
  for (const file of verdict.files) for (const o of file.overridden) findings.push({ file, f: o.finding, overridden: o.override });
  const out = h("div", {},
    h("p", {}, "Verdict: ", badge(verdict.status), verdict.blocked ? " " : null, verdict.blocked ? badge("blocked") : null, h("span", { class: "muted", text: `  commit ${verdict.commit.slice(0, 12)} · scanner ${verdict.scanner_version}` })),
    verdict.reasons.length ? h("ul", {}, verdict.reasons.map((r) => h("li", { text: r }))) : null,
    h("h2", { text: "Findings" }),
    findings.length ? table(["File", "#Offset", "Level", "Code", "Reason", "Override"], findings.map(({ file, f, overridden }) => [f.member ? `${file.path} → ${f.member}` : file.path, f.offset ?? "", badge(f.level), f.code, f.reason, overridden ? `accepted by ${overridden.author}: ${overridden.justification}` : ""]), "Findings") : h("p", { text: "No findings." }),
    verdict.repo_findings.length ? table(["Level", "Code", "Reason"], verdict.repo_findings.map((f) => [badge(f.level), f.code, f.reason]), "Repository findings") : null,
    h("h2", { text: "Policy" }),
    table(["Setting", "Value"], [["Pickle allowed", String(verdict.policy.allow_pickle)], ["Allowed licences", verdict.policy.allowed_licenses ? verdict.policy.allowed_licenses.join(", ") : "any"], ["Suspicious blocks", String(verdict.policy.suspicious_blocks)], ["Licence", verdict.license || "none declared"]], "Policy"));
  if (state.admin && findings.some((x) => !x.overridden)) {
    const choice = h("select", { id: "override-finding" }, findings.filter((x) => !x.overridden).map(({ file, f }, i) => h("option", { value: String(i), text: `${file.path}: ${f.code}` })));
    const why = h("textarea", { id: "override-why", required: true, minlength: "10" });
    const status = h("p", { role: "status" });
    const open = findings.filter((x) => !x.overridden);
    out.append(h("h2", { text: "Override a finding" }), h("form", { onsubmit: async (e) => {
      e.preventDefault();
      const { file, f } = open[Number(choice.value)];
      try {
        await api(`/api/policies/${id.split("/")[0]}/overrides`, { method: "POST", json: { sha256: file.sha256, code: f.code, subject: f.subject, justification: why.value } });
        status.textContent = "Override recorded (audited); the verdict is recomputed.";
      } catch (err) { status.replaceChildren(errorBox(err)); }
    } }, field("Finding", choice), field("Written justification", why), h("button", { type: "submit", text: "Accept this finding" }), status));
  }
  return out;
}

function deployForm(repo, rev, sha) {
  const name = h("input", { id: "deploy-name", required: true, pattern: "[a-z0-9][a-z0-9._-]*", value: repo.split("/")[1].toLowerCase().replace(/[^a-z0-9._-]/g, "-") });
  const revision = h("input", { id: "deploy-revision", value: rev });
  const context = h("input", { id: "deploy-context", type: "number", min: "128", value: "2048" });
  const batch = h("input", { id: "deploy-batch", type: "number", min: "1", value: "4" });
  const status = h("p", { role: "status" });
  return h("form", { class: "card", "aria-label": "Deploy", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const d = await api("/api/admin/deployments", { method: "POST", json: { name: name.value, repo, revision: revision.value, context: Number(context.value), max_batch: Number(batch.value) } });
      status.replaceChildren("Deployed ", h("a", { href: "#/deployments", text: d.name }), ` at ${d.commit.slice(0, 12)}.`);
    } catch (err) { status.replaceChildren(errorBox(err)); }
  } }, h("h2", { text: "Deploy this repository" }), h("div", { class: "row" }, field("Name", name), field("Revision", revision), field("Context", context), field("Max batch", batch), h("button", { type: "submit", id: "deploy", text: "Deploy" })), h("p", { class: "muted", text: `${rev} is at ${sha.slice(0, 12)}; the deployment pins the revision's commit, and only a revision whose verdict passes deploys.` }), status);
}

// ---------- live metrics ----------

function parseMetrics(text) {
  const samples = new Map();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-z_]+)(\{[^}]*\})?\s+(\S+)$/);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[2] || "").slice(1, -1).matchAll(/(\w+)="([^"]*)"/g)) labels[pair[1]] = pair[2];
    if (!samples.has(m[1])) samples.set(m[1], []);
    samples.get(m[1]).push({ labels, value: Number(m[3]) });
  }
  return samples;
}

function sumOf(samples, name, deployment, filter = () => true) {
  return (samples.get(name) || []).filter((s) => s.labels.deployment === deployment && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** The q-quantile of a cumulative histogram's bucket increments (null when nothing was observed). */
function quantile(now, before, name, deployment, q) {
  const buckets = (snap) => (snap.get(`${name}_bucket`) || []).filter((s) => s.labels.deployment === deployment).map((s) => ({ le: s.labels.le === "+Inf" ? Infinity : Number(s.labels.le), value: s.value }));
  const a = buckets(now);
  const b = before ? buckets(before) : [];
  const counts = a.map((x, i) => ({ le: x.le, value: x.value - (b[i]?.value || 0) }));
  const total = counts.length ? counts[counts.length - 1].value : 0;
  if (!total) return null;
  // Linear within the bucket the rank falls in, as Prometheus' histogram_quantile does.
  const rank = q * total;
  const i = counts.findIndex((c) => c.value >= rank);
  if (i < 0 || !isFinite(counts[i].le)) return counts[counts.length - 2]?.le ?? null;
  const lo = i ? counts[i - 1].le : 0;
  const below = i ? counts[i - 1].value : 0;
  const inside = counts[i].value - below;
  return inside ? lo + (counts[i].le - lo) * ((rank - below) / inside) : counts[i].le;
}

function chart(title, unit) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 300 90");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#1f5fbf");
  line.setAttribute("stroke-width", "2");
  svg.append(line);
  const value = h("div", { class: "value", text: "–" });
  const box = h("figure", { class: "chart", "data-points": "0" }, h("figcaption", { class: "muted", text: title }), value, svg);
  const points = [];
  box.push = (v) => {
    points.push(v ?? 0);
    if (points.length > 60) points.shift();
    const max = Math.max(...points, 1e-9);
    line.setAttribute("points", points.map((p, i) => `${(i / 59) * 300},${88 - (p / max) * 84}`).join(" "));
    value.textContent = v === null || v === undefined ? "–" : `${Number(v.toFixed(3))} ${unit}`;
    box.dataset.points = String(points.length);
    box.dataset.last = String(v ?? 0);
    box.dataset.max = String(Math.max(...points));
  };
  return box;
}

async function deploymentsView() {
  const gen = state.gen;
  view(gen, "Deployments", h("p", { role: "status", text: "Loading…" }));
  let deployments;
  if (state.admin) {
    deployments = await api("/api/admin/deployments");
  } else {
    const [models, ps] = await Promise.all([api("/v1/models"), api("/api/ps").catch(() => ({ models: [] }))]);
    const resident = new Set(ps.models.map((m) => m.model));
    deployments = models.data.map((m) => ({ name: m.id, repo: m.owned_by, commit: "", resident: resident.has(m.id) }));
  }
  const verdicts = await Promise.all(deployments.map((d) => (d.commit ? api(`/api/models/${d.repo}/vetting/${d.commit}`).catch(() => null) : Promise.resolve(null))));
  const sections = deployments.map((d, i) => {
    const verdict = verdicts[i];
    const status = verdict?.blocked ? "blocked" : "ready";
    const charts = { rps: chart("Requests/s", "req/s"), p50: chart("Time to first token p50", "s"), p95: chart("Time to first token p95", "s"), tps: chart("Tokens/s", "tok/s"), queue: chart("Queue depth", ""), errors: chart("Error rate", "") };
    const resident = h("span", {}, badge(d.resident ? "resident" : "not loaded"));
    const section = h("section", { class: "card", "aria-label": d.name, "data-deployment": d.name },
      h("h2", { text: d.name }),
      h("p", {}, badge(status), " ", verdict ? badge(verdict.status) : null, " ", resident, h("span", { class: "muted", text: `  ${d.repo}${d.commit ? "@" + d.commit.slice(0, 12) : ""}${d.max_batch ? ` · batch ${d.max_batch} · context ${d.context}` : ""}` })),
      h("div", { class: "charts" }, Object.values(charts)),
      state.admin ? h("button", { type: "button", class: "secondary", text: "Undeploy", onclick: async () => {
        if (!confirm(`Undeploy ${d.name}?`)) return;
        await api(`/api/admin/deployments/${encodeURIComponent(d.name)}`, { method: "DELETE" });
        route();
      } }) : null);
    return { d, charts, resident, section };
  });
  view(gen, "Deployments", deployments.length ? h("div", {}, sections.map((s) => s.section)) : h("p", { class: "card", text: "Nothing is deployed that you can use." }), h("p", { class: "muted", text: "Live from /metrics every 2 s (this replica)." }));
  let before = null;
  let beforeAt = 0;
  const tick = async () => {
    const text = await fetch("/metrics", { credentials: "omit", cache: "no-store" }).then((r) => r.text()).catch(() => null);
    if (text === null) return;
    const now = parseMetrics(text);
    const at = performance.now();
    const dt = before ? (at - beforeAt) / 1000 : 0;
    for (const { d, charts, resident } of sections) {
      const requests = (snap) => sumOf(snap, "mantle_requests_total", d.name);
      const failures = (snap) => sumOf(snap, "mantle_requests_total", d.name, (l) => l.outcome === "failed" || l.outcome === "rejected");
      const tokens = (snap) => sumOf(snap, "mantle_completion_tokens_total", d.name);
      const dr = before ? requests(now) - requests(before) : 0;
      charts.rps.push(dt ? dr / dt : 0);
      charts.tps.push(dt ? (tokens(now) - tokens(before)) / dt : 0);
      charts.queue.push(sumOf(now, "mantle_queue_depth", d.name));
      charts.errors.push(dr ? (failures(now) - failures(before)) / dr : 0);
      charts.p50.push(quantile(now, before, "mantle_time_to_first_token_seconds", d.name, 0.5));
      charts.p95.push(quantile(now, before, "mantle_time_to_first_token_seconds", d.name, 0.95));
      const loaded = (now.get("mantle_model_memory_bytes") || []).some((s) => s.labels.deployment === d.name);
      resident.replaceChildren(badge(loaded ? "resident" : "not loaded"));
    }
    before = now;
    beforeAt = at;
  };
  await tick();
  if (gen === state.gen) state.timers.push(setInterval(tick, 2000));
}

// ---------- playground ----------

async function playgroundView() {
  const gen = state.gen;
  const models = await api("/v1/models");
  const model = h("select", { id: "pg-model" }, models.data.map((m) => h("option", { value: m.id, text: m.id })));
  const system = h("textarea", { id: "pg-system" });
  system.value = "You are a helpful assistant.";
  const prompt = h("textarea", { id: "pg-prompt", required: true });
  const temperature = h("input", { id: "pg-temperature", type: "number", min: "0", max: "2", step: "0.1", value: "0.7" });
  const maxTokens = h("input", { id: "pg-max-tokens", type: "number", min: "1", value: "128" });
  const log = h("div", { class: "chat", "aria-live": "polite", id: "pg-log" });
  const send = h("button", { type: "submit", id: "pg-send", text: "Send" });
  const history = [];
  const form = h("form", { class: "card", onsubmit: async (e) => {
    e.preventDefault();
    const text = prompt.value.trim();
    if (!text) return;
    history.push({ role: "user", content: text });
    log.append(h("div", { class: "msg" }, h("div", { class: "role", text: "user" }), h("div", { class: "answer", text })));
    const answer = h("div", { class: "answer", id: "pg-answer" });
    const meta = h("p", { class: "muted" });
    log.querySelector("#pg-answer")?.removeAttribute("id");
    log.append(h("div", { class: "msg" }, h("div", { class: "role", text: "assistant" }), answer, meta));
    prompt.value = "";
    send.disabled = true;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        credentials: "omit",
        headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ model: model.value, stream: true, stream_options: { include_usage: true }, temperature: Number(temperature.value), max_tokens: Number(maxTokens.value), messages: [...(system.value ? [{ role: "system", content: system.value }] : []), ...history] }),
      });
      if (!response.ok) throw new Error((await response.json().catch(() => null))?.error?.message || response.statusText);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let fingerprint = "";
      let usage = null;
      let finish = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = event.replace(/^data: /, "");
          if (!data || data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          fingerprint = chunk.system_fingerprint || fingerprint;
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices?.[0]?.delta;
          if (delta?.content) answer.textContent += delta.content;
          finish = chunk.choices?.[0]?.finish_reason || finish;
        }
      }
      history.push({ role: "assistant", content: answer.textContent });
      meta.textContent = `${fingerprint} · ${usage ? `${usage.prompt_tokens} prompt + ${usage.completion_tokens} completion tokens` : ""} · ${finish}`;
      meta.dataset.fingerprint = fingerprint;
    } catch (err) {
      meta.replaceChildren(errorBox(err));
    } finally {
      send.disabled = false;
    }
  } },
  h("div", { class: "row" }, field("Model", model), field("Temperature", temperature), field("Max tokens", maxTokens)),
  field("System prompt", system), field("Message", prompt), send);
  view(gen, "Playground", models.data.length ? form : h("p", { class: "card", text: "No deployment you can use." }), log);
}

// ---------- usage ----------

function bars(rows, key, value, label, format = (v) => String(v)) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 600 180");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const max = Math.max(1e-9, ...rows.map(value));
  const slot = 600 / Math.max(rows.length, 1);
  const width = Math.min(slot - 6, 80);
  const text = (x, y, content) => {
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", String(x));
    t.setAttribute("y", String(y));
    t.setAttribute("text-anchor", "middle");
    t.setAttribute("font-size", "11");
    t.setAttribute("fill", "#5b6573");
    t.textContent = content;
    return t;
  };
  rows.forEach((r, i) => {
    const rect = document.createElementNS(ns, "rect");
    const height = (value(r) / max) * 130;
    const x = i * slot + (slot - width) / 2;
    rect.setAttribute("x", String(x));
    rect.setAttribute("y", String(150 - height));
    rect.setAttribute("width", String(Math.max(1, width)));
    rect.setAttribute("height", String(height));
    rect.setAttribute("fill", "#1f5fbf");
    const title = document.createElementNS(ns, "title");
    title.textContent = `${key(r)}: ${format(value(r))}`;
    rect.append(title);
    svg.append(rect);
    if (rows.length <= 16) {
      svg.append(text(x + width / 2, 145 - height, format(value(r))));
      const name = String(key(r));
      svg.append(text(x + width / 2, 166, name.length > 14 ? `${name.slice(0, 13)}…` : name));
    }
  });
  return h("div", { class: "bars" }, svg);
}

async function usageView(by = "day") {
  const gen = state.gen;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  by = params.get("by") || by;
  const org = params.get("org") || "";
  const since = params.get("since") || "";
  const query = new URLSearchParams({ by });
  if (org) query.set("org", org);
  if (since) query.set("since", since);
  const report = await api(`/api/usage?${query}`);
  const groupBy = h("select", { id: "usage-by" }, ["day", "deployment", "token", "account"].map((g) => h("option", { value: g, selected: g === by, text: g })));
  const orgInput = h("input", { id: "usage-org", value: org, placeholder: state.admin ? "all orgs" : "admins only", disabled: !state.admin });
  const sinceInput = h("input", { id: "usage-since", type: "date", value: since.slice(0, 10) });
  const form = h("form", { class: "card row", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ by: groupBy.value });
    if (orgInput.value) q.set("org", orgInput.value);
    if (sinceInput.value) q.set("since", `${sinceInput.value}T00:00:00Z`);
    location.hash = `#/usage?${q}`;
  } }, field("Group by", groupBy), field("Org", orgInput), field("Since", sinceInput), h("button", { type: "submit", text: "Show" }));
  const rows = report.rows;
  view(gen, "Usage", form,
    h("div", { class: "card" }, h("h2", { text: `Tokens by ${by}` }), bars(rows, (r) => r.key, (r) => r.total_tokens, `Tokens by ${by}`), h("h2", { text: `Cost by ${by}` }), bars(rows, (r) => r.key, (r) => r.cost, `Cost by ${by}`, (v) => Number(v.toFixed(4)).toString())),
    h("div", { class: "card" }, table([by, "#Requests", "#Errors", "#Prompt tokens", "#Completion tokens", "#Total tokens", "#Cost"], [...rows, { ...report.total, key: "total" }].map((r) => [r.key, r.requests, r.errors, r.prompt_tokens, r.completion_tokens, r.total_tokens, Number(r.cost.toFixed(6))]), "Usage")));
}

// ---------- audit ----------

async function auditView() {
  const gen = state.gen;
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const [entries, verify] = await Promise.all([api("/api/admin/audit?limit=2000"), api("/api/admin/audit/verify")]);
  const filters = { actor: params.get("actor") || "", action: params.get("action") || "", target: params.get("target") || "" };
  const inputs = Object.fromEntries(Object.entries(filters).map(([k, v]) => [k, h("input", { id: `audit-${k}`, value: v })]));
  const shown = entries.filter((e) => Object.entries(filters).every(([k, v]) => !v || String(e[k]).includes(v))).reverse();
  const form = h("form", { class: "card row", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [k, input] of Object.entries(inputs)) if (input.value) q.set(k, input.value);
    location.hash = `#/audit?${q}`;
  } }, field("Actor", inputs.actor), field("Action", inputs.action), field("Target", inputs.target), h("button", { type: "submit", text: "Filter" }));
  const chain = h("p", { id: "audit-chain" }, verify.ok ? badge("ok") : badge("error"), verify.ok ? ` Hash chain verified: ${verify.checked} events intact.` : ` Hash chain broken at event ${verify.broken_seq}: ${verify.reason}`);
  view(gen, "Audit", h("div", { class: "card" }, chain), form,
    h("div", { class: "card" }, table(["#Seq", "Time", "Actor", "Action", "Target", "Details"], shown.slice(0, 500).map((e) => [e.seq, when(e.time), e.actor, e.action, e.target, h("pre", { class: "json", text: JSON.stringify(e.details) })]), "Audit events")));
}

// ---------- routing ----------

async function route() {
  for (const timer of state.timers.splice(0)) clearInterval(timer);
  const gen = ++state.gen;
  const hash = location.hash || "#/hub";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const link of document.querySelectorAll("#nav a")) link.setAttribute("aria-current", hash.startsWith(link.getAttribute("href")) ? "page" : "false");
  if (!state.me) {
    if (state.token) {
      try { await signIn(state.token); } catch { state.token = null; sessionStorage.removeItem(TOKEN_KEY); }
    }
    if (!state.me) return signInView();
  }
  try {
    switch (parts[0]) {
      case "signin": return signInView();
      case "repo": return await repoView(`${parts[1]}/${parts[2]}`, parts[3] || "card");
      case "vetting": return await repoView(`${parts[1]}/${parts[2]}`, "vetting");
      case "deployments": return await deploymentsView();
      case "playground": return await playgroundView();
      case "usage": return await usageView();
      case "releases": return await releasesView({ h, api, table, badge, when, admin: state.admin, view: (title, ...children) => view(gen, title, ...children) });
      case "retrieval": return await retrievalView({ h, api, table, badge, when, bytes, field, view: (title, ...children) => view(gen, title, ...children) }, parts[1]);
      case "audit": return state.admin ? await auditView() : view(gen, "Audit", errorBox("The audit log needs a site admin token."));
      default: return await hubView();
    }
  } catch (err) {
    view(gen, "Error", errorBox(err));
  }
}

document.getElementById("signout").addEventListener("click", signOut);
window.addEventListener("hashchange", route);
route();
