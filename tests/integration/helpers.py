"""Polling helpers of the live-worker tests."""

import time


def wait_for(client, experiment_id: str, statuses=("succeeded", "failed", "cancelled"), timeout: float = 120):
    """Poll the API until the experiment reaches one of the statuses."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1/experiments/{experiment_id}").get_json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"experiment {experiment_id} still {body['status']} after {timeout}s: {body}")
        time.sleep(0.1)
