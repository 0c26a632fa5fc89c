// One sweep (#/sweeps/ID): grid heatmaps of its points and the step-0 profiles of all its runs.
"use strict";

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

