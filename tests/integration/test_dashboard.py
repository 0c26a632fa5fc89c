"""The dashboard in a real headless Chromium against the real service: gunicorn, a worker, Redis.

Debian's `chromium` (/usr/bin/chromium), driven by Playwright; no browser is downloaded.
Each page must load with no console errors and draw its plots from the experiment's
own data; the submit form, a lesson's data and the suggested-fix button go through the API.
Screenshots of the three pages are saved under the test's tmp dir and their paths printed.
"""

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright import sync_api

from tests.conftest import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
# Small and quick, and unhealthy on purpose: a 6-layer sigmoid net vanishes, and clipping at 0.05 clips.
SPEC = {"depth": 6, "width": 16, "activation": "sigmoid", "init": "xavier_uniform", "steps": 12,
        "clipping": {"mode": "norm", "threshold": 0.05}, "name": "dash-test"}
SWEEP = {"base": {"depth": 4, "width": 8, "steps": 4, "dataset": "random"},
         "grid": {"activation": ["relu", "sigmoid"], "init": ["default", "kaiming_normal"]}}
TIMEOUT_MS = 15_000



def call(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_finished(url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record = call(url)
        if record["status"] in ("succeeded", "failed", "cancelled", "finished"):  # finished: a sweep's
            return record
        assert time.monotonic() < deadline, f"not finished: {record['status']}"
        time.sleep(0.2)


def start_api(redis_url: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`gradtrace api` (gunicorn, one process) on a free port, as a user starts it; answers once ready."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "api", "--port", str(port), "--processes", "1"],
        cwd=ROOT, env={**os.environ, "REDIS_URL": redis_url, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/readyz", timeout=2).close()
            return process, url
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, "gradtrace api did not start"
            time.sleep(0.1)


def stop_api(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="module")
def base_url(live_redis_url, worker_process) -> Iterator[str]:
    process, url = start_api(live_redis_url)
    yield url
    stop_api(process)


@pytest.fixture(scope="module")
def browser() -> Iterator:
    assert CHROMIUM.exists(), "apt-get install -y chromium (see README: Tests)"
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A fresh page that records every console error and uncaught exception."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, locale="en-US")
    page = context.new_page()
    page.errors = []
    page.on("console", lambda message: message.type == "error" and page.errors.append(message.text))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


@pytest.fixture(scope="module")
def finished(base_url) -> dict:
    """A finished experiment and its traces."""
    created = call(f"{base_url}/api/v1/experiments", "POST", SPEC)
    record = wait_finished(f"{base_url}/api/v1/experiments/{created['id']}")
    assert record["status"] == "succeeded", record
    return {"record": record, "traces": call(f"{base_url}/api/v1/experiments/{created['id']}/traces")}


def shot(page, tmp_path_factory, name: str) -> None:
    path = tmp_path_factory.getbasetemp() / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def plot_data(page, element_id: str) -> list[dict]:
    """What Plotly drew in a plot: its traces as the library holds them."""
    return page.evaluate(f"document.getElementById({element_id!r}).data")


def test_home_lists_experiments_lessons_and_refuses_a_bad_spec_next_to_its_field(
        page, base_url, finished, tmp_path_factory):
    page.goto(base_url + "/")
    experiment_id = finished["record"]["id"]
    row = page.locator(f'#experiments-table tr[data-id="{experiment_id}"]')
    row.wait_for()
    assert "vanishing" in row.inner_text() and "sigmoid" in row.inner_text()
    lessons = call(f"{base_url}/api/v1/lessons")["lessons"]
    page.locator(".run-lesson").first.wait_for()
    assert page.locator(".run-lesson").count() == len(lessons) >= 7
    page.locator("#field-depth").wait_for()
    assert page.input_value("#field-depth") == "8"  # the spec's default is shown

    # The filter: a text that only our run holds keeps it and hides the others.
    page.fill("#text-filter", "dash-test")
    assert page.locator("#experiments-table tr[data-id]").count() >= 1
    page.fill("#text-filter", "no-such-run-anywhere")
    assert page.locator("#experiments-table tr[data-id]").count() == 0
    page.fill("#text-filter", "")

    assert page.errors == []
    page.fill("#field-depth", "0")
    page.click("#submit-button")
    error = page.locator('.field-error[data-field="depth"]')
    error.filter(has_text="greater than or equal to 1").wait_for()
    # Chromium logs every 4xx answer in the console: the refused spec's is the one expected line.
    assert len(page.errors) == 1 and "422" in page.errors.pop()
    shot(page, tmp_path_factory, "experiments")

    page.fill("#field-depth", "3")
    page.fill("#field-steps", "5")
    page.fill("#field-width", "8")
    page.click("#submit-button")
    page.wait_for_url("**/#/experiments/*")
    new_id = page.url.rsplit("/", 1)[1]
    record = call(f"{base_url}/api/v1/experiments/{new_id}")
    assert (record["spec"]["depth"], record["spec"]["steps"], record["spec"]["width"]) == (3, 5, 8)
    page.locator("#status.status-succeeded").wait_for()  # the page follows the run to its end
    assert page.errors == []


def test_experiment_page_draws_the_runs_traces_and_submits_the_suggested_fix(
        page, base_url, finished, tmp_path_factory):
    record, traces = finished["record"], finished["traces"]
    layers, steps = len(traces["layers"]), len(traces["steps"])
    page.goto(f"{base_url}/#/experiments/{record['id']}")
    page.locator("#verdict").filter(has_text="vanishing").wait_for()
    page.wait_for_function("document.getElementById('plot-clipping').data !== undefined")

    heatmap = plot_data(page, "plot-heatmap")[0]
    assert len(heatmap["z"]) == layers == SPEC["depth"] + 1 and all(len(row) == steps for row in heatmap["z"])
    for j in range(layers):
        for i in range(steps):
            assert math.isclose(heatmap["z"][j][i], math.log10(traces["grad_norm"][i][j]), rel_tol=1e-9)
    # Plotly drew one cell per (layer, step): the heatmap's image spans them all.
    assert page.locator("#plot-heatmap .hm image, #plot-heatmap .heatmaplayer image").count() == 1

    flow = plot_data(page, "plot-flow")
    theory = record["summary"]["theory"]
    assert theory["applies"]
    assert [trace["name"] for trace in flow][:3] == [f"step {s}" for s in (0, 5, 11)]
    assert flow[0]["y"] == traces["grad_norm"][0]
    predicted = flow[-1]["y"]  # the theory line, anchored at the last hidden layer of step 0
    assert len(predicted) == SPEC["depth"]
    assert math.isclose(predicted[-1], traces["grad_norm"][0][SPEC["depth"] - 1], rel_tol=1e-9)
    assert predicted[0] < predicted[-1] / 10  # sigmoid: the prediction vanishes towards the input
    assert page.locator("#plot-flow .scatterlayer .trace").count() == len(flow)

    loss = plot_data(page, "plot-loss")
    assert loss[0]["y"] == traces["loss"] and loss[1]["y"] == traces["accuracy"]
    dead = plot_data(page, "plot-dead")[0]
    assert len(dead["z"]) == SPEC["depth"] and len(dead["z"][0]) == steps
    clipping = plot_data(page, "plot-clipping")
    assert len(clipping[1]["x"]) == sum(traces["clipped"]) > 0
    assert page.is_hidden("#box-time")  # an MLP has no gradient through time
    shot(page, tmp_path_factory, "experiment")

    suggested = record["summary"]["diagnosis"]["suggested_spec"]
    assert suggested
    page.click("#suggested-fix")
    page.wait_for_url(lambda url: "/experiments/" in url and record["id"] not in url)
    fixed = call(f"{base_url}/api/v1/experiments/{page.url.rsplit('/', 1)[1]}")
    assert {key: fixed["spec"][key] for key in suggested} == suggested
    assert page.errors == []


def test_sweep_page_draws_the_grid_and_every_runs_profile(page, base_url, tmp_path_factory):
    created = call(f"{base_url}/api/v1/sweeps", "POST", SWEEP)
    sweep = wait_finished(f"{base_url}/api/v1/sweeps/{created['id']}")
    page.goto(f"{base_url}/#/sweeps/{created['id']}")
    page.wait_for_function("(document.getElementById('sweep-profiles').data || []).length === 4")

    ratio = plot_data(page, "grid-ratio")[0]
    assert ratio["x"] == ["relu", "sigmoid"] and ratio["y"] == ["default", "kaiming_normal"]
    for row in sweep["experiments"]:
        x = ratio["x"].index(row["point"]["activation"])
        y = ratio["y"].index(row["point"]["init"])
        assert math.isclose(ratio["z"][y][x], math.log10(row["step0_grad_ratio"]), rel_tol=1e-9)
    verdicts = plot_data(page, "grid-verdict")[0]
    assert sorted(v for row in verdicts["text"] for v in row) == sorted(row["verdict"] for row in sweep["experiments"])
    profiles = plot_data(page, "sweep-profiles")
    assert all(len(trace["y"]) == SWEEP["base"]["depth"] + 1 for trace in profiles)
    assert page.locator("#sweep-profiles .scatterlayer .trace").count() == 4
    shot(page, tmp_path_factory, "sweep")
    assert page.errors == []


def test_labels_in_chinese(page, base_url, finished):
    page.goto(base_url + "/?lang=zh")
    page.locator("#lessons h2").filter(has_text="课程").wait_for()
    assert page.inner_text("#submit-button") == "提交"
    # The diagnosis comes worded in the page's language, its verdict named in words.
    page.goto(f"{base_url}/?lang=zh#/experiments/{finished['record']['id']}")
    page.locator("#verdict-title").filter(has_text="梯度消失").wait_for()
    assert "倍" in page.inner_text("#reasons")
    assert page.errors == []


def test_rnn_page_draws_the_gradient_through_time(page, base_url):
    spec = {"arch": "rnn", "depth": 1, "width": 8, "seq_len": 5, "steps": 3}
    created = call(f"{base_url}/api/v1/experiments", "POST", spec)
    record = wait_finished(f"{base_url}/api/v1/experiments/{created['id']}")
    traces = call(f"{base_url}/api/v1/experiments/{created['id']}/traces")
    page.goto(f"{base_url}/#/experiments/{created['id']}")
    page.locator("#verdict").wait_for()
    page.wait_for_function("document.getElementById('plot-time').data !== undefined")
    assert page.is_visible("#box-time")
    time_plot = plot_data(page, "plot-time")[0]
    assert len(time_plot["z"]) == spec["seq_len"] and all(len(row) == len(traces["steps"]) for row in time_plot["z"])
    assert math.isclose(time_plot["z"][0][0], math.log10(traces["time_grad_norm"][0][0]), rel_tol=1e-9)
    if not record["summary"]["theory"]["applies"]:  # no prediction for an RNN: the page says why
        page.locator(".theory-note").filter(has_text=record["summary"]["theory"]["note"][:20]).wait_for()
    assert page.errors == []


def test_with_tokens_the_page_asks_for_one_and_keeps_it(page, live_redis_url, worker_process):
    token = "dash-token-7f3e9a1c5b2d"
    process, url = start_api(live_redis_url, GRADTRACE_API_TOKENS=token)
    try:
        page.goto(url + "/")
        page.locator("#token-form").wait_for(state="visible")
        assert "token" in page.inner_text("#notice")
        # Chromium logs the 401 answers in the console: those, and only those, are expected here.
        assert page.errors and all("401" in error for error in page.errors)
        page.errors.clear()
        page.fill("#token-input", token)
        page.click("#token-form button")
        page.locator(".run-lesson").first.wait_for()
        assert page.evaluate("localStorage.getItem('gradtrace.token')") == token
        page.reload()
        page.locator(".run-lesson").first.wait_for()
        page.locator("#experiments-table tbody tr").first.wait_for()
        assert page.is_hidden("#token-form")
        assert page.errors == []
    finally:
        stop_api(process)
