"""The experiment spec of API.md: one pydantic model, every default, every bound."""

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

from shared.limits import LIMITS

Arch = Literal["mlp", "cnn", "rnn"]
Activation = Literal[
    "relu", "leaky_relu", "sigmoid", "tanh", "gelu", "silu", "elu", "selu", "softplus", "linear"
]
Init = Literal[
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "lecun_normal",
    "orthogonal",
    "normal",
]
Norm = Literal["none", "batchnorm", "layernorm"]
Dataset = Literal["spirals", "digits", "shapes", "adding", "copy_first", "random"]
Optimizer = Literal["sgd", "momentum", "adam"]
Device = Literal["auto", "cpu", "cuda"]
Cell = Literal["rnn", "lstm", "gru"]

ALIASES = {
    "activation": {"swish": "silu"},
    "init": {"he_uniform": "kaiming_uniform", "he_normal": "kaiming_normal"},
}
DEFAULT_DATASET = {"mlp": "spirals", "cnn": "digits", "rnn": "adding"}
# The architectures whose worker side exists; the others answer 422.
SUPPORTED_ARCHS = ("mlp", "cnn", "rnn")
DATASETS_BY_ARCH = {
    "mlp": ("spirals", "digits", "random"),
    "cnn": ("digits", "shapes", "random"),
    "rnn": ("adding", "copy_first", "random"),
}

# (input features, classes) of each dataset for the MLP; `random` is width-wide.
DATASET_SHAPES = {"spirals": (2, 2), "digits": (64, 10)}
RANDOM_CLASSES = 10
# Images for the CNN are IMAGE_SIZE x IMAGE_SIZE: (channels, classes) of each dataset.
IMAGE_SIZE = 8
IMAGE_SHAPES = {"digits": (1, 10), "shapes": (3, 6), "random": (3, RANDOM_CLASSES)}
# Sequences for the RNN: (features per time step, outputs); `adding` is a regression (one output).
SEQUENCE_SHAPES = {"adding": (2, 1), "copy_first": (4, 4), "random": (8, RANDOM_CLASSES)}
REGRESSION_DATASETS = ("adding",)
# Gate blocks of each recurrent cell: its weight matrices are gates x width tall.
CELL_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


# The kinds of SpecError: rules between fields, beyond any one field's bounds.
RULE_KINDS = ("combination", "cost_limit", "trace_limit")


class SpecError(ValueError):
    """A spec error that names the field it is about, for the error's `loc`, and the rule it broke
    (`combination` of fields, `cost_limit`, `trace_limit`): rules that no field's own bounds state."""

    def __init__(self, loc: str, message: str, kind: str = "combination"):
        super().__init__(message)
        self.loc = loc
        self.kind = kind


def _alias(field: str):
    def resolve(value):
        return ALIASES[field].get(value, value) if isinstance(value, str) else value

    return BeforeValidator(resolve)


# Finite, positive and not absurd: a learning rate of 1e300 is a typo, not an experiment.
PositiveFloat = Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]


class Clipping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    mode: Literal["norm", "value"]
    threshold: PositiveFloat


def spec_json_schema(schema: dict) -> None:
    """The spec's JSON Schema (for /openapi.json) told what pydantic's cannot see: the aliases,
    `dataset: null` for the arch's default, and the rules between fields that `_check_combination`
    enforces, as `if`/`then`. The cost and trace-size bounds are products of several fields,
    which JSON Schema cannot state: the description and `x-limits` give them."""
    fields = schema["properties"]
    for field, aliases in ALIASES.items():
        fields[field]["enum"] = [*fields[field]["enum"], *aliases]
    datasets = fields.pop("dataset")
    fields["dataset"] = {
        "anyOf": [{"type": "string", "enum": datasets["enum"]}, {"type": "null"}],
        "default": None,
        "description": "null or left out: the arch's default, "
                       + ", ".join(f"{dataset} ({arch})" for arch, dataset in DEFAULT_DATASET.items()),
    }
    schema["allOf"] = [
        *(_when({"arch": {"const": arch}}, ["arch"], {"dataset": {"enum": [*DATASETS_BY_ARCH[arch], None]}})
          for arch in SUPPORTED_ARCHS if arch != "mlp"),
        # No arch, or arch mlp.
        {"if": {"required": ["arch"], "properties": {"arch": {"enum": [arch for arch in SUPPORTED_ARCHS if arch != "mlp"]}}},
         "else": {"properties": {"dataset": {"enum": [*DATASETS_BY_ARCH["mlp"], None]}}}},
        _when({"arch": {"const": "rnn"}}, ["arch"], {"norm": {"const": "none"}, "residual": {"const": False}}),
        _when({"norm": {"const": "batchnorm"}}, ["norm"], {"batch_size": {"minimum": 2}}),
    ]
    schema["x-limits"] = {"cost": LIMITS.cost, "trace_values": LIMITS.trace_values}
    schema["description"] = (
        "What to train and how. Every field is optional; unknown fields are refused. Beyond each "
        f"field's bounds: the cost (forward multiply-accumulates x batch_size x steps) must be at most "
        f"{LIMITS.cost:.3g}, and the traced values (traced rows x (depth + 1) x 8, plus seq_len per row "
        f"for rnn) at most {LIMITS.trace_values:,}; the README gives the cost of each arch."
    )


def _when(condition: dict, required: list[str], then: dict) -> dict:
    return {"if": {"required": required, "properties": condition}, "then": {"properties": then}}


class ExperimentSpec(BaseModel):
    """What to train and how; frozen so that a spec, once validated, is what runs."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, json_schema_extra=spec_json_schema)

    arch: Arch = "mlp"
    depth: int = Field(8, ge=1, le=LIMITS.depth)
    width: int = Field(64, ge=1, le=LIMITS.width)
    activation: Annotated[Activation, _alias("activation")] = "relu"
    init: Annotated[Init, _alias("init")] = "default"
    init_std: PositiveFloat = 0.01
    clipping: Clipping | None = None
    norm: Norm = "none"
    residual: bool = False
    dataset: Dataset = "spirals"
    optimizer: Optimizer = "sgd"
    lr: PositiveFloat = 0.05
    batch_size: int = Field(64, ge=1, le=LIMITS.batch_size)
    steps: int = Field(300, ge=1, le=LIMITS.steps)
    seed: int = Field(0, ge=-(2**63), le=2**63 - 1)
    trace_every: int = Field(1, ge=1, le=LIMITS.steps)
    device: Device = "auto"
    name: str | None = Field(None, max_length=LIMITS.name_length)
    # false: run afresh even when the same inputs have succeeded before (shared/cache.py).
    cache: bool = True
    cell: Cell = "rnn"
    seq_len: int = Field(20, ge=2, le=LIMITS.seq_len)

    @model_validator(mode="before")
    @classmethod
    def _default_dataset(cls, data):
        # The dataset's default depends on the arch, so it is filled in here.
        if isinstance(data, dict) and data.get("dataset") is None:
            arch = data.get("arch", "mlp")
            if isinstance(arch, str) and arch in DEFAULT_DATASET:  # not a list or object: the arch's own check says so
                data = {**data, "dataset": DEFAULT_DATASET[arch]}
        return data

    @model_validator(mode="after")
    def _check_combination(self) -> "ExperimentSpec":
        if self.arch not in SUPPORTED_ARCHS:
            raise SpecError(
                "arch",
                f"arch {self.arch!r} is not available yet: this service runs {', '.join(SUPPORTED_ARCHS)}"
            )
        allowed = DATASETS_BY_ARCH[self.arch]
        if self.dataset not in allowed:
            raise SpecError(
                "dataset",
                f"dataset {self.dataset!r} does not fit arch {self.arch!r}: use one of {', '.join(allowed)}"
            )
        if self.arch == "rnn" and self.norm != "none":
            raise SpecError("norm", "norm applies to arch 'mlp' and 'cnn': use norm 'none' with arch 'rnn'")
        if self.arch == "rnn" and self.residual:
            raise SpecError("residual", "residual applies to arch 'mlp' and 'cnn': use residual false with arch 'rnn'")
        if self.norm == "batchnorm" and self.batch_size < 2:
            raise SpecError("batch_size", "norm 'batchnorm' needs batch_size >= 2: it normalizes over the batch")
        over = cost(self)
        if over > LIMITS.cost:
            raise SpecError(
                "cost",
                f"cost {over:.3g} multiply-accumulates is over the limit of {LIMITS.cost:.3g}: "
                "lower depth, width, batch_size or steps",
                kind="cost_limit",
            )
        values = trace_values(self)
        if values > LIMITS.trace_values:
            raise SpecError(
                "trace_every",
                f"trace of {values:,} values is over the limit of {LIMITS.trace_values:,}: "
                "raise trace_every or lower steps or depth",
                kind="trace_limit",
            )
        return self

    def dims(self) -> tuple[int, int]:
        """Inputs and outputs of the spec's dataset: features (mlp), channels (cnn) or
        features per time step (rnn), and classes (1 for a regression)."""
        if self.arch == "cnn":
            return IMAGE_SHAPES[self.dataset]
        if self.arch == "rnn":
            return SEQUENCE_SHAPES[self.dataset]
        if self.dataset == "random":
            return self.width, RANDOM_CLASSES
        return DATASET_SHAPES[self.dataset]

    def is_regression(self) -> bool:
        """Whether the loss is the mean squared error and accuracy has no meaning."""
        return self.dataset in REGRESSION_DATASETS and self.arch == "rnn"

    def layer_count(self) -> int:
        """Weighted layers that the trace has: every hidden block (conv block, recurrent layer) plus the output layer."""
        return self.depth + 1

    def time_steps(self) -> int:
        """The second dimension of `time_grad_norm`: seq_len for arch rnn, 0 (no time trace) otherwise."""
        return self.seq_len if self.arch == "rnn" else 0

    def traced_steps(self) -> list[int]:
        """The optimizer steps that get a trace row: every k-th, plus the last."""
        steps = list(range(0, self.steps, self.trace_every))
        if steps[-1] != self.steps - 1:
            steps.append(self.steps - 1)
        return steps

    def queue(self) -> str:
        """The Celery queue that runs this spec: `cuda` specs need a GPU node."""
        return "gpu" if self.device == "cuda" else "cpu"


def cost(spec: ExperimentSpec) -> float:
    """Multiply-accumulates of the weighted layers' forward passes, summed over the run."""
    inputs, classes = spec.dims()
    width, depth = spec.width, spec.depth
    if spec.arch == "cnn":
        # 3x3 convolutions with padding keep every block at IMAGE_SIZE x IMAGE_SIZE positions.
        per_example = (inputs * width + (depth - 1) * width**2) * 9 * IMAGE_SIZE**2 + width * classes
    elif spec.arch == "rnn":
        # Every time step of every layer multiplies [input, hidden] by a (gates*width) x (in+width) matrix.
        gates = CELL_GATES[spec.cell]
        per_step = gates * ((inputs + width) * width + (depth - 1) * 2 * width * width)
        per_example = spec.seq_len * per_step + width * classes
    else:
        per_example = inputs * width + (depth - 1) * width**2 + width * classes
    return float(per_example) * spec.batch_size * spec.steps


def trace_values(spec: ExperimentSpec) -> int:
    """How many values the full trace of the spec holds: per layer, and per time step for rnn."""
    from shared.traces import LAYER_METRICS, TIME_METRICS

    rows = -(-spec.steps // spec.trace_every) + 1
    return rows * (spec.layer_count() * len(LAYER_METRICS) + spec.time_steps() * len(TIME_METRICS))
