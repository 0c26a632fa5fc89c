// One experiment (#/experiments/ID): its diagnosis and every plot of its traces, redrawn while it runs.
"use strict";

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
    // The verdict in words, in the page's language (the API words it by Accept-Language).
    d.title ? el("p", {}, el("strong", { id: "verdict-title", text: d.title })) : "",
    d.explanation ? el("p", { id: "verdict-explanation", text: d.explanation }) : "",
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

