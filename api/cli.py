"""The `gradtrace` command: serve, api, worker, and the client commands submit, status, watch, sweep."""

import json
import os
import sys
import time
from pathlib import Path

import click

from api.client import ApiError, Client
from shared.settings import Settings

# Spec fields whose values are words; every other flag's value is read as JSON (20, 0.1, true, {...}).
WORD_FIELDS = {"arch", "activation", "init", "norm", "dataset", "optimizer", "device", "name", "cell"}


@click.group()
@click.option("--token", envvar="GRADTRACE_TOKEN", default=None, metavar="TOKEN",
              help="API token of the client commands (default: GRADTRACE_TOKEN)")
@click.pass_context
def main(ctx: click.Context, token: str | None) -> None:
    """gradtrace: see why deep networks train or fail."""
    ctx.obj = {"token": token}


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=0), help="worker processes; 0 = none")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="default: GRADTRACE_DATA_DIR or ~/.local/share/gradtrace")
def serve(host: str, port: int, workers: int, data_dir: Path | None) -> None:
    """Everything on one machine: the API, N workers and, unless REDIS_URL is set, an embedded Redis."""
    from api.serve import serve as run

    settings = Settings()
    tokens = _tokens(settings, host)
    directory = (data_dir or settings.data_dir).expanduser()
    sys.exit(run(host, port, workers, directory, settings.redis_url, tokens[0] if tokens else None))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--processes", default=2, show_default=True, type=click.IntRange(min=1), help="gunicorn worker processes")
def api(host: str, port: int, processes: int) -> None:
    """The API alone, under gunicorn (8 threads a process). Needs REDIS_URL."""
    from api.serve import gunicorn_argv

    settings = Settings()
    if not settings.redis_url:
        raise click.UsageError("REDIS_URL is not set")
    _tokens(settings, host)
    os.execv(sys.executable, gunicorn_argv(host, port, processes))


def _tokens(settings: Settings, host: str) -> list[str]:
    """The configured API tokens, read before anything starts; a warning for an open API off this host."""
    from api.auth import TokenFileError, read_tokens

    try:
        tokens = read_tokens(settings.api_tokens, settings.api_tokens_file)
    except TokenFileError as error:
        raise click.UsageError(str(error)) from None
    if not tokens and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"warning: the API listens on {host} with no tokens: anyone who can reach it can use it "
                   "(set GRADTRACE_API_TOKENS or GRADTRACE_API_TOKENS_FILE)", err=True)
    return tokens


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", type=click.IntRange(min=1), help="pool processes (default: cores, or GPUs on a gpu node)")
@click.option("--queues", default="cpu", show_default=True, help="comma-separated: cpu, gpu")
def worker(concurrency: int | None, queues: str) -> None:
    """One Celery worker node. Needs REDIS_URL."""
    # A process of its own: the API side never imports torch or the worker package.
    argv = [sys.executable, "-m", "worker", "--queues", queues]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    os.execv(sys.executable, argv)


def _remember_token(ctx: click.Context, _param, value: str | None) -> None:
    if value:
        ctx.find_root().obj = {**(ctx.find_root().obj or {}), "token": value}


# `gradtrace status ID --token T` as well as `gradtrace --token T status ID`.
token_option = click.option("--token", metavar="TOKEN", expose_value=False, callback=_remember_token,
                            help="API token (default: GRADTRACE_TOKEN)")


def _client() -> Client:
    """A client of GRADTRACE_URL with the token of --token or GRADTRACE_TOKEN."""
    context = click.get_current_context()
    token = (context.find_root().obj or {}).get("token")
    return Client(Settings().url, token=token)


def _parse_value(field: str, text: str):
    if field in WORD_FIELDS:
        return text
    if field == "clipping" and ":" in text and not text.lstrip().startswith("{"):
        mode, _, threshold = text.partition(":")
        return {"mode": mode, "threshold": float(threshold)}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _spec_options(command):
    from shared.spec import ExperimentSpec

    for field in reversed(list(ExperimentSpec.model_fields)):
        flag = "--" + field.replace("_", "-")
        command = click.option(flag, field, default=None, metavar="VALUE", help=f"spec field {field}")(command)
    return command


def _progress_line(experiment: dict) -> str:
    progress = experiment.get("progress") or {}
    step, steps = progress.get("step", 0), max(progress.get("steps", 1), 1)
    filled = int(30 * step / steps)
    return f"[{'#' * filled}{'.' * (30 - filled)}] {step}/{steps} {experiment['status']}"


def _report(experiment: dict) -> None:
    summary = experiment.get("summary") or {}
    diagnosis = summary.get("diagnosis") or {}
    click.echo(f"{experiment['id']}  {experiment['status']}")
    if summary:
        click.echo(f"  final loss {summary.get('final_loss')}  accuracy {summary.get('final_accuracy')}  "
                   f"train {summary.get('train_seconds')} s")
    if diagnosis:
        click.echo(f"  verdict: {diagnosis['verdict']}")
        for reason in diagnosis.get("reasons", []):
            click.echo(f"    - {reason}")
        for advice in diagnosis.get("advice", []):
            click.echo(f"    try: {advice}")
    if experiment.get("error"):
        click.echo(f"  error: {experiment['error'].get('message')}")


def _watch(client: Client, experiment_id: str) -> dict:
    live = sys.stderr.isatty()
    last = ""
    for experiment in client.follow(experiment_id):
        line = _progress_line(experiment)
        if live:
            click.echo("\r" + line, nl=False, err=True)
        elif line != last:
            click.echo(line, err=True)
        last = line
    if live:
        click.echo("", err=True)
    _report(experiment)
    return experiment


def _fail(exc: ApiError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    for detail in exc.details:
        click.echo(f"  {'.'.join(str(part) for part in detail.get('loc', []))}: {detail.get('msg')}", err=True)
    sys.exit(1)


@main.command()
@click.argument("spec_file", required=False, type=click.File("r"))
@click.option("--wait", is_flag=True, help="follow the run with a progress bar until it ends")
@_spec_options
@token_option
def submit(spec_file, wait: bool, **fields) -> None:
    """Submit an experiment from a JSON spec file (or - for stdin) and/or flags (--depth 20 --activation tanh)."""
    spec = json.load(spec_file) if spec_file else {}
    spec.update({name: _parse_value(name, value) for name, value in fields.items() if value is not None})
    client = _client()
    try:
        experiment = client.submit(spec)
        click.echo(experiment["id"])
        if wait:
            experiment = _watch(client, experiment["id"])
            sys.exit(0 if experiment["status"] == "succeeded" else 1)
    except ApiError as exc:
        _fail(exc)


@main.command()
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="print the whole record as JSON")
@token_option
def status(experiment_id: str, as_json: bool) -> None:
    """The status, progress and, once finished, the summary and diagnosis of an experiment."""
    try:
        experiment = _client().get(experiment_id)
    except ApiError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(experiment, indent=2))
        return
    click.echo(_progress_line(experiment))
    _report(experiment)


@main.command()
@click.argument("experiment_id")
@token_option
def watch(experiment_id: str) -> None:
    """A live progress bar until the experiment ends, then its verdict."""
    try:
        experiment = _watch(_client(), experiment_id)
    except ApiError as exc:
        _fail(exc)
    sys.exit(0 if experiment["status"] == "succeeded" else 1)


@main.command()
@click.argument("sweep_file", type=click.File("r"))
@click.option("--wait", is_flag=True, help="poll until every point has ended, then print each point's verdict")
@token_option
def sweep(sweep_file, wait: bool) -> None:
    """Submit a sweep from a JSON file (or - for stdin): {"base": {...}, "grid": {"field": [values, ...]}}."""
    client = _client()
    try:
        found = client.request("POST", "/api/v1/sweeps", json.load(sweep_file))
        click.echo(found["id"])
        while wait and found.get("status") != "finished":
            time.sleep(1)
            found = client.request("GET", f"/api/v1/sweeps/{found['id']}")
            click.echo(" ".join(f"{status} {count}" for status, count in found["counts"].items()), err=True)
    except ApiError as exc:
        _fail(exc)
    if wait:
        for row in found["experiments"]:
            loss = "-" if row["final_loss"] is None else f"{row['final_loss']:.4f}"
            click.echo(f"  {json.dumps(row['point'])}  {row['status']}  {row['verdict'] or '-'}  loss {loss}")
        sys.exit(0 if found["counts"]["succeeded"] == len(found["experiments"]) else 1)
