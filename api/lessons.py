"""The lessons as ready-made experiments: the files of examples/, what each must show, and a runner that shows it.

A lesson is a spec or sweep file that the API accepts as it stands, a Markdown note
beside it (what to look at and why), and claims: conditions on the figures of the
runs' diagnoses that hold when the lesson has shown its point. `gradtrace lesson NAME`
(or `python -m api.lessons NAME`) submits the file to the service, waits, and prints
the figures and each claim; tests/integration/test_lessons.py checks the same claims
on every lesson at a small size.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from api.client import ApiError, Client
from api.lesson_book import LESSONS, Lesson
from shared.settings import Settings

EXAMPLES_ENV = "GRADTRACE_EXAMPLES_DIR"
FINISHED = ("succeeded", "failed", "cancelled")
# The diagnosis evidence that the lessons' claims and reports read.
EVIDENCE = ("step0_grad_ratio", "step0_signal_ratio", "dead_fraction_mean", "dead_fraction_max",
            "saturated_fraction_mean", "clipped_share", "grad_norm_growth")


def examples_dir() -> Path:
    """Where the lesson files are: GRADTRACE_EXAMPLES_DIR, this checkout's examples/, or the installed copy."""
    candidates = [Path(os.environ[EXAMPLES_ENV])] if os.environ.get(EXAMPLES_ENV) else []
    candidates.append(Path(__file__).resolve().parents[1] / "examples")
    candidates.append(Path(sys.prefix) / "share" / "gradtrace" / "examples")  # pip install . puts them there
    return next((path for path in candidates if path.is_dir()), candidates[0])


def lessons(lang: str = "en") -> list[dict[str, str]]:
    """Every lesson, in teaching order, as the dashboard lists them: name, title, summary, figure, files, kind
    and the body to POST; the words in `lang` (en or zh)."""
    found = []
    for lesson in LESSONS:
        body = load(lesson.name)
        found.append({**lesson.listing(lang), "kind": "sweep" if "grid" in body else "experiment", "body": body})
    return found


def get_lesson(name: str) -> Lesson:
    """The lesson of that name; KeyError naming the ones there are."""
    for lesson in LESSONS:
        if lesson.name == name:
            return lesson
    raise KeyError(f"no lesson {name!r}: the lessons are {', '.join(lesson.name for lesson in LESSONS)}")


def load(name: str) -> dict[str, Any]:
    """The lesson's body, as POSTed: a spec, or a sweep (base, grid, name)."""
    return json.loads((examples_dir() / get_lesson(name).file).read_text())


def resized(body: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The body with spec fields overridden (a sweep's base): the same lesson at another size."""
    if not overrides:
        return body
    if "grid" not in body:
        return {**body, **overrides}
    axes = sorted(set(overrides) & set(body["grid"]))
    if axes:
        raise ValueError(f"{', '.join(axes)} is an axis of this lesson's grid: it cannot be overridden")
    return {**body, "base": {**body.get("base", {}), **overrides}}


# --- the figures a lesson shows -------------------------------------------------------------


def label(point: dict[str, Any] | None) -> str:
    """A point's name in claims and reports: its values joined by '/' ('relu/kaiming_normal'), 'run' for no grid."""
    if not point:
        return "run"
    return "/".join(_word(value) for value in point.values())


def _word(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict) and {"mode", "threshold"} <= set(value):
        return f"{value['mode']}:{value['threshold']:g}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def figures(summary: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers a lesson reads from a run's summary: verdict, loss, accuracy and the diagnosis evidence."""
    summary = summary or {}
    diagnosis = summary.get("diagnosis") or {}
    evidence = diagnosis.get("evidence") or {}
    found = {
        "verdict": diagnosis.get("verdict"),
        "final_loss": summary.get("final_loss"),
        "final_accuracy": summary.get("final_accuracy"),
        "diverged_step": summary.get("diverged_step"),
        **{key: evidence.get(key) for key in EVIDENCE},
    }
    # The factor by which the backpropagated signal shrinks per layer (below 1: it grows).
    signal, depth = evidence.get("step0_signal_ratio"), evidence.get("depth")
    found["signal_shrink_per_layer"] = signal ** (-1 / (depth - 1)) if signal and depth and depth >= 2 else None
    return found


@dataclass
class LessonRun:
    """A lesson that ran: its experiment or sweep, every point's figures, and each claim's outcome."""

    lesson: Lesson
    kind: str  # "experiment" or "sweep"
    id: str
    points: list[dict[str, Any]]  # label, point, id, status, figures; in grid order
    checks: list[tuple[str, bool]] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        return all(point["status"] == "succeeded" for point in self.points) and all(ok for _, ok in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"lesson": self.lesson.listing(), "kind": self.kind, "id": self.id, "points": self.points,
                "claims": [{"claim": text, "holds": ok} for text, ok in self.checks], "shown": self.shown}


def check(lesson: Lesson, points: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """Each claim of the lesson and whether the points' figures bear it out."""
    by_label = {point["label"]: point["figures"] for point in points}
    return [(claim.text, _holds(claim.holds, by_label)) for claim in lesson.claims]


def _holds(condition: Callable[[dict], bool], by_label: dict[str, dict]) -> bool:
    # A figure that is missing (a run that failed, a ratio that underflowed) shows nothing.
    try:
        return bool(condition(by_label))
    except (KeyError, TypeError):
        return False


# --- running one --------------------------------------------------------------------------------


def submit(client: Client, name: str, overrides: dict[str, Any] | None = None) -> tuple[str, str]:
    """POST the lesson's file (resized by the overrides); its kind and id."""
    body = resized(load(name), overrides)
    if "grid" in body:
        return "sweep", client.request("POST", "/api/v1/sweeps", body)["id"]
    return "experiment", client.submit(body)["id"]


def poll(client: Client, kind: str, run_id: str) -> tuple[bool, list[dict[str, Any]], str]:
    """One look at the run: whether it has finished, its points so far, and a line of progress."""
    if kind == "sweep":
        sweep = client.request("GET", f"/api/v1/sweeps/{run_id}")
        points = [_point(row["point"], row["id"], row["status"], row.get("summary")) for row in sweep["experiments"]]
        line = " ".join(f"{status} {count}" for status, count in sweep["counts"].items() if count)
        return sweep["status"] == "finished", points, line
    experiment = client.get(run_id)
    progress = experiment.get("progress") or {}
    line = f"{experiment['status']} {progress.get('step', 0)}/{progress.get('steps', '?')}"
    point = _point(None, run_id, experiment["status"], experiment.get("summary"))
    return experiment["status"] in FINISHED, [point], line


def _point(point: dict | None, experiment_id: str, status: str, summary: dict | None) -> dict[str, Any]:
    return {"label": label(point), "point": point or {}, "id": experiment_id, "status": status,
            "figures": figures(summary)}


def run(
    client: Client,
    name: str,
    overrides: dict[str, Any] | None = None,
    *,
    timeout: float = 3600.0,
    interval: float = 0.5,
    progress: Callable[[str], None] | None = None,
) -> LessonRun:
    """Submit the lesson, wait until every run has ended, and check its claims; TimeoutError past the timeout."""
    lesson = get_lesson(name)
    kind, run_id = submit(client, name, overrides)
    deadline = time.monotonic() + timeout
    while True:
        done, points, line = poll(client, kind, run_id)
        if progress is not None:
            progress(line)
        if done:
            return LessonRun(lesson, kind, run_id, points, check(lesson, points))
        if time.monotonic() > deadline:
            raise TimeoutError(f"lesson {name} ({kind} {run_id}) still running after {timeout:g}s: {line}")
        time.sleep(interval)


# --- saying what it showed --------------------------------------------------------------------------

COLUMNS = (  # figure, heading, format
    ("verdict", "verdict", "{}"),
    ("final_loss", "loss", "{:.3g}"),
    ("final_accuracy", "acc", "{:.2f}"),
    ("step0_grad_ratio", "grad first/last", "{:.2g}"),
    ("step0_signal_ratio", "signal first/last", "{:.2g}"),
    ("signal_shrink_per_layer", "shrink/layer", "{:.2f}"),
    ("dead_fraction_mean", "dead mean", "{:.0%}"),
    ("dead_fraction_max", "dead max", "{:.0%}"),
    ("clipped_share", "clipped", "{:.0%}"),
    ("grad_norm_growth", "norm growth", "{:.2g}"),
    ("diverged_step", "NaN at", "{}"),
)


def report(result: LessonRun) -> list[str]:
    """What the lesson showed, as lines: the figures of every point, then each claim, held or not."""
    lesson = result.lesson
    lines = [f"{lesson.name}: {lesson.title}", f"  {result.kind} {result.id}", f"  look at: {lesson.figure}", ""]
    # Columns with a value other than 0 for some point; the others say nothing about this lesson.
    columns = [c for c in COLUMNS if any(point["figures"].get(c[0]) not in (None, 0) for point in result.points)]
    rows = [["point", "status", *(heading for _, heading, _ in columns)]]
    for point in result.points:
        cells = [_cell(point["figures"].get(key), fmt) for key, _, fmt in columns]
        rows.append([point["label"], point["status"], *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.append("")
    lines += [f"  [{'x' if ok else ' '}] {text}" for text, ok in result.checks]
    lines.append("")
    lines.append(f"  shown: {'yes' if result.shown else 'NO'}. Why: {examples_dir() / lesson.notes}")
    return lines


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


# --- the command ---------------------------------------------------------------------------------------


def _progress_printer() -> Callable[[str], None]:
    """Print a progress line to stderr when it changes."""
    last = [""]

    def show(line: str) -> None:
        if line != last[0]:
            click.echo(line, err=True)
            last[0] = line

    return show


def _override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r}: use FIELD=VALUE, e.g. steps=50")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value  # a word: relu, batchnorm


@click.command("lesson")
@click.argument("name", required=False)
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="override a spec field (a sweep's base), e.g. --set steps=50; repeatable")
@click.option("--json", "as_json", is_flag=True, help="print the lesson's runs, figures and claims as JSON")
@click.option("--timeout", default=3600.0, show_default=True, help="seconds to wait for the runs")
@click.option("--token", envvar="GRADTRACE_TOKEN", default=None, metavar="TOKEN",
              help="API token (default: GRADTRACE_TOKEN)")
def lesson_command(name: str | None, overrides: tuple[str, ...], as_json: bool, timeout: float,
                   token: str | None) -> None:
    """Run a lesson of examples/ on the service (GRADTRACE_URL) and say what it showed; no NAME lists them."""
    if name is None:
        for item in lessons():
            click.echo(f"{item['name']:<18} {item['title']}\n{'':<18} {item['summary']}")
        return
    try:
        get_lesson(name)
    except KeyError as error:
        raise click.UsageError(error.args[0]) from None
    token = token or (click.get_current_context().find_root().obj or {}).get("token")
    client = Client(Settings().url, token=token)
    try:
        result = run(client, name, dict(_override(text) for text in overrides), timeout=timeout,
                     progress=_progress_printer())
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    except ApiError as error:
        click.echo(f"error: {error.message}", err=True)
        for detail in error.details:
            click.echo(f"  {'.'.join(str(part) for part in detail.get('loc', []))}: {detail.get('msg')}", err=True)
        sys.exit(1)
    click.echo(json.dumps(result.as_dict(), indent=2) if as_json else "\n".join(report(result)))
    sys.exit(0 if result.shown else 1)


if __name__ == "__main__":
    lesson_command()
