// One alert: finding, explanation, ATT&CK context, subgraph (cytoscape.js, canvas renderer),
// evidence flows, entity timeline with score history, triage actions and their history.
"use strict";
(() => {
  const {el, api, post, time, num, sevBadge, techText, showError} = GS;
  const id = new URLSearchParams(location.search).get("id") || "";
  const $ = (x) => document.getElementById(x);

  function kv(pairs) {
    const dl = el("dl", {cls: "kv"});
    for (const [k, v] of pairs) dl.append(el("dt", {text: k}), el("dd", {}, v instanceof Node ? v : (v === null || v === undefined || v === "" ? "—" : String(v))));
    return dl;
  }

  function table(cols, rows, attrs) {
    return el("table", attrs || {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", {text: c})))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((v) => el("td", {}, v instanceof Node ? v : (v === null || v === undefined ? "—" : String(v))))))));
  }

  function link(href, text) { return el("a", {href, text}); }

  function renderSummary(d) {
    const s = d.summary;
    document.title = `alert ${s.id}`;
    $("title").textContent = s.title || `alert ${s.id}`;
    const hostLink = (h) => h ? link(`/?host=${encodeURIComponent(h)}`, h) : "—";
    const pairs = [
      ["alert id", s.id], ["severity", sevBadge(s.severity_id)],
      ["window (UTC)", `${time(s.window_start)} – ${time(s.window_end)}`],
      ["first / last seen", `${time(s.first_seen)} / ${time(s.last_seen)}`],
      [s.kind === "transaction" ? "card (customer)" : "source", hostLink(s.src)],
      [s.kind === "transaction" ? "terminal" : "destination", hostLink(s.dst)],
      ["flows folded in", num(s.count)], ["score / threshold", `${num(s.score, 4)} / ${num(s.threshold, 4)}`],
      ["model version", s.model_version], ["kind", s.kind],
    ];
    if (s.kind === "transaction") pairs.push(["amount", num(s.amount, 2)]);
    if (s.distinct_sources !== null) pairs.push(["distinct sources", num(s.distinct_sources)]);
    if (s.distinct_destinations !== null) pairs.push(["distinct destinations", num(s.distinct_destinations)]);
    if (s.windows !== null) pairs.push(["windows seen in", num(s.windows)]);
    if (s.services !== null) pairs.push(["distinct services", num(s.services)]);
    if (s.direction) pairs.push(["direction", s.direction]);
    if (s.activity) pairs.push(["last activity", s.activity]);
    if (s.group_by) pairs.push(["grouped by", s.group_by === "dst" ? "destination (incident)" : s.group_by]);
    const pivots = el("div", {cls: "actions"},
      link("#flows", "related flows"), " · ",
      s.entity ? link(`/?host=${encodeURIComponent(s.entity)}`, `all alerts of ${s.entity}`) : null);
    $("summary-body").replaceChildren(kv(pairs), pivots);
    $("raw-json").textContent = JSON.stringify(d.finding, null, 2);
  }

  function renderTriage(state, history) {
    $("status").textContent = state.status + (state.verdict ? ` (${state.verdict})` : "") +
      (state.assignee ? ` · assigned to ${state.assignee}` : "");
    $("history").replaceChildren(...history.map((h) => {
      const det = Object.entries(h.detail || {}).filter(([k, v]) => v !== null && k !== "status")
        .map(([k, v]) => `${k}: ${v}`).join("; ");
      return el("li", {}, `${time(h.time)} ${h.actor || ""} ${h.action}`, det ? ` — ${det}` : "");
    }));
    if (!history.length) $("history").append(el("li", {cls: "muted", text: "no changes yet"}));
  }

  function renderWhy(w) {
    const parts = [kv([["score", num(w.score, 4)], ["threshold", num(w.threshold, 4)], ["mean score", num(w.mean_score, 4)],
      ["technique from", w.technique_source || "—"],
      ["severity points", Object.entries(w.severity_points || {}).map(([k, v]) => `${k} ${v}`).join(", ")]])];
    parts.push(el("h3", {text: "predicates that fired"}));
    parts.push(w.predicates.length ? table(["predicate", "value"], w.predicates.map((p) => [p.name, typeof p.value === "object" ? JSON.stringify(p.value) : p.value]), {id: "predicates"})
      : el("p", {cls: "muted", text: "the finding carries no predicate values"}));
    if (w.knowledge_techniques.length) {
      parts.push(el("h3", {text: "candidate techniques (knowledge graph)"}));
      parts.push(table(["technique", "score", "predicates (value)"], w.knowledge_techniques.map((t) =>
        [t.name ? `${t.id} ${t.name}` : t.id, num(t.score, 3), t.predicates || "—"]), {id: "knowledge-techniques"}));
    }
    if (w.behaviour_scores.length || w.behaviour_techniques.length) {
      parts.push(el("h3", {text: "long-horizon behaviour"}));
      parts.push(w.behaviour_scores.length ? table(["technique", "score"], w.behaviour_scores.map((b) => [b.technique, num(b.score, 3)]))
        : el("p", {text: w.behaviour_techniques.join(", ")}));
    }
    $("why-body").replaceChildren(...parts);
  }

  function renderTechniques(techs) {
    if (!techs.length) { $("tech-body").replaceChildren(el("p", {cls: "muted", text: "no ATT&CK technique on this finding"})); return; }
    $("tech-body").replaceChildren(...techs.map((t) => el("div", {cls: "tech"},
      el("h3", {}, el("a", {href: t.url || "#", rel: "noreferrer noopener", target: "_blank", text: techText(t)})),
      kv([["tactics", t.tactics.join(", ")], ["parent", t.parent_name],
        ["mitigations", t.mitigations.map((m) => `${m.id} ${m.name}`).join("; ")],
        ["D3FEND", t.d3fend.map((m) => `${m.id} ${m.name}`).join("; ")]]),
      t.text.length ? table(["predicate", "ATT&CK text", "confidence"], t.text.map((x) => [x.predicate + (x.fired ? " (fired)" : ""), x.text, num(x.confidence, 2)])) : null,
      link(`/?technique=${encodeURIComponent(t.id)}`, "all alerts of this technique"))));
  }

  function renderGraph(g) {
    $("graph-info").textContent = `${g.nodes.length} nodes, ${g.edges.length} edges` +
      (g.edges_total > g.edges.length ? ` (the ${g.edges.length} highest-scoring of ${g.edges_total})` : "");
    const box = $("graph");
    box.dataset.nodes = String(g.nodes.length);
    box.dataset.edges = String(g.edges.length);
    if (typeof cytoscape !== "function") { box.append(el("p", {cls: "error", text: "graph library not loaded"})); return; }
    const cy = cytoscape({
      container: box,
      elements: [
        ...g.nodes.map((n) => ({data: {id: n.id, label: n.id, focus: n.focus ? 1 : 0}})),
        ...g.edges.map((e) => ({data: {id: e.id, source: e.source, target: e.target, count: e.count, flagged: e.flagged,
          label: `${e.count}${e.flagged ? ` (${e.flagged} flagged)` : ""}`}})),
      ],
      style: [
        {selector: "node", style: {"label": "data(label)", "font-size": 9, "background-color": "#4a8bd6", "width": 14, "height": 14}},
        {selector: "node[focus = 1]", style: {"background-color": "#d65a2d", "width": 22, "height": 22}},
        {selector: "edge", style: {"width": 1.5, "line-color": "#9fb3c8", "target-arrow-shape": "triangle",
          "target-arrow-color": "#9fb3c8", "curve-style": "bezier", "label": "data(label)", "font-size": 7}},
        {selector: "edge[flagged > 0]", style: {"line-color": "#d65a2d", "target-arrow-color": "#d65a2d"}},
      ],
      layout: {name: g.nodes.length > 60 ? "concentric" : "cose", animate: false},
      wheelSensitivity: 0.3,
    });
    cy.on("tap", "node", (ev) => { location.href = `/?host=${encodeURIComponent(ev.target.id())}`; });
    window.gsGraph = cy;
  }

  function renderFlows(ctx) {
    const rows = ctx.flows.map((f) => [time(f.ts), f.uid, `${f.src ?? "—"}${f.src_port != null ? ":" + f.src_port : ""}`,
      `${f.dst ?? "—"}${f.dst_port != null ? ":" + f.dst_port : ""}`, f.proto ?? f.service ?? (f.amount != null ? `amount ${num(f.amount, 2)}` : "—"),
      num(f.score, 4), f.in_alert ? "in this alert" : (f.records != null ? `${f.records} records` : (f.alert ? "flagged" : ""))]);
    $("flows-body").replaceChildren(
      el("p", {cls: "muted", text: `${ctx.flows.length} shown of ${ctx.flows_total}; from the ${ctx.source === "archive" ? "archive of scored records" : "finding itself (no archive given)"}`}),
      table(["time (UTC)", "uid", "source", "destination", "protocol / amount", "score", ""], rows, {id: "flow-table"}));
  }

  function spark(timeline) {
    const w = 600, h = 80, n = timeline.length;
    // the highest score per window; the flagged records where no window has a score (no archive)
    const val = timeline.some((t) => t.max_score != null) ? ((t) => t.max_score || 0) : ((t) => t.flagged || 0);
    const max = Math.max(1e-9, ...timeline.map(val));
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("width", w); svg.setAttribute("height", h);
    svg.setAttribute("class", "spark");
    const bw = n ? w / n : w;
    timeline.forEach((t, i) => {
      const r = document.createElementNS(NS, "rect");
      const bh = Math.max(1, val(t) / max * (h - 4));
      r.setAttribute("x", i * bw + 1); r.setAttribute("width", Math.max(1, bw - 2));
      r.setAttribute("y", h - bh); r.setAttribute("height", bh);
      if (t.alert_id) r.setAttribute("class", "alerted");
      const title = document.createElementNS(NS, "title");
      title.textContent = `${time(t.window_start)}: max score ${num(t.max_score, 4)}, flagged ${num(t.flagged)}`;
      r.append(title); svg.append(r);
    });
    return svg;
  }

  function renderTimeline(ctx, entity) {
    const t = ctx.timeline;
    const rows = t.map((x) => [time(x.window_start), num(x.records), num(x.flagged), num(x.max_score, 4),
      x.technique || "", x.alert_id ? (x.alert_id === id ? el("b", {text: "this alert"}) : link(`/alert?id=${encodeURIComponent(x.alert_id)}`, x.alert_id)) : ""]);
    $("timeline-body").replaceChildren(el("p", {cls: "muted", text: `${entity || "the entity"}: highest score per window (orange: the window raised an alert)`}),
      spark(t), table(["window (UTC)", "records", "flagged", "max score", "technique", "alert"], rows, {id: "timeline-table"}));
  }

  async function act(body) {
    $("triage-error").textContent = "";
    try {
      const r = await post(`/api/triage?id=${encodeURIComponent(id)}`, body);
      renderTriage(r.triage, r.history);
    } catch (err) { $("triage-error").textContent = String(err.message || err); }
  }

  function wire() {
    $("ack").addEventListener("click", () => act({action: "ack"}));
    $("escalate").addEventListener("click", () => act({action: "escalate"}));
    $("reopen").addEventListener("click", () => act({action: "reopen"}));
    $("close-tp").addEventListener("click", () => act({action: "close", verdict: "true_positive", reason: $("reason").value}));
    $("close-fp").addEventListener("click", () => act({action: "close", verdict: "false_positive", reason: $("reason").value}));
    $("assign").addEventListener("click", () => act({action: "assign", assignee: $("assignee").value}));
    $("add-comment").addEventListener("click", () => { act({action: "comment", text: $("comment").value}); $("comment").value = ""; });
  }

  async function main() {
    wire();
    try {
      const d = await api(`/api/alert?id=${encodeURIComponent(id)}`);
      renderSummary(d); renderTriage(d.triage, d.history); renderWhy(d.explanation);
      renderTechniques(d.techniques); renderFlows(d.context); renderTimeline(d.context, d.summary.entity);
      renderGraph(d.context.graph);
      document.body.dataset.loaded = "1";
    } catch (err) {
      showError($("summary-body"), err);
      document.body.dataset.loaded = "error";
    }
  }
  main();
})();
