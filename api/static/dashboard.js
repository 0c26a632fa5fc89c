// The gradtrace dashboard: every figure from the public /api/v1 endpoints, drawn with the bundled Plotly.
// Routes by the URL fragment: #/ (experiments, lessons, submit), #/experiments/ID, #/sweeps/ID.
// With tokens configured the API answers 401; the page then asks for one and keeps it in localStorage.
"use strict";

const { t, lang } = window.gradtraceI18n;
const TOKEN_KEY = "gradtrace.token";
const POLL_MS = 1500;
const FINISHED = ["succeeded", "failed", "cancelled"];
const PLOT_CONFIG = { displaylogo: false, responsive: true };
const page = { timer: null, route: 0 };

// --- helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3) ? value.toExponential(2) : value.toFixed(digits);
}

function log10(value) {
  return value === null || value === undefined || !(value > 0) ? null : Math.log10(value);
}

function notice(message) {
  const box = document.getElementById("notice");
  box.hidden = !message;
  box.textContent = message || "";
}

class ApiFailure extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// One request to the API: the stored token if any, the page's language, JSON in and out.
async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = localStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (lang !== "en") headers["Accept-Language"] = lang;
  const init = { method: options.method || "GET", headers };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (response.status === 401) askForToken();
  if (!response.ok) throw new ApiFailure(response.status, body);
  return body;
}

function askForToken() {
  document.getElementById("token-form").hidden = false;
  notice(t("token.needed"));
}

function setupHeader() {
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  const other = lang === "zh" ? "en" : "zh";
  const switcher = document.getElementById("lang-switch");
  switcher.textContent = t("nav.other");
  switcher.href = `?lang=${other}${window.location.hash}`;
  const form = document.getElementById("token-form");
  const forget = document.getElementById("token-forget");
  forget.hidden = !localStorage.getItem(TOKEN_KEY);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (value) localStorage.setItem(TOKEN_KEY, value);
    form.hidden = true;
    forget.hidden = false;
    notice(null);
    route();
  });
  forget.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    forget.hidden = true;
    route();
  });
}

// --- routing and polling -------------------------------------------------------------------

function stopPolling() {
  if (page.timer) clearTimeout(page.timer);
  page.timer = null;
}

// Run `refresh` now and again every POLL_MS while it returns true and the page is still this route.
function poll(refresh) {
  const mine = page.route;
  const tick = async () => {
    let again = false;
    try {
      again = await refresh();
    } catch (error) {
      notice(t("error.load", { message: error.message }));
      again = !(error instanceof ApiFailure) || error.status >= 500;
    }
    if (again && page.route === mine) page.timer = setTimeout(tick, POLL_MS);
  };
  return tick();
}

function route() {
  stopPolling();
  page.route += 1;
  notice(null);
  const main = document.getElementById("main");
  main.replaceChildren();
  const hash = window.location.hash.replace(/^#\/?/, "");
  const [kind, id] = hash.split("/");
  if (kind === "experiments" && id) return experimentPage(main, id);
  if (kind === "sweeps" && id) return sweepPage(main, id);
  return homePage(main);
}

function go(path) {
  window.location.hash = path;
}

// --- home: lessons, submit form, experiments and sweeps -------------------------------------

function homePage(main) {
  const lessons = el("section", { id: "lessons" }, el("h2", { text: t("lessons.title") }));
  const submit = el("section", { id: "submit" }, el("h2", { text: t("submit.title") }));
  const list = el("section", { id: "experiments" }, el("h2", { text: t("list.title") }));
  const sweeps = el("section", { id: "sweeps" }, el("h2", { text: t("list.sweeps") }));
  main.append(lessons, submit, list, sweeps);
  showLessons(lessons).catch((error) => lessons.append(el("p", { text: t("error.load", { message: error.message }) })));
  buildForm(submit).catch((error) => submit.append(el("p", { text: t("error.load", { message: error.message }) })));
  const table = experimentsTable(list);
  return poll(async () => {
    const [experiments] = await Promise.all([table.refresh(), showSweeps(sweeps)]);
    return experiments.some((item) => !FINISHED.includes(item.status));
  });
}

async function showLessons(section) {
  const { lessons } = await api("/api/v1/lessons");
  if (!lessons.length) return section.append(el("p", { text: t("lessons.none") }));
  const grid = el("div", { class: "lessons" });
  for (const lesson of lessons) {
    const button = el("button", { type: "button", class: "run-lesson", "data-lesson": lesson.name,
      text: t("lessons.run"), onclick: () => runLesson(lesson, button) });
    grid.append(el("div", { class: "lesson" }, el("strong", { text: lesson.title }),
      el("p", { text: lesson.summary }), el("p", { class: "muted", text: lesson.figure }), button));
  }
  section.append(grid);
}

async function runLesson(lesson, button) {
  button.disabled = true;
  try {
    const sweep = lesson.kind === "sweep";
    const created = await api(sweep ? "/api/v1/sweeps" : "/api/v1/experiments", { method: "POST", body: lesson.body });
    go(`/${sweep ? "sweeps" : "experiments"}/${created.id}`);
  } catch (error) {
    notice(error.message);
    button.disabled = false;
  }
}

// The form from the spec's JSON Schema in /openapi.json: one input per field, its default shown.
async function buildForm(section) {
  const documentJson = await api("/openapi.json");
  const schema = documentJson.components.schemas.ExperimentSpec;
  const form = el("form", { id: "spec-form", class: "spec-form", novalidate: true });
  const fields = [];
  for (const [name, property] of Object.entries(schema.properties)) {
    const field = specField(name, property);
    fields.push(field);
    form.append(field.node);
  }
  const general = el("div", { class: "field-error", id: "form-error" });
  form.append(el("div", {}, el("button", { type: "submit", id: "submit-button", text: t("submit.button") }), general));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
    const body = {};
    for (const field of fields) {
      const value = field.value();
      if (value !== undefined) body[field.name] = value;
    }
    try {
      const created = await api("/api/v1/experiments", { method: "POST", body });
      go(`/experiments/${created.id}`);
    } catch (error) {
      showErrors(form, general, error);
    }
  });
  section.append(form);
}

// A 422's details next to the field they name (loc[0]); the rest under the button.
function showErrors(form, general, error) {
  const details = (error.body && error.body.error && error.body.error.details) || [];
  const loose = [];
  for (const detail of details) {
    const target = detail.loc && detail.loc.length ? form.querySelector(`.field-error[data-field="${detail.loc[0]}"]`) : null;
    if (target) target.textContent = [target.textContent, detail.msg].filter(Boolean).join("; ");
    else loose.push(detail.msg);
  }
  general.textContent = `${t("submit.invalid")} ${loose.length ? loose.join("; ") : error.message}`;
}

// The choices of a field: its enum, or that of the non-null branch of an anyOf (dataset).
function enumOf(property) {
  if (property.enum) return property.enum;
  const branch = (property.anyOf || []).find((item) => item.enum);
  return branch ? branch.enum : null;
}

function specField(name, property) {
  const id = `field-${name}`;
  const error = el("div", { class: "field-error", "data-field": name });
  const fallback = property.default;
  let input;
  let value;
  if (name === "clipping") {
    const mode = el("select", { id, name }, el("option", { value: "", text: t("submit.clipping_off") }),
      el("option", { value: "norm", text: "norm" }), el("option", { value: "value", text: "value" }));
    const threshold = el("input", { id: `${id}-threshold`, type: "number", step: "any", placeholder: "1.0", value: "1.0" });
    input = el("span", {}, mode, threshold);
    value = () => (mode.value ? { mode: mode.value, threshold: Number(threshold.value) } : undefined);
  } else if (enumOf(property)) {
    const choices = enumOf(property);
    input = el("select", { id, name });
    if (fallback === null || fallback === undefined) input.append(el("option", { value: "", text: t("submit.default") }));
    for (const choice of choices.filter((item) => item !== null)) {
      input.append(el("option", { value: choice, text: choice, selected: choice === fallback }));
    }
    value = () => (input.value && input.value !== fallback ? input.value : undefined);
  } else if (property.type === "boolean") {
    input = el("input", { id, name, type: "checkbox", checked: fallback === true });
    value = () => (input.checked !== fallback ? input.checked : undefined);
  } else if (property.type === "integer" || property.type === "number") {
    input = el("input", { id, name, type: "number", step: property.type === "integer" ? "1" : "any",
      value: fallback ?? "", placeholder: fallback ?? "" });
    // Not a number stays text, so that the API's 422 names it rather than the page guessing.
    value = () => {
      if (input.value === "" || Number(input.value) === fallback) return undefined;
      const number = Number(input.value);
      return Number.isFinite(number) ? number : input.value;
    };
  } else {
    input = el("input", { id, name, type: "text", value: fallback ?? "" });
    value = () => (input.value ? input.value : undefined);
  }
  const node = el("div", { class: "field" }, el("label", { for: id, text: name }), input, error);
  return { name, node, value };
}

function experimentsTable(section) {
  const status = el("select", { id: "status-filter" }, el("option", { value: "", text: t("list.all") }),
    ...["queued", "running", "succeeded", "failed", "cancelled"].map((s) => el("option", { value: s, text: t(`status.${s}`) })));
  const text = el("input", { id: "text-filter", type: "search", placeholder: t("list.filter") });
  const columns = ["id", "name", "status", "verdict", "arch", "depth", "width", "activation", "init", "norm", "steps",
    "progress", "loss"];
  const body = el("tbody");
  const table = el("table", { id: "experiments-table" },
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { text: t(`col.${c}`) })))), body);
  section.append(el("div", {}, el("label", { text: `${t("list.status")} ` }, status), " ", text), table);
  let last = [];
  const render = () => {
    const needle = text.value.trim().toLowerCase();
    const rows = last.filter((item) => !needle || JSON.stringify([item.id, item.spec, item.summary && item.summary.diagnosis
      && item.summary.diagnosis.verdict]).toLowerCase().includes(needle));
    body.replaceChildren(...rows.map(experimentRow));
    if (!rows.length) body.append(el("tr", {}, el("td", { colspan: columns.length, text: t("list.empty") })));
  };
  const refresh = async () => {
    const query = status.value ? `&status=${status.value}` : "";
    last = (await api(`/api/v1/experiments?limit=100${query}`)).experiments;
    render();
    return last;
  };
  status.addEventListener("change", () => refresh().catch((error) => notice(error.message)));
  text.addEventListener("input", render);
  return { refresh };
}

function experimentRow(item) {
  const spec = item.spec;
  const diagnosis = item.summary && item.summary.diagnosis;
  const verdict = diagnosis ? diagnosis.verdict : null;
  return el("tr", { "data-id": item.id },
    el("td", {}, el("a", { href: `#/experiments/${item.id}`, text: item.id.slice(0, 8) })),
    el("td", { text: spec.name || "" }),
    el("td", { class: `status-${item.status}`, text: t(`status.${item.status}`) }),
    el("td", { class: `verdict verdict-${verdict}`, text: verdict || "" }),
    ...["arch", "depth", "width", "activation", "init", "norm", "steps"].map((key) => el("td", { text: spec[key] })),
    el("td", { text: `${item.progress.step}/${item.progress.steps}` }),
    el("td", { text: item.summary ? fmt(item.summary.final_loss) : "" }));
}

async function showSweeps(section) {
  const { sweeps } = await api("/api/v1/sweeps?limit=20");
  const list = el("ul", { id: "sweeps-list" }, sweeps.map((sweep) => el("li", {},
    el("a", { href: `#/sweeps/${sweep.id}`, text: sweep.name || sweep.id.slice(0, 8) }),
    ` ${t(`status.${sweep.status}`)} · ${sweep.size} ${t("list.size")} · ${Object.keys(sweep.grid).join(" × ")}`)));
  if (!sweeps.length) list.append(el("li", { class: "muted", text: t("list.no_sweeps") }));
  section.querySelector("ul")?.remove();
  section.append(list);
  return sweeps;
}

// --- one experiment ------------------------------------------------------------------------

async function experimentPage(main, id) {
  const head = el("section", { id: "experiment-head" });
  const diagnosis = el("section", { id: "diagnosis" });
  const plots = el("div", { class: "plots" });
  main.append(head, diagnosis, plots);
  const stepsInput = el("input", { id: "flow-steps", type: "text", size: 20 });
  const boxes = {};
  for (const name of ["heatmap", "flow", "signal", "loss", "dead", "saturated", "clipping", "time"]) {
    boxes[name] = el("section", { class: "plot-box", id: `box-${name}` }, el("div", { class: "plot", id: `plot-${name}` }));
    plots.append(boxes[name]);
  }
  boxes.flow.prepend(el("label", { text: `${t("exp.steps_shown")}: ` }, stepsInput));
  let record = null;
  let traces = null;
  const draw = () => drawExperiment(record, traces, boxes, stepsInput);
  stepsInput.addEventListener("change", draw);
  await poll(async () => {
    record = await api(`/api/v1/experiments/${id}`);
    traces = await api(`/api/v1/experiments/${id}/traces?metrics=${drawnMetrics(record).join(",")}`);
    showHead(head, record);
    showDiagnosis(diagnosis, record);
    draw();
    return !FINISHED.includes(record.status);
  });
}

// Only what the page draws: a long run's trace has four more per-layer metrics it would not use.
function drawnMetrics(record) {
  const metrics = ["grad_norm", "act_grad_norm", "dead_fraction", "saturated_fraction", "loss", "accuracy",
    "total_grad_norm", "clipped"];
  return record.spec.arch === "rnn" ? [...metrics, "time_grad_norm"] : metrics;
}

function showHead(section, record) {
  const spec = record.spec;
  const live = FINISHED.includes(record.status) ? null : el("span", { class: "muted", id: "live", text: ` · ${t("exp.live")}` });
  section.replaceChildren(
    el("h2", {}, `${t("exp.title")} ${spec.name ? `“${spec.name}” ` : ""}`, el("code", { text: record.id })),
    el("p", {}, el("span", { id: "status", class: `status-${record.status}`, text: t(`status.${record.status}`) }),
      ` · ${t("exp.progress", record.progress)}`, live),
    el("p", { class: "muted", text: Object.entries(spec).filter(([, v]) => v !== null)
      .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join("  ") }));
  if (record.error) section.append(el("p", { class: "status-failed", text: `${t("exp.error")} ${record.error.message}` }));
}

function showDiagnosis(section, record) {
  const summary = record.summary;
  section.replaceChildren(el("h2", { text: t("exp.diagnosis") }));
  if (!summary || !summary.diagnosis) return section.append(el("p", { class: "muted", text: t("exp.no_summary") }));
  const d = summary.diagnosis;
  section.append(
    el("p", {}, el("span", { id: "verdict", class: `verdict verdict-${d.verdict}`, text: d.verdict }),
      ` · ${t("col.loss")} ${fmt(summary.final_loss)}`,
      summary.final_accuracy !== undefined && summary.final_accuracy !== null ? ` · ${t("plot.accuracy")} ${fmt(summary.final_accuracy)}` : ""),
    el("h3", { text: t("exp.reasons") }), el("ul", { id: "reasons" }, (d.reasons || []).map((r) => el("li", { text: r }))),
    el("h3", { text: t("exp.advice") }), el("ul", { id: "advice" }, (d.advice || []).map((a) => el("li", { text: a }))));
  if (d.suggested_spec) {
    const button = el("button", { id: "suggested-fix", type: "button", text: t("exp.suggested"), onclick: async () => {
      button.disabled = true;
      try {
        const created = await api("/api/v1/experiments", { method: "POST", body: d.suggested_spec });
        go(`/experiments/${created.id}`);
      } catch (error) {
        notice(error.message);
        button.disabled = false;
      }
    } });
    section.append(button, " ", el("code", { class: "muted", text: JSON.stringify(d.suggested_spec) }));
  }
}

// The steps of the flow plot: those typed in that were traced, else first, middle and last traced.
function chosenSteps(traces, input) {
  const steps = traces.steps;
  const typed = input.value.split(",").map((s) => s.trim()).filter(Boolean).map(Number).filter((s) => steps.includes(s));
  if (typed.length) return typed;
  const picked = [...new Set([steps[0], steps[Math.floor((steps.length - 1) / 2)], steps[steps.length - 1]])];
  if (document.activeElement !== input) input.value = picked.join(", ");
  return picked;
}

function transpose(rows, layers) {
  return layers.map((_, j) => rows.map((row) => (row ? row[j] : null)));
}

function plot(id, data, layout) {
  const base = { margin: { l: 70, r: 20, t: 40, b: 50 }, height: 360 };
  return Plotly.react(id, data, { ...base, ...layout }, PLOT_CONFIG);
}

function drawExperiment(record, traces, boxes, stepsInput) {
  const layers = traces.layers.map((layer) => layer.name);
  const steps = traces.steps;
  if (!steps.length) return;
  const hidden = layers.filter((name) => name !== "output");
  const axisSteps = { title: { text: t("plot.step") } };
  plot("plot-heatmap", [{ type: "heatmap", x: steps, y: layers, z: transpose(traces.grad_norm, layers).map((r) => r.map(log10)),
    colorscale: "Viridis", colorbar: { title: { text: "log10" } }, name: "grad_norm" }],
  { title: { text: t("plot.heatmap") }, xaxis: axisSteps, yaxis: { title: { text: t("plot.layer") } } });
  drawFlow(record, traces, layers, chosenSteps(traces, stepsInput), boxes.flow);
  drawSignal(record, traces, layers);
  plot("plot-loss", [
    { type: "scatter", mode: "lines", x: steps, y: traces.loss, name: t("plot.loss_axis") },
    ...(traces.accuracy && traces.accuracy.some((v) => v !== null)
      ? [{ type: "scatter", mode: "lines", x: steps, y: traces.accuracy, name: t("plot.accuracy"), yaxis: "y2" }] : []),
  ], { title: { text: t("plot.loss") }, xaxis: axisSteps, yaxis: { title: { text: t("plot.loss_axis") } },
    yaxis2: { title: { text: t("plot.accuracy") }, overlaying: "y", side: "right", range: [0, 1] } });
  for (const [name, metric] of [["dead", "dead_fraction"], ["saturated", "saturated_fraction"]]) {
    plot(`plot-${name}`, [{ type: "heatmap", x: steps, y: hidden, z: transpose(traces[metric], layers).slice(0, hidden.length),
      zmin: 0, zmax: 1, colorscale: "Reds", name: metric }],
    { title: { text: t(`plot.${name}`) }, xaxis: axisSteps, yaxis: { title: { text: t("plot.layer") } } });
  }
  drawClipping(traces, boxes.clipping);
  drawTime(record, traces, boxes.time);
}

// Per-layer weight-gradient norm against depth at the chosen steps; theory's grad_log10, anchored at step 0's last hidden layer.
function drawFlow(record, traces, layers, steps, box) {
  const data = steps.map((step) => ({ type: "scatter", mode: "lines+markers", x: layers,
    y: traces.grad_norm[traces.steps.indexOf(step)], name: `${t("plot.step")} ${step}` }));
  const theory = record.summary && record.summary.theory;
  const first = traces.grad_norm[0];
  box.querySelector(".theory-note")?.remove();
  if (theory && theory.applies && first) {
    const last = theory.layers.length - 1;
    const anchor = first[last];
    if (anchor > 0) {
      data.push({ type: "scatter", mode: "lines", line: { dash: "dash", color: "black" }, x: theory.layers.map((l) => l.name),
        y: theory.layers.map((l) => (l.grad_log10 === null ? null : anchor * 10 ** l.grad_log10)),
        name: t("plot.flow_theory", { step: traces.steps[0] }) });
    }
    box.append(el("p", { class: "muted theory-note", text: t("plot.theory_note") }));
  } else if (theory && theory.note) {
    box.append(el("p", { class: "muted theory-note", text: t("plot.no_theory", { note: theory.note }) }));
  }
  plot("plot-flow", data, { title: { text: t("plot.flow") }, xaxis: { title: { text: t("plot.depth") } },
    yaxis: { type: "log", title: { text: t("plot.grad_norm") }, exponentformat: "power" } });
}

// The backpropagated signal at step 0 against depth, with the act_grad_log10 prediction.
function drawSignal(record, traces, layers) {
  const first = traces.act_grad_norm ? traces.act_grad_norm[0] : null;
  if (!first) return;
  const data = [{ type: "scatter", mode: "lines+markers", x: layers, y: first, name: `${t("plot.step")} ${traces.steps[0]}` }];
  const theory = record.summary && record.summary.theory;
  if (theory && theory.applies) {
    const anchor = first[theory.layers.length - 1];
    if (anchor > 0) {
      data.push({ type: "scatter", mode: "lines", line: { dash: "dash", color: "black" }, x: theory.layers.map((l) => l.name),
        y: theory.layers.map((l) => (l.act_grad_log10 === null ? null : anchor * 10 ** l.act_grad_log10)),
        name: t("plot.signal_theory") });
    }
  }
  plot("plot-signal", data, { title: { text: t("plot.signal") }, xaxis: { title: { text: t("plot.depth") } },
    yaxis: { type: "log", exponentformat: "power" } });
}

function drawClipping(traces, box) {
  const clipped = traces.clipped || [];
  const at = traces.steps.filter((_, i) => clipped[i]);
  const values = traces.total_grad_norm.filter((_, i) => clipped[i]);
  plot("plot-clipping", [
    { type: "scatter", mode: "lines", x: traces.steps, y: traces.total_grad_norm, name: t("plot.total") },
    { type: "scatter", mode: "markers", x: at, y: values, name: t("plot.clipped"), marker: { color: "red", size: 7 } },
  ], { title: { text: `${t("plot.clipping")} (${t("plot.clip_count", { count: at.length, total: traces.steps.length })})` },
    xaxis: { title: { text: t("plot.step") } }, yaxis: { type: "log", exponentformat: "power" } });
}

function drawTime(record, traces, box) {
  box.hidden = !traces.time_grad_norm;
  if (!traces.time_grad_norm) return;
  const width = record.spec.seq_len;
  const times = Array.from({ length: width }, (_, i) => i);
  plot("plot-time", [{ type: "heatmap", x: traces.steps, y: times, colorscale: "Viridis",
    z: times.map((i) => traces.time_grad_norm.map((row) => (row ? log10(row[i]) : null))), name: "time_grad_norm" }],
  { title: { text: t("plot.time") }, xaxis: { title: { text: t("plot.step") } }, yaxis: { title: { text: t("plot.time_axis") } } });
}

// --- one sweep -----------------------------------------------------------------------------

async function sweepPage(main, id) {
  const head = el("section", { id: "sweep-head" });
  const grids = el("div", { class: "plots" }, ["ratio", "loss", "verdict"].map((name) =>
    el("section", { class: "plot-box" }, el("div", { class: "plot", id: `grid-${name}` }))));
  const profiles = el("section", { class: "plot-box" }, el("div", { class: "plot", id: "sweep-profiles" }));
  const runs = el("section", { id: "sweep-runs" });
  main.append(head, grids, profiles, runs);
  const profileCache = {};
  await poll(async () => {
    const sweep = await api(`/api/v1/sweeps/${id}`);
    head.replaceChildren(el("h2", {}, `${t("sweep.title")} ${sweep.name || ""} `, el("code", { text: sweep.id })),
      el("p", { id: "sweep-status" }, `${t(`status.${sweep.status}`)} · `,
        Object.entries(sweep.counts).map(([k, v]) => `${t(`status.${k}`)} ${v}`).join(", ")));
    drawGrids(sweep);
    await drawProfiles(sweep, profileCache);
    runs.replaceChildren(el("h2", { text: t("sweep.runs") }), el("ul", {}, sweep.experiments.map((row) => el("li", {},
      el("a", { href: `#/experiments/${row.id}`, text: pointLabel(row.point) }),
      ` ${t(`status.${row.status}`)} ${row.verdict || ""} ${row.final_loss !== null ? fmt(row.final_loss) : ""}`))));
    return sweep.experiments.some((row) => !FINISHED.includes(row.status));
  });
}

function pointLabel(point) {
  return Object.values(point || {}).join(" / ") || "run";
}

// The grid's two longest axes as x and y; runs that share a cell (seeds, other axes) are averaged.
function gridAxes(sweep) {
  const axes = Object.entries(sweep.grid).sort((a, b) => b[1].length - a[1].length).map(([name]) => name);
  return { x: axes[0], y: axes[1] };
}

function cellsOf(sweep, axes, pick) {
  const xs = sweep.grid[axes.x] || [null];
  const ys = axes.y ? sweep.grid[axes.y] : [null];
  const z = ys.map((y) => xs.map((x) => {
    const values = sweep.experiments.filter((row) => row.point && row.point[axes.x] === x && (!axes.y || row.point[axes.y] === y))
      .map(pick).filter((v) => v !== null && v !== undefined);
    return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
  }));
  return { xs: xs.map(String), ys: ys.map(String), z };
}

const VERDICTS = ["healthy", "vanishing", "exploding", "dead_units", "saturated", "diverged"];

function drawGrids(sweep) {
  const axes = gridAxes(sweep);
  const layout = (title) => ({ title: { text: title }, xaxis: { title: { text: axes.x }, type: "category", automargin: true },
    yaxis: { title: { text: axes.y || "" }, type: "category", automargin: true } });
  const ratio = cellsOf(sweep, axes, (row) => log10(row.step0_grad_ratio));
  plot("grid-ratio", [{ type: "heatmap", x: ratio.xs, y: ratio.ys, z: ratio.z, colorscale: "RdBu", zmid: 0,
    text: ratio.z.map((r) => r.map((v) => fmt(v, 1))), texttemplate: "%{text}" }], layout(t("sweep.ratio")));
  const loss = cellsOf(sweep, axes, (row) => row.final_loss);
  plot("grid-loss", [{ type: "heatmap", x: loss.xs, y: loss.ys, z: loss.z, colorscale: "Viridis",
    text: loss.z.map((r) => r.map((v) => fmt(v))), texttemplate: "%{text}" }], layout(t("sweep.loss")));
  // A verdict per cell: the most common one; coloured by its index, named in the cell.
  const names = cellsOf(sweep, axes, () => 0).z.map((r, yi) => r.map((_, xi) => {
    const xs = sweep.grid[axes.x];
    const ys = axes.y ? sweep.grid[axes.y] : [null];
    const found = sweep.experiments.filter((row) => row.verdict && row.point[axes.x] === xs[xi]
      && (!axes.y || row.point[axes.y] === ys[yi])).map((row) => row.verdict);
    return found.sort((a, b) => found.filter((v) => v === b).length - found.filter((v) => v === a).length)[0] || null;
  }));
  plot("grid-verdict", [{ type: "heatmap", x: ratio.xs, y: ratio.ys, zmin: 0, zmax: VERDICTS.length - 1, showscale: false,
    z: names.map((r) => r.map((v) => (v ? VERDICTS.indexOf(v) : null))), text: names.map((r) => r.map((v) => v || "")),
    texttemplate: "%{text}", colorscale: [[0, "#2da44e"], [0.2, "#cf222e"], [0.4, "#8250df"], [0.6, "#bf8700"],
      [0.8, "#fb8500"], [1, "#6e7781"]] }], layout(t("sweep.verdict")));
}

// Step-0 grad_norm of every finished run against depth, one line each (traces fetched once per run).
async function drawProfiles(sweep, cache) {
  const done = sweep.experiments.filter((row) => FINISHED.includes(row.status) && row.status !== "failed");
  await Promise.all(done.filter((row) => !(row.id in cache)).map(async (row) => {
    cache[row.id] = await api(`/api/v1/experiments/${row.id}/traces?metrics=grad_norm`).catch(() => null);
  }));
  const data = done.filter((row) => cache[row.id] && cache[row.id].grad_norm.length).map((row) => ({
    type: "scatter", mode: "lines+markers", name: pointLabel(row.point), x: cache[row.id].layers.map((l) => l.name),
    y: cache[row.id].grad_norm[0] }));
  plot("sweep-profiles", data, { title: { text: t("sweep.profiles") }, height: 420, xaxis: { title: { text: t("plot.depth") } },
    yaxis: { type: "log", exponentformat: "power" } });
}

window.addEventListener("hashchange", route);
setupHeader();
route();
