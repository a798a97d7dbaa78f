// The borg dashboard: plain JS over the master's REST API, kept live by the
// event stream (GET /v1/events). Rows are created once and updated in place;
// what an event cannot tell exactly (a job's counts, a machine's allocation)
// is re-read from the API at most once a second per job, once for machines.
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
let current = null;          // the open job page: {name, id, tasks: Map(index -> {row, task})}
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

// ---------- a job's page ----------

function taskRow(t) {
  const row = el("tr", { "data-task": String(t.index) });
  for (const c of ["index", "state", "machine", "runs", "exit", "why", "act"]) row.append(el("td", { class: c }));
  row.querySelector(".index").textContent = t.index;
  row.querySelector(".act").append(el("button", { class: "logs", text: "logs", onclick: () => openLog(t.index) }));
  updateTask(row, t);
  return row;
}
function updateTask(row, t) {
  const cell = row.querySelector(".state");
  setState(cell, t.state);
  // A running task's health, once a probe has decided (tasks with a health check).
  const probed = t.state === "running" && t.healthy != null;
  if (probed) cell.textContent = t.healthy ? "running/healthy" : "running/unhealthy";
  cell.title = probed && !t.healthy ? t.health_message || "" : "";
  row.querySelector(".machine").textContent = t.machine || "-";
  row.querySelector(".runs").textContent = t.runs ?? "";
  row.querySelector(".exit").textContent = t.signal != null ? "sig " + t.signal : (t.exit_code ?? "-");
  row.querySelector(".why").textContent = t.reason || "";
}
// A job page's counts are kept per event (old state out, new in), never recounted.
function jobCounts() {
  if (current) counts($("#job-counts"), current.byState, TASK_STATES);
}
function eventItem(e) {
  // The job view's recent events carry no kind: a task index makes a task event.
  const kind = e.kind || (e.task_index != null ? "task" : "job");
  const subject = kind === "task" ? e.job + "/" + e.task_index : kind === "job" ? "job/" + e.job : "machine/" + e.machine;
  const text = new Date(e.time).toLocaleTimeString() + "  " + subject + "  " +
    (e.from ? e.from + " → " : "") + e.to + (e.machine && kind === "task" ? " on " + e.machine : "") +
    (e.reason ? " (" + e.reason + ")" : "");
  return el("li", { class: "s-" + e.to, text });
}
async function openJob(name) {
  const view = await api("/v1/jobs/" + encodeURIComponent(name));
  // `early`: events of tasks whose rows are not loaded yet (a big job's pages
  // arrive over seconds); each row replays its own when it is made.
  current = { name, id: view.id, tasks: new Map(), byState: {}, early: new Map() };
  $("#job-name").textContent = name;
  setState($("#job-state"), view.state);
  $("#job-kind").textContent = view.kind + ", " + view.replicas + " task" + (view.replicas === 1 ? "" : "s");
  const body = $("#tasks tbody");
  body.replaceChildren();
  const events = $("#job-events");
  events.replaceChildren(...(view.events || []).slice().reverse().map(eventItem));
  let page = view;
  for (;;) {
    const frag = document.createDocumentFragment();
    for (const t of page.tasks || []) {
      replayEarly(t);
      const row = taskRow(t);
      current.tasks.set(t.index, { row, task: t });
      current.byState[t.state] = (current.byState[t.state] || 0) + 1;
      frag.append(row);
    }
    body.append(frag);
    if (page.tasks_next == null || current.name !== name) break;
    page = await api("/v1/jobs/" + encodeURIComponent(name) + "?tasks_after=" + page.tasks_next);
  }
  if (current.name !== name) return;
  current.loaded = true;
  current.early.clear();
  jobCounts();
}
// A row read from a page may be older or newer than the events that came for
// it meanwhile. They form one chain (each starts where the one before ended),
// so replaying from the first whose `from` is the row's state lands on the
// task's state now; none matching means the row was read after them all.
function replayEarly(t) {
  const events = current.early.get(t.index);
  if (!events) return;
  current.early.delete(t.index);
  let on = false;
  for (const e of events) {
    on = on || e.from === t.state;
    if (!on) continue;
    liveDetails(t, e);
    t.state = e.to;
    if (e.machine) t.machine = e.machine;
    if (e.reason) t.reason = e.reason;
  }
}
async function openLog(index) {
  if (logAbort) logAbort.abort();
  logAbort = new AbortController();
  const signal = logAbort.signal;
  const pre = $("#log");
  pre.textContent = "";
  $("#log-task").textContent = current.name + "/" + index;
  const url = "/v1/jobs/" + encodeURIComponent(current.name) + "/tasks/" + index + "/logs?follow=true&tail=200";
  try {
    const r = await fetch(url, { signal, headers: headers() });
    if (!r.ok) {
      const body = await r.json().catch(() => null);
      pre.textContent = body && body.error ? body.error.message : "no log (" + r.status + ")";
      return;
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = (pre.textContent + dec.decode(value, { stream: true })).slice(-MAX_LOG_CHARS);
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
  } catch (err) {
    if (err.name !== "AbortError") pre.textContent += "\n[log ended: " + err.message + "]";
  }
}

// ---------- live: the event stream ----------

// Events are queued and applied every 100 ms: a burst of thousands costs one
// pass that updates each touched row once and draws only the newest events.
const queue = [];
let queued = false;
function onEvent(e) {
  queue.push(e);
  if (!queued) { queued = true; setTimeout(applyEvents, 100); }
}
function applyEvents() {
  queued = false;
  const events = queue.splice(0);
  const touched = new Set();
  const mine = [];
  for (const e of events) {
    if (e.job) dirtyJobs.add(e.job);
    if (e.kind === "machine" || e.machine) machinesDirty = true;
    if (!current || e.job_id !== current.id) continue;
    mine.push(e);
    if (e.kind === "task") {
      const entry = current.tasks.get(e.task_index);
      if (!entry && current.loaded) {
        // A task made after the page was read (a scale up): a new row.
        const t = { index: e.task_index, state: e.to, machine: e.machine, reason: e.reason };
        const row = taskRow(t);
        current.tasks.set(t.index, { row, task: t });
        current.byState[t.state] = (current.byState[t.state] || 0) + 1;
        $("#tasks tbody").append(row);
        touched.add(current.tasks.get(t.index));
        continue;
      }
      if (!entry) {
        const early = current.early.get(e.task_index);
        if (early) early.push(e); else current.early.set(e.task_index, [e]);
        continue;
      }
      // A health change is a running -> running event with its verdict as reason.
      const health = e.from === "running" && e.to === "running" && e.reason ?
        (e.reason === "healthy" ? true : e.reason.startsWith("unhealthy") ? false : null) : null;
      if (entry && health !== null) {
        entry.task.healthy = health;
        entry.task.health_message = health ? null : e.reason.replace(/^unhealthy: /, "");
        touched.add(entry);
      }
      if (entry && entry.task.state !== e.to) {
        current.byState[entry.task.state]--;
        current.byState[e.to] = (current.byState[e.to] || 0) + 1;
        liveDetails(entry.task, e);
        entry.task.state = e.to;
        if (e.machine) entry.task.machine = e.machine;
        entry.task.reason = e.reason || entry.task.reason;
        touched.add(entry);
      }
    } else if (e.kind === "job") {
      setState($("#job-state"), e.to);
    }
  }
  if (!current) return;
  for (const entry of touched) updateTask(entry.row, entry.task);
  if (touched.size) jobCounts();
  const list = $("#job-events");
  const frag = document.createDocumentFragment();
  for (const e of mine.slice(-MAX_EVENTS).reverse()) frag.append(eventItem(e));
  list.prepend(frag);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}
// What an event says of a row's runs and exit beyond its state. A run is
// counted when the task is placed (as the store counts it: a placement out of
// `pending`); how a run ended is in the reason the store wrote for it
// ("exited with code N", "killed by signal N", store/src/reports.rs).
function liveDetails(t, e) {
  if (e.from === "pending" && e.to === "assigned") {
    t.runs = (t.runs || 0) + 1;
    t.exit_code = t.signal = null;
  }
  const m = /^(exited with code|killed by signal) (-?\d+)/.exec(e.reason || "");
  if (m && m[1] === "exited with code") { t.exit_code = Number(m[2]); t.signal = null; }
  if (m && m[1] === "killed by signal") { t.signal = Number(m[2]); t.exit_code = null; }
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
$("#login").addEventListener("submit", onLogin);
begin().catch(err => { $("#live").textContent = "error: " + err.message; });
