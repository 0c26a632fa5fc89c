"""Settings from the environment. Only entry points (app factory, CLI, worker main) build one."""

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    return Path(os.path.expanduser("~/.local/share/gradtrace"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRADTRACE_", extra="ignore")

    # REDIS_URL, unprefixed as API.md names it: the one setting of a real deployment.
    redis_url: str | None = Field(None, validation_alias="REDIS_URL")
    data_dir: Path = Field(default_factory=default_data_dir)
    url: str = "http://127.0.0.1:8000"
    max_body_bytes: int = 1024 * 1024
    # Seconds between trace flushes to Redis (also the live-progress period).
    flush_seconds: float = 0.5
    # Torch threads per worker process; 0 = cores / processes on this host.
    torch_threads: int = 0
    # Seconds a worker's claim on an experiment lives without renewal.
    lease_seconds: float = 30.0
    # Seconds between sweeps for experiments whose worker died or whose message was lost.
    sweep_seconds: float = 15.0
    # Seconds an experiment stays `queued` before a sweep looks for its message in the broker
    # (and sends it again if none is there): above the API's time between writing and sending.
    queued_grace_seconds: float = 30.0
    # Seconds a worker told to stop (SIGTERM) lets its running experiments go on before it hands
    # them back to the queue; keep it under the orchestrator's own (docker: stop_grace_period).
    shutdown_grace_seconds: float = 20.0
    # A run that kills its worker this many times ends `failed`.
    max_attempts: int = 3
    # Seconds Redis answers must come within before the API says 503.
    redis_timeout: float = 2.0

    # --- security (README "Security") ---
    # Comma-separated API tokens; each is a tenant. None or empty: an open service of one tenant.
    api_tokens: str | None = None
    # A file of tokens, one a line ("#" starts a comment), read beside api_tokens.
    api_tokens_file: Path | None = None
    # Requests per second per token tenant, and the burst above it; 0 turns the limit off.
    rate_limit: float = 20.0
    rate_burst: int = 100
    # Unfinished (queued or running) experiments per tenant; 0 turns the cap off.
    max_queued: int = 10_000

    # --- operators (README "Operators") ---
    # A token that GET /metrics asks for (Authorization: Bearer); None or empty: /metrics is open.
    metrics_token: str | None = None
    # Log lines as plain text (`text`) or as one JSON object a line (`json`), API and workers alike.
    log_format: str = "text"

    # --- retention (README "Retention") ---
    # Seconds a finished experiment, its trace and a finished sweep are kept; 0 keeps them for good.
    retention_seconds: float = 30 * 24 * 3600.0
    # Fault injection for the fault tests, off unless set: a worker kills its own pool process
    # (SIGKILL) after the first trace chunk of every experiment of this name, as a crash would.
    fault_kill_name: str = ""
