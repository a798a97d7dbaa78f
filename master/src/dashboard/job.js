// ---------- a job's page ----------
//
// A job may have 10,000 tasks and send several events a second for each. The
// page keeps them as data (`current.tasks`, by index, and `current.list`, in
// index order): an event changes one task object in O(1) and marks it dirty.
// The table is virtual: it holds only the rows in view plus OVERSCAN above and
// below, between two spacer rows that keep the scroll height of the whole
// list. In an animation frame `draw` binds those rows to tasks and rewrites
// only cells whose text changed, reading layout before it writes.

const OVERSCAN = 20;
let rowHeight = 0;           // px, measured on the first drawn row (app.css fixes it)
const GUESS_ROW_HEIGHT = 28;

// What a row shows for a task, cell by cell: the table and `borgDashboard.rows()` both use it.
function taskCells(t) {
  const probed = t.state === "running" && t.healthy != null;
  return {
    index: String(t.index),
    state: t.state === "running" && t.backoff ? "running/backoff"
      : probed ? (t.healthy ? "running/healthy" : "running/unhealthy") : t.state,
    machine: t.machine || "-",
    runs: t.runs == null ? "" : String(t.runs),
    exit: t.signal != null ? "sig " + t.signal : t.exit_code != null ? String(t.exit_code) : "-",
    why: t.reason || "",
    // A running task's health, once a probe has decided (tasks with a health check).
    health: probed && !t.healthy ? t.health_message || "" : "",
  };
}

const CELLS = ["index", "state", "machine", "runs", "exit", "why", "act"];
function newTaskRow() {
  const row = el("tr");
  for (const c of CELLS) row.append(el("td", { class: c }));
  row.cells[6].append(el("button", { class: "logs", text: "logs", onclick: () => openLog(Number(row.dataset.task)) }));
  return row;
}
function put(cell, text) {
  if (cell.textContent !== text) cell.textContent = text;
}
function fillTaskRow(row, t) {
  const v = taskCells(t);
  if (row.dataset.task !== v.index) row.dataset.task = v.index;
  const [index, state, machine, runs, exit, why] = row.cells;
  put(index, v.index);
  put(state, v.state);
  const cls = "state s-" + t.state;
  if (state.className !== cls) state.className = cls;
  if (state.title !== v.health) state.title = v.health;
  put(machine, v.machine);
  put(runs, v.runs);
  put(exit, v.exit);
  put(why, v.why);
  if (why.title !== v.why) why.title = v.why;
}

// ---------- drawing, once per frame ----------

// A scroll or resize draws at the next frame; events draw at most every
// EVENT_DRAW_MS (under a storm of events each frame would repaint, for rows
// that change again before anyone can read them).
const EVENT_DRAW_MS = 100;
let frameAsked = false;
let drawTimer = null;
let drawnAt = 0;
function redraw() {
  if (frameAsked) return;
  frameAsked = true;
  requestAnimationFrame(draw);
}
function redrawSoon() {
  if (frameAsked || drawTimer) return;
  const wait = drawnAt + EVENT_DRAW_MS - performance.now();
  if (wait <= 0) { redraw(); return; }
  drawTimer = setTimeout(() => { drawTimer = null; redraw(); }, wait);
}
function draw(now) {
  frameAsked = false;
  drawnAt = now;
  const c = current;
  if (!c || c.id == null) return;
  drawTasks(c);
  if (c.countsDirty) {
    c.countsDirty = false;
    counts($("#job-counts"), c.byState, TASK_STATES);
  }
  if (c.stateDirty) {
    c.stateDirty = false;
    setState($("#job-state"), c.state);
  }
  drawEvents(c);
}
function drawTasks(c) {
  // Reads first: the layout is clean here (the last frame drew it), so this costs no reflow.
  const view = $("#tasks-view");
  const top = view.scrollTop;
  const height = view.clientHeight;
  if (!rowHeight && c.rows.length) rowHeight = c.rows[0].getBoundingClientRect().height;
  const h = rowHeight || GUESS_ROW_HEIGHT;
  const n = c.list.length;
  const first = Math.min(n, Math.max(0, Math.floor(top / h) - OVERSCAN));
  const last = Math.min(n, Math.ceil((top + height) / h) + OVERSCAN);
  if (first === c.first && last === c.last && !c.moved) {
    for (const index of c.dirty) {
      const row = c.shown.get(index);
      if (row) fillTaskRow(row, c.tasks.get(index));
    }
    c.dirty.clear();
    return;
  }
  // The window moved or the list changed: bind the rows to tasks first..last.
  c.moved = false;
  c.dirty.clear();
  c.shown.clear();
  while (c.rows.length < last - first) {
    const row = newTaskRow();
    c.rows.push(row);
    c.bottom.before(row);
  }
  while (c.rows.length > last - first) c.rows.pop().remove();
  for (let i = first; i < last; i++) {
    const t = c.list[i];
    fillTaskRow(c.rows[i - first], t);
    c.shown.set(t.index, c.rows[i - first]);
  }
  c.top.firstChild.style.height = first * h + "px";
  c.bottom.firstChild.style.height = (n - last) * h + "px";
  c.first = first;
  c.last = last;
}
function drawEvents(c) {
  if (!c.events.length) return;
  const list = $("#job-events");
  const frag = document.createDocumentFragment();
  for (const e of c.events.slice(-MAX_EVENTS).reverse()) frag.append(eventItem(e));
  c.events.length = 0;
  list.prepend(frag);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}
function spacer() {
  const cell = el("td", { colspan: String(CELLS.length) });
  return el("tr", { class: "spacer" }, cell);
}

// ---------- the model ----------

function eventItem(e) {
  // The job view's recent events carry no kind: a task index makes a task event.
  const kind = e.kind || (e.task_index != null ? "task" : "job");
  const subject = kind === "task" ? e.job + "/" + e.task_index : kind === "job" ? "job/" + e.job : "machine/" + e.machine;
  const text = new Date(e.time).toLocaleTimeString() + "  " + subject + "  " +
    (e.from ? e.from + " → " : "") + e.to + (e.machine && kind === "task" ? " on " + e.machine : "") +
    (e.reason ? " (" + e.reason + ")" : "");
  return el("li", { class: "s-" + e.to, text });
}
function addTask(c, t) {
  c.tasks.set(t.index, t);
  c.byState[t.state] = (c.byState[t.state] || 0) + 1;
  const list = c.list;
  if (!list.length || list[list.length - 1].index < t.index) {
    list.push(t);
  } else {
    // Out of order (a scale up while pages were read): keep the list sorted.
    let lo = 0, hi = list.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (list[mid].index < t.index) lo = mid + 1; else hi = mid; }
    list.splice(lo, 0, t);
  }
  c.moved = true;
  c.countsDirty = true;
}
async function openJob(name) {
  // The page is current before the job is read, so no event between the read
  // and the first page is lost; until the job's id is known its events are
  // told by name. `early`: events of tasks not read yet (a big job's pages
  // arrive over seconds); each task replays its own when its page comes.
  const c = {
    name, id: null, tasks: new Map(), list: [], byState: {}, early: new Map(), loaded: false,
    rows: [], shown: new Map(), dirty: new Set(), first: 0, last: 0, moved: true,
    top: spacer(), bottom: spacer(), events: [], countsDirty: true, state: null, stateDirty: false, earlyJob: [],
  };
  current = c;
  $("#job-name").textContent = name;
  $("#tasks tbody").replaceChildren(c.top, c.bottom);
  $("#tasks-view").scrollTop = 0;
  const view = await api("/v1/jobs/" + encodeURIComponent(name));
  if (current !== c) return;
  // A name is reused once a job is done: keep only this job's events.
  c.id = view.id;
  for (const [index, events] of c.early) {
    const mine = events.filter(e => e.job_id === c.id);
    if (mine.length) c.early.set(index, mine); else c.early.delete(index);
  }
  const listed = new Set((view.events || []).map(e => e.id));
  c.events = c.events.filter(e => e.job_id === c.id && !listed.has(e.id));
  c.state = view.state;
  for (const e of c.earlyJob.filter(e => e.job_id === c.id)) jobStateEvent(c, e);
  c.earlyJob = null;
  setState($("#job-state"), c.state);
  $("#job-kind").textContent = view.kind + ", " + view.replicas + " task" + (view.replicas === 1 ? "" : "s");
  $("#job-events").replaceChildren(...(view.events || []).slice().reverse().map(eventItem));
  let page = view;
  for (;;) {
    for (const t of page.tasks || []) {
      replayEarly(c, t);
      addTask(c, t);
    }
    redraw();
    if (page.tasks_next == null || current !== c) break;
    page = await api("/v1/jobs/" + encodeURIComponent(name) + "?tasks_after=" + page.tasks_next);
  }
  if (current !== c) return;
  // What is still early belongs to tasks made after their page was read (a
  // scale up meanwhile): each starts at its creation event.
  for (const [index, events] of c.early) {
    const t = { index, state: undefined, runs: 0 };
    for (const e of events) applyEvent(t, e);
    if (t.state) addTask(c, t);
  }
  c.early.clear();
  c.loaded = true;
  redraw();
}
// A task read from a page may be older or newer than the events that came for
// it meanwhile. They form one chain (each starts where the one before ended),
// so applying only the event whose `from` is the task's state lands on the
// task's state now; none matching means the task was read after them all.
function replayEarly(c, t) {
  const events = c.early.get(t.index);
  if (!events) return;
  c.early.delete(t.index);
  for (const e of events) applyEvent(t, e);
}
// One task event onto its task: only the next link of its chain. The stream
// can bring an event the page already read (it lags behind the pages under
// load): its `from` is not the task's state, or it places an attempt the task
// is already on, and it changes nothing. True when the task changed.
function applyEvent(t, e) {
  if ((e.from ?? undefined) !== t.state) return false;
  if (e.from === "pending" && e.to === "assigned" && e.attempt && e.attempt === t.attempt) return false;
  if (e.from === e.to) {
    // A health change is a running -> running event with its verdict as reason.
    if (e.to !== "running" || !e.reason) return false;
    const health = e.reason === "healthy" ? true : e.reason.startsWith("unhealthy") ? false : null;
    if (health === null) return false;
    t.healthy = health;
    t.health_message = health ? null : e.reason.replace(/^unhealthy: /, "");
    return true;
  }
  liveDetails(t, e);
  t.state = e.to;
  if (e.attempt) t.attempt = e.attempt;
  if (e.machine) t.machine = e.machine;
  t.reason = e.reason || t.reason;
  return true;
}
// What an event says of a task's runs and exit beyond its state. A run is
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
// The job's own state follows its chain of events like a task's.
function jobStateEvent(c, e) {
  if (e.from !== c.state || e.from === e.to) return;
  c.state = e.to;
  c.stateDirty = true;
}
// An event of the open job, as it comes: O(1) on the model, the drawing later.
function jobEvent(c, e) {
  c.events.push(e);
  if (c.events.length > 2 * MAX_EVENTS) c.events.splice(0, c.events.length - MAX_EVENTS);
  if (e.kind === "job") {
    if (c.earlyJob) c.earlyJob.push(e); else jobStateEvent(c, e);
  }
  if (e.kind === "task") {
    const t = c.tasks.get(e.task_index);
    if (t) {
      const was = t.state;
      if (applyEvent(t, e)) {
        if (t.state !== was) {
          c.byState[was]--;
          c.byState[t.state] = (c.byState[t.state] || 0) + 1;
          c.countsDirty = true;
        }
        c.dirty.add(t.index);
      }
    } else if (c.loaded) {
      // A task made after the page was read (a scale up): a new row.
      const made = { index: e.task_index, state: undefined, runs: 0 };
      if (applyEvent(made, e)) addTask(c, made);
    } else {
      const early = c.early.get(e.task_index);
      if (early) early.push(e); else c.early.set(e.task_index, [e]);
    }
  }
  redrawSoon();
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

// A read-only look at the open job as the page holds it (for a console or a
// test): how many tasks it holds; every task in index order as its row shows
// it, whether or not the row is in view; whether all its pages have been read.
window.borgDashboard = Object.freeze({
  count: () => (current ? current.list.length : 0),
  rows: () => (current ? current.list.map(taskCells) : []),
  loaded: () => Boolean(current && current.loaded),
});
