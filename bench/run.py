"""Measures the webapp, the reference Flask app (its own server and gunicorn), the driver-only
ceiling and the ceiling's read or insert behind a bare HTTP server against one
MongoDB-compatible server, workload by workload, and writes the raw figures as JSON.
`hack/bench-webapp.sh` builds everything, starts FerretDB and calls this; `report.py` turns the
figures into targets and the webapp's section of BENCHMARKS.md.

Each server is started afresh for each run, so its CPU time and peak memory belong to that run
alone. Every server runs once per round, in turn, `--pairs` rounds, so that the ratios between
any two are taken round by round. CPU time and memory are read from /proc for the server's
whole process tree (gunicorn's arbiter and workers summed): CPU time just before and just after
the load, idle memory after one request of the workload, peak memory (VmHWM) after the load.
The database's CPU time over the same window is recorded too, since on one machine it competes
with the server.
"""

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from free_ports import free_ports  # noqa: E402  (the scripts' one port finder, in hack/)

BENCH = Path(__file__).resolve().parent
FLASK_APP = BENCH / "flask_app"
# Measured in turn, once per round: the webapp, its driver-only ceiling, the bare server (what
# HTTP and the JSON cost any server over the ceiling's queries), and Flask's two servers, the
# reference users know.
BARE = "bare"
SERVERS = ("webapp", "ceiling", BARE, "flask", "gunicorn")
READY_TIMEOUT = 30.0
# One request of the 100,000-document workload takes seconds, most of them in the database.
REQUEST_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
# Below this share of one core the database counts as idle again (see `settle`).
DATABASE_IDLE_SHARE = 0.05
SETTLE_TIMEOUT = 60.0
POST_BODY = '{"sampleKey": "sampleValue"}'


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    documents: int
    method: str
    duration: float
    connections: int

    @property
    def database(self):
        return f"bench_{self.key}"

    @property
    def body(self):
        return POST_BODY if self.method == "POST" else None


def progress(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc
def usage(pid, usage_program):
    """CPU seconds, RSS and peak RSS of the process tree of `pid` (gunicorn's arbiter and workers
    summed), read by the harness's `process-usage`, as the Rust tests and benchmarks read it."""
    done = subprocess.run(
        [usage_program, str(pid)], capture_output=True, text=True, timeout=30, check=False
    )
    if done.returncode != 0:
        sys.exit(f"process-usage {pid} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


# ---------------------------------------------------------------- processes
@contextmanager
def launched(argv, log, **popen):
    """Runs argv in a session of its own, logging to `log`; stops its whole group on exit."""
    with open(log, "w") as out:
        popen.setdefault("stdout", out)
        proc = subprocess.Popen(argv, stderr=out, start_new_session=True, **popen)
    try:
        yield proc
    finally:
        stop(proc)


def stop(proc):
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        progress(f"pid {proc.pid} ignored SIGTERM for {STOP_TIMEOUT:.0f}s: killing it")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


def check_alive(proc, log):
    if proc.poll() is not None:
        tail = "\n".join(Path(log).read_text().splitlines()[-20:])
        sys.exit(f"{proc.args[0]} exited with status {proc.returncode}; end of {log}:\n{tail}")


def read_line(proc, timeout, log):
    """The next line `proc` prints, waiting at most `timeout` seconds."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if not line:
        check_alive(proc, log)
        sys.exit(f"{proc.args[0]} printed nothing within {timeout:.0f}s; see {log}")
    return line.strip()


# ---------------------------------------------------------------- HTTP
def request(address, workload):
    """One request of the workload to `address` (HOST:PORT), which must succeed."""
    req = urllib.request.Request(
        f"http://{address}/data",
        method=workload.method,
        data=workload.body.encode() if workload.body else None,
        headers={"Content-Type": "application/json"} if workload.body else {},
    )
    with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as response:
        response.read()


def wait_ready(proc, port, log):
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        check_alive(proc, log)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"{proc.args[0]} did not answer GET / within {READY_TIMEOUT:.0f}s; see {log}")


def http_load(load, address, workload):
    """Loads the server at `address` (HOST:PORT) for the workload's duration from `bench-load
    http`, the same closed loop that loads the ceiling; it reports as one JSON line."""
    argv = [load, "http", f"--address={address}", *load_args(workload)]
    timeout = workload.duration + REQUEST_TIMEOUT
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        sys.exit(f"bench-load http failed ({done.returncode}): {done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_args(workload):
    return [
        f"--workload={workload.method.lower()}",
        f"--concurrency={workload.connections}",
        f"--duration-secs={workload.duration:g}",
    ]


# ---------------------------------------------------------------- the run
class Bench:
    def __init__(self, settings):
        self.settings = settings
        self.logs = settings.out.parent / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def uri(self, workload):
        """The database server's URI with the workload's database as its path."""
        return f"{self.settings.mongodb_uri.rstrip('/')}/{workload.database}"

    def seed(self, workload):
        argv = [self.settings.load, "seed", f"--mongodb-uri={self.uri(workload)}"]
        argv.append(f"--count={workload.documents}")
        if subprocess.run(argv, timeout=600, check=False).returncode != 0:
            sys.exit(f"seeding {workload.database} failed (the error is above)")

    def settle(self):
        """Waits (boundedly) until the database is idle: a request that the load generator
        gave up on may still run there, and would otherwise load the next server's run."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            before = self.database_cpu_seconds()
            time.sleep(1)
            if self.database_cpu_seconds() - before < DATABASE_IDLE_SHARE:
                return
        progress(f"the database is still busy after {SETTLE_TIMEOUT:.0f}s: measuring anyway")

    def database_cpu_seconds(self):
        return usage(self.settings.ferretdb_pid, self.settings.usage)["cpu_seconds"]

    def measured(self, proc, drive):
        """Idle memory and CPU time of `proc`, then `drive()`, then CPU time and peak memory."""
        # A moment for start-up and the warm-up request to settle before the idle reading.
        time.sleep(1)
        before = usage(proc.pid, self.settings.usage)
        database_before = self.database_cpu_seconds()
        result = drive()
        after = usage(proc.pid, self.settings.usage)
        database_cpu = self.database_cpu_seconds() - database_before
        cpu = after["cpu_seconds"] - before["cpu_seconds"]
        system_cpu = after["system_cpu_seconds"] - before["system_cpu_seconds"]
        requests = result["requests"]

        def per_request(seconds):
            return seconds * 1000 / requests if requests else None

        return {
            **result,
            "rps": requests / result["seconds"] if result["seconds"] else 0.0,
            "cpu_ms_per_request": per_request(cpu),
            "user_cpu_ms_per_request": per_request(cpu - system_cpu),
            "system_cpu_ms_per_request": per_request(system_cpu),
            "database_cpu_ms_per_request": per_request(database_cpu),
            "idle_rss_mb": before["rss_bytes"] / 1e6,
            "peak_rss_mb": after["peak_rss_bytes"] / 1e6,
        }

    def run(self, server, workload):
        self.settle()
        log = self.logs / f"{server}-{workload.key}.log"
        if server == "ceiling":
            return self.run_ceiling(log, workload)
        [port] = free_ports(1)
        settings = self.settings
        argv = {
            # No load balancer routes to it, so it stops without draining.
            "webapp": [settings.webapp, "--listen-address=127.0.0.1", f"--port={port}", "--drain-secs=0"],
            BARE: [settings.load, "serve", f"--port={port}"],
            "flask": [settings.python, "app.py"],
            # --timeout: the default 30 s could kill a worker in a 100,000-document GET.
            "gunicorn": [settings.gunicorn, "--workers=4", f"--bind=127.0.0.1:{port}"]
            + [f"--timeout={REQUEST_TIMEOUT:g}", "app:app"],
        }[server]
        env = {**os.environ, "MONGODB_URI": self.uri(workload), "HOST": "127.0.0.1"}
        env["PORT"] = str(port)
        with launched(argv, log, cwd=FLASK_APP, env=env) as proc:
            wait_ready(proc, port, log)
            address = f"127.0.0.1:{port}"
            request(address, workload)
            return self.measured(proc, lambda: http_load(settings.load, address, workload))

    def run_ceiling(self, log, workload):
        """The ceiling connects and warms up, says `ready`, runs on a line from stdin, prints its
        results and exits when stdin closes: so it is measured like the servers."""
        argv = [self.settings.load, "ceiling", f"--mongodb-uri={self.uri(workload)}"]
        argv += load_args(workload)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
        with launched(argv, log, **pipes) as proc:
            if read_line(proc, REQUEST_TIMEOUT, log) != "ready":
                sys.exit(f"the ceiling did not say ready; see {log}")

            def drive():
                proc.stdin.write("\n")
                proc.stdin.flush()
                return json.loads(read_line(proc, workload.duration + REQUEST_TIMEOUT, log))

            result = self.measured(proc, drive)
            proc.stdin.close()
            proc.wait(timeout=STOP_TIMEOUT)
            return result


def command_output(argv):
    """The first line a command prints, for version strings."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as err:
        return f"unknown ({err})"
    return (done.stdout or done.stderr).strip().splitlines()[0]


def machine(settings):
    """The conditions of the run (the machine itself is described by report.py)."""
    versions_of = (
        "import importlib.metadata as m, sys; print(*(m.version(p) for p in sys.argv[1:]))"
    )
    packages = ("flask", "pymongo", "gunicorn")
    package_versions = subprocess.run(
        [settings.python, "-c", versions_of, *packages],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    return {
        "load_average_at_start": os.getloadavg()[0],
        "versions": {
            "webapp": command_output([settings.webapp, "--version"]),
            "rustc": command_output(["rustc", "--version"]),
            "python": command_output([settings.python, "--version"]),
            **dict(zip(packages, package_versions)),
            "ferretdb": command_output([settings.ferretdb, "--version"]).removeprefix("version: "),
        },
    }


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    # Absolute, since the servers run in bench/flask_app; not resolved, so that a venv's python
    # stays the venv's.
    program = os.path.abspath
    add("--mongodb-uri", required=True, help="database server; its bench_* databases are replaced")
    add("--ferretdb", type=program, required=True, help="the FerretDB binary (for its version)")
    add("--ferretdb-pid", type=int, required=True, help="its process, for its CPU time")
    add("--webapp", type=program, required=True, help="the webapp binary (release build)")
    add("--load", type=program, required=True, help="bench-load (load, ceiling, bare server)")
    add("--usage", type=program, required=True, help="the harness's process-usage binary")
    add(
        "--python",
        type=program,
        required=True,
        help="python of the venv with bench/requirements.txt",
    )
    add("--gunicorn", type=program, required=True, help="gunicorn of that venv")
    add("--connections", type=int, default=4, help="connections (ceiling tasks), small workloads")
    add("--duration", type=float, default=10.0, help="seconds of load per small workload")
    add("--large-connections", type=int, default=1, help="connections, 100,000 documents")
    add("--large-duration", type=float, default=60.0, help="seconds of load, 100,000 documents")
    add("--pairs", type=positive, default=3, help="rounds, each running every server once")
    add("--workloads", type=lambda text: text.split(","), help="e.g. post,get_100 (default all)")
    add("--out", type=Path, required=True, help="where to write the raw figures (JSON)")
    return parser.parse_args()


def main():
    settings = arguments()
    # SIGTERM from the calling script unwinds like Ctrl-C, so every server started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    small, large = settings.connections, settings.large_connections
    workloads = [
        Workload("get_100", "GET /data, 100 documents", 100, "GET", settings.duration, small),
        Workload("post", "POST /data, small object", 0, "POST", settings.duration, small),
        # One request reads 100,000 documents through FerretDB for seconds: few connections and
        # a longer run, so that every server completes some requests.
        Workload(
            "get_100k",
            "GET /data, 100,000 documents",
            100_000,
            "GET",
            settings.large_duration,
            large,
        ),
    ]
    chosen = set(settings.workloads or [workload.key for workload in workloads])
    unknown = chosen - {workload.key for workload in workloads}
    if unknown:
        names = ", ".join(workload.key for workload in workloads)
        sys.exit(f"unknown workload(s) {', '.join(sorted(unknown))}: choose among {names}")
    bench = Bench(settings)
    info = machine(settings)
    runs = []
    for workload in (workload for workload in workloads if workload.key in chosen):
        progress(f"{workload.title}: seeding {workload.documents} documents")
        bench.seed(workload)
        # Round after round, so that a change of conditions during the run moves every side
        # of every ratio alike.
        order = [(server, pair) for pair in range(settings.pairs) for server in SERVERS]
        for server, pair in order:
            load = f"{workload.duration:g}s at {workload.connections} connections"
            progress(f"{workload.title}: {server}, round {pair + 1} of {settings.pairs}, {load}")
            figures = bench.run(server, workload)
            progress(
                f"  {figures['rps']:.1f} req/s, p99 {figures['p99_ms']} ms, "
                f"{figures['errors']} errors, peak RSS {figures['peak_rss_mb']:.1f} MB"
            )
            run = {"workload": workload.key, "title": workload.title, "server": server}
            run |= {"pair": pair, "duration": workload.duration}
            run |= {"connections": workload.connections, "pairs": settings.pairs}
            runs.append(run | figures)
    settings.out.write_text(json.dumps({"machine": info, "runs": runs}, indent=2) + "\n")
    progress(f"raw figures in {settings.out}")


if __name__ == "__main__":
    main()
