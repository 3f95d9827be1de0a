// Helpers shared by the queue and the alert page. Every value from the server is inserted with
// textContent or as an attribute value set through the DOM: never parsed as HTML.
"use strict";
const GS = (() => {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = String(v);
      else if (k === "cls") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  async function api(url) {
    const r = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
    const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  async function post(url, obj) {
    const r = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
      body: JSON.stringify(obj),
    });
    const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
    if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
    return body;
  }

  function time(sec) {
    if (sec === null || sec === undefined) return "—";
    const d = new Date(sec * 1000);
    if (isNaN(d.getTime())) return "—";
    return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  function num(x, digits) {
    if (x === null || x === undefined) return "—";
    return typeof x === "number" ? (digits === undefined ? String(x) : x.toFixed(digits)) : String(x);
  }

  const SEV = {1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal"};
  function sevBadge(id) {
    return el("span", {cls: `sev sev${Number(id) || 0}`, text: SEV[id] || "—"});
  }

  function techText(t) {
    return t.name ? `${t.id} ${t.name}` : t.id;
  }

  function showError(where, err) {
    where.replaceChildren(el("p", {cls: "error", text: String(err && err.message || err)}));
  }

  return {el, api, post, time, num, sevBadge, techText, showError, SEV};
})();
