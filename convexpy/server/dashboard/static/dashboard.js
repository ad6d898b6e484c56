// The convexpy dashboard. Plain JavaScript, no libraries.
//
// Every value that comes from the server (documents, names, log lines,
// errors) is put on the page with textContent or as a text node, never as
// HTML. The admin key lives in sessionStorage (this tab only) and goes out
// as `Authorization: Convex <key>` on every call; no cookie is involved.
"use strict";

const KEY_STORAGE = "convexpy.adminKey";
const PAGES = ["functions", "data", "schedules", "logs", "health"];
const MAX_LOG_ROWS = 500;
const REFRESH_MS = { schedules: 3000, health: 2000 };

const state = {
  key: null,
  page: null,
  functions: [],
  selectedFunction: null,
  table: null,
  tableCursors: [null],
  tablePage: 0,
  selectedDoc: null,
  jobsCursor: null,
  jobsMessage: null,
  jobsTicket: 0,
  logs: [],
  logAfter: 0,
  logPaused: false,
  logPolling: false,
  refreshTimer: null,
};

// -- building the page, as text only ---------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = String(value);
    else if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function $(id) {
  return document.getElementById(id);
}

function json(value) {
  return JSON.stringify(value, null, 2);
}

function oneLine(value) {
  const text = JSON.stringify(value);
  return text.length > 160 ? text.slice(0, 157) + "..." : text;
}

function badge(text, kind) {
  return el("span", { className: "badge " + (kind || text), text });
}

function formatTime(ms) {
  if (typeof ms !== "number") return "";
  const date = new Date(ms);
  const today = new Date().toDateString() === date.toDateString();
  const time = date.toLocaleTimeString([], { hour12: false });
  return today ? time + "." + String(date.getMilliseconds()).padStart(3, "0") : date.toLocaleDateString() + " " + time;
}

function formatDuration(ms) {
  if (typeof ms !== "number") return "";
  if (ms < 10) return ms.toFixed(2) + " ms";
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return (ms / 60000).toFixed(1) + " min";
}

function relative(ms, now) {
  const delta = ms - now;
  const abs = Math.abs(delta);
  let text;
  if (abs < 60000) text = formatDuration(abs);
  else if (abs < 3600000) text = Math.round(abs / 60000) + " min";
  else if (abs < 172800000) text = Math.floor(abs / 3600000) + " h " + Math.round((abs % 3600000) / 60000) + " min";
  else text = Math.round(abs / 86400000) + " days";
  return delta >= 0 ? "in " + text : text + " ago";
}

function notice(message) {
  const box = $("notice");
  box.textContent = message || "";
  box.hidden = !message;
}

// -- talking to the server ------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  if (!state.key) throw new ApiError(401, "MissingAdminKey", "No admin key");
  const headers = { Authorization: "Convex " + state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiError(0, "NetworkError", "The dev server cannot be reached (" + err.message + ")");
  }
  let data;
  try {
    data = await response.json();
  } catch (err) {
    throw new ApiError(response.status, "BadResponse", "The server answered " + response.status + " without JSON");
  }
  if (response.status === 401) {
    askForKey(data.message || "The admin key was refused");
    throw new ApiError(401, data.code, data.message);
  }
  if (!response.ok) throw new ApiError(response.status, data.code, data.message || data.code);
  return data;
}

function query(params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") {
      parts.push(encodeURIComponent(name) + "=" + encodeURIComponent(value));
    }
  }
  return parts.length ? "?" + parts.join("&") : "";
}

function showError(where, err) {
  const text = (err.code ? err.code + ": " : "") + err.message;
  if (where) clear(where, el("p", { className: "result error", role: "alert", text }));
  else notice(text);
}

// -- the admin key ---------------------------------------------------------------------

function takeKeyFromUrl() {
  const match = /(?:^#|&)key=([^&]*)/.exec(location.hash);
  if (!match) return;
  sessionStorage.setItem(KEY_STORAGE, decodeURIComponent(match[1]));
  // The key leaves the address bar and the history at once.
  history.replaceState(null, "", location.pathname + location.search + "#functions");
}

function askForKey(message) {
  state.key = null;
  sessionStorage.removeItem(KEY_STORAGE);
  $("pages").hidden = true;
  $("forget-key").hidden = true;
  $("key-page").hidden = false;
  notice(message || "");
  $("key-input").focus();
}

function useKey(key) {
  state.key = key;
  sessionStorage.setItem(KEY_STORAGE, key);
  $("key-page").hidden = true;
  $("pages").hidden = false;
  $("forget-key").hidden = false;
  notice("");
  showPage(pageFromHash());
  pollLogs();
}

// -- pages ------------------------------------------------------------------------------

function pageFromHash() {
  const name = location.hash.replace(/^#/, "");
  return PAGES.includes(name) ? name : "functions";
}

function showPage(page) {
  state.page = page;
  for (const name of PAGES) $("page-" + name).hidden = name !== page;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  clearInterval(state.refreshTimer);
  state.refreshTimer = null;
  if (!state.key) return;
  const load = { functions: loadFunctions, data: loadTables, schedules: loadSchedules, logs: renderLogs, health: loadHealth }[page];
  load();
  if (REFRESH_MS[page]) {
    state.refreshTimer = setInterval(() => {
      if (!document.hidden) load(true);
    }, REFRESH_MS[page]);
  }
}

// -- Functions --------------------------------------------------------------------------

async function fetchFunctions() {
  const data = await api("GET", "/api/admin/function_specs");
  state.functions = data.functions;
  return data.functions;
}

async function loadFunctions() {
  const list = $("function-list");
  let functions;
  try {
    functions = await fetchFunctions();
  } catch (err) {
    return showError(list, err);
  }
  const modules = new Map();
  for (const fn of functions) {
    if (!modules.has(fn.module)) modules.set(fn.module, []);
    modules.get(fn.module).push(fn);
  }
  if (!functions.length) return clear(list, el("p", { className: "empty", text: "This app has no functions yet." }));
  clear(
    list,
    [...modules].map(([module, fns]) => [
      el("h2", { text: module }),
      el("ul", {}, fns.map((fn) => el("li", {}, functionItem(fn)))),
    ]),
  );
  const selected = functions.find((fn) => fn.path === state.selectedFunction);
  if (selected) showFunction(selected);
}

function functionItem(fn) {
  return el(
    "button",
    {
      type: "button",
      className: "item",
      "aria-current": fn.path === state.selectedFunction ? "true" : "false",
      "aria-label": "Show " + fn.path,
      onclick: (e) => {
        state.selectedFunction = fn.path;
        for (const item of document.querySelectorAll("#function-list .item")) item.setAttribute("aria-current", "false");
        e.currentTarget.setAttribute("aria-current", "true");
        showFunction(fn);
      },
    },
    el("span", { className: "mono", text: fn.name }),
    el("span", {}, fn.visibility === "internal" ? badge("internal") : null, " ", badge(fn.kind)),
  );
}

function showFunction(fn) {
  const detail = $("function-detail");
  const args = el("textarea", { id: "run-args", className: "mono", spellcheck: "false" });
  args.value = "{}";
  const result = el("div", { id: "run-result", "aria-live": "polite" });
  const run = el("button", { type: "button", className: "primary", text: "Run", onclick: () => runFunction(fn, args, result, run) });
  clear(
    detail,
    el("h2", { className: "mono", text: fn.path }),
    el(
      "dl",
      { className: "facts" },
      el("dt", { text: "Kind" }),
      el("dd", {}, badge(fn.kind), " ", badge(fn.visibility, fn.visibility === "internal" ? "internal" : "")),
      el("dt", { text: "Arguments" }),
      el("dd", {}, el("code", { text: fn.argsText })),
      el("dt", { text: "Returns" }),
      el("dd", {}, el("code", { text: fn.returnsText || "not declared" })),
    ),
    el("details", {}, el("summary", { text: "Validator JSON" }), el("pre", { text: json({ args: fn.args, returns: fn.returns }) })),
    el("h3", { text: "Run" }),
    el("label", { for: "run-args", text: "Arguments (JSON object)" }),
    args,
    el("div", { className: "actions" }, run),
    result,
  );
}

async function runFunction(fn, argsInput, result, button) {
  let args;
  try {
    args = JSON.parse(argsInput.value.trim() || "{}");
  } catch (err) {
    return clear(result, el("div", { className: "result error", role: "alert", text: "The arguments are not valid JSON: " + err.message }));
  }
  if (args === null || typeof args !== "object" || Array.isArray(args)) {
    return clear(result, el("div", { className: "result error", role: "alert", text: "The arguments must be a JSON object, e.g. {\"name\": \"Ada\"}" }));
  }
  button.disabled = true;
  clear(result, el("p", { className: "status", text: "Running " + fn.path + "..." }));
  const started = performance.now();
  try {
    const answer = await api("POST", "/api/" + fn.kind, { path: fn.path, args, format: "json" });
    const took = formatDuration(performance.now() - started);
    const ok = answer.status === "success";
    const box = el("div", { className: "result" + (ok ? "" : " error"), "data-status": answer.status });
    append(box, [el("div", { className: "actions" }, badge(ok ? "success" : "error"), el("span", { className: "status", text: took }))]);
    if (ok) append(box, [el("h3", { text: "Result" }), el("pre", { className: "run-value", text: json(answer.value) })]);
    else append(box, [el("h3", { text: "Error" }), el("pre", { className: "run-error", text: answer.errorMessage })]);
    if (answer.errorData !== undefined) append(box, [el("h3", { text: "Error data" }), el("pre", { text: json(answer.errorData) })]);
    if (answer.logLines && answer.logLines.length) append(box, [el("h3", { text: "Logs" }), el("pre", { className: "run-logs", text: answer.logLines.join("\n") })]);
    clear(result, box);
  } catch (err) {
    showError(result, err);
  } finally {
    button.disabled = false;
  }
}

// -- Data -------------------------------------------------------------------------------

async function loadTables() {
  const list = $("table-list");
  let data;
  try {
    data = await api("GET", "/api/admin/tables");
  } catch (err) {
    return showError(list, err);
  }
  const user = data.tables.filter((t) => !t.system);
  const system = data.tables.filter((t) => t.system);
  const item = (t) =>
    el("li", {}, el("button", {
      type: "button",
      className: "item mono",
      "aria-current": t.name === state.table ? "true" : "false",
      "aria-label": "Show table " + t.name,
      text: t.name,
      onclick: () => openTable(t.name),
    }));
  clear(
    list,
    el("h2", { text: "Tables" }),
    user.length ? el("ul", {}, user.map(item)) : el("p", { className: "empty", text: "No tables yet." }),
    el("h2", { text: "System tables (read-only)" }),
    el("ul", {}, system.map(item)),
  );
  if (state.table) loadDocuments();
}

function openTable(name) {
  state.table = name;
  state.tableCursors = [null];
  state.tablePage = 0;
  state.selectedDoc = null;
  for (const item of document.querySelectorAll("#table-list .item")) {
    item.setAttribute("aria-current", item.textContent === name ? "true" : "false");
  }
  loadDocuments();
}

async function loadDocuments() {
  const detail = $("table-detail");
  const table = state.table;
  let data;
  try {
    data = await api("GET", "/api/admin/tables/" + encodeURIComponent(table) + "/documents" + query({ limit: 25, cursor: state.tableCursors[state.tablePage] }));
  } catch (err) {
    return showError(detail, err);
  }
  if (table !== state.table) return;
  if (!data.isDone) state.tableCursors[state.tablePage + 1] = data.cursor;
  const docView = el("div", { className: "doc-json", id: "doc-json" });
  const rows = data.documents.map((doc) => {
    const row = el(
      "tr",
      { className: "doc", tabindex: "0", "aria-label": "Show document " + doc._id },
      el("td", {}, el("code", { text: doc._id })),
      el("td", { className: "hide-narrow", text: formatTime(doc._creationTime) }),
      el("td", {}, el("code", { text: oneLine(withoutSystemFields(doc)) })),
    );
    const open = () => {
      for (const other of row.parentNode.children) other.removeAttribute("aria-selected");
      row.setAttribute("aria-selected", "true");
      state.selectedDoc = doc._id;
      clear(docView, el("h3", { text: "Document " + doc._id }), el("pre", { className: "doc-value", text: json(doc) }));
    };
    row.addEventListener("click", open);
    row.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === " ") {
        e.preventDefault();
        open();
      }
    });
    return row;
  });
  const first = state.tablePage === 0;
  clear(
    detail,
    el("h2", { className: "mono" }, table, " ", data.system ? badge("read-only", "canceled") : null),
    data.documents.length
      ? el("div", { className: "scroll" }, el("table", { "aria-label": "Documents of " + table },
          el("thead", {}, el("tr", {}, el("th", { text: "_id" }), el("th", { className: "hide-narrow", text: "_creationTime" }), el("th", { text: "Fields" }))),
          el("tbody", {}, rows)))
      : el("p", { className: "empty", text: "No documents." }),
    el(
      "div",
      { className: "actions" },
      el("button", { type: "button", text: "Newer documents", disabled: first, onclick: () => { state.tablePage -= 1; loadDocuments(); } }),
      el("span", { className: "status", text: "Page " + (state.tablePage + 1) + ", newest first" }),
      el("button", { type: "button", text: "Older documents", disabled: data.isDone, onclick: () => { state.tablePage += 1; loadDocuments(); } }),
    ),
    docView,
  );
}

function withoutSystemFields(doc) {
  const fields = {};
  for (const [name, value] of Object.entries(doc)) if (!name.startsWith("_")) fields[name] = value;
  return fields;
}

// -- Schedules --------------------------------------------------------------------------

async function loadSchedules(quiet) {
  if (!quiet || !state.functions.length) {
    try {
      await fetchFunctions();
      fillFunctionFilter();
    } catch (err) {
      return showError(null, err);
    }
  }
  await Promise.all([loadJobs(false), loadCrons()]);
}

function fillFunctionFilter() {
  const select = $("job-function");
  const chosen = select.value;
  const names = state.functions.filter((fn) => fn.kind !== "query").map((fn) => fn.path);
  clear(select, el("option", { value: "", text: "any" }), names.map((name) => el("option", { value: name, text: name })));
  select.value = names.includes(chosen) ? chosen : "";
  $("jobs-cancel-all").disabled = !select.value;
}

async function loadJobs(more, message) {
  const body = $("jobs-table").tBodies[0];
  const status = $("jobs-status");
  const params = { state: $("job-state").value, function: $("job-function").value, limit: 25, cursor: more ? state.jobsCursor : null };
  const ticket = ++state.jobsTicket; // only the answer to the latest request is shown
  let data;
  try {
    data = await api("GET", "/api/admin/scheduled" + query(params));
  } catch (err) {
    if (ticket === state.jobsTicket) status.textContent = (err.code ? err.code + ": " : "") + err.message;
    return;
  }
  if (ticket !== state.jobsTicket) return;
  if (!more && !message && state.jobsMessage && Date.now() < state.jobsMessage.until) message = state.jobsMessage.text;
  if (message && !(state.jobsMessage && state.jobsMessage.text === message)) state.jobsMessage = { text: message, until: Date.now() + 10000 };
  state.jobsCursor = data.isDone ? null : data.cursor;
  $("jobs-more").hidden = data.isDone;
  const rows = data.jobs.map(jobRow);
  if (more) append(body, rows);
  else clear(body, rows);
  const shown = body.rows.length;
  const count = shown ? shown + (data.isDone ? "" : "+") + " scheduled function" + (shown === 1 ? "" : "s") + " shown." : "No scheduled functions match.";
  status.textContent = message ? message + " " + count : count;
}

function jobRow(job) {
  const kind = job.state.kind;
  const cancelable = kind === "pending" || kind === "inProgress";
  const cancel = cancelable
    ? el("button", {
        type: "button",
        className: "danger",
        text: "Cancel",
        title: "Cancel " + job.name + " (" + job._id + ")",
        onclick: async (e) => {
          e.currentTarget.disabled = true;
          let message;
          try {
            const answer = await api("POST", "/api/admin/scheduled/cancel", { id: job._id });
            message = "Job " + job._id + " is now " + answer.state + ".";
          } catch (err) {
            message = (err.code ? err.code + ": " : "") + err.message;
          }
          loadJobs(false, message);
        },
      })
    : null;
  return el(
    "tr",
    { "data-job": job._id },
    el("td", {}, el("code", { text: job.name })),
    el("td", {}, badge(kind)),
    el("td", { text: formatTime(job.scheduledTime) }),
    el("td", { text: formatTime(job.completedTime) }),
    el("td", {}, el("pre", { text: oneLine(job.args.length === 1 ? job.args[0] : job.args) })),
    el("td", {}, job.state.error ? el("pre", { className: "log-error", text: job.state.error }) : null),
    el("td", {}, cancel),
  );
}

async function cancelAll() {
  const fn = $("job-function").value;
  if (!fn) return;
  if (!confirm("Cancel every pending job of " + fn + "?")) return;
  let message;
  try {
    const answer = await api("POST", "/api/admin/scheduled/cancel_all", { function: fn });
    message = "Canceled " + answer.canceled + " pending job" + (answer.canceled === 1 ? "" : "s") + " of " + fn + ".";
  } catch (err) {
    message = (err.code ? err.code + ": " : "") + err.message;
  }
  loadJobs(false, message);
}

async function loadCrons() {
  const body = $("crons-table").tBodies[0];
  let data;
  try {
    data = await api("GET", "/api/admin/crons");
  } catch (err) {
    return clear(body, el("tr", {}, el("td", { colspan: "5", text: err.message })));
  }
  if (!data.crons.length) return clear(body, el("tr", {}, el("td", { colspan: "5", className: "empty", text: "No cron jobs (define them in crons.py, or register them with RuntimeCrons)." })));
  clear(
    body,
    data.crons.map(({ doc, schedule, source }) =>
      el(
        "tr",
        { "data-cron": doc.name },
        el("td", {}, el("code", { text: doc.name }), source === "runtime" ? [" ", badge("runtime", "internal")] : null),
        el("td", {}, el("code", { text: doc.function })),
        el("td", { className: "cron-schedule", text: schedule }),
        el(
          "td",
          { className: "cron-next" },
          doc.currentRun ? [badge("running", "inProgress"), " "] : null,
          formatTime(doc.nextRun),
          el("br"),
          el("span", { className: "status", text: relative(doc.nextRun, data.now) }),
        ),
        el("td", {}, lastRuns(doc.lastRuns)),
      ),
    ),
  );
}

function lastRuns(runs) {
  if (!runs || !runs.length) return el("span", { className: "empty", text: "none yet" });
  return el(
    "ul",
    { className: "runs" },
    runs
      .slice(-5)
      .reverse()
      .map((run) =>
        el(
          "li",
          {},
          badge(run.status),
          " ",
          formatTime(run.scheduledTime),
          run.duration !== undefined ? " · " + formatDuration(run.duration) : "",
          run.skipped ? " · " + run.skipped + " skipped" : "",
          run.error ? el("div", { className: "log-error", text: run.error }) : null,
        ),
      ),
  );
}

// -- Logs ---------------------------------------------------------------------------------

async function pollLogs() {
  if (state.logPolling) return;
  state.logPolling = true;
  let failures = 0;
  let wait = 0; // the first answer comes at once: the page is live from then on
  while (state.key) {
    try {
      const data = await api("GET", "/api/admin/logs" + query({ after: state.logAfter, wait }));
      wait = 20;
      failures = 0;
      if (data.last < state.logAfter) state.logs = []; // the server restarted
      state.logAfter = data.last;
      if (data.dropped) addLogs([{ seq: -1, gap: data.dropped }]);
      addLogs(data.entries);
      $("log-status-line").textContent = "Live" + (state.logPaused ? " (paused: new entries are kept, not shown)" : "");
    } catch (err) {
      if (err.status === 401) break;
      failures += 1;
      $("log-status-line").textContent = "Reconnecting: " + err.message;
      await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** failures)));
    }
  }
  state.logPolling = false;
}

function addLogs(entries) {
  if (!entries.length) return;
  state.logs.push(...entries);
  if (state.logs.length > MAX_LOG_ROWS) state.logs.splice(0, state.logs.length - MAX_LOG_ROWS);
  if (state.page === "logs" && !state.logPaused) renderLogs();
}

function logMatches(entry) {
  const fn = $("log-function").value.trim();
  const status = $("log-status").value;
  if (entry.gap) return !fn && !status;
  if (fn && !entry.path.includes(fn) && !(entry.cron || "").includes(fn)) return false;
  if (status === "error") return entry.outcome === "error" || entry.outcome === "failed";
  return !status || entry.outcome === status;
}

function renderLogs() {
  const list = $("log-list");
  const shown = state.logs.filter(logMatches).reverse();
  if (!shown.length) {
    return clear(list, el("li", { className: "empty", text: state.logs.length ? "No entries match the filter." : "Waiting for function calls, jobs and cron runs..." }));
  }
  clear(list, shown.map(logRow));
}

function logRow(entry) {
  if (entry.gap) return el("li", { className: "empty", text: entry.gap + " older entries were dropped before this tab read them." });
  const bad = entry.outcome === "error" || entry.outcome === "failed";
  const label = entry.source === "call" ? entry.kind : entry.source === "cron" ? "cron" : "job";
  return el(
    "li",
    { "data-path": entry.path, "data-outcome": entry.outcome },
    el(
      "div",
      { className: "log-head" },
      el("span", { className: "time", text: formatTime(entry.time) }),
      badge(label, entry.source === "call" ? entry.kind : "pending"),
      el("span", { className: "path mono", text: entry.cron ? entry.cron + " → " + entry.path : entry.path }),
      badge(entry.outcome, bad ? "error" : entry.outcome),
      el("span", { className: "dur", text: formatDuration(entry.durationMs) }),
    ),
    entry.logs.length ? el("pre", { className: "log-lines", text: entry.logs.join("\n") }) : null,
    entry.error ? el("pre", { className: "log-error", text: entry.error }) : null,
  );
}

// -- Health -------------------------------------------------------------------------------

async function loadHealth() {
  let data;
  try {
    data = await api("GET", "/api/admin/health");
  } catch (err) {
    return showError($("health-cards"), err);
  }
  const recent = data.jobs.slice(-10);
  const perSecond = recent.reduce((sum, p) => sum + p.jobs, 0) / recent.length;
  const late = data.lastMinute;
  const cap = (n) => (n >= data.countCap ? n + "+" : String(n));
  const card = (label, value) => el("div", { className: "card" }, el("div", { className: "label", text: label }), el("div", { className: "value", text: value }));
  clear(
    $("health-cards"),
    card("Jobs/s (last 10 s)", perSecond.toFixed(1)),
    card("Jobs (last min)", String(late.jobs)),
    card("Lateness p50 (last min)", late.p50 === null ? "–" : formatDuration(late.p50)),
    card("Lateness p99 (last min)", late.p99 === null ? "–" : formatDuration(late.p99)),
    card("Pending jobs", cap(data.pending)),
    card("Running actions", cap(data.running)),
  );
  const points = data.jobs.slice(-120);
  lineChart($("chart-jobs"), points.map((p) => p.t), [points.map((p) => p.jobs)], ["jobs/s"], true);
  lineChart($("chart-lateness"), points.map((p) => p.t), [points.map((p) => p.p50), points.map((p) => p.p99)], ["p50", "p99"]);
  lineChart($("chart-pending"), data.pendingSeries.map((p) => p.t), [data.pendingSeries.map((p) => p.pending)], ["pending"], true);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 4, 8, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

function lineChart(box, times, series, names, counts) {
  const width = 480, height = 180, left = 46, right = 10, top = 10, bottom = 24;
  const values = series.flat().filter((v) => v !== null && v !== undefined);
  const highest = niceMax(values.length ? Math.max(...values) : 0);
  const max = counts ? Math.max(4, highest) : highest; // whole numbers on a count's axis
  const t0 = times.length ? times[0] : 0;
  const t1 = times.length > 1 ? times[times.length - 1] : t0 + 1;
  const x = (t) => left + ((t - t0) / (t1 - t0 || 1)) * (width - left - right);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": names.join(" and ") + " over time" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    chart.append(svg("line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    chart.append(svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, Number.isInteger(v) ? String(v) : v.toFixed(1)));
  }
  if (times.length) {
    chart.append(svg("text", { class: "axis", x: left, y: height - 6 }, new Date(t0).toLocaleTimeString([], { hour12: false })));
    chart.append(svg("text", { class: "axis", x: width - right, y: height - 6, "text-anchor": "end" }, new Date(t1).toLocaleTimeString([], { hour12: false })));
  }
  series.forEach((points, i) => {
    // A gap (no jobs that second) breaks the line rather than drawing zero lateness.
    let run = [];
    const flush = () => {
      if (run.length > 1) chart.append(svg("polyline", { class: "line s" + i, points: run.join(" ") }));
      else if (run.length === 1) {
        const [cx, cy] = run[0].split(",");
        chart.append(svg("circle", { class: "dot s" + i, cx, cy, r: 3 }));
      }
      run = [];
    };
    points.forEach((v, j) => {
      if (v === null || v === undefined) return flush();
      run.push(x(times[j]).toFixed(1) + "," + y(v).toFixed(1));
    });
    flush();
  });
  const legend = el("div", { className: "legend" }, names.map((name, i) => el("span", {}, el("span", { className: "swatch k" + i }), name)));
  clear(box, chart, series.length > 1 ? legend : null);
}

// -- start -------------------------------------------------------------------------------

function start() {
  takeKeyFromUrl();
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("key-input").value.trim();
    if (key) useKey(key);
  });
  $("forget-key").addEventListener("click", () => askForKey("The admin key was forgotten in this tab."));
  window.addEventListener("hashchange", () => {
    takeKeyFromUrl();
    if (state.key) showPage(pageFromHash());
    else {
      const key = sessionStorage.getItem(KEY_STORAGE);
      if (key) useKey(key);
    }
  });
  $("job-state").addEventListener("change", () => loadJobs(false));
  $("job-function").addEventListener("change", () => {
    $("jobs-cancel-all").disabled = !$("job-function").value;
    loadJobs(false);
  });
  $("jobs-refresh").addEventListener("click", () => loadSchedules(false));
  $("jobs-more").addEventListener("click", () => loadJobs(true));
  $("jobs-cancel-all").addEventListener("click", cancelAll);
  $("log-function").addEventListener("input", renderLogs);
  $("log-status").addEventListener("change", renderLogs);
  $("log-clear").addEventListener("click", () => {
    state.logs = [];
    renderLogs();
  });
  $("log-pause").addEventListener("click", (e) => {
    state.logPaused = !state.logPaused;
    e.currentTarget.textContent = state.logPaused ? "Resume" : "Pause";
    e.currentTarget.setAttribute("aria-pressed", String(state.logPaused));
    if (!state.logPaused) renderLogs();
  });
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) useKey(key);
  else askForKey("");
}

start();
