// The raytask dashboard: polls /queue, /tasks, /usage and /v1/batches, draws the queue,
// cancels or retries, and shows a generator task's output live (GET NAME/stream).
// Plain JavaScript, no dependencies: it is served by the app itself and works offline. The
// stream is read with fetch, not EventSource, because EventSource cannot send the API token;
// readEvents() below is the few lines of Server-Sent Events parsing that needs.
"use strict";

const REFRESH_MS = 2000;
const HISTORY = 150; // samples kept for the chart: 5 minutes at one every 2 s
const history = [];
let token = sessionStorage.getItem("raytask-token") || "";
let timer = null;

function headers() {
  return token ? { Authorization: "Bearer " + token } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    askForToken(token ? "that token was refused" : "");
    throw new Error("unauthorized");
  }
  const body = await response.json();
  if (!response.ok) throw Object.assign(new Error(body.error || response.statusText), { status: response.status });
  return body;
}

async function appWide() {  // /queue, or null where this token may not read it (isolation)
  try {
    return await api("queue");
  } catch (error) {
    if (error.status === 403) return null;
    throw error;
  }
}

function askForToken(message) {
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-error").textContent = message;
  clearTimeout(timer);
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("raytask-token", token);
  document.getElementById("token-form").hidden = true;
  refresh();
});

document.getElementById("status-filter").addEventListener("change", refresh);

function text(value) {
  const span = document.createElement("span");
  span.textContent = value === null || value === undefined ? "—" : String(value);
  return span;
}

function cell(row, content, className) {
  const td = row.insertCell();
  if (content instanceof Node) td.appendChild(content); else td.textContent = content;
  if (className) td.className = className;
  return td;
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "—";
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return seconds.toFixed(1) + " s";
  if (seconds < 3600) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function badge(status) {
  const span = document.createElement("span");
  span.className = "badge " + status;
  span.textContent = status.replace("_", " ");
  return span;
}

function progressBar(progress) {
  if (!progress) return text(null);
  const wrap = document.createElement("span");
  if (progress.fraction !== null) {
    const bar = document.createElement("span");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = Math.round(progress.fraction * 100) + "%";
    bar.appendChild(fill);
    wrap.appendChild(bar);
    wrap.appendChild(text(" " + Math.round(progress.fraction * 100) + "%"));
  }
  if (progress.message) wrap.appendChild(text(" " + progress.message));
  return wrap;
}

function seconds(value) {
  return value === null || value === undefined ? "—" : value < 10 ? value.toFixed(2) : value.toFixed(0);
}

function renderUsage(usage, queue) {
  const tbody = document.querySelector("#usage tbody");
  tbody.replaceChildren();
  const now = (queue && queue.tenants) || {};
  for (const entry of usage.usage) {
    const row = tbody.insertRow();
    row.dataset.tenant = entry.tenant;
    row.dataset.endpoint = entry.endpoint;
    cell(row, entry.tenant);
    cell(row, entry.endpoint);
    const tenant = now[entry.tenant];
    cell(row, tenant ? tenant.pending : "—", "pending");
    cell(row, tenant ? tenant.running : "—", "running");
    for (const key of ["tasks", "succeeded", "failed", "cancelled"]) cell(row, entry[key], key);
    cell(row, seconds(entry.run_s), "run_s");
    cell(row, seconds(entry.gpu_s), "gpu_s");
    cell(row, seconds(entry.queue_s_p50));
    cell(row, seconds(entry.queue_s_p99));
  }
  document.getElementById("no-usage").hidden = usage.usage.length > 0;
}

function renderQueue(queue) {
  document.getElementById("overview").hidden = queue === null;
  document.getElementById("no-overview").hidden = queue !== null;
  if (queue === null) return;
  document.getElementById("app-name").textContent = queue.app;
  const tbody = document.querySelector("#endpoints tbody");
  tbody.replaceChildren();
  let pending = 0;
  let finished = 0;
  for (const [name, numbers] of Object.entries(queue.endpoints)) {
    const row = tbody.insertRow();
    cell(row, name);
    for (const key of ["pending", "in_progress", "success", "failure", "cancelled"]) cell(row, numbers[key]);
    cell(row, age(numbers.oldest_pending_age_s));
    pending += numbers.pending;
    finished += numbers.success + numbers.failure + numbers.cancelled;
  }
  const deployments = document.querySelector("#deployments tbody");
  deployments.replaceChildren();
  for (const [name, numbers] of Object.entries(queue.deployments)) {
    const row = deployments.insertRow();
    cell(row, name);
    cell(row, numbers.in_flight);
    cell(row, numbers.limit);
  }
  const now = Date.now() / 1000;
  const last = history[history.length - 1];
  // Finished tasks expire at their TTL, so the count can drop: never a negative rate.
  const rate = last ? Math.max(0, finished - last.finished) / Math.max(0.001, now - last.at) : 0;
  history.push({ at: now, pending, finished, rate });
  while (history.length > HISTORY) history.shift();
  drawChart();
}

function drawChart() {
  const canvas = document.getElementById("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 900;
  const height = canvas.clientHeight || 180;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, width, height);
  const pad = 28;
  ctx.strokeStyle = "#e5e7eb";
  ctx.fillStyle = "#6b7280";
  ctx.font = "11px system-ui, sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + ((height - pad) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(width - 44, y); ctx.stroke();
  }
  const series = [
    ["pending", "#2563eb"],
    ["rate", "#15803d"],
  ];
  for (const [key, color] of series) {
    const top = Math.max(1, ...history.map((s) => s[key]));
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    history.forEach((sample, i) => {
      const x = pad + ((width - pad - 44) * i) / Math.max(1, history.length - 1);
      const y = pad / 2 + (height - pad) * (1 - sample[key] / top);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    ctx.fillStyle = color;
    if (key === "rate") ctx.fillText(top.toFixed(1) + "/s", width - 40, 12);
    else ctx.fillText(String(Math.round(top)), 2, 12);
  }
}

function button(label, act) {  // a row's action: act(), then a refresh; an error is shown
  const element = document.createElement("button");
  element.type = "button";
  element.textContent = label;
  element.dataset.action = label;
  element.addEventListener("click", async () => {
    element.disabled = true;
    try {
      await act();
    } catch (error) {
      alert(label + " failed: " + error.message);
    }
    refresh();
  });
  return element;
}

function actionButton(label, task) {
  const made = button(label, () => {
    if (label === "delete") {  // a finished task, its result and its journal row
      return api(task.endpoint + "/delete_many", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ task_ids: [task.task_id] }),
      });
    }
    return api(task.endpoint + "/" + label + "?task_id=" + task.task_id, { method: "POST" });
  });
  made.dataset.task = task.task_id;
  return made;
}

function renderTasks(page) {
  const tbody = document.querySelector("#tasks tbody");
  tbody.replaceChildren();
  for (const task of page.tasks) {
    const row = tbody.insertRow();
    row.dataset.task = task.task_id;
    row.dataset.status = task.status;
    const id = document.createElement("code");
    id.textContent = task.task_id.slice(0, 12);
    id.title = task.task_id;
    cell(row, id);
    cell(row, task.endpoint);
    cell(row, badge(task.status), "status");
    cell(row, time(task.created_at));
    cell(row, time(task.executed_at));
    cell(row, time(task.completed_at));
    cell(row, task.attempts);
    cell(row, progressBar(task.progress));
    cell(row, text(task.error), task.error ? "error" : "");
    const actions = row.insertCell();
    if (task.chunks !== null && task.chunks !== undefined) actions.appendChild(outputButton(task));
    if (task.status === "pending" || task.status === "in_progress") {
      actions.appendChild(actionButton("cancel", task));
    } else {
      actions.appendChild(actionButton("retry", task));
      actions.appendChild(actionButton("delete", task));
    }
  }
  document.getElementById("empty").hidden = page.tasks.length > 0;
}

// -- batch jobs (SPEC 11) ---------------------------------------------------------------------

function fileCode(fileId) {
  if (!fileId) return text(null);
  const code = document.createElement("code");
  code.textContent = fileId;
  code.title = "GET v1/files/" + fileId + "/content";
  return code;
}

function renderBatches(list) {
  const tbody = document.querySelector("#batches tbody");
  tbody.replaceChildren();
  for (const batch of list.data) {
    const row = tbody.insertRow();
    row.dataset.batch = batch.id;
    row.dataset.status = batch.status;
    const counts = batch.request_counts;
    const id = document.createElement("code");
    id.textContent = batch.id;
    cell(row, id);
    cell(row, batch.endpoint);
    cell(row, badge(batch.status), "status");
    const done = counts.completed + counts.failed;
    cell(row, progressBar(counts.total ? { fraction: done / counts.total, message: done + " / " + counts.total } : null));
    cell(row, counts.completed, "completed");
    cell(row, counts.failed, "failed");
    cell(row, new Date(batch.created_at * 1000).toLocaleTimeString());
    cell(row, fileCode(batch.output_file_id));
    cell(row, fileCode(batch.error_file_id));
    const actions = row.insertCell();
    if (["validating", "in_progress"].includes(batch.status)) {
      actions.appendChild(button("cancel", () => api("v1/batches/" + batch.id + "/cancel", { method: "POST" })));
    }
  }
  document.getElementById("no-batches").hidden = list.data.length > 0;
}

// -- a generator task's output, live ---------------------------------------------------------

let watching = null; // the AbortController of the stream shown

function outputButton(task) {
  const button = document.createElement("button");
  button.textContent = "output";
  button.dataset.action = "output";
  button.dataset.task = task.task_id;
  button.addEventListener("click", () => watchOutput(task));
  return button;
}

document.getElementById("output-close").addEventListener("click", () => {
  if (watching) watching.abort();
  document.getElementById("output").hidden = true;
});

// The events of one SSE response body, as {event, id, data} objects, as they arrive.
async function* readEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let held = ""; // a "\r" at the end of a read: the next may start with its "\n"
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    const text = held + decoder.decode(value, { stream: true });
    const cut = text.endsWith("\r") ? text.length - 1 : text.length;
    buffer += text.slice(0, cut).replace(/\r\n?/g, "\n");
    held = text.slice(cut);
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const fields = { event: "message", id: null, data: [] };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // a ping
        const colon = line.indexOf(":");
        const name = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (name === "data") fields.data.push(text); else fields[name] = text;
      }
      if (fields.data.length) yield { ...fields, data: fields.data.join("\n") };
    }
  }
}

async function watchOutput(task) {
  if (watching) watching.abort();
  const controller = (watching = new AbortController());
  const chunks = document.getElementById("output-chunks");
  const state = document.getElementById("output-state");
  document.getElementById("output-task").textContent = task.endpoint + " " + task.task_id;
  document.getElementById("output").hidden = false;
  chunks.textContent = "";
  let next = 0;
  let attempt = 0;
  let count = 0;
  for (let failures = 0; failures < 6 && !controller.signal.aborted; failures++) {
    state.textContent = next ? "reconnecting…" : "waiting for output…";
    try {
      const query = "?task_id=" + task.task_id + (next ? "&from=" + next : "") + (attempt ? "&attempt=" + attempt : "");
      const response = await fetch(task.endpoint + "/stream" + query, { headers: headers(), signal: controller.signal });
      if (!response.ok) {
        state.textContent = "cannot read the output: " + ((await response.json()).error || response.statusText);
        return;
      }
      attempt = Number(response.headers.get("Raytask-Attempt")) || attempt;
      for await (const event of readEvents(response)) {
        const data = JSON.parse(event.data);
        if (event.event === "output") {
          chunks.textContent += (typeof data === "string" ? data : JSON.stringify(data)) + "\n";
          chunks.scrollTop = chunks.scrollHeight;
          next = Number(event.id) + 1;
          count = next;
          failures = 0;
          state.textContent = "running: " + count + " chunks";
        } else if (event.event === "reset") {
          attempt = data.attempt;
          next = 0;
          chunks.textContent = "";
          state.textContent = "attempt " + attempt + " starts over";
        } else if (event.event === "done") {
          state.textContent = data.status.replace("_", " ") + ": " + count + " chunks" + (data.error ? " (" + data.error + ")" : "");
          return;
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * (failures + 1)));
  }
}

async function refresh() {
  clearTimeout(timer);
  const status = document.getElementById("status-filter").value;
  try {
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    const [queue, page, batches, usage] = await Promise.all([
      appWide(),
      api("tasks?limit=50" + (status ? "&status=" + status : "")),
      api("v1/batches?limit=20"),
      api("usage?group_by=tenant,endpoint&since=" + encodeURIComponent(since)),
    ]);
    renderQueue(queue);
    renderUsage(usage, queue);
    renderTasks(page);
    renderBatches(batches);
    document.querySelector(".dot").classList.remove("down");
    document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  } catch (error) {
    if (error.message === "unauthorized") return;
    document.querySelector(".dot").classList.add("down");
    document.getElementById("updated").textContent = "cannot reach the app: " + error.message;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

refresh();
