"""Every lesson of examples/, run at a small size on the real API (gunicorn), a worker and Redis, shows its point.

The small size keeps each lesson's depth, width and every other field and only
trains fewer steps: the step-0 figures are those of the full run, and the steps
left are still enough for the training claims (a clipped RNN passes the step where
the unclipped one turns NaN; ReLUs have time to die). The figures at full size
are in each lesson's Markdown note.
"""

import json
import math
import subprocess
import sys

import pytest

from api.client import Client
from api.lesson_book import LESSONS
from api.lessons import examples_dir, lessons, load, resized, run
from api.sweeps import sweep_plan
from shared.spec import ExperimentSpec
from tests.integration.test_cli import ROOT, api_url, env  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

SMALL = {
    "vanishing-sigmoid": {"steps": 20},
    "activations": {"steps": 30},
    "xavier-vs-he": {"steps": 30},
    "batchnorm-sigmoid": {"steps": 100},
    "clipping-rnn": {"steps": 60},  # unclipped, the loss turns NaN at step 34
    "dying-relu": {"steps": 150},
    "cnn-channels": {"steps": 100},
}


def test_every_lesson_is_a_file_the_api_accepts_as_it_stands():
    listed = lessons()
    assert [item["name"] for item in listed] == list(SMALL)
    for item in listed:
        body = load(item["name"])
        assert (examples_dir() / item["notes"]).read_text().startswith("# ")
        if item["kind"] == "sweep":
            assert sweep_plan(body).points  # what POST /api/v1/sweeps checks, every point included
        else:
            ExperimentSpec.model_validate(body)
        assert item["title"] and item["summary"] and item["figure"]


def test_resizing_keeps_the_grid_and_refuses_to_override_an_axis():
    body = load("batchnorm-sigmoid")
    small = resized(body, {"steps": 7})
    assert small["base"]["steps"] == 7 and small["grid"] == body["grid"] and body["base"]["steps"] == 300
    with pytest.raises(ValueError, match="norm is an axis"):
        resized(body, {"norm": "none"})
    assert resized(load("vanishing-sigmoid"), {"steps": 7})["steps"] == 7


@pytest.mark.parametrize("name", list(SMALL))
def test_the_lesson_shows_what_it_claims(api_url, name):  # noqa: F811
    result = run(Client(api_url), name, SMALL[name], timeout=120, interval=0.2)
    figures = {point["label"]: point["figures"] for point in result.points}
    print(name, json.dumps(figures))
    assert [point["status"] for point in result.points] == ["succeeded"] * len(result.points)
    assert len(result.checks) == len(result.lesson.claims) >= 3
    assert [text for text, ok in result.checks if not ok] == []
    assert result.shown


def test_a_claim_fails_when_the_figures_do_not_bear_it_out(api_url):  # noqa: F811
    # Through 3 layers the sigmoid's gradient loses a factor ~16, not 1e9: the lesson's claims must say so.
    result = run(Client(api_url), "vanishing-sigmoid", {"depth": 3, "steps": 5}, timeout=60, interval=0.2)
    held = dict(result.checks)
    assert not held["the verdict is vanishing"]
    assert not held["at step 0 the first hidden layer's backpropagated signal is below 1e-9 of the last's"]
    assert not result.shown
    ratio = result.points[0]["figures"]["step0_signal_ratio"]
    assert 1e-3 < ratio < 1 and math.isfinite(ratio)


def test_the_command_runs_a_lesson_and_prints_what_it_showed(env):  # noqa: F811
    done = subprocess.run(
        [sys.executable, "-m", "api.lessons", "clipping-rnn", "--set", "steps=60"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "clipping-rnn: Gradient clipping tames an exploding RNN"
    none = next(line for line in lines if line.startswith("  none "))
    # The unclipped run explodes within a few dozen steps; the exact step moves with float32 rounding (the
    # hand-written recurrence of worker.engine sums in another order than autograd: 33 there, 34 under autograd).
    assert "diverged" in none and 25 <= int(none.split()[-1]) <= 45
    assert sum(line.startswith("  [x] ") for line in lines) == len(LESSONS[4].claims)
    assert lines[-1].startswith("  shown: yes.")
    # `gradtrace lesson` lists them, through the CLI's own entry point.
    listing = subprocess.run([sys.executable, "-c", "from api.cli import main; main()", "lesson"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert [line.split()[0] for line in listing.stdout.splitlines()[::2]] == list(SMALL)
    unknown = subprocess.run([sys.executable, "-m", "api.lessons", "vanishing"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no lesson 'vanishing'" in unknown.stderr
    refused = subprocess.run([sys.executable, "-m", "api.lessons", "dying-relu", "--set", "depth=0"], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "base.depth" in refused.stderr and refused.stdout == ""
