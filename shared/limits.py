"""The service's upper bounds on a spec, documented in the README and enforced before queueing."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    depth: int = 200
    width: int = 4096
    steps: int = 100_000
    batch_size: int = 4096
    seq_len: int = 1000
    # Multiply-accumulates of the weighted layers' forward passes over the whole
    # run (see shared.cost). 50 x 256 x 256 x 2,000 (depth x width x batch x steps)
    # is about 1.7e12; the bound leaves room for a bit more than twice that.
    cost: float = 4e12
    # Traced values: traced rows x layers x per-layer metrics. At 4 bytes each,
    # 16 M values is 64 MiB in Redis for one experiment.
    trace_values: int = 16_000_000
    name_length: int = 200


LIMITS = Limits()
