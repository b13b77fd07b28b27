//! The figures as `target/bench/operator.json`, from which `bench/report.py` writes the
//! operator section of `BENCHMARKS.md`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use testenv::process::Usage;

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

/// The versions and the settings of the run (`bench/report.py` describes the machine).
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
    // The machine is shared: the load from other work is part of the conditions.
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    json!({
        "kube_apiserver": apiserver,
        "simulated_nodes": nodes,
        "operator": command_output(operator, "--version"),
        "rustc": command_output(Path::new("rustc"), "--version"),
        "parallelism": parallelism,
        "date": command_output(Path::new("date"), "-u"),
        "load_average_at_end": load,
    })
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

/// A result as `operator.json` holds it.
struct Entry {
    name: String,
    value: Option<f64>,
    unit: &'static str,
    target: Option<(f64, Bound)>,
    better: &'static str,
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
        }
    }

    fn target(mut self, target: f64, bound: Bound) -> Self {
        self.target = Some((target, bound));
        self
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
        .target(100.0, Bound::Under),
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
                ratio.target(1.5, Bound::AtMost)
            } else {
                ratio
            },
            if is_largest {
                rss.target(64.0, Bound::Under)
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
        .target(0.0, Bound::AtMost),
    );
    entries
}

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

/// Writes the JSON: every result with its target, and whether a value under the target
/// (`strict`) or at most the target meets it.
pub fn write(figures: &Figures, json_path: &Path) -> Result<()> {
    let results: Vec<Value> = entries(figures)
        .iter()
        .map(|e| {
            json!({
                "name": e.name,
                "value": e.value,
                "unit": e.unit,
                "target": e.target.map(|(t, _)| t),
                "better": e.better,
                "strict": matches!(e.target, Some((_, Bound::Under))),
            })
        })
        .collect();
    let document = json!({ "machine": figures.machine, "results": results });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(json_path, serde_json::to_string_pretty(&document)? + "\n")
        .with_context(|| format!("write {}", json_path.display()))?;
    println!("{}", json_path.display());
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
}
