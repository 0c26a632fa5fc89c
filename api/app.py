"""The app factory: `create_app()` is what gunicorn, `gradtrace serve` and the tests run."""

from collections.abc import Mapping
from typing import Any

from flask import Flask

from api import (
    auth, dashboard, docs, errors, experiments, health, language, logs, metrics, openapi, resources, sweeps, theory,
    validation, workers,
)
from shared.settings import Settings

# Where `gradtrace api` looks when REDIS_URL is unset: a Redis on this host.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def settings_config(settings: Settings) -> dict[str, Any]:
    """The part of the settings that the API uses, as Flask config keys."""
    return {
        "REDIS_URL": settings.redis_url or DEFAULT_REDIS_URL,
        "REDIS_TIMEOUT": settings.redis_timeout,
        "MAX_BODY_BYTES": settings.max_body_bytes,
        "API_TOKENS": settings.api_tokens,
        "API_TOKENS_FILE": settings.api_tokens_file,
        "RATE_LIMIT": settings.rate_limit,
        "RATE_BURST": settings.rate_burst,
        "MAX_QUEUED": settings.max_queued,
        "RETENTION_SECONDS": settings.retention_seconds,
        "METRICS_TOKEN": settings.metrics_token,
        "LOG_FORMAT": settings.log_format,
    }


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """The API: defaults and environment (shared.settings), then the test's overrides."""
    app = Flask(__name__)
    # Settings holds the defaults and reads REDIS_URL and GRADTRACE_* from the environment.
    app.config.from_mapping(settings_config(Settings()))
    if test_config is not None:
        app.config.from_mapping(test_config)
    # Never the debugger or tracebacks in answers, whatever FLASK_DEBUG says.
    app.config["DEBUG"] = False
    # Werkzeug refuses larger bodies with a 413 before a view reads them.
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_BODY_BYTES"]
    # Keep the field order of API.md in answers rather than sorting keys.
    app.json.sort_keys = False
    # A path with `//` is an unknown route (a JSON 404), not an HTML redirect to another.
    app.url_map.merge_slashes = False

    logs.init_app(app)
    errors.register(app)
    resources.init_app(app)
    language.init_app(app)
    auth.init_app(app)  # the token first, then the ids in the path
    app.url_value_preprocessor(validation.check_ids)
    app.register_blueprint(experiments.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(sweeps.bp)
    app.register_blueprint(workers.bp)
    app.register_blueprint(theory.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(dashboard.bp)
    return app
