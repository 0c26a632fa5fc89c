"""`GET /api/v1/workers`: the live worker nodes, read from the heartbeats that their processes write.

Every pool process of a node keeps a key with a TTL (worker/registry.py); a node is
live while one of its processes is. A process's current experiment is shown to
the tenant it belongs to only; other tenants see that the process is busy.
"""

import json
from typing import Any

from flask import Blueprint

from api.resources import current_tenant, get_resources
from shared.store import WORKERS_KEY, exp_key

bp = Blueprint("workers", __name__, url_prefix="/api/v1/workers")

# Facts of the node, the same in each of its processes' heartbeats.
NODE_FIELDS = ("hostname", "pid", "queues", "concurrency", "torch_threads", "device", "gpus", "started_at")


def live_processes(client) -> list[dict[str, Any]]:
    """The heartbeat of every process whose key has not expired; expired keys leave the set."""
    keys = sorted(client.smembers(WORKERS_KEY))
    values = client.mget(keys) if keys else []
    gone = [key for key, value in zip(keys, values) if value is None]
    if gone:
        client.srem(WORKERS_KEY, *gone)
    return [json.loads(value) for value in values if value is not None]


@bp.get("")
def list_workers() -> dict:
    """The live nodes by name, each with its queues, concurrency, device and this tenant's active experiments."""
    client = get_resources().redis
    processes = live_processes(client)
    running = [beat["experiment"] for beat in processes if beat.get("experiment")]
    with client.pipeline(transaction=False) as pipe:
        for experiment_id in running:
            pipe.hmget(exp_key(experiment_id), "tenant", "status")
        owners = dict(zip(running, pipe.execute()))
    tenant = current_tenant().encode()
    nodes: dict[str, dict[str, Any]] = {}
    for beat in sorted(processes, key=lambda beat: (beat["node"], beat["process"])):
        node = nodes.setdefault(beat["node"], {
            "name": beat["node"], **{field: beat.get(field) for field in NODE_FIELDS},
            "last_seen": beat["seen_at"], "busy": 0, "active_experiments": [], "processes": [],
        })
        node["last_seen"] = max(node["last_seen"], beat["seen_at"])
        experiment_id = beat.get("experiment")
        owner, status = owners.get(experiment_id, (None, None)) if experiment_id else (None, None)
        mine = owner == tenant and status is not None and status.decode() in ("queued", "running")
        node["busy"] += bool(experiment_id)
        if mine:
            node["active_experiments"].append(experiment_id)
        node["processes"].append(
            {"pid": beat["process"], "busy": bool(experiment_id), "experiment": experiment_id if mine else None,
             "seen_at": beat["seen_at"]}
        )
    return {"workers": list(nodes.values())}
