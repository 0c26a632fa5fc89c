"""`gradtrace show`, `export` and `workers`, and how every client command reports the API's errors:
against `gradtrace api` under gunicorn, the test worker and its Redis."""

import csv
import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from api.client import Client
from tests.conftest import free_port
from tests.integration.helpers import start_api
from tests.integration.test_cli import ROOT, api_url, env, gradtrace  # noqa: F401  (fixtures and the runner)

pytestmark = pytest.mark.integration

SPEC = {"depth": 6, "width": 16, "activation": "sigmoid", "steps": 12, "name": "show-me"}


@pytest.fixture(scope="module")
def finished(api_url) -> dict:  # noqa: F811
    """A run that has ended, its record and its traces as the API gives them."""
    client = Client(api_url)
    experiment = client.wait(client.submit(SPEC)["id"], timeout=120, interval=0.1)
    assert experiment["status"] == "succeeded", experiment
    return {"record": experiment, "traces": client.traces(experiment["id"])}


def run_in(directory, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:  # noqa: F811
    """The command run from another directory (for default file names); the code still comes from ROOT."""
    return subprocess.run(
        [sys.executable, "-c", "from api.cli import main; main()", *args], cwd=directory,
        env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=60,
    )


def one_clean_line(done: subprocess.CompletedProcess, *expected: str) -> None:
    """A failure told in one line of stderr, no traceback, a non-zero exit status."""
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for text in expected:
        assert text in lines[0], lines[0]


def test_show_prints_the_summary_diagnosis_and_a_layer_table(env, finished):  # noqa: F811
    experiment_id, traces = finished["record"]["id"], finished["traces"]
    done = gradtrace("show", experiment_id, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert lines[0].startswith(f"{experiment_id}  succeeded  step 12/12")
    assert "name: show-me" in done.stdout and "activation=sigmoid" in done.stdout
    diagnosis = finished["record"]["summary"]["diagnosis"]
    assert f"verdict: {diagnosis['verdict']}" in done.stdout
    words = " ".join(done.stdout.split())  # reasons and advice are wrapped to the terminal's width
    assert all(" ".join(f"try: {advice}".split()) in words for advice in diagnosis["advice"])
    assert all(" ".join(reason.split()) in words for reason in diagnosis["reasons"])

    rows = {line.split()[0]: line.split() for line in lines if line.startswith(("  hidden.", "  output"))}
    assert list(rows) == [layer["name"] for layer in traces["layers"]] and len(rows) == SPEC["depth"] + 1
    first = rows["hidden.0"]
    assert first[1] == "linear"
    assert first[2] == f"{traces['grad_norm'][0][0]:.2e}" and first[3] == f"{traces['grad_norm'][-1][0]:.2e}"
    assert first[4] == f"{traces['act_grad_norm'][0][0]:.2e}"
    assert first[7] == f"{100 * traces['saturated_fraction'][-1][0]:.0f}%"
    assert rows["output"][-2:] == ["-", "-"]  # no activation: no dead or saturated units

    raw = gradtrace("show", experiment_id, "--json", env=env)
    assert json.loads(raw.stdout) == finished["record"]["summary"]


def test_export_writes_each_format_under_its_default_name(env, finished, tmp_path):  # noqa: F811
    experiment_id, traces = finished["record"]["id"], finished["traces"]
    for fmt in ("csv", "npz", "json"):
        done = run_in(tmp_path, "export", experiment_id, "--format", fmt, env=env)
        assert done.returncode == 0, done.stderr
        assert f"wrote {experiment_id}-traces.{fmt}" in done.stderr.decode()
    assert json.loads((tmp_path / f"{experiment_id}-traces.json").read_text()) == traces
    archive = np.load(tmp_path / f"{experiment_id}-traces.npz")
    assert archive["steps"].tolist() == traces["steps"]
    np.testing.assert_allclose(archive["grad_norm"], np.array(traces["grad_norm"], dtype=np.float32))
    table = list(csv.DictReader(io.StringIO((tmp_path / f"{experiment_id}-traces.csv").read_text())))
    assert len(table) == len(traces["steps"]) * len(traces["layers"])
    assert float(table[0]["grad_norm"]) == pytest.approx(traces["grad_norm"][0][0], rel=1e-6)
    assert not list(tmp_path.glob(".*.part"))


def test_export_refuses_to_overwrite_without_force(env, finished, tmp_path):  # noqa: F811
    experiment_id = finished["record"]["id"]
    target = tmp_path / "mine.csv"
    target.write_text("keep me")
    refused = gradtrace("export", experiment_id, "-o", str(target), env=env)
    assert refused.returncode != 0 and "exists; --force replaces it" in refused.stderr
    assert target.read_text() == "keep me"
    forced = gradtrace("export", experiment_id, "-o", str(target), "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text().startswith("step,layer,")
    to_stdout = gradtrace("export", experiment_id, "--format", "json", "-o", "-", env=env)
    assert json.loads(to_stdout.stdout) == finished["traces"]


def test_workers_lists_the_node_and_its_running_experiment(env, api_url):  # noqa: F811
    client = Client(api_url)
    long_run = client.submit({"depth": 2, "width": 8, "steps": 10000, "trace_every": 50})["id"]
    try:
        deadline = time.monotonic() + 60
        while client.get(long_run)["status"] != "running":
            assert time.monotonic() < deadline, "the long run did not start"
            time.sleep(0.1)
        done = gradtrace("workers", env=env)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].split() == ["node", "queues", "busy", "threads", "device"]
        node = next(line for line in lines if line.startswith("gradtrace-cpu-"))
        assert node.split()[1:4] == ["cpu", "1/1", "1"] and node.split()[4] in ("cpu", "cuda")
        assert f"    running {long_run}" in lines
        nodes = json.loads(gradtrace("workers", "--json", env=env).stdout)
        assert long_run in nodes[0]["active_experiments"]
    finally:
        client.cancel(long_run)
        client.wait(long_run, timeout=60)


def test_unknown_ids_and_bad_input_are_one_line_each(env, tmp_path):  # noqa: F811
    for command in (["show", "nope"], ["status", "nope"], ["watch", "nope"]):
        one_clean_line(gradtrace(*command, env=env), "no experiment nope", "(404 not_found)")
    missing = run_in(tmp_path, "export", "nope", env=env)
    one_clean_line(_text(missing), "no experiment nope")
    assert not list(tmp_path.iterdir())  # no file, not even a partial one
    bad = tmp_path / "bad.json"
    bad.write_text("{depth: 3")
    one_clean_line(gradtrace("submit", str(bad), env=env), "is not JSON")
    bad.write_text("[1, 2]")
    one_clean_line(gradtrace("sweep", str(bad), env=env), "must hold a JSON object")
    invalid = gradtrace("submit", "--depth", "0", "--activation", "nope", env=env)
    assert invalid.returncode == 1 and "Traceback" not in invalid.stderr
    first, *details = invalid.stderr.strip().splitlines()
    assert first.startswith("error: ") and first.endswith("(422 validation_error)")
    assert any(line.startswith("  depth:") for line in details)
    assert any(line.startswith("  activation:") for line in details)


def test_unreachable_service_is_one_line(env):  # noqa: F811
    nowhere = {**env, "GRADTRACE_URL": f"http://127.0.0.1:{free_port()}"}
    for command in (["show", "x"], ["export", "x", "-o", "-"], ["submit"]):
        one_clean_line(gradtrace(*command, env=nowhere), "cannot reach http://127.0.0.1:")
    one_clean_line(gradtrace("workers", env={**env, "GRADTRACE_URL": "localhost:8000"}), "localhost:8000")
    one_clean_line(gradtrace("workers", env={**env, "GRADTRACE_URL": "127.0.0.1"}), "127.0.0.1")


@pytest.fixture(scope="module")
def guarded_url(tmp_path_factory) -> Iterator[str]:
    """`gradtrace api` with tokens and a Redis that is not there: 401 before any Redis call, 503 after."""
    process, url = start_api(
        {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "GRADTRACE_API_TOKENS": "right",
         "GRADTRACE_REDIS_TIMEOUT": "0.5"},
        ready_path="/healthz",  # no Redis: /readyz would never answer 200
    )
    yield url
    process.terminate()
    process.wait(10)


def test_401_and_503_are_one_line_each(guarded_url):
    base = {**os.environ, "GRADTRACE_URL": guarded_url}
    base.pop("GRADTRACE_TOKEN", None)
    for command in (["show", "x"], ["workers"], ["export", "x", "-o", "-"]):
        one_clean_line(gradtrace(*command, env=base), "needs a token", "(401 unauthorized)")
        wrong = gradtrace(*command, "--token", "wrong", env=base)
        one_clean_line(wrong, "the token is not valid", "(401 unauthorized)")
        assert "wrong" not in wrong.stderr.replace("is not valid", "")
        down = gradtrace(*command, env={**base, "GRADTRACE_TOKEN": "right"})
        one_clean_line(down, "Redis unreachable", "(503 redis_unavailable)")


def _text(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """A run captured as bytes, with its output decoded."""
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def test_the_diagnosis_of_a_real_run_in_chinese_through_the_api_and_show(env, finished, api_url):  # noqa: F811
    from tests.api.test_language import CJK
    from api.cli_views import columns as columns_of
    from tests.shared.test_diagnosis_texts import numbers

    experiment_id, english = finished["record"]["id"], finished["record"]["summary"]["diagnosis"]
    request = urllib.request.Request(f"{api_url}/api/v1/experiments/{experiment_id}",
                                     headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Language"] == "zh-Hans"
        chinese = json.load(response)["summary"]["diagnosis"]
    assert chinese["verdict"] == english["verdict"] and CJK.search(chinese["title"])
    for key in ("reasons", "advice"):
        assert len(chinese[key]) == len(english[key]) and chinese[key]
        for en, zh in zip(english[key], chinese[key]):
            assert numbers(en) == numbers(zh) and CJK.search(zh), (en, zh)

    utf8 = {**env, "PYTHONIOENCODING": "utf-8", "LC_ALL": "", "LC_MESSAGES": ""}
    done = gradtrace("show", experiment_id, "--lang", "zh", env={**utf8, "LANG": "C.UTF-8"})
    assert done.returncode == 0, done.stderr
    assert f"判定：{chinese['verdict']}（{chinese['title']}）" in done.stdout
    assert all(columns_of(line) <= 80 for line in done.stdout.splitlines())
    words = "".join(done.stdout.split())  # wrapped to the terminal's width, between any two characters
    assert all("".join(text.split()) in words for text in chinese["reasons"] + chinese["advice"])
    assert "死亡单元与饱和激活" in done.stdout

    # The locale says the same as --lang; --lang wins over it.
    assert gradtrace("show", experiment_id, env={**utf8, "LANG": "zh_CN.UTF-8"}).stdout == done.stdout
    english_status = gradtrace("status", experiment_id, "--lang", "en", env={**utf8, "LANG": "zh_CN.UTF-8"})
    assert f"verdict: {english['verdict']}" in english_status.stdout and not CJK.search(english_status.stdout)
