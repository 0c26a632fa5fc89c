"""What the service must never do, checked on its source and configuration: pickle, open binds, unchecked TLS."""

import re
import ssl
from pathlib import Path

import yaml

from api import cli
from shared.celery_app import broker_ssl, make_celery

ROOT = Path(__file__).resolve().parents[2]
# Everything that runs: the packages, the benchmarks, the build. Tests may name what they check for.
SOURCES = [path for folder in ("api", "shared", "worker", "bench") for path in (ROOT / folder).rglob("*")
           if path.suffix in (".py", ".c", ".toml", ".cfg", ".yml", ".yaml", ".sh", ".html", ".js")]
SOURCES += [ROOT / name for name in ("pyproject.toml", "Dockerfile", "docker-compose.yml", "Makefile")]


def test_no_pickle_anywhere_in_the_source():
    assert len(SOURCES) > 30
    found = [str(path.relative_to(ROOT)) for path in SOURCES
             if re.search(r"pickle|marshal\.loads|yaml\.load\(|accept_content", path.read_text(errors="replace"))]
    # The one place that names accept_content is the Celery configuration, which says JSON.
    assert found == ["shared/celery_app.py"]
    text = (ROOT / "shared/celery_app.py").read_text()
    assert "pickle" not in text and 'accept_content=["json"]' in text


def test_celery_takes_and_sends_json_only():
    conf = make_celery("redis://127.0.0.1:6379/0").conf
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json" and conf.result_serializer == "json"
    assert conf.event_serializer == "json"
    assert conf.result_accept_content in (None, ["json"])
    assert not conf.broker_use_ssl


def test_a_rediss_url_checks_the_servers_certificate_on_the_broker_too():
    assert broker_ssl("redis://:pw@h:6379/0") is None
    assert broker_ssl("rediss://:pw@h:6380/0") == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert broker_ssl("rediss://h/0?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required") == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": "/ca.pem"}
    assert broker_ssl("rediss://h/0?ssl_cert_reqs=none")["ssl_cert_reqs"] == ssl.CERT_NONE
    app = make_celery("rediss://:secret@h:6380/0")
    assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    connection = app.connection_for_write()
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED} and connection.password == "secret"


def test_the_commands_bind_to_this_host_only_unless_told():
    for command in (cli.serve, cli.api):
        (host,) = [param for param in command.params if param.name == "host"]
        assert host.default == "127.0.0.1"
    text = (ROOT / "api/serve.py").read_text()
    assert '"--bind", "127.0.0.1", "--protected-mode", "yes"' in text  # the embedded Redis


def test_compose_sets_a_redis_password_and_shows_tls():
    text = (ROOT / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    redis = compose["services"]["redis"]
    assert "--requirepass" in redis["command"]
    for name in ("api", "worker", "worker-gpu"):
        url = compose["services"][name]["environment"]["REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD")
    assert "GRADTRACE_API_TOKENS" in compose["services"]["api"]["environment"]
    assert re.search(r"#\s*REDIS_URL: rediss://:\$\{REDIS_PASSWORD", text)
