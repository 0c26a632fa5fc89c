"""What `gradtrace show` and `gradtrace workers` print: plain tables that fit an 80-column terminal."""

import json
import math
import re
import textwrap
import unicodedata
from typing import Any

# Traced metrics that the per-layer table of `show` reads.
TABLE_METRICS = ("grad_norm", "act_grad_norm", "dead_fraction", "saturated_fraction")
WIDTH = 80
NAME_WIDTH = 14
KIND_WIDTH = 9
# Spec fields shown on the summary line of `show`, in this order.
SPEC_LINE = ("arch", "depth", "width", "activation", "init", "norm", "optimizer", "lr", "steps")
# Shown after them where they are set; the recurrent ones for arch rnn only.
SPEC_EXTRAS = ("clipping", "residual", "dataset", "seed")
RNN_FIELDS = ("cell", "seq_len")


def _clip(text: str, width: int) -> str:
    """Text cut to a column's width, with a mark where it was cut."""
    return text if len(text) <= width else text[: width - 1] + "~"


def norm_cell(value: float | None) -> str:
    """A gradient norm in 9 characters: 1.23e-05; '-' where it has no meaning, nan/inf as such."""
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2e}"


def fraction_cell(value: float | None) -> str:
    """A fraction as a percentage; '-' where it has no meaning (the output layer)."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{100 * value:.0f}%"


def _last(rows: list[list[Any]] | None, layer: int) -> Any:
    return rows[-1][layer] if rows else None


def _first(rows: list[list[Any]] | None, layer: int) -> Any:
    return rows[0][layer] if rows else None


# The words around the diagnosis and the table, per language (shared/diagnosis_texts.py has the diagnosis').
LABELS = {
    "en": {"verdict": "verdict: ", "try": "try: ", "title": " ({})",
           "legend": ("  grad: L2 norm of the weight gradient; act: of the pre-activation gradient;",
                      "  dead, sat: share of dead units and of saturated activations at step {last}.")},
    "zh": {"verdict": "判定：", "try": "建议：", "title": "（{}）",
           "legend": ("  grad：权重梯度的 L2 范数；act：预激活梯度的 L2 范数；",
                      "  dead、sat：第 {last} 步时死亡单元与饱和激活所占的比例。")},
}
# Where a line of mixed text may break: around an ASCII word, a run of spaces, or any other single character;
# an opening bracket stays with what follows it, closing punctuation with what precedes it.
_UNITS = re.compile(r"[（“]*(?:[\x21-\x7e]+|[^\s])[，。；：、）”！？]*|\s+")


def columns(text: str) -> int:
    """The terminal columns a text takes: Chinese characters and full-width punctuation take two."""
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def wrap(text: str, width: int, initial: str, subsequent: str) -> list[str]:
    """textwrap.wrap by terminal columns: Chinese has no spaces to break at and its characters are wide,
    so it may break between any two of them; ASCII words (spec values, numbers) stay whole."""
    if columns(text) == len(text):
        return textwrap.wrap(text, width, initial_indent=initial, subsequent_indent=subsequent)
    lines, current, empty = [], initial, True
    for unit in _UNITS.findall(text):
        if unit.isspace():
            if empty:
                continue
            unit = " "
        if not empty and columns(current + unit.rstrip()) > width:
            lines.append(current.rstrip())
            current, empty = subsequent, True
            if unit == " ":
                continue
        current += unit
        empty = False
    lines.append(current.rstrip())
    return lines


def layer_table(traces: dict[str, Any], lang: str = "en") -> list[str]:
    """One line per layer: its name and kind, grad_norm and act_grad_norm at step 0 and at the last traced
    step, and the dead and saturated fractions at the last one."""
    steps = traces.get("steps") or []
    if not steps:
        return ["  no trace yet"]
    last = steps[-1]
    header = (f"  {'layer':<{NAME_WIDTH}} {'kind':<{KIND_WIDTH}} {'grad@0':>9} {f'grad@{last}':>9} "
              f"{'act@0':>9} {f'act@{last}':>9} {'dead':>5} {'sat':>5}")
    lines = [header, "  " + "-" * (len(header) - 2)]
    for index, layer in enumerate(traces["layers"]):
        grad, act = traces.get("grad_norm"), traces.get("act_grad_norm")
        lines.append(
            f"  {_clip(layer['name'], NAME_WIDTH):<{NAME_WIDTH}} {_clip(layer.get('kind', ''), KIND_WIDTH):<{KIND_WIDTH}} "
            f"{norm_cell(_first(grad, index)):>9} {norm_cell(_last(grad, index)):>9} "
            f"{norm_cell(_first(act, index)):>9} {norm_cell(_last(act, index)):>9} "
            f"{fraction_cell(_last(traces.get('dead_fraction'), index)):>5} "
            f"{fraction_cell(_last(traces.get('saturated_fraction'), index)):>5}"
        )
    first, second = LABELS[lang]["legend"]
    lines += [first, second.format(last=last)]
    return lines


def summary_lines(experiment: dict[str, Any]) -> list[str]:
    """The experiment's id, name, spec in one line, status and progress, and its summary's figures."""
    spec = experiment["spec"]
    progress = experiment.get("progress") or {}
    lines = [f"{experiment['id']}  {experiment['status']}  step {progress.get('step', 0)}/{progress.get('steps', '?')}"]
    if spec.get("name"):
        lines.append(f"  name: {spec['name']}")
    shown = [field for field in SPEC_LINE if field in spec]
    shown += [field for field in SPEC_EXTRAS if spec.get(field) not in (None, False)]
    shown += [field for field in RNN_FIELDS if spec.get("arch") == "rnn" and field in spec]
    fields = "  ".join(f"{field}={json.dumps(spec[field], separators=(',', ':'))}".replace('"', "") for field in shown)
    lines += textwrap.wrap(fields, WIDTH, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
    summary = experiment.get("summary") or {}
    if summary:
        accuracy = summary.get("final_accuracy")
        figures = [f"final loss {_number(summary.get('final_loss'))}"]
        if accuracy is not None:
            figures.append(f"accuracy {accuracy:.3f}")
        figures.append(f"train {_number(summary.get('train_seconds'))} s on {summary.get('device') or '?'}")
        if summary.get("cached"):
            figures.append(f"(cached from {summary.get('cached_from')})")
        lines.append("  " + "  ".join(figures))
    if experiment.get("error"):
        lines.append(f"  error: {experiment['error'].get('message')}")
    return lines


def diagnosis_lines(summary: dict[str, Any] | None, lang: str = "en") -> list[str]:
    """The verdict with its title and what it means, its reasons and the advice, one item a line; the
    words in the language the API answered in."""
    diagnosis = (summary or {}).get("diagnosis")
    if not diagnosis:
        return []
    labels = LABELS.get(lang, LABELS["en"])
    title = labels["title"].format(diagnosis["title"]) if diagnosis.get("title") else ""
    lines = [f"  {labels['verdict']}{diagnosis['verdict']}{title}"]
    if diagnosis.get("explanation"):
        lines += wrap(diagnosis["explanation"], WIDTH, "    ", "    ")
    for reason in diagnosis.get("reasons", []):
        lines += wrap(reason, WIDTH, "    - ", "      ")
    advice_indent = " " * (4 + columns(labels["try"]))
    for advice in diagnosis.get("advice", []):
        lines += wrap(advice, WIDTH, f"    {labels['try']}", advice_indent)
    return lines


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def workers_table(workers: list[dict[str, Any]]) -> list[str]:
    """One line per live node (name, queues, busy of its processes, torch threads, device), then its GPUs
    and active experiments indented below."""
    if not workers:
        return ["no live worker nodes: start one with `gradtrace worker` (experiments wait in their queue)"]
    lines = [f"{'node':<34} {'queues':<8} {'busy':^7} {'threads':>7}  device",
             "-" * 66]
    for node in workers:
        concurrency = node.get("concurrency") or len(node.get("processes", []))
        lines.append(
            f"{_clip(node['name'], 34):<34} {_clip(','.join(node.get('queues') or []), 8):<8} "
            f"{node.get('busy', 0):>3}/{concurrency:<3} {node.get('torch_threads') or '-':>7}  {node.get('device') or '-'}"
        )
        if node.get("gpus"):
            lines.append(f"    gpus: {', '.join(node['gpus'])}")
        for experiment_id in node.get("active_experiments", []):
            lines.append(f"    running {experiment_id}")
    return lines
