// The inspector page (collector/api.py). Served as a file: the page's CSP allows no inline
// script or style. The access token lives in this page's memory only and travels in the
// Authorization header of fetch calls — never in a URL or a cookie, so another site can neither
// read nor ride on it.
"use strict";
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
let scope = {farms: {}};
let token = "";

function status(text) { $("status").textContent = text; }
function finite(v) {
  const n = v === null || v === "" ? NaN : Number(v);
  return Number.isFinite(n) ? n : null;
}
function iso(t) { return new Date(t * 1000).toISOString().slice(0, 19); }
function stamp(v, otherwise) {  // a time from the address bar, if it is one a Date can hold
  const t = finite(v);
  return t !== null && Math.abs(t) < 8.64e12 ? t : otherwise;
}
function epoch(v) { return v ? finite(Date.parse(v + "Z") / 1000) : null; }

async function call(path, body) {
  const init = {headers: {"Authorization": "Bearer " + token}, credentials: "omit",
                cache: "no-store", redirect: "error"};
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}
async function failure(r) {
  let text = r.status + " " + r.statusText;
  try {
    const b = await r.json();
    if (typeof b.error === "string") text = b.error;
  } catch (e) { /* not JSON: keep the status line */ }
  if (r.status === 429) text += " (try again in " + r.headers.get("Retry-After") + " s)";
  return "error: " + text;
}

function fill(sel, values, all, chosen) {
  sel.textContent = "";
  const none = document.createElement("option");
  none.value = ""; none.textContent = all; sel.appendChild(none);
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v; o.textContent = v; sel.appendChild(o);
  }
  if (chosen !== null && values.includes(chosen)) sel.value = chosen;
}
function refresh(keep) {
  const farms = Object.keys(scope.farms).sort();
  fill($("farm"), farms, "all farms", keep ? params.get("farm") : $("farm").value);
  const f = scope.farms[$("farm").value] || {};
  fill($("field"), Object.keys(f).sort(), "all fields", keep ? params.get("field") : null);
  let gws = [];
  for (const [field, ids] of Object.entries(f))
    if (!$("field").value || field === $("field").value) gws = gws.concat(ids);
  fill($("gateway"), gws.sort(), "all gateways", keep ? params.get("gateway") : null);
}
function query() {
  const q = {};
  for (const k of ["farm", "field", "gateway"]) if ($(k).value) q[k] = $(k).value;
  const from = epoch($("from").value), to = epoch($("to").value);
  if (from === null) throw new Error("choose when the period starts");
  q.from = from;
  if (to !== null) q.to = to;
  return q;
}

async function connect() {
  token = $("token").value.trim();
  status("connecting…");
  try {
    const r = await call("/api/scope");
    if (!r.ok) { status(await failure(r)); return; }
    scope = await r.json();
  } catch (e) { status("error: " + e.message); return; }
  $("origin").textContent = "evidence log " + scope.origin + " · anchors: " +
    (scope.chain ? scope.chain + " via " + scope.nodes.join(", ") : "none configured");
  refresh(true);
  status("connected: this token reads " + scope.token.scope);
}

// The report comes from this server, which escapes every bundle string and hands its styles
// over as a style sheet (report_css) rather than inline; it goes into a shadow root through an
// inert document, without scripts, event handlers or style of its own.
function showReport(html, css) {
  const doc = new DOMParser().parseFromString(html, "text/html");
  for (const el of doc.querySelectorAll("script, style, link, meta, iframe, object, embed"))
    el.remove();
  for (const el of doc.querySelectorAll("*"))
    for (const a of [...el.attributes])
      if (/^on/i.test(a.name) || a.name === "style" || a.name === "srcdoc")
        el.removeAttribute(a.name);
  const host = $("report");
  const root = host.shadowRoot || host.attachShadow({mode: "open"});
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(css);
  root.adoptedStyleSheets = [sheet];
  root.replaceChildren(...doc.body.childNodes);
}

async function run() {
  $("verdict").style.display = "none";
  let body;
  try {
    const q = query();
    status("exporting and verifying…");
    const r = await call("/api/verify", q);
    if (!r.ok) { status(await failure(r)); return; }
    body = await r.json();
  } catch (e) { status("error: " + e.message); return; }
  const v = $("verdict");
  v.className = body.verdict;
  v.dataset.verdict = body.verdict;
  v.textContent = "";
  const b = document.createElement("b");
  b.textContent = {pass: "PASS", warn: "PASS WITH WARNINGS", fail: "FAIL"}[body.verdict];
  v.appendChild(b);
  v.appendChild(document.createTextNode(body.summary.replace(/^[A-Z ]+: /, "")));
  v.style.display = "block";
  status("bundle: " + body.bundle_bytes.toLocaleString() + " bytes");
  showReport(body.report_html, body.report_css);
  const key = body.result.log.vkey;
  $("cmd").textContent = "fieldproof verify BUNDLE --log-key '" + key + "'" +
    (scope.chain ? " --chain " + scope.chain + " --node URL [--node URL …]" : " --offline");
}

async function download() {
  let r;
  try {
    const q = query();
    status("exporting…");
    r = await call("/api/export", q);
    if (!r.ok) { status(await failure(r)); return; }
    const blob = await r.blob();
    const m = /filename="([A-Za-z0-9._-]+)"/.exec(r.headers.get("Content-Disposition") || "");
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = m ? m[1] : "bundle.fpb";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    status("bundle: " + blob.size.toLocaleString() + " bytes, saved as " + a.download);
  } catch (e) { status("error: " + e.message); }
}

function init() {
  const now = Date.now() / 1000;
  $("from").value = iso(stamp(params.get("from"), now - 86400));
  $("to").value = iso(stamp(params.get("to"), now));
  $("access").addEventListener("submit", (e) => { e.preventDefault(); connect(); });
  $("pick").addEventListener("submit", (e) => e.preventDefault());
  for (const k of ["farm", "field"]) $(k).addEventListener("change", () => refresh(false));
  $("run").addEventListener("click", run);
  $("download").addEventListener("click", download);
  status("enter an access token and connect");
}
init();
