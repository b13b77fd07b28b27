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
# The ceiling's own ratios show how far the database driver alone gets towards a target.
RATIOS = (
    ("webapp", "flask"),
    ("webapp", "gunicorn"),
    ("webapp", "ceiling"),
    ("ceiling", "flask"),
    ("ceiling", "gunicorn"),
)
# (metric, other server): (target of webapp / other, strict) for every workload. The "at most"
# targets are not strict; the "above" and "lower than" ones are.
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
    """One result. `strict`, `label` and `met` serve the table and are not written to JSON; a
    target with no value (a server that completed no request) counts as missed."""
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
        for server, other in RATIOS:
            for metric in RATIO_METRICS:
                name = f"{workload}.{server}_over_{other}.{metric}"
                value = ratio(runs[workload, server][metric], runs[workload, other][metric])
                better = METRICS[metric][2]
                if server == "webapp" and (metric, other) in RATIO_TARGETS:
                    target, strict = RATIO_TARGETS[metric, other]
                    label = f"{METRICS[metric][0]}, webapp / {other}, {titles[workload]}"
                    out.append(entry(name, value, "ratio", better, target, strict, label))
                else:
                    out.append(entry(name, value, "ratio", better))
    idle = max(runs[workload, "webapp"]["idle_rss_mb"] for workload in workloads)
    label = "idle RSS of the webapp, largest over the workloads"
    out.append(
        entry("webapp.idle_rss_mb_max", idle, "MB", "lower", IDLE_RSS_TARGET_MB, True, label)
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


def section(raw, entries):
    machine = raw["machine"]
    value = {result["name"]: result["value"] for result in entries}
    versions = ", ".join(
        text if text.lower().startswith(name) else f"{name} {text}"
        for name, text in machine["versions"].items()
    )
    lines = [
        BEGIN,
        "## Webapp",
        "",
        (
            "Generated by `make bench-webapp` (`hack/bench-webapp.sh`), which also writes the "
            "figures to `target/bench/webapp.json`. Rerun with `make bench-webapp`."
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
            "server; the ceiling runs the webapp's queries from as many tasks straight through "
            "the mongodb driver, with no HTTP. One FerretDB (SQLite) serves everyone, on the "
            "same two cores."
        ),
        (
            "- Each server is started afresh for each workload. CPU ms/req: user + system CPU "
            "time of the server's process tree (all gunicorn workers) from /proc during the "
            "load, per completed request; DB CPU ms/req: FerretDB's over the same time. Idle "
            "RSS is read after one request, peak RSS is VmHWM; both are summed over the "
            "process tree."
        ),
        "",
    ]
    runs = {run["workload"]: run for run in raw["runs"]}
    for workload, run in runs.items():
        load = f"{run['duration']:g} s of load at {run['connections']} connections"
        lines += [f"### {run['title']} ({load})", ""]
        header = ["server"] + [heading for heading, _, _ in METRICS.values()]
        rows = [
            [name] + [number(value[f"{workload}.{server}.{metric}"]) for metric in METRICS]
            for server, name in SERVERS.items()
        ]
        lines += table(header, rows) + [""]
        header = ["ratio"] + [METRICS[metric][0] for metric in RATIO_METRICS]
        rows = [
            [f"{server} / {other}"]
            + [number(value[f"{workload}.{server}_over_{other}.{m}"]) for m in RATIO_METRICS]
            for server, other in RATIOS
        ]
        lines += table(header, rows) + [""]
    targets = [result for result in entries if result["target"] is not None]
    rows = [
        [
            result["label"],
            number(result["value"]),
            goal(result),
            "met" if result["met"] else "**missed**",
        ]
        for result in targets
    ]
    header = ["target", "value", "goal", ""]
    lines += ["### Targets", ""] + table(header, rows, ["---", "---:", "---", "---"])
    met = sum(1 for result in targets if result["met"])
    lines += ["", f"{met} of {len(targets)} targets met.", END]
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
    keys = ("name", "value", "unit", "target", "better")
    public = [{key: result[key] for key in keys} for result in entries]
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
