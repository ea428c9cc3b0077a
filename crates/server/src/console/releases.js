// Releases view of the Mantle console: each route's traffic split, its timeline of changes
// (who, when, from which revision to which, why, and the evidence: eval runs, gate results,
// canary analyses with their SLO readings), pipeline runs and eval results. Site admins see
// routes and pipelines; everyone sees their own evals. Built with the DOM helpers app.js passes
// in: text only ever reaches the page through textContent.

const SVG = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** A bar showing the share of callers on the stable deployment and on the canary. */
function split(ui, route) {
  const canary = route.canary ? route.canary_percent : 0;
  const svg = svgEl("svg", { viewBox: "0 0 600 28", role: "img", "aria-label": `Traffic split: ${100 - canary}% ${route.stable}${route.canary ? `, ${canary}% ${route.canary}` : ""}` });
  svg.append(svgEl("rect", { x: 0, y: 0, width: 6 * (100 - canary), height: 28, fill: "#1f5fbf" }));
  if (canary) svg.append(svgEl("rect", { x: 6 * (100 - canary), y: 0, width: 6 * canary, height: 28, fill: "#d9822b" }));
  const shadow = route.shadow ? ` · ${route.shadow_percent}% of requests copied to shadow ${route.shadow}` : "";
  return ui.h("div", { class: "split" }, svg, ui.h("p", { class: "muted", text: `${100 - canary}% ${route.stable}${route.canary ? ` · ${canary}% canary ${route.canary}` : ""}${shadow}` }));
}

/** One series over the route's changes as a small step chart (canary share, an SLO reading). */
function series(ui, label, points, format) {
  const svg = svgEl("svg", { viewBox: "0 0 600 90", role: "img", "aria-label": label });
  const max = Math.max(1e-9, ...points.map((p) => p.value));
  const step = 600 / Math.max(points.length, 1);
  points.forEach((p, i) => {
    const height = (p.value / max) * 70;
    const bar = svgEl("rect", { x: i * step + 2, y: 80 - height, width: Math.max(1, step - 4), height, fill: p.bad ? "#b42318" : "#1f5fbf" });
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${p.at}: ${format(p.value)}`;
    bar.append(title);
    svg.append(bar);
  });
  return ui.h("figure", { class: "series" }, ui.h("figcaption", { text: label }), svg);
}

function side(state) {
  if (!state) return "-";
  const part = (s) => `${s.deployment} [${(s.revision || "?").replace(/@(.{12}).*/, "@$1")}]`;
  const shadow = state.shadow ? ` (shadow ${part(state.shadow)})` : "";
  return (state.canary ? `${part(state.stable)} + ${state.canary.percent}% ${part(state.canary)}` : part(state.stable)) + shadow;
}

function evidence(ui, change) {
  const lines = [];
  for (const run of change.evidence?.eval_runs || []) {
    const counts = run.result_counts || {};
    lines.push(`eval run ${run.run}: ${run.status}, ${counts.passed ?? "?"}/${counts.total ?? "?"} passed`);
  }
  const extra = change.evidence?.extra || {};
  const analysis = extra.analysis;
  if (analysis) {
    lines.push(`analysis (${analysis.phase || `${analysis.percent}%`}): ${analysis.requests} requests, error rate ${Number(analysis.error_rate).toFixed(3)}, TTFT p95 ${analysis.ttft_p95_ms} ms, ${Number(analysis.tokens_per_sec).toFixed(1)} tok/s`);
    const base = analysis.baseline;
    if (base) lines.push(`baseline (stable, same window): ${base.requests} requests, error rate ${Number(base.error_rate).toFixed(3)}, TTFT p95 ${base.ttft_p95_ms} ms, ${Number(base.tokens_per_sec).toFixed(1)} tok/s`);
    if (analysis.ttft_regression !== undefined) lines.push(`median TTFT ${(100 * Number(analysis.ttft_regression)).toFixed(0)}% vs baseline (Mann-Whitney p = ${Number(analysis.ttft_p_value).toFixed(4)})`);
  }
  for (const gate of extra.gates || []) {
    const relative = gate.regression === undefined || gate.regression === null ? "" : `, regression ${Number(gate.regression).toFixed(4)} (95% ${Number(gate.regression_ci95[0]).toFixed(4)}…${Number(gate.regression_ci95[1]).toFixed(4)})`;
    lines.push(`gate ${gate.suite}/${gate.grader} ${gate.metric} ${Number(gate.candidate).toFixed(4)}${relative}: ${gate.passed ? "pass" : "fail"}`);
  }
  if (extra.pipeline) lines.push(`pipeline ${extra.pipeline}`);
  return lines.length ? ui.h("ul", { class: "evidence" }, lines.map((l) => ui.h("li", { text: l }))) : null;
}

async function routeCard(ui, route, binding) {
  const history = await ui.api(`/api/admin/routes/${encodeURIComponent(route.name)}/history`);
  const shares = history.map((c) => ({ at: ui.when(c.at), value: c.to?.canary?.percent || 0, bad: c.action === "rollback" }));
  const analyses = history.filter((c) => c.evidence?.extra?.analysis).map((c) => ({ at: ui.when(c.at), a: c.evidence.extra.analysis, bad: c.action === "rollback" || /Fail/.test(c.evidence.extra.analysis.verdict || "") }));
  const timeline = ui.table(["When", "Actor", "Action", "From", "To", "Why"], history.slice().reverse().map((c) => [ui.when(c.at), c.actor, ui.badge(c.action), side(c.from), side(c.to), ui.h("div", {}, c.reason, evidence(ui, c))]), `History of ${route.name}`);
  return ui.h("section", { class: "card", "aria-label": `Route ${route.name}`, "data-route": route.name },
    ui.h("h2", { text: route.name }),
    split(ui, route),
    route.rollout ? ui.h("p", { class: "muted", text: `Rollout: step ${route.rollout.step + 1} of ${route.rollout.steps.length} (${route.rollout.steps.join("% → ")}%), bake ${route.rollout.bake_secs} s, failures ${route.rollout.failures}/${route.rollout.failure_limit}` }) : null,
    binding ? ui.h("p", { class: "muted", text: `Pipeline: pushes to ${binding.repo}@${binding.branch} (${binding.spec ? "spec set on the route" : ".mantle/pipeline.yaml"})` }) : null,
    ui.h("div", { class: "charts" },
      series(ui, "Canary share per change (%)", shares, (v) => `${v}%`),
      series(ui, "Canary error rate per analysis", analyses.map((x) => ({ at: x.at, value: Number(x.a.error_rate), bad: x.bad })), (v) => v.toFixed(3)),
      series(ui, "Canary TTFT p95 per analysis (ms)", analyses.map((x) => ({ at: x.at, value: Number(x.a.ttft_p95_ms), bad: x.bad })), (v) => `${v} ms`)),
    ui.h("h3", { text: "Timeline" }), timeline);
}

function pipelineRuns(ui, runs) {
  const gates = (run) => (run.state.gates || []).map((g) => `${g.suite}/${g.grader} ${g.metric} ${Number(g.candidate).toFixed(3)}${g.production !== undefined && g.production !== null ? ` vs ${Number(g.production).toFixed(3)}` : ""} ${g.passed ? "✓" : "✗"}`).join("; ");
  return ui.h("section", { class: "card", "aria-label": "Pipeline runs" }, ui.h("h2", { text: "Pipeline runs" }),
    runs.length ? ui.table(["Run", "Route", "Status", "Stage", "Revision", "Pusher", "Gates", "Reason", "Started"], runs.map((r) => [r.id, r.route, ui.badge(r.status), r.stage, `${r.repo}@${r.commit.slice(0, 12)}`, r.pusher, gates(r), r.state.reason || "", ui.when(r.created_at)]), "Pipeline runs") : ui.h("p", { class: "muted", text: "No pipeline runs yet." }));
}

async function evalResults(ui) {
  const evals = (await ui.api("/v1/evals?limit=20&order=desc")).data || [];
  const rows = [];
  for (const ev of evals) {
    const runs = (await ui.api(`/v1/evals/${encodeURIComponent(ev.id)}/runs?limit=5&order=desc`)).data || [];
    for (const run of runs) {
      const criteria = (run.per_testing_criteria_results || []).map((c) => `${c.testing_criteria}: ${c.passed}/${c.passed + c.failed}${c.perplexity !== undefined ? ` ppl ${Number(c.perplexity).toFixed(2)}` : ""}${c.pass_rate_ci95 ? ` (95% ${Number(c.pass_rate_ci95[0]).toFixed(2)}…${Number(c.pass_rate_ci95[1]).toFixed(2)})` : ""}`).join("; ");
      rows.push([ev.name, run.id, ui.badge(run.status), run.model || "", run.revision || "", `${run.result_counts?.passed ?? 0}/${run.result_counts?.total ?? 0}`, criteria, ui.when(new Date(run.created_at * 1000).toISOString())]);
    }
  }
  return ui.h("section", { class: "card", "aria-label": "Eval results" }, ui.h("h2", { text: "Eval results" }),
    rows.length ? ui.table(["Eval", "Run", "Status", "Model", "Revision", "#Passed", "Per grader", "Created"], rows, "Eval runs") : ui.h("p", { class: "muted", text: "No eval runs yet." }));
}

/** The Releases view. */
export async function releasesView(ui) {
  const sections = [];
  if (ui.admin) {
    const [routes, bindings, runs] = await Promise.all([ui.api("/api/admin/routes"), ui.api("/api/admin/pipelines"), ui.api("/api/admin/pipelines/runs?limit=50")]);
    const cards = await Promise.all(routes.map((r) => routeCard(ui, r, bindings.find((b) => b.route === r.name))));
    sections.push(cards.length ? ui.h("div", {}, cards) : ui.h("p", { class: "card", text: "No release routes yet." }), pipelineRuns(ui, runs));
  } else {
    sections.push(ui.h("p", { class: "card muted", text: "Routes and pipelines are managed by site admins; your eval results are below." }));
  }
  sections.push(await evalResults(ui));
  ui.view("Releases", ...sections);
}
