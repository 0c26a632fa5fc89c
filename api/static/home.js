// The home page (#/): the lessons, the submit form built from the spec's schema, the experiments and sweeps.
"use strict";

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

