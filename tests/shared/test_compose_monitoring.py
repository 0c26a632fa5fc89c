"""docker-compose.yml's `monitoring` profile: Flower, pinned, on the service's own Redis with its password."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# Where the project's machines keep docker-compose (Debian's, in a venv of its own) when it is not on PATH.
COMPOSE_CANDIDATES = (os.environ.get("GRADTRACE_DOCKER_COMPOSE", ""), shutil.which("docker-compose") or "",
                      "/tmp/dc-venv/bin/docker-compose")


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_flower_runs_only_under_the_monitoring_profile():
    services = compose()["services"]
    assert services["flower"]["profiles"] == ["monitoring"]
    assert all("monitoring" not in service.get("profiles", []) for name, service in services.items() if name != "flower")


def test_flower_is_pinned_and_reads_the_same_redis_with_its_password():
    services = compose()["services"]
    flower = services["flower"]
    assert re.fullmatch(r"mher/flower:\d+\.\d+\.\d+", flower["image"])
    broker = flower["environment"]["CELERY_BROKER_URL"]
    assert broker == services["api"]["environment"]["REDIS_URL"] == services["worker"]["environment"]["REDIS_URL"]
    assert broker.startswith("redis://:${REDIS_PASSWORD") and "@redis:6379/0" in broker
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    # Flower can stop workers: this host only, and a password.
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]


def test_the_operators_settings_reach_the_api_and_the_workers():
    services = compose()["services"]
    assert "GRADTRACE_METRICS_TOKEN" in services["api"]["environment"]
    for name in ("api", "worker", "worker-gpu"):
        assert services[name]["environment"]["GRADTRACE_LOG_FORMAT"] == "${GRADTRACE_LOG_FORMAT:-text}"


def test_docker_compose_accepts_the_monitoring_profile():
    binary = next((path for path in COMPOSE_CANDIDATES if path and os.access(path, os.X_OK)), None)
    # `make test` installs Debian's docker-compose (the Makefile's `system`): a missing one is a failure.
    assert binary is not None, "no docker-compose here: run `make system`, or set GRADTRACE_DOCKER_COMPOSE"
    for profile in ([], ["--profile", "monitoring"]):
        done = subprocess.run([binary, *profile, "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    services = subprocess.run([binary, "--profile", "monitoring", "config", "--services"], cwd=ROOT,
                              capture_output=True, text=True, timeout=60).stdout.split()
    assert "flower" in services
