// The metaray playground: a small page over the /v1 API (no framework, nothing fetched
// from elsewhere). Bad input is refused here, with line numbers, before anything is
// sent; the server's own 4xx answers are shown next to the field they name.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { limits: null, task: null, last: null, polling: null };
const IMAGE_TYPES = { png: "PNG", jpg: "JPEG", jpeg: "JPEG", bmp: "BMP", gif: "GIF", webp: "WEBP", tif: "TIFF", tiff: "TIFF" };
const KIND_FIELD = { classify: "examples-error", image: "image-error", qa: "qa-error" };

class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
    this.detail = detail;
  }
}

async function api(method, path, body) {
  const headers = {};
  const token = $("token").value.trim();
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (body instanceof FormData) payload = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  const data = text ? JSON.parse(text) : null;
  if (!response.ok) throw new ApiError(response.status, data && data.detail !== undefined ? data.detail : text);
  return data;
}

// -- errors next to their fields ----------------------------------------------------

function clearErrors(scope) {
  scope.querySelectorAll(".field-error").forEach((el) => { el.textContent = ""; });
}

function say(id, message) {
  const el = $(id);
  el.textContent = el.textContent ? `${el.textContent}\n${message}` : message;
}

function fieldOf(loc, message, fields, fallback) {
  // the most specific field named by the error's location, else by the start of its message
  for (const part of [...loc.slice().reverse(), message.split(":")[0].replace(/^Value error, /, "").split(/[.[ ]/)[0]]) {
    if (fields[part]) return fields[part];
  }
  return fallback;
}

function showApiError(err, fields, fallback) {
  if (!(err instanceof ApiError)) { say(fallback, String(err)); return; }
  if (err.status === 401) { say(fallback, "401: this server needs the bearer token (top of the page)"); return; }
  if (Array.isArray(err.detail)) {
    for (const e of err.detail) {
      const loc = (e.loc || []).filter((p) => p !== "body");
      say(fieldOf(loc, e.msg || "", fields, fallback), `${err.status}: ${loc.join(".")}: ${e.msg}`);
    }
  } else {
    const message = String(err.detail);
    say(fieldOf([], message, fields, fallback), `${err.status}: ${message}`);
  }
}

function status(message) { $("status").textContent = message; }

// -- reading what the user typed ------------------------------------------------------

function parseLines(text, columns, names) {
  // [{names[0]: ..., ...}] from TAB-separated lines; errors name their line numbers
  const rows = [], errors = [];
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) return;
    const parts = line.split("\t");
    if (parts.length < columns) {
      errors.push(`line ${i + 1}: needs ${columns} TAB-separated fields (${names.join(", ")}), has ${parts.length}`);
      return;
    }
    const head = parts.slice(0, columns - 1).map((p) => p.trim());
    const row = [...head, parts.slice(columns - 1).join(" ").trim()];
    const empty = names.filter((_, j) => !row[j]);
    if (empty.length) { errors.push(`line ${i + 1}: empty ${empty.join(" and ")}`); return; }
    rows.push(Object.fromEntries(names.map((n, j) => [n, row[j]])));
  });
  return { rows, errors };
}

function parseCsv(text) {
  // RFC 4180 rows (quoted fields, doubled quotes); the delimiter is TAB for .tsv-like text
  const delimiter = text.split("\n")[0].includes("\t") ? "\t" : ",";
  const rows = [];
  let row = [], field = "", quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
      else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === delimiter) { row.push(field); field = ""; }
    else if (c === "\n" || c === "\r") {
      if (c === "\r" && text[i + 1] === "\n") i++;
      row.push(field); rows.push(row); row = []; field = "";
    } else field += c;
  }
  if (field || row.length) { row.push(field); rows.push(row); }
  return rows.filter((r) => r.some((f) => f.trim()));
}

function csvToLines(text) {
  const rows = parseCsv(text);
  if (!rows.length) throw new Error("the file has no rows");
  const header = rows[0].map((h) => h.trim().toLowerCase());
  let li = header.indexOf("label"), ti = header.indexOf("text"), body = rows.slice(1);
  if (li < 0 || ti < 0) {
    if (rows[0].length !== 2) throw new Error("a CSV needs label and text columns (a header naming them, or two columns: label, text)");
    li = 0; ti = 1; body = rows;
  }
  return body.map((r) => `${(r[li] || "").replace(/\s+/g, " ").trim()}\t${(r[ti] || "").replace(/\s+/g, " ").trim()}`).join("\n");
}

function checkLabelled(rows, inputChars) {
  // the server's limits, checked here first (the server checks again)
  const L = state.limits, errors = [], labels = new Set(rows.map((r) => r.label));
  if (labels.size < 2) errors.push("at least two labels are needed");
  if (labels.size > L.max_labels) errors.push(`${labels.size} labels: the server takes at most ${L.max_labels}`);
  if (rows.length > L.max_examples) errors.push(`${rows.length} examples: the server takes at most ${L.max_examples}`);
  for (const label of labels) {
    if (label.length > L.max_label_chars) errors.push(`label "${label.slice(0, 40)}…" is over ${L.max_label_chars} characters`);
  }
  if (inputChars) {
    rows.forEach((r, i) => {
      if (r.text.length > L.max_text_chars) errors.push(`example ${i + 1}: the text is over ${L.max_text_chars} characters`);
    });
  }
  return errors;
}

function imageProblem(file) {
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  const format = IMAGE_TYPES[ext];
  if (!format || !state.limits.image_formats.includes(format)) {
    return `${file.name}: not an image this server reads (${state.limits.image_formats.join(", ")})`;
  }
  if (file.size > state.limits.max_image_bytes) {
    return `${file.name}: ${file.size} bytes, over the server's limit of ${state.limits.max_image_bytes}`;
  }
  return null;
}

function base64Of(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",")[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

// -- image labels: a drop zone per label ----------------------------------------------

function addImageLabel(name = "") {
  const zone = document.createElement("div");
  zone.className = "drop";
  zone.files = [];
  zone.innerHTML = `<input class="label-name" placeholder="label" size="14">
    <input class="label-files" type="file" multiple accept=".png,.jpg,.jpeg,.bmp,.gif,.webp,.tif,.tiff,image/*">
    <span class="thumbs"></span>`;
  zone.querySelector(".label-name").value = name;
  const take = (files) => {
    $("image-error").textContent = "";
    for (const file of files) {
      const problem = imageProblem(file);
      if (problem) { say("image-error", problem); continue; }
      zone.files.push(file);
      const img = document.createElement("img");
      img.src = URL.createObjectURL(file);
      img.title = file.name;
      zone.querySelector(".thumbs").append(img);
    }
  };
  zone.querySelector(".label-files").addEventListener("change", (e) => { take(e.target.files); e.target.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => { e.preventDefault(); zone.classList.remove("over"); take(e.dataTransfer.files); });
  $("image-labels").append(zone);
}

// -- creating a task -------------------------------------------------------------------

async function createTask() {
  clearErrors($("create"));
  const kind = $("kind").value, id = $("task-id").value.trim(), steps = $("steps").value.trim();
  const here = KIND_FIELD[kind];  // where errors about the examples go
  const fields = { examples: here, files: here, labels: here, [kind]: here, id: "id-error", steps: "id-error" };
  let body;
  if (kind === "image") {
    const zones = [...$("image-labels").children];
    const rows = zones.flatMap((z) => z.files.map(() => ({ label: z.querySelector(".label-name").value.trim() })));
    const unnamed = zones.filter((z) => z.files.length && !z.querySelector(".label-name").value.trim()).length;
    const errors = unnamed ? [`${unnamed} label(s) with drawings but no name`] : checkLabelled(rows, false);
    if (errors.length) { errors.forEach((e) => say("image-error", e)); return; }
    body = new FormData();
    if (id) body.append("id", id);
    if (steps) body.append("steps", steps);
    for (const z of zones) for (const f of z.files) body.append(z.querySelector(".label-name").value.trim(), f, f.name);
  } else if (kind === "qa") {
    const { rows, errors } = parseLines($("qa-examples").value, 3, ["context", "question", "answer"]);
    rows.forEach((r, i) => { if (!r.context.includes(r.answer)) errors.push(`example ${i + 1}: the answer is not a span of its context`); });
    if (!rows.length && !errors.length) errors.push("no examples");
    if (errors.length) { errors.forEach((e) => say("qa-error", e)); return; }
    body = { kind, examples: rows };
  } else {
    const { rows, errors } = parseLines($("examples").value, 2, ["label", "text"]);
    if (!errors.length) errors.push(...checkLabelled(rows, true));
    if (errors.length) { errors.forEach((e) => say("examples-error", e)); return; }
    body = { kind, examples: rows };
  }
  if (!(body instanceof FormData)) {
    if (id) body.id = id;
    if (steps) body.steps = Number(steps);
  }
  status("adapting…");
  try {
    const info = await api("POST", body instanceof FormData ? "/v1/tasks/upload" : "/v1/tasks", body);
    status(`created ${info.id} (version ${info.version})`);
    await loadTasks();
    await selectTask(info.id);
  } catch (err) {
    status("");
    showApiError(err, fields, "create-error");
  }
}

// -- tasks -----------------------------------------------------------------------------

async function loadTasks() {
  $("tasks-error").textContent = "";
  try {
    const page = await api("GET", "/v1/tasks?limit=200");
    $("tasks").replaceChildren(...page.tasks.map((t) => {
      const li = document.createElement("li");
      li.dataset.id = t.id;
      li.innerHTML = `<span></span><span class="muted"></span>`;
      li.children[0].textContent = t.id;
      li.children[1].textContent = `${t.kind} v${t.version}`;
      li.classList.toggle("selected", state.task && state.task.id === t.id);
      li.addEventListener("click", () => selectTask(t.id));
      return li;
    }));
    if (page.corrupt.length) say("tasks-error", `unreadable: ${page.corrupt.join(", ")}`);
  } catch (err) { showApiError(err, {}, "tasks-error"); }
}

async function selectTask(id) {
  const [info, versions] = await Promise.all([api("GET", `/v1/tasks/${id}`), api("GET", `/v1/tasks/${id}/versions`)]);
  const changed = !state.task || state.task.id !== id;
  state.task = info;
  if (changed) { state.last = null; $("results").replaceChildren(); }
  $("task").hidden = false;
  $("task-title").textContent = info.id;
  $("task-version").textContent = `${info.kind}, version ${info.version}` + (info.pending_feedback ? `, ${info.pending_feedback} feedback pending` : "");
  $("task-labels").textContent = info.labels.length ? `labels: ${info.labels.join(", ")}` : `${info.examples} examples`;
  document.querySelectorAll("[data-task-kind]").forEach((el) => { el.hidden = el.dataset.taskKind !== info.kind; });
  $("versions").tBodies[0].replaceChildren(...versions.versions.map((v) => {
    const tr = document.createElement("tr");
    const metrics = Object.entries(v.metrics).map(([k, x]) => `${k} ${typeof x === "number" ? +x.toFixed(3) : x}`).join(", ");
    for (const cell of [v.version, v.examples, v.feedback, metrics]) tr.insertCell().textContent = cell;
    return tr;
  }));
  document.querySelectorAll("#tasks li").forEach((li) => li.classList.toggle("selected", li.dataset.id === id));
}

async function deleteTask() {
  const id = state.task.id;
  try {
    await api("DELETE", `/v1/tasks/${id}`);
    state.task = null;
    $("task").hidden = true;
    status(`deleted ${id}`);
    await loadTasks();
  } catch (err) { showApiError(err, {}, "feedback-error"); }
}

// -- trying a task and correcting it -----------------------------------------------------

async function classify(items, show) {
  const task = state.task, field = task.kind === "image" ? "images" : "texts";
  const result = await api("POST", `/v1/tasks/${task.id}/classify`, { [field]: items });
  state.last = { items, show };
  renderPredictions(result, show);
}

function renderPredictions(result, show) {
  $("results").replaceChildren(...result.predictions.map((p, i) => {
    const card = document.createElement("div");
    card.className = "prediction";
    const head = document.createElement("div");
    head.className = "input";
    head.append(show(i), ` → `);
    const answer = document.createElement("b");
    answer.className = "predicted";
    answer.textContent = p.label;
    head.append(answer, ` (version ${result.version})`);
    card.append(head);
    for (const [label, score] of Object.entries(p.scores).sort((a, b) => b[1] - a[1])) {
      const bar = document.createElement("div");
      bar.className = "bar" + (label === p.label ? " best" : "");
      bar.dataset.label = label;
      bar.title = "click: this is the right label (sends feedback)";
      bar.innerHTML = `<span class="label"></span><span><div class="fill"></div></span><span>${(100 * score).toFixed(1)}%</span>`;
      bar.querySelector(".label").textContent = label;
      bar.querySelector(".fill").style.width = `${Math.max(1, 100 * score)}%`;
      bar.addEventListener("click", () => correct(i, label));
      card.append(bar);
    }
    return card;
  }));
}

async function correct(i, label) {
  $("feedback-error").textContent = "";
  const task = state.task, { items, show } = state.last;
  const example = task.kind === "image" ? { image: items[i], label } : { text: items[i], label };
  try {
    await api("POST", `/v1/tasks/${task.id}/feedback`, { examples: [example] });
  } catch (err) { showApiError(err, {}, "feedback-error"); return; }
  document.querySelectorAll(`#results .prediction:nth-child(${i + 1}) .bar`).forEach((b) => b.classList.toggle("corrected", b.dataset.label === label));
  await waitForVersion(task.id, task.version + 1, async () => {
    await classify(items, show);
  });
}

async function waitForVersion(id, version, then) {
  clearInterval(state.polling);
  status(`feedback sent: re-adapting to version ${version}…`);
  state.polling = setInterval(async () => {
    try {
      const info = await api("GET", `/v1/tasks/${id}`);
      if (info.version < version) return;
      clearInterval(state.polling);
      status(`version ${info.version} is ready`);
      await selectTask(id);
      await loadTasks();
      await then();
    } catch (err) { clearInterval(state.polling); showApiError(err, {}, "feedback-error"); }
  }, 1000);
}

async function classifyTexts() {
  $("inputs-error").textContent = "";
  const texts = $("inputs").value.split("\n").map((t) => t.trim()).filter(Boolean);
  const L = state.limits;
  if (!texts.length) { say("inputs-error", "type at least one text"); return; }
  if (texts.length > L.max_texts) { say("inputs-error", `${texts.length} texts: the server takes at most ${L.max_texts}`); return; }
  const long = texts.findIndex((t) => t.length > L.max_text_chars);
  if (long >= 0) { say("inputs-error", `text ${long + 1} is over ${L.max_text_chars} characters`); return; }
  try { await classify(texts, (i) => texts[i]); } catch (err) { showApiError(err, { texts: "inputs-error" }, "inputs-error"); }
}

async function classifyImages() {
  $("query-error").textContent = "";
  const files = [...$("query-files").files];
  const problems = files.map(imageProblem).filter(Boolean);
  if (!files.length) problems.push("choose at least one drawing");
  if (problems.length) { problems.forEach((p) => say("query-error", p)); return; }
  const images = await Promise.all(files.map(base64Of));
  const show = (i) => {
    const img = document.createElement("img");
    img.src = `data:${files[i].type || "image/png"};base64,${images[i]}`;
    img.title = files[i].name;
    return img;
  };
  try { await classify(images, show); } catch (err) { showApiError(err, { images: "query-error" }, "query-error"); }
}

async function answer() {
  $("question-error").textContent = "";
  const task = state.task, context = $("context").value.trim(), question = $("question").value.trim();
  if (!context || !question) { say("question-error", "a context and a question are needed"); return; }
  try {
    const result = await api("POST", `/v1/tasks/${task.id}/answer`, { context, question });
    $("answer").textContent = result.answer;
    $("correct-answer").value = result.answer;
  } catch (err) { showApiError(err, { context: "question-error", question: "question-error" }, "question-error"); }
}

async function correctAnswer() {
  $("feedback-error").textContent = "";
  const task = state.task;
  const example = { context: $("context").value.trim(), question: $("question").value.trim(), answer: $("correct-answer").value.trim() };
  if (!example.context.includes(example.answer) || !example.answer) { say("feedback-error", "the correct answer must be a span of the context"); return; }
  try { await api("POST", `/v1/tasks/${task.id}/feedback`, { examples: [example] }); } catch (err) { showApiError(err, {}, "feedback-error"); return; }
  await waitForVersion(task.id, task.version + 1, answer);
}

// -- start -----------------------------------------------------------------------------

function showKind() {
  document.querySelectorAll("#create [data-kind]").forEach((el) => { el.hidden = el.dataset.kind !== $("kind").value; });
}

async function start() {
  $("token").value = sessionStorage.getItem("metaray-token") || "";
  $("token").addEventListener("change", () => sessionStorage.setItem("metaray-token", $("token").value.trim()));
  try {
    state.limits = await api("GET", "/v1/limits");
  } catch (err) { status(`the server did not answer: ${err.message}`); return; }
  $("token-state").textContent = state.limits.token_required ? "this server needs a token to change tasks" : "this server needs no token";
  $("kind").replaceChildren(...state.limits.kinds.map((k) => new Option(k, k)));
  $("kind").addEventListener("change", showKind);
  showKind();
  addImageLabel();
  addImageLabel();
  $("add-label").addEventListener("click", () => addImageLabel());
  $("csv").addEventListener("change", async (e) => {
    $("examples-error").textContent = "";
    const file = e.target.files[0];
    if (!file) return;
    if (file.size > state.limits.max_body_bytes) { say("examples-error", `${file.name}: over the server's limit of ${state.limits.max_body_bytes} bytes`); return; }
    try { $("examples").value = csvToLines(await file.text()); } catch (err) { say("examples-error", `${file.name}: ${err.message}`); }
  });
  $("create-btn").addEventListener("click", createTask);
  $("refresh").addEventListener("click", loadTasks);
  $("delete-btn").addEventListener("click", deleteTask);
  $("classify-btn").addEventListener("click", classifyTexts);
  $("classify-images-btn").addEventListener("click", classifyImages);
  $("answer-btn").addEventListener("click", answer);
  $("answer-feedback-btn").addEventListener("click", correctAnswer);
  await loadTasks();
  window.metarayReadyMs = performance.now();  // time to interactive (the browser test reports it)
  document.body.dataset.ready = "1";
}

start();
