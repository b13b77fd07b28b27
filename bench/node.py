"""Measures the webapp on the real node of the local stack, where `hack/bench-node.sh` has
installed the operator and one `FlaskMongoApp`, and writes the raw figures as JSON; `report.py
node` turns them into the real node's section of BENCHMARKS.md.

Two parts:

- The network: the same webapp binary as the image's, run as a plain process on this machine,
  against the app's web pod at its pod address and behind its NodePort (kube-proxy), all three
  on the app's own MongoDB pod, in rounds of process, pod, NodePort, so that the cost of the
  pod network and of kube-proxy are ratios taken round by round.
- The autoscaler: the app is switched to autoscaling, loaded through its NodePort, and the
  replicas of its web Deployment are read every second: when the first added pod is Ready,
  when the replicas stop changing, and how long after the load they are back at the minimum.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import Workload, http_load, launched, positive, progress, request, wait_ready  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "hack"))
from free_ports import free_ports  # noqa: E402

# The parts of the benchmark, in their order; the autoscaler part changes the app.
PARTS = ("network", "autoscaler")
# The sides of each round of the network part, in their order.
SIDES = ("process", "pod", "nodeport")
KUBECTL_TIMEOUT = 60
# The autoscaler settings of the second part; the scale-down window is short so that the way
# back to the minimum is seen within the run.
AUTOSCALING = {
    "enabled": True,
    "minReplicas": 2,
    "maxReplicas": 4,
    "targetCPUUtilizationPercentage": 50,
    "scaleDownStabilizationWindowSeconds": 15,
}
# A request small enough that the load moves the autoscaler on two shared cores.
AUTOSCALED_CPU_REQUEST = "20m"
AUTOSCALER_CONNECTIONS = 4
# The replicas count as settled when they held for this long before the load ended.
SETTLED_HOLD_SECONDS = 20
# Before each load the replicas hold at the minimum this long: an earlier load's metrics age out.
CALM_HOLD_SECONDS = 20
CALM_TIMEOUT = 300
RETURN_TIMEOUT = 300


class Cluster:
    """kubectl on the app's namespace."""

    def __init__(self, namespace, app):
        self.namespace, self.app = namespace, app

    def kubectl(self, *args):
        argv = ["kubectl", "-n", self.namespace, *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT)
        if done.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def get(self, kind, name=None, selector=None):
        args = ["get", kind, *([name] if name else []), "-o", "json"]
        args += ["-l", selector] if selector else []
        return json.loads(self.kubectl(*args))

    def app_object(self):
        return self.get("flaskmongoapp", self.app)

    def ready_pod_address(self, component):
        """The address of the app's one Ready pod of `component`."""
        selector = f"app.kubernetes.io/instance={self.app},app.kubernetes.io/component={component}"
        pods = [
            pod
            for pod in self.get("pods", selector=selector)["items"]
            if "deletionTimestamp" not in pod["metadata"]
            and any(
                condition["type"] == "Ready" and condition["status"] == "True"
                for condition in pod["status"].get("conditions", [])
            )
        ]
        if len(pods) != 1:
            sys.exit(f"expected one Ready {component} pod of {self.app}, found {len(pods)}")
        return pods[0]["status"]["podIP"]

    def mongodb_uri(self, mongo_address):
        """The web pods' MONGODB_URI with the credentials their kubelet fills in, and the
        MongoDB pod's address in place of its cluster DNS name (this machine's resolver does
        not know the cluster's names)."""
        deployment = self.get("deployment", f"{self.app}-web")
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        env = {var["name"]: var for var in container["env"]}
        secret = self.get("secret", self.app_object()["status"]["credentialsSecret"])
        uri = env["MONGODB_URI"]["value"]
        for name in ("MONGO_USERNAME", "MONGO_PASSWORD"):
            key = env[name]["valueFrom"]["secretKeyRef"]["key"]
            value = base64.b64decode(secret["data"][key]).decode()
            uri = uri.replace(f"$({name})", urllib.parse.quote(value, safe=""))
        parts = urllib.parse.urlsplit(uri)
        credentials = parts.netloc.rpartition("@")[0]
        return parts._replace(netloc=f"{credentials}@{mongo_address}:{parts.port}").geturl()

    def replicas(self):
        """The web Deployment's wanted, current and Ready replicas, and the autoscaler's wish."""
        deployment = self.get("deployment", f"{self.app}-web")
        hpa = self.get("hpa", f"{self.app}-web")
        return {
            "wanted": deployment["spec"]["replicas"],
            "current": deployment["status"].get("replicas", 0),
            "ready": deployment["status"].get("readyReplicas", 0),
            "desired": hpa["status"].get("desiredReplicas"),
        }


@contextmanager
def plain_webapp(settings, uri, logs):
    """The image's webapp binary as a process of this machine, on the pods' database."""
    [port] = free_ports(1)
    argv = [settings.webapp, "--listen-address=127.0.0.1", f"--port={port}"]
    log = logs / "process.log"
    with launched(argv, log, env={**os.environ, "MONGODB_URI": uri}) as proc:
        wait_ready(proc, port, log)
        yield f"127.0.0.1:{port}"


def seed(settings, uri, count):
    argv = [settings.load, "seed", f"--mongodb-uri={uri}", f"--count={count}"]
    if subprocess.run(argv, timeout=600, check=False).returncode != 0:
        sys.exit("seeding the app's database failed (the error is above)")


def network(settings, cluster, uri, logs):
    """Rounds of process, pod and NodePort on each workload."""
    app = cluster.app_object()
    small = (settings.duration, settings.connections)
    workloads = [
        Workload("get_100", "GET /data, 100 documents", 100, "GET", *small),
        Workload("post", "POST /data, small object", 0, "POST", *small),
    ]
    runs = []
    with plain_webapp(settings, uri, logs) as process_address:
        addresses = {
            "process": process_address,
            "pod": f"{cluster.ready_pod_address('web')}:{app['spec']['web']['port']}",
            "nodeport": f"{settings.node_address}:{app['status']['nodePort']}",
        }
        for workload in workloads:
            if workload.documents:
                progress(f"{workload.title}: seeding {workload.documents} documents")
                seed(settings, uri, workload.documents)
            for pair in range(settings.pairs):
                for side in SIDES:
                    address = addresses[side]
                    progress(f"{workload.title}: {side} ({address}), round {pair + 1}")
                    request(address, workload)
                    result = http_load(settings.load, address, workload)
                    rps = result["requests"] / result["seconds"] if result["seconds"] else 0.0
                    p99 = "—" if result["p99_ms"] is None else f"{result['p99_ms']:.1f}"
                    progress(f"  {rps:.1f} req/s, p99 {p99} ms, {result['errors']} errors")
                    run = {"workload": workload.key, "title": workload.title, "server": side}
                    run |= {"pair": pair, "pairs": settings.pairs, "duration": workload.duration}
                    run |= {"connections": workload.connections, "rps": rps}
                    runs.append(run | result)
    return runs


def wait_until(what, timeout, condition):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    sys.exit(f"{what}: not within {timeout} s")


def at_minimum(cluster):
    minimum = AUTOSCALING["minReplicas"]
    return set(cluster.replicas().values()) == {minimum}


def calm(cluster):
    """At the minimum, and held there: the metrics of an earlier load have aged out."""

    def held():
        if not at_minimum(cluster):
            return False
        time.sleep(CALM_HOLD_SECONDS)
        return at_minimum(cluster)

    wait_until("the web pods at their minimum", CALM_TIMEOUT, held)


def timings(timeline, load_seconds):
    """From the replicas read each second during the load: when the first added pod was Ready,
    and when the Ready replicas last changed if they then held until the load's end."""
    minimum = AUTOSCALING["minReplicas"]
    added = [point["second"] for point in timeline if point["ready"] > minimum]
    changes = [
        later["second"]
        for earlier, later in zip(timeline, timeline[1:])
        if later["ready"] != earlier["ready"]
    ]
    settled = bool(changes) and load_seconds - changes[-1] >= SETTLED_HOLD_SECONDS
    return {
        "first_added_ready_s": added[0] if added else None,
        "settled_s": changes[-1] if settled else None,
        "settled_replicas": timeline[-1]["ready"] if settled else None,
    }


def autoscaler_run(settings, cluster, address):
    """One load through the NodePort, with the replicas read every second, then the way back."""
    calm(cluster)
    workload = Workload(
        "get_100", "GET /data", 100, "GET", settings.autoscaler_load, AUTOSCALER_CONNECTIONS
    )
    progress(f"autoscaler: {workload.duration:g} s of {workload.title} on {address}")
    outcome = {}
    loader = threading.Thread(
        target=lambda: outcome.update(http_load(settings.load, address, workload))
    )
    started = time.monotonic()
    loader.start()
    timeline = []
    while loader.is_alive():
        timeline.append({"second": time.monotonic() - started} | cluster.replicas())
        time.sleep(1)
    load_seconds = time.monotonic() - started
    if not outcome:
        sys.exit("the autoscaler's load failed (the error is above)")
    ended = time.monotonic()
    minimum = AUTOSCALING["minReplicas"]

    def back():
        replicas = cluster.replicas()
        return replicas["wanted"] == minimum and replicas["current"] == minimum

    wait_until("the web pods back at their minimum after the load", RETURN_TIMEOUT, back)
    figures = timings(timeline, load_seconds) | {"back_to_minimum_s": time.monotonic() - ended}
    progress(f"  {figures}")
    figures |= {"load_seconds": load_seconds, "timeline": timeline}
    return figures | {key: outcome[key] for key in ("requests", "errors")}


def autoscaler(settings, cluster, uri):
    # The network part's POSTs grew the collection: its GETs would be another workload.
    seed(settings, uri, 100)
    web = {"resources": {"requests": {"cpu": AUTOSCALED_CPU_REQUEST}}}
    patch = json.dumps({"spec": {"autoscaling": AUTOSCALING, "web": web}})
    cluster.kubectl("patch", "flaskmongoapp", settings.app, "--type=merge", "-p", patch)
    address = f"{settings.node_address}:{cluster.app_object()['status']['nodePort']}"
    return [autoscaler_run(settings, cluster, address) for _ in range(settings.autoscaler_runs)]


def parts(text):
    chosen = text.split(",")
    unknown = set(chosen) - set(PARTS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(sorted(unknown))}: "
                                         f"choose among {', '.join(PARTS)}")
    return chosen


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--namespace", required=True, help="the app's namespace")
    add("--app", required=True, help="the FlaskMongoApp, at one web replica without autoscaling")
    add("--webapp", type=os.path.abspath, required=True, help="the image's webapp binary")
    add("--load", type=os.path.abspath, required=True, help="the bench-load binary")
    add("--node-address", required=True, help="where the node's NodePorts listen")
    add("--versions", type=json.loads, required=True, help="the stack's versions (JSON object)")
    add("--connections", type=positive, default=4, help="connections of the network part")
    add("--duration", type=float, default=10.0, help="seconds of load per run of the network part")
    add("--pairs", type=positive, default=3, help="rounds of process, pod and NodePort")
    add("--autoscaler-runs", type=positive, default=3, help="loads of the autoscaler part")
    add("--autoscaler-load", type=float, default=120.0, help="seconds of each of those loads")
    add("--parts", type=parts, default=PARTS, help="network,autoscaler (the default) or one")
    add("--out", type=Path, required=True, help="where to write the raw figures (JSON)")
    return parser.parse_args()


def main():
    settings = arguments()
    cluster = Cluster(settings.namespace, settings.app)
    logs = settings.out.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    machine = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    machine |= {"load_average_at_start": os.getloadavg()[0], "versions": settings.versions}
    document = {"machine": machine, "runs": []}
    uri = cluster.mongodb_uri(cluster.ready_pod_address("mongo"))
    if "network" in settings.parts:
        document["runs"] = network(settings, cluster, uri, logs)
    if "autoscaler" in settings.parts:
        document["autoscaler"] = {
            "settings": AUTOSCALING | {"cpuRequest": AUTOSCALED_CPU_REQUEST},
            "connections": AUTOSCALER_CONNECTIONS,
            "calm_hold_seconds": CALM_HOLD_SECONDS,
            "settled_hold_seconds": SETTLED_HOLD_SECONDS,
            "runs": autoscaler(settings, cluster, uri),
        }
    settings.out.write_text(json.dumps(document, indent=2) + "\n")
    progress(f"raw figures in {settings.out}")


if __name__ == "__main__":
    main()
