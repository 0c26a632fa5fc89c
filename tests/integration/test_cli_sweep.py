"""`gradtrace sweep` against `gradtrace api` under gunicorn and the test worker."""

import json

import pytest

from tests.integration.test_cli import api_url, env, gradtrace  # noqa: F401  (fixtures and the runner)

pytestmark = pytest.mark.integration


def test_sweep_wait_prints_every_point(env, tmp_path):  # noqa: F811
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"base": {"depth": 3, "width": 8, "steps": 10}, "grid": {"seed": [0, 1]}}))
    done = gradtrace("sweep", str(sweep_file), "--wait", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines[0].strip()) == 32
    assert [line.split()[:2] for line in lines[1:]] == [['{"seed":', '0}'], ['{"seed":', '1}']]
    assert all("succeeded" in line and "loss" in line for line in lines[1:])
    assert "succeeded 2" in done.stderr


def test_sweep_shows_validation_errors(env, tmp_path):  # noqa: F811
    sweep_file = tmp_path / "sweep.json"
    sweep_file.write_text(json.dumps({"grid": {"depth": [0, 2]}}))
    bad = gradtrace("sweep", str(sweep_file), env=env)
    assert bad.returncode == 1
    assert "points.0.depth" in bad.stderr
