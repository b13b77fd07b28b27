"""Turns the raw figures of `run.py` into the webapp's benchmark targets: writes the results as
JSON (`{"machine": ..., "results": [{"name", "value", "unit", "target", "better"}, ...]}`) and the
webapp section of BENCHMARKS.md, between its markers, then prints that section.
"""

import argparse
import json
import re
import sys
from pathlib import Path

BEGIN, END = "<!-- webapp:begin -->", "<!-- webapp:end -->"
SERVERS = {
    "webapp": "webapp (release)",
    "flask": "Flask, `python app.py`",
    "gunicorn": "Flask, gunicorn 4 workers",
    "ceiling": "driver-only ceiling",
}
# key: (column heading, unit, which way is better)
METRICS = {
    "rps": ("req/s", "req/s", "higher"),
    "p50_ms": ("p50 ms", "ms", "lower"),
    "p99_ms": ("p99 ms", "ms", "lower"),
    "cpu_ms_per_request": ("CPU ms/req", "ms", "lower"),
    "database_cpu_ms_per_request": ("DB CPU ms/req", "ms", "lower"),
    "idle_rss_mb": ("idle RSS MB", "MB", "lower"),
    "peak_rss_mb": ("peak RSS MB", "MB", "lower"),
    "errors": ("errors", "count", "lower"),
}
RATIO_METRICS = ("rps", "p99_ms", "cpu_ms_per_request", "peak_rss_mb")
# (metric, other server): (target ratio, strict) for every workload. "At most" targets are not
# strict; "above" and "lower than" ones are.
RATIO_TARGETS = {
    ("cpu_ms_per_request", "flask"): (0.1, False),
    ("cpu_ms_per_request", "gunicorn"): (0.2, False),
    ("rps", "ceiling"): (0.8, False),
    ("rps", "flask"): (1.0, True),
    ("rps", "gunicorn"): (1.0, True),
    ("p99_ms", "flask"): (1.0, True),
    ("p99_ms", "gunicorn"): (1.0, True),
}
IDLE_RSS_TARGET_MB = 15.0
PEAK_RSS_TARGET_MB = 64.0
PEAK_RSS_WORKLOAD = "get_100k"


def entry(name, value, unit, better, target=None, strict=False, label=None):
    """One result; `strict`, `label` and `met` serve the table and are not written to JSON."""
    met = None
    if target is not None:
        if value is None:
            met = False
        elif better == "higher":
            met = value > target if strict else value >= target
        else:
            met = value < target if strict else value <= target
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "target": target,
        "better": better,
        "strict": strict,
        "label": label,
        "met": met,
    }


def ratio(a, b):
    return a / b if a is not None and b else None


def results(raw):
    runs = {(run["workload"], run["server"]): run for run in raw["runs"]}
    workloads = list(dict.fromkeys(run["workload"] for run in raw["runs"]))
    titles = {run["workload"]: run["title"] for run in raw["runs"]}
    out = []
    for workload in workloads:
        for server in SERVERS:
            for metric, (_, unit, better) in METRICS.items():
                name = f"{workload}.{server}.{metric}"
                value = runs[workload, server][metric]
                if (workload, server, metric) == (PEAK_RSS_WORKLOAD, "webapp", "peak_rss_mb"):
                    label = f"peak RSS of the webapp, {titles[workload]}"
                    out.append(entry(name, value, unit, better, PEAK_RSS_TARGET_MB, True, label))
                else:
                    out.append(entry(name, value, unit, better))
        webapp = runs[workload, "webapp"]
        for other in ("flask", "gunicorn", "ceiling"):
            for metric in RATIO_METRICS:
                target, strict = RATIO_TARGETS.get((metric, other), (None, False))
                label = f"{METRICS[metric][0]}, webapp / {other}, {titles[workload]}"
                out.append(
                    entry(
                        f"{workload}.webapp_over_{other}.{metric}",
                        ratio(webapp[metric], runs[workload, other][metric]),
                        "ratio",
                        METRICS[metric][2],
                        target,
                        strict,
                        label,
                    )
                )
    idle = max(runs[workload, "webapp"]["idle_rss_mb"] for workload in workloads)
    out.append(
        entry(
            "webapp.idle_rss_mb_max",
            idle,
            "MB",
            "lower",
            IDLE_RSS_TARGET_MB,
            True,
            "idle RSS of the webapp, largest over the workloads",
        )
    )
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


def goal(result):
    sign = {
        ("higher", True): ">",
        ("higher", False): "≥",
        ("lower", True): "<",
        ("lower", False): "≤",
    }
    unit = "" if result["unit"] == "ratio" else f" {result['unit']}"
    return f"{sign[result['better'], result['strict']]} {number(result['target'])}{unit}"


def section(raw, entries):
    machine = raw["machine"]
    by_name = {result["name"]: result for result in entries}
    versions = ", ".join(
        f"{name} {value}" if not value.lower().startswith(name) else value
        for name, value in machine["versions"].items()
    )
    lines = [
        BEGIN,
        "## Webapp",
        "",
        (
            "Generated by `make bench-webapp` (`hack/bench-webapp.sh`); the same figures are in "
            "`target/bench/webapp.json`. Rerun with `make bench-webapp`."
        ),
        "",
        (
            f"- Machine: {machine['cores']} cores ({machine['cpu_model']}), "
            f"{machine['memory_gib']} GiB, Linux {machine['kernel']}; "
            f"load average {machine['load_average_at_start']:.2f} at the start."
        ),
        f"- Versions: {versions}.",
        (
            "- Load: wrk (one thread) on 127.0.0.1, the same number of connections for every "
            "server; the ceiling runs the webapp's queries from as many tasks through the mongodb "
            "driver, with no HTTP. One FerretDB (SQLite) serves everyone. Each server is started "
            "afresh for each workload; CPU time is user + system of the server's process tree "
            "(all gunicorn workers) from /proc during the load; idle RSS is read after one "
            "request, peak RSS is VmHWM, both summed over the process tree."
        ),
        "",
    ]
    workloads = list(dict.fromkeys(run["workload"] for run in raw["runs"]))
    titles = {run["workload"]: run["title"] for run in raw["runs"]}
    load = {run["workload"]: (run["seconds"], run["connections"]) for run in raw["runs"]}
    for workload in workloads:
        seconds, connections = load[workload]
        lines += [
            f"### {titles[workload]} ({seconds:.0f} s of load at {connections} connections)",
            "",
        ]
        lines.append(
            "| server | " + " | ".join(heading for heading, _, _ in METRICS.values()) + " |"
        )
        lines.append("|---|" + "---:|" * len(METRICS))
        for server, name in SERVERS.items():
            cells = [
                number(by_name[f"{workload}.{server}.{metric}"]["value"]) for metric in METRICS
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", "| ratio | " + " | ".join(METRICS[m][0] for m in RATIO_METRICS) + " |"]
        lines.append("|---|" + "---:|" * len(RATIO_METRICS))
        for other in ("flask", "gunicorn", "ceiling"):
            cells = [
                number(by_name[f"{workload}.webapp_over_{other}.{m}"]["value"])
                for m in RATIO_METRICS
            ]
            lines.append(f"| webapp / {other} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Targets", "", "| target | value | goal | |", "|---|---:|---|---|"]
    for result in entries:
        if result["target"] is not None:
            verdict = "met" if result["met"] else "**missed**"
            lines.append(
                f"| {result['label']} | {number(result['value'])} | {goal(result)} | {verdict} |"
            )
    met = sum(1 for result in entries if result["met"])
    total = sum(1 for result in entries if result["target"] is not None)
    lines += ["", f"{met} of {total} targets met.", END]
    return "\n".join(lines)


def write_section(path, text):
    """Replaces the webapp section of `path` (between its markers), keeping everything else."""
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="the raw figures written by run.py")
    parser.add_argument("--json", type=Path, required=True, help="where to write the results")
    parser.add_argument("--markdown", type=Path, required=True, help="BENCHMARKS.md to update")
    args = parser.parse_args()
    raw = json.loads(args.raw.read_text())
    entries = results(raw)
    public = [
        {key: result[key] for key in ("name", "value", "unit", "target", "better")}
        for result in entries
    ]
    args.json.write_text(
        json.dumps({"machine": raw["machine"], "results": public}, indent=2) + "\n"
    )
    text = section(raw, entries)
    write_section(args.markdown, text)
    print(text)
    missed = [result["name"] for result in entries if result["met"] is False]
    if missed:
        print(f"\nmissed: {', '.join(missed)}", file=sys.stderr)


if __name__ == "__main__":
    main()
