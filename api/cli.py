"""The `gradtrace` command: serve, api, worker, and the client commands submit, status, watch, show, export,
sweep and workers, which go through api.client like any other Python program would."""

import json
import os
import sys
import time
from pathlib import Path

import click

from api import cli_views
from api.lessons import lesson_command
from api.client import ApiError, Client
from shared.diagnosis_texts import DEFAULT, LANGUAGES
from shared.languages import from_locale
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
    _check_log_format(settings)
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
    _check_log_format(settings)
    _tokens(settings, host)
    os.execv(sys.executable, gunicorn_argv(host, port, processes))


def _check_log_format(settings: Settings) -> None:
    """A GRADTRACE_LOG_FORMAT that is neither text nor json stops the command before anything starts."""
    from shared.logs import check_format

    try:
        check_format(settings.log_format)
    except ValueError as error:
        raise click.UsageError(str(error)) from None


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


def _remember_lang(ctx: click.Context, _param, value: str | None) -> None:
    if value:
        ctx.find_root().obj = {**(ctx.find_root().obj or {}), "lang": value}


lang_option = click.option("--lang", type=click.Choice(LANGUAGES), expose_value=False, callback=_remember_lang,
                           help="language of the diagnosis: en or zh (default: the locale of LC_ALL, LC_MESSAGES "
                                "or LANG, e.g. zh_CN.UTF-8; else en)")


def _language() -> str:
    """The language of --lang, else of the locale, else English."""
    chosen = (click.get_current_context().find_root().obj or {}).get("lang")
    return chosen or from_locale(os.environ) or DEFAULT


def _client() -> Client:
    """A client of GRADTRACE_URL with the token of --token or GRADTRACE_TOKEN, in the language of --lang or LANG."""
    context = click.get_current_context()
    token = (context.find_root().obj or {}).get("token")
    return Client(Settings().url, token=token, lang=_language())


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


def _json_object(file, name: str) -> dict:
    """A JSON object read from a file argument; one line and exit status 1 for anything else."""
    try:
        found = json.load(file)
    except ValueError as error:
        _stop(f"{name} {file.name} is not JSON: {error}")
    if not isinstance(found, dict):
        _stop(f"{name} {file.name} must hold a JSON object, not {type(found).__name__}")
    return found


def _stop(message: str) -> None:
    """A client command's failure that is not the API's: one line, as _fail writes them, and exit status 1."""
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _progress_line(experiment: dict) -> str:
    progress = experiment.get("progress") or {}
    step, steps = progress.get("step", 0), max(progress.get("steps", 1), 1)
    filled = int(30 * step / steps)
    return f"[{'#' * filled}{'.' * (30 - filled)}] {step}/{steps} {experiment['status']}"


def _report(experiment: dict) -> None:
    summary = experiment.get("summary") or {}
    click.echo(f"{experiment['id']}  {experiment['status']}")
    if summary:
        click.echo(f"  final loss {summary.get('final_loss')}  accuracy {summary.get('final_accuracy')}  "
                   f"train {summary.get('train_seconds')} s")
    for line in cli_views.diagnosis_lines(summary, _language()):
        click.echo(line)
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
    """An error of the API as one line (its message, status and code), then the fields that 422 names."""
    where = f" ({exc.status} {exc.code})" if exc.status else ""
    click.echo(f"error: {exc.message}{where}", err=True)
    for detail in exc.details:
        click.echo(f"  {'.'.join(str(part) for part in detail.get('loc', []))}: {detail.get('msg')}", err=True)
    sys.exit(1)


@main.command()
@click.argument("spec_file", required=False, type=click.File("r"))
@click.option("--wait", is_flag=True, help="follow the run with a progress bar until it ends")
@_spec_options
@token_option
@lang_option
def submit(spec_file, wait: bool, **fields) -> None:
    """Submit an experiment from a JSON spec file (or - for stdin) and/or flags (--depth 20 --activation tanh)."""
    spec = _json_object(spec_file, "spec_file") if spec_file else {}
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
@lang_option
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
@lang_option
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
    body = _json_object(sweep_file, "sweep_file")
    try:
        found = client.submit_sweep(body)
        click.echo(found["id"])
        while wait and found.get("status") != "finished":
            time.sleep(1)
            found = client.get_sweep(found["id"])
            click.echo(" ".join(f"{status} {count}" for status, count in found["counts"].items()), err=True)
    except ApiError as exc:
        _fail(exc)
    if wait:
        for row in found["experiments"]:
            loss = "-" if row["final_loss"] is None else f"{row['final_loss']:.4f}"
            click.echo(f"  {json.dumps(row['point'])}  {row['status']}  {row['verdict'] or '-'}  loss {loss}")
        sys.exit(0 if found["counts"]["succeeded"] == len(found["experiments"]) else 1)


@main.command()
@click.argument("experiment_id")
@click.option("--json", "as_json", is_flag=True, help="print the raw summary (with the diagnosis) as JSON")
@token_option
@lang_option
def show(experiment_id: str, as_json: bool) -> None:
    """The summary, the diagnosis with its advice, and a per-layer table of gradient norms and unit health."""
    client = _client()
    try:
        experiment = client.get(experiment_id)
        if as_json:
            click.echo(json.dumps(experiment.get("summary"), indent=2))
            return
        traces = client.traces(experiment_id, metrics=list(cli_views.TABLE_METRICS))
    except ApiError as exc:
        _fail(exc)
    lang = _language()
    lines = [*cli_views.summary_lines(experiment), *cli_views.diagnosis_lines(experiment.get("summary"), lang), ""]
    lines += cli_views.layer_table(traces, lang)
    click.echo("\n".join(lines))


@main.command()
@click.argument("experiment_id")
@click.option("--format", "fmt", type=click.Choice(["csv", "npz", "json"]), default="csv", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              help="file to write (- for stdout); default: ID-traces.FORMAT here")
@click.option("--force", is_flag=True, help="replace the file if it exists")
@token_option
def export(experiment_id: str, fmt: str, output: Path | None, force: bool) -> None:
    """Download the experiment's traces (what has been traced so far) as csv, npz or json."""
    # The default is a name in this directory, whatever the id holds ("../x" names no other place).
    output = output or Path(Path(f"{experiment_id}-traces.{fmt}").name)
    chunks = _client().download(experiment_id, fmt)
    try:
        if str(output) == "-":
            for chunk in chunks:
                sys.stdout.buffer.write(chunk)
            sys.stdout.buffer.flush()
            return
        if output.exists() and not force:
            _stop(f"{output} exists; --force replaces it")
        size = _write_file(output, chunks)
    except ApiError as exc:
        _fail(exc)
    click.echo(f"wrote {output} ({size:,} bytes)", err=True)


def _write_file(output: Path, chunks) -> int:
    """Stream the chunks into a file beside the target, then rename it into place: an interrupted
    download leaves no half file under the target's name, and an existing file is only replaced whole."""
    partial = output.with_name(f".{output.name}.part")
    size = 0
    try:
        with open(partial, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
                size += len(chunk)
        os.replace(partial, output)
    except OSError as error:
        _stop(f"cannot write {output}: {error.strerror or error}")
    finally:
        partial.unlink(missing_ok=True)
    return size


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print the API's answer as JSON")
@token_option
def workers(as_json: bool) -> None:
    """The live worker nodes: queues, busy processes of its concurrency, torch threads, device, active runs."""
    try:
        nodes = _client().workers()
    except ApiError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(nodes, indent=2))
        return
    click.echo("\n".join(cli_views.workers_table(nodes)))


# `gradtrace lesson`: the lessons of examples/ (api/lessons.py).
main.add_command(lesson_command)
