"""The one generator of BENCHMARKS.md, one section at a time, each between its markers (the
other section stays as it is):

  report.py webapp     the raw figures of run.py (target/bench/webapp-raw.json) become the
                       webapp's results (target/bench/webapp.json) and its section
  report.py operator   the results of bench/operator-bench (target/bench/operator.json,
                       and further runs in target/bench/operator-NAME.json) become the
                       operator's section
  report.py node       the raw figures of node.py (target/bench/node-raw.json) become the
                       real node's results (target/bench/node.json) and its section

Every result, in every JSON file, is {"name", "value", "unit", "target", "better", "strict"}: a
script can check every target from them. The notes under each section are bench/notes/*.md.
"""

import argparse
import json
import os
import platform
import re
import sys
from statistics import median
from pathlib import Path

BENCH = Path(__file__).resolve().parent
NOTES = BENCH / "notes"
BARE = "bare"
SERVERS = {
    "webapp": "webapp (release)",
    "flask": "Flask, `python app.py`",
    "gunicorn": "Flask, gunicorn 4 workers",
    "ceiling": "driver-only ceiling",
    BARE: "ceiling behind a bare HTTP server",
}
# key: (column heading, unit, which way is better)
METRICS = {
    "rps": ("req/s", "req/s", "higher"),
    "p50_ms": ("p50 ms", "ms", "lower"),
    "p99_ms": ("p99 ms", "ms", "lower"),
    "cpu_ms_per_request": ("CPU ms/req", "ms", "lower"),
    # The same time split into the server's own code and the kernel's work for it (its sockets,
    # waits and wake-ups), so that a distance to the ceiling can be traced to one or the other.
    "user_cpu_ms_per_request": ("user CPU ms/req", "ms", "lower"),
    "system_cpu_ms_per_request": ("kernel CPU ms/req", "ms", "lower"),
    "database_cpu_ms_per_request": ("DB CPU ms/req", "ms", "lower"),
    "idle_rss_mb": ("idle RSS MB", "MB", "lower"),
    "peak_rss_mb": ("peak RSS MB", "MB", "lower"),
    "errors": ("errors", "count", "lower"),
}
RATIO_METRICS = (
    "rps",
    "p99_ms",
    "cpu_ms_per_request",
    "user_cpu_ms_per_request",
    "system_cpu_ms_per_request",
    "peak_rss_mb",
)
# The ceiling's own ratios show how far the database driver alone gets towards a target; the
# bare server's split the webapp's distance to the ceiling into what serving HTTP costs any
# server and what the webapp's own layers cost.
RATIOS = (
    ("webapp", "ceiling"),
    (BARE, "ceiling"),
    ("webapp", BARE),
    ("webapp", "flask"),
    ("webapp", "gunicorn"),
    ("ceiling", "flask"),
    ("ceiling", "gunicorn"),
)
# (metric, other server): (target of webapp / other, strict) for every workload. The "at most"
# and "at least" targets are not strict; the "above" and "lower than" ones are. The ceiling is
# the limit the webapp is held to; Flask and gunicorn are the reference users know.
RATIO_TARGETS = {
    ("cpu_ms_per_request", "ceiling"): (1.3, False),
    ("p99_ms", "ceiling"): (1.5, False),
    ("rps", "ceiling"): (0.9, False),
    ("rps", "flask"): (1.0, True),
    ("rps", "gunicorn"): (1.0, True),
    ("p99_ms", "flask"): (1.0, True),
    ("p99_ms", "gunicorn"): (1.0, True),
}
IDLE_RSS_TARGET_MB = 10.0
PEAK_RSS_TARGET_MB = 16.0
PEAK_RSS_WORKLOAD = "get_100k"
PUBLIC_KEYS = ("name", "value", "unit", "target", "better", "strict")


def met(result):
    """Whether `result` meets its target (`None` without one); a target with no value (a server
    that completed no request, a wait that ran out) counts as missed."""
    target, value, strict = result["target"], result["value"], result["strict"]
    if target is None:
        return None
    if value is None:
        return False
    if result["better"] == "higher":
        return value > target if strict else value >= target
    return value < target if strict else value <= target


def entry(name, values, unit, better, target=None, strict=False, label=None):
    """One result from the values of its runs: their median, and with more than one run their
    minimum and maximum. `label` names it in the table of targets and is not written to JSON."""
    values = [value for value in values if value is not None]
    result = {"name": name, "value": median(values) if values else None, "unit": unit}
    result |= {"target": target, "better": better, "strict": strict, "label": label}
    if len(values) > 1:
        result |= {"min": min(values), "max": max(values)}
    return result | {"met": met(result)}


def public(result):
    """A result as the JSON files hold it: the keys every result has, and a range if it has one."""
    keys = PUBLIC_KEYS + (("min", "max") if "min" in result else ())
    return {key: result[key] for key in keys}


def ratios(runs, others, metric):
    """`metric` of `runs` over that of `others`: pair by pair where both sides were measured in
    alternating pairs, else the median of one over the median of the other."""
    paired = {run["pair"]: run[metric] for run in others if run.get("pair") is not None}
    if paired and all(run.get("pair") in paired for run in runs):
        return [quotient(run[metric], paired[run["pair"]]) for run in runs]
    return [quotient(middle(runs, metric), middle(others, metric))]


def middle(runs, metric):
    values = [run[metric] for run in runs if run[metric] is not None]
    return median(values) if values else None


def quotient(a, b):
    return a / b if a is not None and b else None


def by_workload_and_server(raw):
    """The runs of `raw`, grouped by workload and server (or side)."""
    runs = {}
    for run in raw["runs"]:
        runs.setdefault((run["workload"], run["server"]), []).append(run)
    return runs


def sides(runs, workload):
    """The servers measured on `workload`, in the order of `SERVERS`."""
    return [server for server in SERVERS if (workload, server) in runs]


def ratio_pairs(runs, workload):
    """The ratios whose two sides were both measured on `workload`."""
    measured = sides(runs, workload)
    return [(a, b) for a, b in RATIOS if a in measured and b in measured]


def results(raw):
    runs = by_workload_and_server(raw)
    workloads = list(dict.fromkeys(run["workload"] for run in raw["runs"]))
    titles = {run["workload"]: run["title"] for run in raw["runs"]}
    out = []
    for workload in workloads:
        for server in sides(runs, workload):
            for metric, (_, unit, better) in METRICS.items():
                name = f"{workload}.{server}.{metric}"
                values = [run[metric] for run in runs[workload, server]]
                if (workload, server, metric) == (PEAK_RSS_WORKLOAD, "webapp", "peak_rss_mb"):
                    label = f"peak RSS of the webapp, {titles[workload]}"
                    out.append(entry(name, values, unit, better, PEAK_RSS_TARGET_MB, True, label))
                else:
                    out.append(entry(name, values, unit, better))
        for server, other in ratio_pairs(runs, workload):
            for metric in RATIO_METRICS:
                name = f"{workload}.{server}_over_{other}.{metric}"
                values = ratios(runs[workload, server], runs[workload, other], metric)
                better = METRICS[metric][2]
                if server == "webapp" and (metric, other) in RATIO_TARGETS:
                    target, strict = RATIO_TARGETS[metric, other]
                    label = f"{METRICS[metric][0]}, webapp / {other}, {titles[workload]}"
                    out.append(entry(name, values, "ratio", better, target, strict, label))
                else:
                    out.append(entry(name, values, "ratio", better))
    idle = [middle(runs[workload, "webapp"], "idle_rss_mb") for workload in workloads]
    label = "idle RSS of the webapp (median), largest over the workloads"
    name = "webapp.idle_rss_mb_max"
    out.append(entry(name, [max(idle)], "MB", "lower", IDLE_RSS_TARGET_MB, True, label))
    return out


def number(value):
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def figure(result):
    """The value, with the range of its runs when there was more than one."""
    if result.get("min") is None:
        return number(result["value"])
    return f"{number(result['value'])} ({number(result['min'])}–{number(result['max'])})"


def goal(result):
    sign = {
        ("higher", True): ">",
        ("higher", False): "≥",
        ("lower", True): "<",
        ("lower", False): "≤",
    }[result["better"], result["strict"]]
    unit = "" if result["unit"] == "ratio" else f" {result['unit']}"
    return f"{sign} {number(result['target'])}{unit}"


def table(header, rows, align=None):
    """A Markdown table; `align` has one `---` (left) or `---:` (right) a column, by default
    the first column left and the figures right."""
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_line():
    """This machine, read when the report is written, right after the benchmark on it."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    meminfo = Path("/proc/meminfo").read_text().split()
    memory_gib = int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20
    model = models[0] if models else "unknown"
    return f"{os.cpu_count()} cores ({model}), {memory_gib:.1f} GiB, Linux {platform.release()}"


def targets_table(results, name_of):
    """The table of the results that have a target, and how many of them are met."""
    targets = [result for result in results if result["target"] is not None]
    rows = [
        [
            name_of(result),
            figure(result),
            goal(result),
            "met" if result["met"] else "**missed**",
        ]
        for result in targets
    ]
    lines = table(["target", "value", "goal", ""], rows, ["---", "---:", "---", "---"])
    met_count = sum(1 for result in targets if result["met"])
    return lines + ["", f"{met_count} of {len(targets)} targets met."]


def versions_line(versions):
    """Each program's version, named once where its version string names it already."""
    return ", ".join(
        text if text.lower().startswith(name.lower()) else f"{name} {text}"
        for name, text in versions.items()
    )


def notes(name):
    return (NOTES / f"{name}.md").read_text().rstrip("\n").split("\n")


def webapp_section(raw, entries):
    machine = raw["machine"]
    by_name = {result["name"]: result for result in entries}
    versions = versions_line(machine["versions"])
    lines = [
        "## Webapp",
        "",
        (
            "Generated by `make bench-webapp` (`hack/bench-webapp.sh`), which also writes the "
            "figures to `target/bench/webapp.json`. Rerun with `make bench-webapp`; each "
            "workload alone with the command under its heading."
        ),
        "",
        (
            f"- Machine: {machine_line()}; "
            f"load average {machine['load_average_at_start']:.2f} at the start."
        ),
        f"- Versions: {versions}.",
        (
            "- Load: `bench-load` (bench/load) on 127.0.0.1, one closed loop for every side: "
            "as many tasks as connections, each sending one request after another over its "
            "keep-alive connection and reading every response to its end; for the ceiling the "
            "same tasks run the webapp's queries straight through the mongodb driver on the "
            "webapp's one thread, with no HTTP (on POST one insert per request, where the "
            "webapp sends the documents of the requests that arrive while an insert is out "
            "together). A third side, the ceiling behind a bare HTTP server (`bench-load "
            "serve`: hyper alone on the webapp's one thread, the ceiling's read or insert, the "
            "webapp's answer, on GET its documents written by the webapp's own code in one "
            "body; no routing, middleware, streaming, validation, metrics or log line), splits "
            "the webapp's distance to the ceiling into what serving HTTP costs any server and "
            "what the webapp's own layers cost. Latency is timed per request by the "
            "same code on every side. One FerretDB (SQLite) serves everyone, on the same two "
            "cores."
        ),
        (
            "- Method: every server runs once per round, in turn (the webapp, the ceiling, the "
            "bare server, then Flask's server and gunicorn), round after round, so that a "
            "change of conditions during the run moves every side of every ratio alike. "
            "Tables give the median of a server's runs; a ratio is taken round by round and "
            "given as its median (minimum–maximum); a target is met when the median meets it."
        ),
        (
            "- Each server is started afresh for each run. CPU ms/req: user + system CPU "
            "time of the server's process tree (all gunicorn workers) from /proc during the "
            "load, per completed request, then split into user CPU ms/req (the server's own "
            "code and its libraries) and kernel CPU ms/req (system time: its sockets, waits "
            "and wake-ups), as the kernel's timer ticks sample the two; DB CPU ms/req: "
            "FerretDB's over the same time. Idle "
            "RSS is read after one request, peak RSS is VmHWM; both are summed over the "
            "process tree."
        ),
        "",
    ]
    grouped = by_workload_and_server(raw)
    runs = {run["workload"]: run for run in raw["runs"]}
    for workload, run in runs.items():
        load = f"{run['duration']:g} s of load at {run['connections']} connections"
        bare = ", the bare server" if BARE in sides(grouped, workload) else ""
        rounds = f"{run['pairs']} rounds of the webapp, the ceiling{bare}, Flask and gunicorn"
        rerun = f"`BENCH_WORKLOADS={workload} make bench-webapp`"
        lines += [f"### {run['title']} ({load}, {rounds})", "", f"Rerun alone: {rerun}.", ""]
        header = ["server"] + [heading for heading, _, _ in METRICS.values()]
        rows = [
            [SERVERS[server]]
            + [number(by_name[f"{workload}.{server}.{m}"]["value"]) for m in METRICS]
            for server in sides(grouped, workload)
        ]
        lines += table(header, rows) + [""]
        header = ["ratio"] + [METRICS[metric][0] for metric in RATIO_METRICS]
        rows = [
            [f"{server} / {other}"]
            + [figure(by_name[f"{workload}.{server}_over_{other}.{m}"]) for m in RATIO_METRICS]
            for server, other in ratio_pairs(grouped, workload)
        ]
        lines += table(header, rows) + [""]
    lines += ["### Targets", ""] + targets_table(entries, lambda result: result["label"])
    return lines + [""] + notes("webapp")


def operator_section(document, further):
    """The main run, then the further runs (each at other settings) and the memory slope over
    all of them."""
    machine = document["machine"]
    parallelism = machine["parallelism"]
    results = [result | {"met": met(result)} for result in document["results"]]
    lines = [
        "## Operator",
        "",
        (
            "Generated by `make bench-operator` (`hack/bench-operator.sh`: a stack of its own, "
            "the release binary), which also writes the figures to "
            "`target/bench/operator.json` and the operator's logs to "
            "`target/bench/operator-logs/`. Rerun with `make bench-operator`; parts alone with "
            "the commands in the method below."
        ),
        "",
        (
            f"- Run: {machine['date']}. Machine: {machine_line()}; load average at the end of "
            f"the run {machine['load_average_at_end']} (the local stack and the benchmark "
            "included)."
        ),
        (
            f"- Control plane: the local stack (kube-apiserver {machine['kube_apiserver']}, "
            f"controller-manager, scheduler, {machine['simulated_nodes']} kwok simulated nodes, "
            "all on this machine)."
        ),
        (
            f"- Operator: {machine['operator']}, release build built with {machine['rustc']}, "
            "run as a separate process, one per measurement. Parallelism: "
            f"{parallelism} requests in flight from the benchmark's client, `--concurrency "
            f"{parallelism}` in the operator, {parallelism} objects at once in the baseline."
        ),
        "",
    ]
    lines += operator_results(results, "###") + [""]
    for run in further:
        run_machine = run["machine"]
        lines += [
            f"### Further run: `hack/bench-operator.sh {run_machine['arguments']}`",
            "",
            (
                f"Run: {run_machine['date']}, {run_machine['simulated_nodes']} kwok simulated "
                f"nodes, load average at the end {run_machine['load_average_at_end']}."
            ),
            "",
        ]
        # A further run skips parts (`--samples 0`): their empty figures are left out.
        measured = [result for result in run["results"] if result["value"] is not None]
        run_results = [result | {"met": met(result)} for result in measured]
        lines += operator_results(run_results, "####") + [""]
    slope = memory_slope([document, *further])
    if further and slope is not None:
        lines += [
            (
                f"Peak RSS per 1,000 objects over the main and the further runs (least squares "
                f"through the idle process and each scale's median): {number(slope)} MB."
            ),
            "",
        ]
    return lines + notes("operator-method") + [""] + notes("operator")


def operator_results(results, level):
    """The table of a run's figures, and that of its targets under a heading of `level`."""
    rows = [[result["name"], figure(result), result["unit"]] for result in results]
    lines = table(["figure", "value", "unit"], rows, ["---", "---:", "---"]) + [""]
    return lines + [f"{level} Targets", ""] + targets_table(results, lambda result: result["name"])


PEAK_RSS = re.compile(r"^(\d+) objects: peak RSS$")


def memory_slope(documents):
    """MB per 1,000 objects: the least-squares slope through every `N objects: peak RSS`."""
    points = [
        (int(match[1]), result["value"])
        for document in documents
        for result in document["results"]
        if (match := PEAK_RSS.match(result["name"])) and result["value"] is not None
    ]
    if len({objects for objects, _ in points}) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    together = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return together / spread * 1000





# The real node's sides of the network part, and the ratios between them: what the pod network
# adds (pod / process), and what kube-proxy adds on top (NodePort / pod).
NODE_SIDES = {
    "process": "the image's webapp binary as a process of this machine",
    "pod": "the web pod, at its pod address",
    "nodeport": "the web pod behind its NodePort (kube-proxy)",
}
NODE_METRICS = ("rps", "p50_ms", "p99_ms", "errors")
NODE_RATIOS = (("pod", "process"), ("nodeport", "process"), ("nodeport", "pod"))
NODE_RATIO_METRICS = ("rps", "p99_ms")
# key: (what it measures, unit)
AUTOSCALER_FIGURES = {
    "first_added_ready_s": ("start of load → first added web pod Ready", "s"),
    "settled_s": ("start of load → Ready replicas stop changing", "s"),
    "settled_replicas": ("Ready replicas once settled", "count"),
    "back_to_minimum_s": ("end of load → back at minReplicas", "s"),
}


def node_results(raw):
    runs = by_workload_and_server(raw)
    out = []
    for workload in dict.fromkeys(run["workload"] for run in raw["runs"]):
        for side in NODE_SIDES:
            for metric in NODE_METRICS:
                _, unit, better = METRICS[metric]
                values = [run[metric] for run in runs[workload, side]]
                out.append(entry(f"node.{workload}.{side}.{metric}", values, unit, better))
        for side, other in NODE_RATIOS:
            for metric in NODE_RATIO_METRICS:
                values = ratios(runs[workload, side], runs[workload, other], metric)
                name = f"node.{workload}.{side}_over_{other}.{metric}"
                out.append(entry(name, values, "ratio", METRICS[metric][2]))
    for key, (_, unit) in AUTOSCALER_FIGURES.items() if "autoscaler" in raw else ():
        values = [run[key] for run in raw["autoscaler"]["runs"]]
        out.append(entry(f"node.autoscaler.{key}", values, unit, "lower"))
    return out


def node_section(raw, entries):
    """The real node's section: the network part and the autoscaler part, each if it ran."""
    machine = raw["machine"]
    versions = versions_line(machine["versions"])
    lines = [
        "## Real node",
        "",
        (
            "Generated by `make bench-node` (`hack/bench-node.sh`: a real-node stack of its own, "
            "the operator installed with `kubectl apply -k config/default`, one `FlaskMongoApp` "
            "with the MongoDB stand-in), which also writes the figures to "
            "`target/bench/node.json`. These figures have no targets: they measure what the pod "
            "network, kube-proxy and the autoscaler cost."
        ),
        "",
        (
            f"- Run: {machine['date']}. Machine: {machine_line()}; load average "
            f"{machine['load_average_at_start']:.2f} at the start. Versions: {versions}."
        ),
    ]
    by_name = {result["name"]: result for result in entries}
    if raw["runs"]:
        lines += node_network_lines(raw["runs"], by_name)
    if "autoscaler" in raw:
        lines += node_autoscaler_lines(raw["autoscaler"], by_name)
    return lines + [""] + notes("node")


def node_network_lines(runs, by_name):
    first = runs[0]
    lines = [
        (
            "- Network: one web pod (no autoscaler; a CPU limit of 2 on the web and MongoDB "
            "pods, so that no limit throttles either), loaded by `bench-load` on this machine "
            f"in rounds of one run per side, {first['pairs']} rounds of {first['duration']:g} s "
            f"at {first['connections']} connections; every side uses the app's own MongoDB "
            "pod. Ratios are taken round by round and given as their median "
            "(minimum–maximum). Rerun: `BENCH_NODE_PARTS=network make bench-node`."
        ),
        "",
    ]
    sides = [[side, what] for side, what in NODE_SIDES.items()]
    lines += table(["side", "what"], sides, ["---", "---"]) + [""]
    for workload, title in dict.fromkeys((run["workload"], run["title"]) for run in runs):
        lines += [f"### {title}", ""]
        header = ["side"] + [METRICS[metric][0] for metric in NODE_METRICS]
        rows = [
            [side] + [figure(by_name[f"node.{workload}.{side}.{m}"]) for m in NODE_METRICS]
            for side in NODE_SIDES
        ]
        lines += table(header, rows) + [""]
        header = ["ratio"] + [METRICS[metric][0] for metric in NODE_RATIO_METRICS]
        rows = [
            [f"{side} / {other}"]
            + [figure(by_name[f"node.{workload}.{side}_over_{other}.{metric}"])
               for metric in NODE_RATIO_METRICS]
            for side, other in NODE_RATIOS
        ]
        lines += table(header, rows) + [""]
    return lines


def node_autoscaler_lines(scaling, by_name):
    settings = scaling["settings"]
    runs = scaling["runs"]
    lines = [
        "### Autoscaler",
        "",
        (
            f"{len(runs)} runs, each from a calm start (the replicas at the minimum for "
            f"{scaling['calm_hold_seconds']} s): {runs[0]['load_seconds']:.0f} s of `GET /data` "
            f"(100 documents) through the NodePort at {scaling['connections']} connections, "
            "the web Deployment's replicas read every second. Autoscaling "
            f"{settings['minReplicas']}–{settings['maxReplicas']} replicas at "
            f"{settings['targetCPUUtilizationPercentage']} % of a CPU request of "
            f"{settings['cpuRequest']}, scale-down stabilization window "
            f"{settings['scaleDownStabilizationWindowSeconds']} s; the stack's controller-manager "
            "syncs autoscalers every 5 s and metrics-server scrapes every 10 s. The replicas "
            f"count as settled when they held for {scaling['settled_hold_seconds']} s before the "
            "load ended. Median (minimum–maximum). Rerun: "
            "`BENCH_NODE_PARTS=autoscaler make bench-node`."
        ),
        "",
    ]
    rows = [
        [what, figure(by_name[f"node.autoscaler.{key}"]), unit]
        for key, (what, unit) in AUTOSCALER_FIGURES.items()
    ]
    return lines + table(["figure", "value", "unit"], rows, ["---", "---:", "---"])


def write_section(path, name, lines):
    """Replaces the section `name` of `path` (between its markers), keeping everything else."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = "\n".join([begin, *lines, end])
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)
    print(text)


def from_raw(bench_dir, markdown, name, results_of, section_of):
    """A section whose results are computed here from the raw figures `NAME-raw.json`: they
    are written to `NAME.json`, the section to `markdown`."""
    raw = json.loads((bench_dir / f"{name}-raw.json").read_text())
    entries = results_of(raw)
    document = {"machine": raw["machine"], "results": [public(result) for result in entries]}
    (bench_dir / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    write_section(markdown, name, section_of(raw, entries))
    return entries


def webapp(bench_dir, markdown):
    return from_raw(bench_dir, markdown, "webapp", results, webapp_section)


def operator(bench_dir, markdown):
    """The main run (operator.json) and the further runs (operator-NAME.json)."""
    main_run = bench_dir / "operator.json"
    if not main_run.is_file():
        # The section's table is the main run's: further runs alone would replace it.
        sys.exit(
            f"{main_run} is missing: the operator's section is written from a main run "
            "(`make bench-operator`); the section was left as it is"
        )
    document = json.loads(main_run.read_text())
    further = [json.loads(path.read_text()) for path in sorted(bench_dir.glob("operator-*.json"))]
    write_section(markdown, "operator", operator_section(document, further))
    runs = [document, *further]
    return [result | {"met": met(result)} for run in runs for result in run["results"]]


def node(bench_dir, markdown):
    return from_raw(bench_dir, markdown, "node", node_results, node_section)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sections = ("webapp", "operator", "node")
    parser.add_argument("section", choices=sections, help="the section to write")
    parser.add_argument(
        "--bench-dir", type=Path, default=Path("target/bench"), help="where the figures are"
    )
    parser.add_argument(
        "--markdown", type=Path, default=Path("BENCHMARKS.md"), help="the report to update"
    )
    args = parser.parse_args()
    write = {"webapp": webapp, "operator": operator, "node": node}[args.section]
    entries = write(args.bench_dir, args.markdown)
    missed = [result["name"] for result in entries if result["met"] is False]
    if missed:
        print(f"\nmissed: {', '.join(missed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
