"""How `gradtrace worker` sizes itself: processes from the cores it may use, threads shared out among them."""

import os
import subprocess
import sys

from worker.main import default_concurrency, default_threads, usable_cores


def test_one_process_per_usable_core():
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert default_concurrency(["cpu"]) == usable_cores()
    assert default_concurrency(["cpu", "gpu"]) == usable_cores()


def test_threads_share_the_cores_out():
    cores = usable_cores()
    assert default_threads(1) == cores
    assert default_threads(cores) == 1
    assert default_threads(2 * cores) == 1  # never zero threads


def test_a_narrowed_affinity_is_what_counts():
    # taskset or a container's cpuset: the host has more cores than the process may use.
    code = ("import os; os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]}); "
            "from worker.main import default_concurrency, default_threads; "
            "print(default_concurrency(['cpu']), default_threads(1))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]
