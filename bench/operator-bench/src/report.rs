//! The figures as `target/bench/operator.json` and as the operator section of
//! `BENCHMARKS.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use testenv::process::Usage;

const BEGIN: &str = "<!-- operator:begin -->";
const END: &str = "<!-- operator:end -->";

/// One convergence run.
#[derive(Debug)]
pub struct Scale {
    /// Objects created.
    pub objects: usize,
    /// Seconds from the first create to every child existing and every status current;
    /// `None` if the wait ran out.
    pub converged_seconds: Option<f64>,
    /// Seconds from the first create to every object Ready; `None` if the wait ran out.
    pub ready_seconds: Option<f64>,
    /// Objects Ready at the end of the wait.
    pub ready_count: usize,
    /// Seconds the baseline took for as many objects.
    pub baseline_seconds: f64,
    /// The operator process's peak memory and CPU time at the end of the run.
    pub usage: Usage,
    /// Reconciles during the run.
    pub reconciles: f64,
    /// API requests the operator sent during the run.
    pub requests: f64,
}

/// Everything one benchmark run measured.
pub struct Figures {
    /// Machine and versions.
    pub machine: Value,
    /// Objects in the latency run.
    pub samples: usize,
    /// Create → all children, per object, in ms.
    pub children_ms: Vec<f64>,
    /// Create → Ready, per object, in ms.
    pub ready_ms: Vec<f64>,
    /// The operator after 10 s watching an empty namespace.
    pub idle: Usage,
    /// The convergence runs.
    pub scales: Vec<Scale>,
    /// Operator writes per minute at steady state after the largest run.
    pub steady_writes: Option<f64>,
    /// Length of the steady-state window.
    pub steady_seconds: u64,
}

/// The machine, the versions and the settings of the run.
pub async fn machine(client: &Client, operator: &Path, parallelism: usize) -> Value {
    let apiserver = client
        .apiserver_version()
        .await
        .map(|info| info.git_version)
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let nodes = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await
        .map(|list| list.items.len())
        .unwrap_or(0);
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    // The machine is shared: the load from other work is part of the conditions.
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (memory_kib as f64 / 1_048_576.0 * 10.0).round() / 10.0,
        "cpu": cpu,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "kube_apiserver": apiserver,
        "simulated_nodes": nodes,
        "operator": command_output(operator, "--version"),
        "rustc": command_output(Path::new("rustc"), "--version"),
        "parallelism": parallelism,
        "date": command_output(Path::new("date"), "-u"),
        "load_average_at_end": load,
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn command_output(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_default()
}

/// A result as `operator.json` holds it, with whether its target was met.
struct Entry {
    name: String,
    value: Option<f64>,
    unit: &'static str,
    target: Option<(f64, Bound)>,
    better: &'static str,
    why: Option<&'static str>,
}

/// How a value is compared with its target.
#[derive(Clone, Copy)]
enum Bound {
    /// value < target
    Under,
    /// value ≤ target
    AtMost,
}

impl Entry {
    fn new(name: impl Into<String>, value: Option<f64>, unit: &'static str) -> Self {
        Self {
            name: name.into(),
            value: value.map(|v| (v * 1000.0).round() / 1000.0),
            unit,
            target: None,
            better: "lower",
            why: None,
        }
    }

    fn target(mut self, target: f64, bound: Bound, why_missed: &'static str) -> Self {
        self.target = Some((target, bound));
        self.why = Some(why_missed);
        self
    }

    fn met(&self) -> Option<bool> {
        let (target, bound) = self.target?;
        Some(self.value.is_some_and(|value| match bound {
            Bound::Under => value < target,
            Bound::AtMost => value <= target,
        }))
    }
}

fn entries(figures: &Figures) -> Vec<Entry> {
    let mut entries = vec![
        Entry::new(
            format!(
                "single object: create → all 7 children, p50, {n} objects one at a time",
                n = figures.samples
            ),
            percentile(&figures.children_ms, 50.0),
            "ms",
        )
        .target(100.0, Bound::Under, WHY_LATENCY),
        Entry::new(
            format!(
                "single object: create → all 7 children, p99, {n} objects one at a time",
                n = figures.samples
            ),
            percentile(&figures.children_ms, 99.0),
            "ms",
        ),
        Entry::new(
            format!(
                "single object: create → Ready, p50, {n} objects one at a time",
                n = figures.samples
            ),
            percentile(&figures.ready_ms, 50.0),
            "ms",
        ),
        Entry::new(
            format!(
                "single object: create → Ready, p99, {n} objects one at a time",
                n = figures.samples
            ),
            percentile(&figures.ready_ms, 99.0),
            "ms",
        ),
        Entry::new("0 objects: peak RSS", Some(mb(figures.idle)), "MB"),
        Entry::new(
            "0 objects: CPU time (start-up and 10 s idle)",
            Some(figures.idle.cpu_seconds),
            "s",
        ),
    ];
    let largest = figures.scales.iter().map(|s| s.objects).max();
    for scale in &figures.scales {
        let n = scale.objects;
        let is_largest = Some(n) == largest && n >= 1000;
        let ratio = Entry::new(
            format!("{n} objects: convergence ÷ baseline"),
            scale.converged_seconds.map(|s| s / scale.baseline_seconds),
            "ratio",
        );
        let rss = Entry::new(
            format!("{n} objects: peak RSS"),
            Some(mb(scale.usage)),
            "MB",
        );
        entries.extend([
            Entry::new(
                format!("{n} objects: every child exists, every status current"),
                scale.converged_seconds,
                "s",
            ),
            Entry::new(
                format!(
                    "{n} objects: all Ready ({} of {n} Ready at the end)",
                    scale.ready_count
                ),
                scale.ready_seconds,
                "s",
            ),
            Entry::new(
                format!("{n} objects: baseline, same children with no controller"),
                Some(scale.baseline_seconds),
                "s",
            ),
            if is_largest {
                ratio.target(1.5, Bound::AtMost, WHY_RATIO)
            } else {
                ratio
            },
            if is_largest {
                rss.target(64.0, Bound::Under, WHY_RSS)
            } else {
                rss
            },
            Entry::new(
                format!("{n} objects: operator CPU time (start-up to all Ready)"),
                Some(scale.usage.cpu_seconds),
                "s",
            ),
            Entry::new(
                format!("{n} objects: API requests per reconcile"),
                (scale.reconciles > 0.0).then(|| scale.requests / scale.reconciles),
                "requests",
            ),
            Entry::new(
                format!("{n} objects: reconciles"),
                Some(scale.reconciles),
                "count",
            ),
        ]);
    }
    entries.push(
        Entry::new(
            format!(
                "steady state: operator writes per minute ({} s window)",
                figures.steady_seconds
            ),
            figures.steady_writes,
            "writes/min",
        )
        .target(0.0, Bound::AtMost, WHY_WRITES),
    );
    entries
}

const WHY_LATENCY: &str = "see the notes on latency below";
const WHY_RATIO: &str = "see the notes on convergence below";
const WHY_RSS: &str = "see the notes on memory below";
const WHY_WRITES: &str = "see the notes on steady state below";

fn mb(usage: Usage) -> f64 {
    usage.peak_rss_bytes as f64 / 1_000_000.0
}

/// The nearest-rank percentile `p` of `values`.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Writes the JSON and rewrites the operator section of the report.
pub fn write(figures: &Figures, json_path: &Path, report: &Path) -> Result<()> {
    let entries = entries(figures);
    let results: Vec<Value> = entries
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "value": e.value,
                "unit": e.unit,
                "target": e.target.map(|(t, _)| t),
                "better": e.better,
            })
        })
        .collect();
    let document = json!({ "machine": figures.machine, "results": results });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    let section = section(figures, &entries);
    splice(report, &section)?;
    println!("{section}");
    Ok(())
}

fn section(figures: &Figures, entries: &[Entry]) -> String {
    let m = &figures.machine;
    let mut text = format!(
        "## Operator\n\n\
         Latest run: {date}. Machine: {cores} cores ({cpu}), {memory} GiB, Linux {kernel}; \
         load average at the end of the run {load} (the local stack and the benchmark included). \
         Control plane: the local stack (kube-apiserver {apiserver}, controller-manager, scheduler, \
         {nodes} kwok simulated nodes, all on this machine). Operator: {operator}, release build, \
         run as a separate process, one per measurement. Built with {rustc}. \
         Parallelism: {parallelism} requests in flight from the benchmark's client, \
         `--concurrency {parallelism}` in the operator, {parallelism} objects at once in the baseline.\n\n\
         Rerun: `make bench-operator` (starts a stack of its own, builds the release binary, \
         15 to 25 minutes here, most of it the 1,000-object run and its baseline); raw figures \
         in `target/bench/operator.json`, operator logs in `target/bench/operator-logs/`.\n\n\
         | figure | value | target | met |\n|---|---|---|---|\n",
        date = m["date"].as_str().unwrap_or(""),
        load = m["load_average_at_end"].as_str().unwrap_or(""),
        cores = m["cores"],
        cpu = m["cpu"].as_str().unwrap_or(""),
        memory = m["memory_gib"],
        kernel = m["kernel"].as_str().unwrap_or(""),
        apiserver = m["kube_apiserver"].as_str().unwrap_or(""),
        nodes = m["simulated_nodes"],
        operator = m["operator"].as_str().unwrap_or(""),
        rustc = m["rustc"].as_str().unwrap_or(""),
        parallelism = m["parallelism"],
    );
    for entry in entries {
        let value = entry.value.map_or("not reached".to_owned(), |v| {
            format!("{} {}", trim(v), entry.unit)
        });
        let (target, met) = match (entry.target, entry.met()) {
            (Some((t, bound)), Some(met)) => {
                let sign = match bound {
                    Bound::Under => "<",
                    Bound::AtMost => "≤",
                };
                let verdict = if met {
                    "met".to_owned()
                } else {
                    format!("**missed** ({})", entry.why.unwrap_or(""))
                };
                (format!("{sign} {} {}", trim(t), entry.unit), verdict)
            }
            _ => (String::new(), String::new()),
        };
        text.push_str(&format!(
            "| {} | {value} | {target} | {met} |\n",
            entry.name
        ));
    }
    text.push_str(&format!("\n{METHOD}\n"));
    text.push_str(NOTES);
    text
}

fn trim(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

const METHOD: &str = include_str!("method.md");
const NOTES: &str = include_str!("notes.md");

/// Replaces the text between the operator markers of `report` (adding them at the end if
/// the report has none).
fn splice(report: &Path, section: &str) -> Result<()> {
    let text = std::fs::read_to_string(report).unwrap_or_else(|_| "# Benchmarks\n".to_owned());
    let block = format!("{BEGIN}\n{section}{END}");
    let updated = match (text.find(BEGIN), text.find(END)) {
        (Some(begin), Some(end)) if begin < end => {
            format!("{}{block}{}", &text[..begin], &text[end + END.len()..])
        }
        _ => format!("{}\n\n{block}\n", text.trim_end()),
    };
    std::fs::write(report, updated).with_context(|| format!("write {}", report.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(25.0));
        assert_eq!(percentile(&values, 99.0), Some(50.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn splices_between_the_markers_and_keeps_the_rest() {
        let dir = std::env::temp_dir().join(format!("operator-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let report = dir.join("BENCHMARKS.md");
        std::fs::write(&report, format!("# B\n{BEGIN}\nold\n{END}\ntail\n")).unwrap();
        splice(&report, "new\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&report).unwrap(),
            format!("# B\n{BEGIN}\nnew\n{END}\ntail\n")
        );
        std::fs::remove_file(&report).unwrap();
        splice(&report, "first\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&report).unwrap(),
            format!("# Benchmarks\n\n{BEGIN}\nfirst\n{END}\n")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
