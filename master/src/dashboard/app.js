// The borg dashboard: plain JS over the master's REST API, kept live by the
// event stream (GET /v1/events). Rows are created once and updated in place
// (a job's tasks are a model drawn as a virtual table: job.js); what an event
// cannot tell exactly (a job's counts, a machine's allocation) is re-read
// from the API at most once a second per job, once for machines.
// A master that needs a token gets one from a prompt; it is kept in this tab's
// sessionStorage and sent as a Bearer header (the event stream, which cannot
// send headers, takes it as `?access_token=`).
"use strict";

const TASK_STATES = ["pending", "assigned", "starting", "running", "succeeded", "failed", "killed", "lost"];
const MACHINE_STATES = ["up", "draining", "down"];
const MAX_EVENTS = 300;
const MAX_LOG_CHARS = 200000;

const jobs = new Map();      // name -> JobView (list form)
const jobRows = new Map();   // name -> <tr>
const machines = new Map();  // name -> MachineView
const machineRows = new Map();
const machineBars = new Map();
const dirtyJobs = new Set();
let machinesDirty = false;
let current = null;          // the open job page (job.js)
let logAbort = null;
const TOKEN_KEY = "borg.token";
let token = sessionStorage.getItem(TOKEN_KEY);

function $(sel) { return document.querySelector(sel); }
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}
function headers(extra) {
  const h = Object.assign({}, extra);
  if (token) h.authorization = "Bearer " + token;
  return h;
}
async function api(path) {
  const r = await fetch(path, { headers: headers({ accept: "application/json" }) });
  if (r.status === 401) askToken("the master refused the token: enter another");
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

// ---------- the token prompt ----------

function askToken(why) {
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("#login-why").textContent = why;
  $("#login").hidden = false;
  $("#token-input").focus();
}
function onLogin(ev) {
  ev.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  token = value;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#token-input").value = "";
  $("#login").hidden = true;
  if (!started) begin();
}
function age(t) {
  if (!t) return "-";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m";
  if (s < 172800) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}
function setState(cell, state) {
  cell.textContent = state;
  cell.className = "state s-" + state;
}
function counts(node, byState, order) {
  node.replaceChildren(...order.filter(s => byState[s]).map(s =>
    el("span", { class: "chip s-" + s, "data-state": s }, el("b", { text: String(byState[s]) }), " " + s)));
  if (!node.children.length) node.textContent = "-";
}
function gib(b) {
  return b >= 1073741824 ? (b / 1073741824).toFixed(1) + "Gi" : Math.round(b / 1048576) + "Mi";
}
function cores(m) { return (m / 1000).toFixed(m % 1000 ? 2 : 0); }
function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, 100 * used / total) : 0;
  const fill = el("i");
  fill.style.width = pct.toFixed(1) + "%";
  if (pct > 90) fill.className = "hot";
  return el("div", { class: "bar", title: pct.toFixed(0) + "%" }, fill, el("span", { text: label }));
}

// ---------- overview: jobs ----------

function jobRow(j) {
  let row = jobRows.get(j.name);
  if (!row) {
    row = el("tr", { "data-job": j.name });
    for (const c of ["name", "kind", "state", "tasks", "priority", "owner", "age"]) row.append(el("td", { class: c }));
    row.querySelector(".name").append(el("a", { href: "#/jobs/" + encodeURIComponent(j.name), text: j.name }));
    jobRows.set(j.name, row);
    $("#jobs tbody").prepend(row);
    $("#no-jobs").hidden = true;
  }
  row.querySelector(".kind").textContent = j.kind;
  setState(row.querySelector(".state"), j.state);
  counts(row.querySelector(".tasks"), j.task_counts, TASK_STATES);
  row.querySelector(".priority").textContent = j.priority;
  row.querySelector(".owner").textContent = j.owner;
  row.querySelector(".age").textContent = age(j.created_at);
}
function taskSummary() {
  const total = {};
  for (const j of jobs.values()) {
    if (j.state !== "pending" && j.state !== "running") continue;
    for (const [s, n] of Object.entries(j.task_counts)) total[s] = (total[s] || 0) + n;
  }
  counts($("#task-summary"), total, TASK_STATES);
}

// ---------- machines (overview bars and the machines page) ----------

function machineViews(m) {
  let row = machineRows.get(m.name);
  if (!row) {
    row = el("tr", { "data-machine": m.name });
    for (const c of ["name", "state", "labels", "cpu", "mem", "tasks", "heard"]) row.append(el("td", { class: c }));
    row.querySelector(".name").textContent = m.name;
    machineRows.set(m.name, row);
    $("#machines tbody").append(row);
    const b = { name: el("div", { text: m.name }), cpu: el("div"), mem: el("div") };
    machineBars.set(m.name, b);
    $("#machine-bars").append(b.name, b.cpu, b.mem);
  }
  setState(row.querySelector(".state"), m.state);
  row.querySelector(".labels").textContent = Object.entries(m.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
  const cpu = () => bar(m.allocated.cpu, m.capacity.cpu, "cpu " + cores(m.allocated.cpu) + " / " + cores(m.capacity.cpu));
  const mem = () => bar(m.allocated.memory, m.capacity.memory, "mem " + gib(m.allocated.memory) + " / " + gib(m.capacity.memory));
  row.querySelector(".cpu").replaceChildren(cpu());
  row.querySelector(".mem").replaceChildren(mem());
  row.querySelector(".tasks").textContent = m.tasks;
  row.querySelector(".heard").textContent = age(m.last_heard);
  const b = machineBars.get(m.name);
  b.name.className = "s-" + m.state;
  b.cpu.replaceChildren(cpu());
  b.mem.replaceChildren(mem());
}
function machineSummary() {
  const by = {};
  for (const m of machines.values()) by[m.state] = (by[m.state] || 0) + 1;
  counts($("#machine-summary"), by, MACHINE_STATES);
}
async function loadMachines() {
  // The list comes in pages: follow `next` to the end.
  let page = await api("/v1/machines?limit=1000");
  for (;;) {
    for (const m of page.machines) { machines.set(m.name, m); machineViews(m); }
    if (!page.next) break;
    page = await api("/v1/machines?limit=1000&after=" + encodeURIComponent(page.next));
  }
  machineSummary();
}

// ---------- live: the event stream ----------

// Each event is applied as it comes, in O(1): the jobs and machines it
// touches are marked for re-reading, and an event of the open job changes that
// job's model, which the page draws at the next animation frame (job.js).
function onEvent(e) {
  if (e.job) dirtyJobs.add(e.job);
  if (e.kind === "machine" || e.machine) machinesDirty = true;
  const c = current;
  if (c && (e.job_id === c.id || (c.id == null && e.job === c.name))) jobEvent(c, e);
}
async function flush() {
  const names = [...dirtyJobs];
  dirtyJobs.clear();
  for (const name of names) {
    try {
      const j = await api("/v1/jobs/" + encodeURIComponent(name) + "?tasks_limit=1");
      delete j.tasks; delete j.events;
      jobs.set(j.name, j);
      jobRow(j);
    } catch (_) { /* gone: keep the last row */ }
  }
  if (names.length) taskSummary();
  if (machinesDirty) {
    machinesDirty = false;
    try { await loadMachines(); } catch (_) { machinesDirty = true; }
  }
}
function connect() {
  const live = $("#live");
  const es = new EventSource("/v1/events" + (token ? "?access_token=" + encodeURIComponent(token) : ""));
  for (const kind of ["task", "job", "machine"]) {
    es.addEventListener(kind, m => onEvent(JSON.parse(m.data)));
  }
  es.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  es.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
}

// ---------- pages ----------

function route() {
  const hash = location.hash || "#/";
  const job = hash.match(/^#\/jobs\/(.+)$/);
  const page = job ? "job" : hash === "#/machines" ? "machines" : "overview";
  for (const p of ["overview", "job", "machines"]) $("#page-" + p).hidden = p !== page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === page);
  if (page !== "job") {
    current = null;
    if (logAbort) { logAbort.abort(); logAbort = null; }
  }
  if (job) openJob(decodeURIComponent(job[1])).catch(err => { $("#job-name").textContent = err.message; });
}

let started = false;
async function start() {
  // Subscribe first, then load: a change in between is re-read, never missed.
  started = true;
  connect();
  const [list] = await Promise.all([api("/v1/jobs?limit=1000"), loadMachines()]);
  for (const j of list.jobs.slice().reverse()) { jobs.set(j.name, j); jobRow(j); }
  taskSummary();
  setInterval(flush, 1000);
  setInterval(() => { for (const [n, r] of jobRows) r.querySelector(".age").textContent = age(jobs.get(n).created_at); }, 10000);
  window.addEventListener("hashchange", route);
  $("#tasks-view").addEventListener("scroll", redraw, { passive: true });
  window.addEventListener("resize", redraw);
  route();
}
// Ask for a token only if the master wants one (one started --insecure does not).
async function begin() {
  const probe = await fetch("/v1/machines", { headers: headers({ accept: "application/json" }) });
  if (probe.status === 401) {
    askToken(token ? "the master refused the token: enter another" : "this master needs an API token");
    return;
  }
  await start();
}
