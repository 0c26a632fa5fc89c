"""The answers of API.md as pydantic models, for /openapi.json only: the views build plain dicts.

They say what every answer holds, so that schemathesis can check each response against
them; objects whose content grows with the service (a summary, a diagnosis, a theory
report) name the fields that API.md promises and allow more.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.spec import ExperimentSpec
from shared.traces import LAYER_METRICS, STEP_METRICS, TIME_METRICS

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
SweepState = Literal["queued", "running", "finished"]
Id = Field(pattern=r"^[0-9a-f]{32}$")
Number = float | None


class Open(BaseModel):
    """An object that may hold more than the fields listed."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(Open):
    loc: list[str | int] = Field(description="where in the input: a field, ['query', name], ['points', i, field]")
    msg: str
    type: str | None = Field(None, description="pydantic's error type, or the spec rule that was broken")


class ErrorInfo(BaseModel):
    code: str = Field(description="stable: invalid_json, not_found, validation_error, redis_unavailable, ...")
    message: str
    details: list[ErrorDetail]


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: ErrorInfo


class Progress(BaseModel):
    step: int
    steps: int


class Diagnosis(Open):
    verdict: Literal["healthy", "vanishing", "exploding", "dead_units", "saturated", "diverged"]
    title: str = Field(description="the verdict's name, in the answer's language (?lang= or Accept-Language)")
    explanation: str = Field(description="what the verdict means, in the answer's language")
    reasons: list[str] = Field(description="what the traces showed, with the numbers, in the answer's language")
    advice: list[str] = Field(description="what to try, in the answer's language")


class Summary(Open):
    final_loss: Number = None
    train_seconds: Number = None
    diagnosis: Diagnosis | None = None


class RunError(Open):
    message: str


class Experiment(BaseModel):
    id: str = Id
    status: Status
    spec: ExperimentSpec = Field(description="the spec with every default filled in")
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    summary: Summary | None
    error: RunError | None
    name: str | None
    queue: str | None
    device: str | None
    attempts: int
    cancel_requested: bool
    sweep: str | None = Field(description="the sweep that created it, or null")
    point: dict | None = Field(description="its point of the sweep's grid, or null")


class ExperimentPage(BaseModel):
    experiments: list[Experiment]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class Layer(Open):
    name: str
    kind: str


PerLayer = list[list[Number]]
PerStep = list[Number]
# The JSON traces: one row per traced step; NaN and infinities are null. Each metric is left
# out unless asked for (all are, without ?metrics=); time_grad_norm only for arch rnn.
Traces = create_model(
    "Traces",
    layers=(list[Layer], ...),
    steps=(list[int], ...),
    **{name: (PerLayer, None) for name in LAYER_METRICS},
    **{name: (list[bool] if name == "clipped" else PerStep, None) for name in STEP_METRICS},
    **{name: (PerLayer, Field(None, description="traced steps x seq_len")) for name in TIME_METRICS},
)


class SweepCreated(BaseModel):
    id: str = Id
    name: str | None
    size: int
    experiments: list[str]


class SweepRow(Open):
    id: str = Id
    point: dict | None
    seed: int
    status: Status
    progress: Progress
    verdict: str | None
    final_loss: Number
    step0_grad_ratio: Number
    summary: Summary | None


class Counts(BaseModel):
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class SweepHead(BaseModel):
    id: str = Id
    name: str | None
    created_at: str
    status: SweepState
    size: int
    counts: Counts
    base: dict
    grid: dict


class Sweep(SweepHead):
    experiments: list[SweepRow]
    aggregate: list[dict] = Field(description="per group of points that differ only in seed: means and spreads")


class SweepPage(BaseModel):
    sweeps: list[SweepHead]
    next_cursor: str | None


class TheoryLayer(Open):
    name: str
    q: Number
    chi: Number
    act_grad_log10: Number
    regime: Literal["ordered", "critical", "chaotic"] | None


class Theory(Open):
    spec: dict
    applies: bool = Field(description="false where mean-field theory says nothing (note says why)")
    layers: list[TheoryLayer]


class WorkerProcess(Open):
    pid: int
    busy: bool
    experiment: str | None


class WorkerNode(Open):
    name: str
    queues: list[str] | None
    concurrency: int | None
    device: str | None
    active_experiments: list[str]
    processes: list[WorkerProcess]


class Workers(BaseModel):
    workers: list[WorkerNode]


class Health(BaseModel):
    status: Literal["ok"]


class Ready(Health):
    redis: Literal["ok"]


RESPONSE_MODELS = (
    ErrorBody, Experiment, ExperimentPage, Traces, SweepCreated, Sweep, SweepPage, Theory, Workers, Health, Ready,
)
