// jobsvc dashboard (docs/ARCHITECTURE.md, "The dashboard"). Plain JavaScript, no dependency, no request off this service.
//
// Live without polling: one `fetch` of GET /results/events read with a stream reader (not
// EventSource, so it can send the Authorization header). On each (re)connect the page loads
// the latest page of results and the counts; events then update rows in place, and the
// counts are asked again from the server when events arrive (at most once a second).
// The page holds at most MAX_ROWS rows; counts never come from the rows it holds.
"use strict";

const MAX_ROWS = 100;
const STATS_EVERY_MS = 1000;
const BUCKET_MS = 10_000;
const BUCKETS = 30; // 5 minutes
const STATUSES = ["Queued", "Processing", "Completed", "Failed", "Canceled"];
const TOKEN_KEY = "jobsvc.token";

const $ = (selector, root = document) => root.querySelector(selector);
const rowsEl = $("#rows");

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  filters: { status: "", type: "", jobId: "" },
  rows: new Map(), // "<jobId>/<resultFile>" -> job view, for the rows shown
  stream: null, // AbortController of the open event stream
  loading: null, // events buffered while the list loads
  stats: { timer: null, last: 0, receivedAt: 0, oldestMs: null, queued: 0 },
  finished: new Map(), // "<jobId>/<resultFile>" -> finishedAt, for the throughput chart
  detail: null, // jobId shown in the detail view
  retryMissing: false,
};

class AuthRequired extends Error {}

// --- requests -------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.token) headers.set("Authorization", `Bearer ${state.token}`);
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    const reason = await errorOf(response);
    const refused = Boolean(state.token);
    forgetToken();
    askForToken(refused ? `The token was refused: ${reason}` : "This service asks for a token.");
    throw new AuthRequired(reason);
  }
  return response;
}

async function errorOf(response) {
  try {
    const body = await response.json();
    return body.error || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function notice(text) {
  const el = $("#notice");
  el.textContent = text || "";
  el.hidden = !text;
}

// --- token prompt ----------------------------------------------------------------------

// The server writes its JOBSVC_AUTH into the page: with keys and no token the page asks
// at once rather than spending a request on the 401 it knows it would get.
const AUTH = $('meta[name="jobsvc-auth"]')?.content || "keys";

function askForToken(reason) {
  stopStream();
  clearView();
  $("#login-reason").textContent = reason;
  $("#login").hidden = false;
  $("#main").hidden = true;
  $("#logout").hidden = true;
  $("#login input[name=token]").focus();
}

// A refused or forgotten token is dropped from the session: a reload must not send it again.
function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
}

// Nothing read with one token stays on screen for the next (or for nobody).
function clearView() {
  state.rows.clear();
  rowsEl.replaceChildren();
  $("#shown").textContent = "0";
  for (const status of STATUSES) $(`[data-count="${status}"]`).textContent = "–";
  state.finished.clear();
  renderChart();
  state.stats.oldestMs = null;
  state.stats.queued = 0;
  $("#oldest-age").textContent = "–";
  closeDetail();
  const identity = $("#identity");
  identity.textContent = "";
  delete identity.dataset.tenant;
  notice("");
}

function start() {
  if (AUTH === "keys" && !state.token) askForToken("This service asks for a token.");
  else follow();
}

$("#login").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = $("#login input[name=token]");
  state.token = input.value.trim();
  input.value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("#login").hidden = true;
  $("#main").hidden = false;
  $("#logout").hidden = false;
  follow();
});

$("#logout").addEventListener("click", () => {
  forgetToken();
  $("#logout").hidden = true;
  if (AUTH === "keys") askForToken("Token forgotten. This service asks for a token.");
  else {
    clearView();
    follow();
  }
});

// What the token reads (GET /auth/whoami): its tenant, or every tenant for an admin key.
async function showIdentity() {
  const el = $("#identity");
  const response = await api("/auth/whoami");
  if (!response.ok) {
    el.textContent = "";
    return;
  }
  const who = await response.json();
  el.dataset.tenant = who.readsTenants === null ? "*" : who.readsTenants.join(",");
  el.textContent = who.readsTenants === null ? "Every tenant (admin)" : `Tenant ${who.readsTenants.join(", ")}`;
}

// --- the event stream ------------------------------------------------------------------

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  setLive(false);
}

function setLive(live) {
  const el = $("#live");
  el.dataset.live = String(live);
  el.textContent = live ? "live" : "reconnecting…";
}

// Subscribe first, then load: no change between the load and the stream is missed.
async function follow() {
  stopStream();
  const controller = new AbortController();
  state.stream = controller;
  let backoff = 500;
  while (state.stream === controller) {
    try {
      const response = await api("/results/events", {
        signal: controller.signal,
        headers: { Accept: "text/event-stream" },
      });
      if (!response.ok) throw new Error(await errorOf(response));
      setLive(true);
      backoff = 500;
      state.loading = [];
      const reading = readEvents(response.body, controller);
      reading.catch(() => {}); // awaited below; this only keeps an early failure from going unhandled
      await Promise.all([loadRows(), refreshStats(), showIdentity()]);
      const buffered = state.loading;
      state.loading = null;
      buffered.forEach(applyEvent);
      await reading;
    } catch (error) {
      state.loading = null;
      if (error instanceof AuthRequired || controller.signal.aborted) return;
      notice(`Event stream interrupted (${error.message}); reconnecting.`);
    }
    if (state.stream !== controller) return;
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 10_000);
  }
}

async function readEvents(body, controller) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""));
        if (data.length) onEvent(JSON.parse(data.join("\n")));
      }
    }
  } finally {
    if (controller.signal.aborted) reader.cancel().catch(() => {});
  }
}

function onEvent(view) {
  if (view.finishedAt) state.finished.set(keyOf(view), view.finishedAt);
  if (state.loading) state.loading.push(view);
  else applyEvent(view);
  scheduleStats();
}

function applyEvent(view) {
  upsertRow(view);
  if (state.detail === view.jobId) renderResult(view);
}

// --- results table ---------------------------------------------------------------------

const keyOf = (view) => `${view.jobId}/${view.resultFile}`;

function matches(view) {
  const f = state.filters;
  return (!f.status || view.status === f.status) && (!f.type || view.type === f.type) && (!f.jobId || view.jobId === f.jobId);
}

async function loadRows() {
  const params = new URLSearchParams({ order: "desc", limit: String(MAX_ROWS) });
  for (const [name, value] of Object.entries(state.filters)) if (value) params.set(name, value);
  const response = await api(`/results/list?${params}`);
  if (!response.ok) {
    notice(`Could not list results: ${await errorOf(response)}`);
    return;
  }
  const views = await response.json();
  state.rows.clear();
  rowsEl.replaceChildren();
  for (const view of views) if (matches(view)) upsertRow(view);
  $("#shown").textContent = String(state.rows.size);
}

function upsertRow(view) {
  const key = keyOf(view);
  const known = state.rows.get(key);
  if (known && known.updatedAt > view.updatedAt) return; // an older state than the one shown
  let tr = rowsEl.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
  if (!matches(view)) {
    if (tr) {
      tr.remove();
      state.rows.delete(key);
    }
    return;
  }
  if (!tr) {
    // Newest first: place by creation time; a row older than the whole page is not shown.
    const after = [...rowsEl.children].find((other) => Number(other.dataset.createdAt) < view.createdAt);
    if (!after && state.rows.size >= MAX_ROWS) return;
    tr = newRow(view);
    rowsEl.insertBefore(tr, after || null);
    while (rowsEl.children.length > MAX_ROWS) {
      state.rows.delete(rowsEl.lastElementChild.dataset.key);
      rowsEl.lastElementChild.remove();
    }
  }
  state.rows.set(key, view);
  fillRow(tr, view);
  $("#shown").textContent = String(state.rows.size);
}

function newRow(view) {
  const tr = document.createElement("tr");
  tr.dataset.key = keyOf(view);
  tr.dataset.jobId = view.jobId;
  tr.dataset.resultFile = view.resultFile;
  tr.dataset.createdAt = String(view.createdAt);
  for (const field of ["createdAt", "jobId", "resultFile", "type", "status", "attempts"]) {
    const td = document.createElement("td");
    td.dataset.field = field;
    tr.append(td);
  }
  tr.querySelector('[data-field="resultFile"]').className = "file";
  const actions = document.createElement("td");
  actions.append(actionButton("cancel", "Cancel"), actionButton("retry", "Retry"));
  tr.append(actions);
  tr.addEventListener("click", () => openDetail(view.jobId).catch(report));
  return tr;
}

function actionButton(action, label) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.action = action;
  button.textContent = label;
  return button;
}

function fillRow(tr, view) {
  tr.dataset.status = view.status;
  const set = (field, text) => (tr.querySelector(`[data-field="${field}"]`).textContent = text);
  set("createdAt", time(view.createdAt));
  set("jobId", view.jobId.slice(0, 8));
  tr.querySelector('[data-field="jobId"]').title = view.jobId;
  set("resultFile", view.resultFile);
  set("type", view.type);
  set("status", view.status);
  set("attempts", `${view.attempts}/${view.maxAttempts}`);
  tr.querySelector('[data-action="cancel"]').hidden = !["Queued", "Processing"].includes(view.status);
  tr.querySelector('[data-action="retry"]').hidden = !["Failed", "Canceled"].includes(view.status);
  tr.classList.toggle("open", state.detail === view.jobId);
}

$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  for (const name of Object.keys(state.filters)) state.filters[name] = String(form.get(name) || "").trim();
  loadRows().catch(report);
});

// Row and detail buttons: one handler for both, acting on their job.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button || button.dataset.action === "login") return;
  event.stopPropagation();
  const jobId = button.closest("tr[data-job-id]")?.dataset.jobId || state.detail;
  if (jobId) act(button.dataset.action, jobId, button).catch(report);
}, true);

async function act(action, jobId, button) {
  button.disabled = true;
  try {
    const response = await api(`/results/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
    if (response.ok) {
      notice("");
      return;
    }
    const reason = await errorOf(response);
    if (action === "retry" && (response.status === 405 || reason.startsWith("there is no resource"))) {
      state.retryMissing = true;
      document.body.classList.add("no-retry");
      notice("This server has no retry endpoint (POST /results/{jobId}/retry): Retry is hidden.");
      return;
    }
    notice(`${action} failed: ${reason}`);
  } finally {
    button.disabled = false;
  }
}

function report(error) {
  if (!(error instanceof AuthRequired)) notice(String(error.message || error));
}

// --- detail view -----------------------------------------------------------------------

async function openDetail(jobId) {
  state.detail = jobId;
  $("#detail-job").textContent = jobId;
  $("#detail-results").replaceChildren();
  $("#detail").querySelectorAll("button[data-action]").forEach((button) => (button.hidden = true));
  $("#detail").hidden = false;
  $("#main").classList.add("with-detail");
  rowsEl.querySelectorAll("tr").forEach((tr) => tr.classList.toggle("open", tr.dataset.jobId === jobId));
  const response = await api(`/results/${encodeURIComponent(jobId)}`);
  if (!response.ok) {
    notice(`Could not open job ${jobId}: ${await errorOf(response)}`);
    return;
  }
  if (state.detail === jobId) (await response.json()).forEach(renderResult);
}

$("#detail-close").addEventListener("click", closeDetail);

function closeDetail() {
  state.detail = null;
  $("#detail").hidden = true;
  $("#main").classList.remove("with-detail");
  rowsEl.querySelectorAll("tr.open").forEach((tr) => tr.classList.remove("open"));
}

function renderResult(view) {
  const holder = $("#detail-results");
  let box = [...holder.children].find((el) => el.dataset.resultFile === view.resultFile);
  if (box && Number(box.dataset.updatedAt) > view.updatedAt) return;
  const fresh = document.createElement("div");
  fresh.className = "result";
  fresh.dataset.resultFile = view.resultFile;
  fresh.dataset.status = view.status;
  fresh.dataset.updatedAt = String(view.updatedAt);
  const dl = document.createElement("dl");
  const rows = [
    ["Result", view.resultFile],
    ["Status", view.status],
    ["Attempts", `${view.attempts} of ${view.maxAttempts}`],
    ["Error", view.error || "—"],
    ["Type", view.type],
    ["Image URL", view.imgUrl],
    ["Created", time(view.createdAt)],
    ["Started", time(view.startedAt)],
    ["Finished", time(view.finishedAt)],
    ["Duration", view.durationMs == null ? "—" : `${view.durationMs} ms`],
    ["Run", view.runMs == null ? "—" : `${view.runMs} ms`],
  ];
  for (const [label, value] of rows) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    if (label === "Status") dd.dataset.field = "status";
    dl.append(dt, dd);
  }
  fresh.append(dl);
  if (view.status === "Completed") fresh.append(thumbnail(view));
  if (box) box.replaceWith(fresh);
  else holder.append(fresh);
  const statuses = [...holder.children].map((el) => el.dataset.status);
  const any = (...wanted) => statuses.some((status) => wanted.includes(status));
  $('#detail [data-action="cancel"]').hidden = !any("Queued", "Processing");
  $('#detail [data-action="retry"]').hidden = !any("Failed", "Canceled");
}

function thumbnail(view) {
  const img = document.createElement("img");
  img.alt = view.resultFile;
  const url = `/results/${encodeURIComponent(view.jobId)}/${encodeURIComponent(view.resultFile)}`;
  if (!state.token) {
    img.src = url; // no header needed; also follows S3's presigned redirect
    return img;
  }
  // An <img> cannot send a bearer header: fetch the bytes and show them from memory.
  api(url)
    .then((response) => (response.ok ? response.blob() : null))
    .then((blob) => {
      if (!blob) return;
      img.src = URL.createObjectURL(blob);
      img.addEventListener("load", () => URL.revokeObjectURL(img.src), { once: true });
    })
    .catch(report);
  return img;
}

// --- counts, queue age, throughput ------------------------------------------------------

function scheduleStats() {
  if (state.stats.timer) return;
  const wait = Math.max(0, state.stats.last + STATS_EVERY_MS - Date.now());
  state.stats.timer = setTimeout(() => {
    state.stats.timer = null;
    refreshStats().catch(report);
  }, wait);
}

async function refreshStats() {
  state.stats.last = Date.now();
  const response = await api("/results/stats");
  if (!response.ok) {
    notice(`Could not read the counts: ${await errorOf(response)}`);
    return;
  }
  const stats = await response.json();
  for (const status of STATUSES) {
    $(`[data-count="${status}"]`).textContent = String(stats.counts[status] ?? 0);
  }
  state.stats.oldestMs = stats.oldestQueuedAgeMs;
  state.stats.queued = stats.counts.Queued ?? 0;
  state.stats.receivedAt = Date.now();
  renderAge();
  renderChart();
}

function renderAge() {
  const { oldestMs, receivedAt, queued } = state.stats;
  // Queued results scheduled for later (runAt) are not waiting yet.
  const idle = queued ? "none due yet" : "none waiting";
  $("#oldest-age").textContent = oldestMs == null ? idle : duration(oldestMs + Date.now() - receivedAt);
}

function renderChart() {
  const now = Date.now();
  const start = now - BUCKETS * BUCKET_MS;
  const counts = new Array(BUCKETS).fill(0);
  for (const [key, finishedAt] of state.finished) {
    if (finishedAt < start) state.finished.delete(key);
    else counts[Math.min(BUCKETS - 1, Math.floor((finishedAt - start) / BUCKET_MS))] += 1;
  }
  const peak = Math.max(1, ...counts);
  const svg = $("#chart");
  const width = 300 / BUCKETS;
  svg.replaceChildren(
    ...counts.map((n, i) => {
      const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const height = (n / peak) * 58;
      bar.setAttribute("x", String(i * width + 0.5));
      bar.setAttribute("width", String(width - 1));
      bar.setAttribute("y", String(60 - height));
      bar.setAttribute("height", String(height));
      const title = document.createElementNS("http://www.w3.org/2000/svg", "title");
      title.textContent = `${n} finished`;
      bar.append(title);
      return bar;
    }),
  );
  const lastMinute = counts.slice(-60_000 / BUCKET_MS).reduce((a, b) => a + b, 0);
  $("#rate").textContent = String(lastMinute);
}

// The age and the chart's time axis move with the clock; no request is made for that.
setInterval(() => {
  renderAge();
  renderChart();
}, 1000);

// --- formatting --------------------------------------------------------------------------

function time(ms) {
  return ms == null ? "—" : new Date(ms).toLocaleTimeString([], { hour12: false });
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

$("#logout").hidden = !state.token;
start();
