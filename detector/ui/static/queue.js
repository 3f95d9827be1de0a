// The alert queue: filters in the URL (so a reload or a shared link keeps them), one page of
// alerts or groups from /api/alerts, live refresh when /api/stamp moves.
"use strict";
(() => {
  const {el, api, time, num, sevBadge, techText, showError} = GS;
  const form = document.getElementById("filters");
  const results = document.getElementById("results");
  const pager = document.getElementById("pager");
  const chips = document.getElementById("chips");
  const live = document.getElementById("live");
  const FIELDS = ["since", "until", "severity", "technique", "host", "status", "q", "sort", "order", "group"];
  const LIMIT = 50;
  let stamp = null;

  function params() { return new URLSearchParams(location.search); }

  function toInput(sec) {
    return sec ? new Date(Number(sec) * 1000).toISOString().slice(0, 19) : "";
  }
  function fromInput(v) {
    return v ? String(Date.parse(v + "Z") / 1000) : "";
  }

  function fillForm(p) {
    for (const k of FIELDS) {
      const input = form.elements[k];
      if (!input) continue;
      const v = p.get(k) || "";
      input.value = (k === "since" || k === "until") ? toInput(v) : v;
      if (input.tagName === "SELECT" && input.selectedIndex < 0) input.selectedIndex = 0;
    }
  }

  function navigate(p, push) {
    const url = p.toString() ? `/?${p}` : "/";
    if (push) history.pushState(null, "", url); else history.replaceState(null, "", url);
    load();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const old = params();
    const p = new URLSearchParams();
    for (const k of FIELDS) {
      let v = form.elements[k].value.trim();
      if (k === "since" || k === "until") v = fromInput(v);
      if (v) p.set(k, v);
    }
    for (const f of old.getAll("f")) p.append("f", f);
    navigate(p, true);
  });
  document.getElementById("reset").addEventListener("click", () => navigate(new URLSearchParams(), true));
  window.addEventListener("popstate", load);

  function addFilter(field, value, exclude) {
    const p = params();
    p.append("f", `${exclude ? "-" : ""}${field}:${value === null || value === undefined ? "" : value}`);
    p.delete("offset");
    navigate(p, true);
  }

  function pivot(field, value, shown) {
    const span = el("span", {cls: "pv"}, shown === undefined ? (value === null || value === undefined ? "—" : String(value)) : shown);
    if (value !== null && value !== undefined) {
      span.append(
        el("button", {type: "button", title: "only this", "data-filter": `${field}`, onclick: () => addFilter(field, value, false), text: "+"}),
        el("button", {type: "button", title: "exclude this", onclick: () => addFilter(field, value, true), text: "−"}));
    }
    return span;
  }

  function renderChips(p) {
    chips.replaceChildren();
    p.getAll("f").forEach((f, i) => {
      const neg = f.startsWith("-");
      chips.append(el("span", {cls: neg ? "chip neg" : "chip"}, neg ? `not ${f.slice(1)}` : f,
        el("button", {type: "button", title: "remove", text: "×", onclick: () => {
          const q = params(); const all = q.getAll("f"); q.delete("f");
          all.forEach((x, j) => { if (j !== i) q.append("f", x); });
          navigate(q, true);
        }})));
    });
  }

  function renderPager(p, data) {
    const off = data.offset, n = data.items.length;
    pager.replaceChildren(
      el("button", {type: "button", id: "prev", disabled: off <= 0 ? "disabled" : null, text: "‹ previous",
        onclick: () => { const q = params(); q.set("offset", Math.max(0, off - LIMIT)); navigate(q, true); }}),
      el("span", {id: "count", text: data.total ? `${off + 1}–${off + n} of ${data.total}` : "no alerts match"}),
      el("button", {type: "button", id: "next", disabled: off + n >= data.total ? "disabled" : null, text: "next ›",
        onclick: () => { const q = params(); q.set("offset", off + LIMIT); navigate(q, true); }}));
  }

  function renderAlerts(data) {
    const head = el("tr", {}, ...["time (UTC)", "severity", "source → destination", "techniques", "flows", "score",
      "model", "status", ""].map((h) => el("th", {text: h})));
    const body = data.items.map((a) => {
      const techs = el("td", {cls: "techs"});
      for (const t of a.techniques) techs.append(el("div", {}, pivot("technique", t.id, techText(t))));
      if (!a.techniques.length) techs.append(el("span", {cls: "muted", text: "none"}));
      const who = el("td", {cls: "endpoints"}, pivot("src", a.src), " → ", pivot("dst", a.dst));
      if (a.kind === "transaction") who.append(el("div", {cls: "muted", text: `card fraud · amount ${num(a.amount, 2)}`}));
      return el("tr", {"data-id": a.id},
        el("td", {text: time(a.window_start)}),
        el("td", {}, pivot("severity", a.severity_id, sevBadge(a.severity_id))),
        who, techs,
        el("td", {cls: "num", text: num(a.count)}),
        el("td", {cls: "num", text: num(a.score, 3)}),
        el("td", {}, pivot("model", a.model_version)),
        el("td", {}, pivot("status", a.status, el("span", {cls: "status", text: a.status + (a.verdict ? ` (${a.verdict})` : "")}))),
        el("td", {}, el("a", {href: `/alert?id=${encodeURIComponent(a.id)}`, cls: "open", title: a.title, text: "open"})));
    });
    results.replaceChildren(el("table", {id: "alerts"}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  function renderGroups(data) {
    const names = Object.keys((data.items[0] || {}).key || {});
    const head = el("tr", {}, ...[...names, "alerts", "open", "flows", "first seen", "last seen", "top severity", ""]
      .map((h) => el("th", {text: h})));
    const body = data.items.map((g) => el("tr", {},
      ...names.map((k) => el("td", {text: g.key[k] === null ? "—" :
        (k === "technique" && g.technique_name ? `${g.key[k]} ${g.technique_name}` : g.key[k])})),
      el("td", {cls: "num", text: num(g.alerts)}), el("td", {cls: "num", text: num(g.open)}),
      el("td", {cls: "num", text: num(g.flows)}), el("td", {text: time(g.first_seen)}), el("td", {text: time(g.last_seen)}),
      el("td", {}, sevBadge(g.severity_id)),
      el("td", {}, el("button", {type: "button", cls: "drill", text: "alerts", onclick: () => {
        const q = params(); q.delete("group"); q.delete("offset");
        for (const k of names) q.append("f", `${k}:${g.key[k] === null ? "" : g.key[k]}`);
        navigate(q, true);
      }}))));
    results.replaceChildren(el("table", {id: "groups"}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  async function load() {
    const p = params();
    fillForm(p);
    renderChips(p);
    const q = new URLSearchParams(p);
    q.set("limit", LIMIT);
    try {
      const data = await api(`/api/alerts?${q}`);
      renderPager(p, data);
      if (data.group) renderGroups(data); else renderAlerts(data);
      document.body.dataset.loaded = String(Date.now());
    } catch (err) {
      showError(results, err);
    }
  }

  async function poll() {
    try {
      const s = await api("/api/stamp");
      const key = `${s.alerts}/${s.triage}`;
      if (stamp !== null && key !== stamp) { await load(); live.textContent = `live · updated ${time(Date.now() / 1000)}`; }
      stamp = key;
    } catch (err) {
      live.textContent = "live updates paused (server unreachable)";
    }
    setTimeout(poll, 3000);
  }

  load().then(poll);
})();
