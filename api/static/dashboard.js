// The gradtrace dashboard: every figure from the public /api/v1 endpoints, drawn with the bundled Plotly.
// Routes by the URL fragment: #/ (home.js: lessons, submit form, experiments), #/experiments/ID
// (experiment.js), #/sweeps/ID (sweep.js). This file: the API calls, the token, polling and routing.
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

// One plot, drawn or redrawn in place (Plotly.react keeps the zoom of a live page).
function plot(id, data, layout) {
  const base = { margin: { l: 70, r: 20, t: 40, b: 50 }, height: 360 };
  return Plotly.react(id, data, { ...base, ...layout }, PLOT_CONFIG);
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

// The page scripts are deferred and run in order; the pages' functions exist once the document is parsed.
window.addEventListener("DOMContentLoaded", () => {
  window.addEventListener("hashchange", route);
  setupHeader();
  route();
});
