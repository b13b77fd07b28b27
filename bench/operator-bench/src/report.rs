//! The figures as `target/bench/operator.json`, from which `bench/report.py` writes the
//! operator section of `BENCHMARKS.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::{Api, Client};
use serde_json::{Value, json};
use testenv::process::Usage;

use crate::components;

/// API requests by method and resource (`PATCH deployments`).
pub type Requests = BTreeMap<String, f64>;

/// CPU seconds by process of the local stack (`etcd`, `kube-apiserver`, ...), the bench
/// and the operator.
pub type CpuByProcess = BTreeMap<String, f64>;

/// The stack's components' own counters by figure (`kube-scheduler: scheduling attempts,
/// scheduled`), from their `/metrics`.
pub type Counters = BTreeMap<String, f64>;

/// All the CPU seconds of `cpu`.
fn total(cpu: &CpuByProcess) -> f64 {
    cpu.values().sum()
}

/// Which of a run's CPU times, by process, a figure reads.
type CpuOf = fn(&Run) -> &CpuByProcess;

/// The single-object runs: objects created one at a time.
pub struct Latency {
    /// Create → all children, per object, in ms.
    pub children_ms: Vec<f64>,
    /// Create → Ready, per object, in ms.
    pub ready_ms: Vec<f64>,
    /// The operator's API requests from the first create to the last object Ready.
    pub requests: Requests,
}

/// The runs of one scale, each of the operator followed by one of the baseline.
pub struct Scale {
    /// Objects created in each run.
    pub objects: usize,
    /// The runs, in order.
    pub runs: Vec<Run>,
}

/// One convergence run of the operator and the baseline's run after it.
#[derive(Debug)]
pub struct Run {
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
    pub requests: Requests,
    /// CPU time of each process of the stack and the bench during the operator's run (create
    /// to all Ready): where the machine's time went besides the operator.
    pub to_ready_cpu: CpuByProcess,
    /// CPU time of each process of the stack, the bench and the operator from the first
    /// create to convergence: the span the ratio to the baseline times.
    pub converging_cpu: CpuByProcess,
    /// CPU time of each process of the stack and the bench (its client) during the baseline.
    pub baseline_cpu: CpuByProcess,
    /// What the stack's components counted of their own work during the operator's run.
    pub components: Counters,
    /// What they counted from the first create to convergence: the span of the ratio.
    pub converging_components: Counters,
    /// What they counted during the baseline.
    pub baseline_components: Counters,
}

/// Everything one benchmark run measured.
pub struct Figures {
    /// Machine and versions.
    pub machine: Value,
    /// Objects in the latency run.
    pub samples: usize,
    /// The single-object runs.
    pub latency: Latency,
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
        // What `hack/bench-operator.sh` was given, so that the report can say how to rerun it.
        "arguments": std::env::args().skip(1).collect::<Vec<_>>().join(" "),
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
    /// The median of the runs' values.
    value: Option<f64>,
    /// The smallest and largest value, when there was more than one run.
    range: Option<(f64, f64)>,
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
    /// A figure with one value.
    fn new(name: impl Into<String>, value: Option<f64>, unit: &'static str) -> Self {
        Self::of_runs(name, value.into_iter(), unit)
    }

    /// A figure measured in several runs: their median and range (runs with no value, as
    /// when a wait ran out, are left out; none at all gives no value).
    fn of_runs(
        name: impl Into<String>,
        values: impl Iterator<Item = f64>,
        unit: &'static str,
    ) -> Self {
        let mut values: Vec<f64> = values.collect();
        values.sort_by(f64::total_cmp);
        let round = |v: f64| (v * 1000.0).round() / 1000.0;
        Self {
            name: name.into(),
            value: median(&values).map(round),
            range: (values.len() > 1).then(|| (round(values[0]), round(values[values.len() - 1]))),
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

/// Targets of the largest runs.
const LATENCY_TARGET_MS: f64 = 50.0;
const REQUESTS_PER_OBJECT_TARGET: f64 = 10.0;
const RATIO_TARGET: f64 = 1.25;
/// Peak RSS at 1,000 objects.
const RSS_TARGET_MB: f64 = 32.0;

/// The kinds of request (verb and resource) reported beside the baseline's.
const REQUEST_KINDS: usize = 8;

/// The figures of the objects created one at a time (at least one).
fn single_object_entries(figures: &Figures) -> Vec<Entry> {
    let latency = &figures.latency;
    let n = figures.samples;
    let one_at_a_time = format!("{n} objects one at a time");
    let per_object = |requests: f64| requests / n as f64;
    let mut entries = vec![
        Entry::new(
            format!("single object: create → all 8 children, p50, {one_at_a_time}"),
            percentile(&latency.children_ms, 50.0),
            "ms",
        )
        .target(LATENCY_TARGET_MS, Bound::Under),
        Entry::new(
            format!("single object: create → all 8 children, p99, {one_at_a_time}"),
            percentile(&latency.children_ms, 99.0),
            "ms",
        ),
        Entry::new(
            format!("single object: create → Ready, p50, {one_at_a_time}"),
            percentile(&latency.ready_ms, 50.0),
            "ms",
        ),
        Entry::new(
            format!("single object: create → Ready, p99, {one_at_a_time}"),
            percentile(&latency.ready_ms, 99.0),
            "ms",
        ),
        Entry::new(
            format!("single object: API requests per object, create to Ready, {one_at_a_time}"),
            Some(per_object(latency.requests.values().sum())),
            "requests",
        )
        .target(REQUESTS_PER_OBJECT_TARGET, Bound::AtMost),
    ];
    entries.extend(latency.requests.iter().map(|(request, count)| {
        Entry::new(
            format!("single object: API requests per object: {request}"),
            Some(per_object(*count)),
            "requests",
        )
    }));
    entries
}

fn entries(figures: &Figures) -> Vec<Entry> {
    // A run with no single objects (`--samples 0`) measured none of their figures, so it
    // claims none of their targets either.
    let mut entries = if figures.samples > 0 {
        single_object_entries(figures)
    } else {
        Vec::new()
    };
    entries.extend([
        Entry::new("0 objects: peak RSS", Some(mb(figures.idle)), "MB"),
        Entry::new(
            "0 objects: CPU time (start-up and 10 s idle)",
            Some(figures.idle.cpu_seconds),
            "s",
        ),
    ]);
    let largest = figures.scales.iter().map(|s| s.objects).max();
    for scale in &figures.scales {
        let n = scale.objects;
        let runs = &scale.runs;
        let of_runs = |name: String, value: fn(&Run) -> Option<f64>, unit| {
            Entry::of_runs(
                format!("{n} objects: {name}"),
                runs.iter().filter_map(value),
                unit,
            )
        };
        let ratio = of_runs(
            "convergence ÷ baseline, run by run".to_owned(),
            |run| Some(run.converged_seconds? / run.baseline_seconds),
            "ratio",
        );
        let rss = of_runs("peak RSS".to_owned(), |run| Some(mb(run.usage)), "MB");
        let fewest_ready = runs.iter().map(|run| run.ready_count).min().unwrap_or(0);
        entries.extend([
            of_runs(
                "every child exists, every status current".to_owned(),
                |run| run.converged_seconds,
                "s",
            ),
            of_runs(
                format!("all Ready (at least {fewest_ready} of {n} Ready at the end of each run)"),
                |run| run.ready_seconds,
                "s",
            ),
            of_runs(
                "baseline, same children with no controller".to_owned(),
                |run| Some(run.baseline_seconds),
                "s",
            ),
            if Some(n) == largest && n >= 1000 {
                ratio.target(RATIO_TARGET, Bound::AtMost)
            } else {
                ratio
            },
            if n == 1000 {
                rss.target(RSS_TARGET_MB, Bound::Under)
            } else {
                rss
            },
            of_runs(
                "operator CPU time (start-up to all Ready)".to_owned(),
                |run| Some(run.usage.cpu_seconds),
                "s",
            ),
            Entry::of_runs(
                format!("{n} objects: API requests per object"),
                runs.iter()
                    .map(|run| run.requests.values().sum::<f64>() / n as f64),
                "requests",
            ),
            Entry::of_runs(
                format!("{n} objects: reconciles per object"),
                runs.iter().map(|run| run.reconciles / n as f64),
                "count",
            ),
        ]);
        let spans: [(&str, CpuOf); 3] = [
            ("during the operator's run", |run| &run.to_ready_cpu),
            ("to convergence", |run| &run.converging_cpu),
            ("during the baseline", |run| &run.baseline_cpu),
        ];
        for (span, cpu) in spans {
            let components: BTreeSet<&String> =
                runs.iter().flat_map(|run| cpu(run).keys()).collect();
            entries.extend(components.into_iter().map(|component| {
                Entry::of_runs(
                    format!("{n} objects: {component} CPU time {span}"),
                    runs.iter()
                        .map(|run| cpu(run).get(component).copied().unwrap_or(0.0)),
                    "s",
                )
            }));
        }
        entries.extend(inside_the_components(n, runs));
        entries.extend(requests_beyond_the_baseline(n, runs));
        // Both sides of the ratio on the same cores: how much of them each kept busy shows
        // whether the ratio is one of work or of waiting.
        entries.extend([
            of_runs(
                "cores busy to convergence (all CPU time above ÷ seconds)".to_owned(),
                |run| Some(total(&run.converging_cpu) / run.converged_seconds?),
                "cores",
            ),
            of_runs(
                "cores busy during the baseline (all CPU time above ÷ seconds)".to_owned(),
                |run| Some(total(&run.baseline_cpu) / run.baseline_seconds),
                "cores",
            ),
            of_runs(
                "CPU time to convergence ÷ CPU time of the baseline, run by run".to_owned(),
                |run| Some(total(&run.converging_cpu) / total(&run.baseline_cpu)),
                "ratio",
            ),
        ]);
    }
    if let Some(slope) = memory_slope(figures) {
        entries.push(Entry::new(
            "peak RSS per 1,000 objects (slope over the idle process and each scale's median)",
            Some(slope * 1000.0),
            "MB",
        ));
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

/// Where the time of the operator's runs of `n` objects went inside the stack, from the
/// components' own counters: the controller-manager's and the API server's five busiest
/// queues and resources, how long a claim waited for the volume binder, the scheduler's
/// attempts and etcd's commits.
fn inside_the_components(n: usize, runs: &[Run]) -> Vec<Entry> {
    let during = |figure: &str, values: Vec<f64>, unit| {
        Entry::of_runs(
            format!("{n} objects: {figure}, during the operator's run"),
            values.into_iter(),
            unit,
        )
    };
    let mut entries = Vec::new();
    for (prefix, limit, unit) in [
        (components::working(""), 5, "s"),
        (components::handling(""), 5, "s"),
        ("kube-scheduler: ".to_owned(), usize::MAX, "count"),
        ("etcd: ".to_owned(), usize::MAX, "s"),
    ] {
        for figure in largest(runs, &prefix, limit) {
            entries.push(during(&figure, counted(runs, &figure), unit));
        }
    }
    let (waited, claims) = (
        components::waiting(components::CLAIM_QUEUE),
        components::taken(components::CLAIM_QUEUE),
    );
    let mean_wait = counted(runs, &waited)
        .into_iter()
        .zip(counted(runs, &claims))
        .filter(|(_, claims)| *claims > 0.0)
        .map(|(seconds, claims)| seconds / claims)
        .collect();
    entries.push(during(
        &format!(
            "{}: mean seconds a claim waited for the volume binder",
            components::CONTROLLER_MANAGER
        ),
        mean_wait,
        "s",
    ));
    entries
}

/// The API server's requests per object by verb and resource, to convergence and during
/// the baseline, for the `REQUEST_KINDS` kinds of request the operator's runs added most
/// to the baseline's (by the median over `runs` of each run's difference): what more the
/// whole control plane was asked around the operator, its own requests and those of the
/// controllers, the scheduler and the nodes.
fn requests_beyond_the_baseline(n: usize, runs: &[Run]) -> Vec<Entry> {
    let per_object = |counters: &Counters, figure: &str| count(counters, figure) / n as f64;
    let figures = runs
        .iter()
        .flat_map(|run| {
            run.converging_components
                .keys()
                .chain(run.baseline_components.keys())
        })
        .filter(|figure| figure.starts_with(&components::requested("")));
    let most_added = by_median(runs, figures, REQUEST_KINDS, |run, figure| {
        per_object(&run.converging_components, figure)
            - per_object(&run.baseline_components, figure)
    });
    let of = |figure: &str, span: &str, counters: fn(&Run) -> &Counters| {
        let what = figure.replacen(": requests, ", ": requests per object, ", 1);
        Entry::of_runs(
            format!("{n} objects: {what}, {span}"),
            runs.iter().map(|run| per_object(counters(run), figure)),
            "requests",
        )
    };
    most_added
        .iter()
        .flat_map(|figure| {
            [
                of(figure, "to convergence", |run| &run.converging_components),
                of(figure, "during the baseline", |run| {
                    &run.baseline_components
                }),
            ]
        })
        .collect()
}

/// What `counters` hold of `figure` (0 where they counted none).
fn count(counters: &Counters, figure: &str) -> f64 {
    counters.get(figure).copied().unwrap_or(0.0)
}

/// What each of `runs` counted of `figure` during the operator's run.
fn counted(runs: &[Run], figure: &str) -> Vec<f64> {
    runs.iter()
        .map(|run| count(&run.components, figure))
        .collect()
}

/// The `limit` figures starting with `prefix` with the largest medians over `runs`,
/// largest first.
fn largest(runs: &[Run], prefix: &str, limit: usize) -> Vec<String> {
    let figures = runs
        .iter()
        .flat_map(|run| run.components.keys())
        .filter(|figure| figure.starts_with(prefix));
    by_median(runs, figures, limit, |run, figure| {
        count(&run.components, figure)
    })
}

/// The `limit` of `figures` whose `value` has the largest median over `runs`, largest
/// first (ties by name).
fn by_median<'a>(
    runs: &[Run],
    figures: impl Iterator<Item = &'a String>,
    limit: usize,
    value: impl Fn(&Run, &str) -> f64,
) -> Vec<String> {
    let figures: BTreeSet<&String> = figures.collect();
    let mut ranked: Vec<(f64, &String)> = figures
        .into_iter()
        .map(|figure| {
            let mut values: Vec<f64> = runs.iter().map(|run| value(run, figure)).collect();
            values.sort_by(f64::total_cmp);
            (median(&values).unwrap_or(0.0), figure)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked
        .into_iter()
        .take(limit)
        .map(|(_, figure)| figure.clone())
        .collect()
}

/// MB of peak RSS per object: the least-squares slope through the idle process (0 objects)
/// and the median peak RSS of each scale.
fn memory_slope(figures: &Figures) -> Option<f64> {
    let mut points = vec![(0.0, mb(figures.idle))];
    for scale in &figures.scales {
        let rss: Vec<f64> = scale.runs.iter().map(|run| mb(run.usage)).collect();
        points.push((scale.objects as f64, median(&rss)?));
    }
    least_squares_slope(&points)
}

/// The slope of the least-squares line through `points`; `None` for fewer than two distinct x.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let spread: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let together: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    (spread > 0.0).then(|| together / spread)
}

/// The median of sorted `values`.
fn median(values: &[f64]) -> Option<f64> {
    let middle = values.len() / 2;
    match values.len() {
        0 => None,
        len if len % 2 == 1 => Some(values[middle]),
        _ => Some((values[middle - 1] + values[middle]) / 2.0),
    }
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

/// Writes the JSON: every result with its target, whether a value under the target
/// (`strict`) or at most the target meets it, and the range of its runs if it had several.
pub fn write(figures: &Figures, json_path: &Path) -> Result<()> {
    let results: Vec<Value> = entries(figures)
        .iter()
        .map(|e| {
            let mut result = json!({
                "name": e.name,
                "value": e.value,
                "unit": e.unit,
                "target": e.target.map(|(t, _)| t),
                "better": e.better,
                "strict": matches!(e.target, Some((_, Bound::Under))),
            });
            if let Some((min, max)) = e.range {
                result["min"] = json!(min);
                result["max"] = json!(max);
            }
            result
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
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn a_figure_of_several_runs_is_their_median_and_range() {
        let entry = Entry::of_runs("x", [3.0, 1.0, 2.0].into_iter(), "s");
        assert_eq!((entry.value, entry.range), (Some(2.0), Some((1.0, 3.0))));
        let single = Entry::new("y", Some(5.0), "s");
        assert_eq!((single.value, single.range), (Some(5.0), None));
        let none = Entry::new("z", None, "s");
        assert_eq!((none.value, none.range), (None, None));
    }

    /// A run whose components counted `counters`, and nothing else measured.
    fn counting(counters: &[(String, f64)]) -> Run {
        Run {
            converged_seconds: None,
            ready_seconds: None,
            ready_count: 0,
            baseline_seconds: 0.0,
            usage: Usage {
                rss_bytes: 0,
                peak_rss_bytes: 0,
                cpu_seconds: 0.0,
                system_cpu_seconds: 0.0,
            },
            reconciles: 0.0,
            requests: Requests::new(),
            to_ready_cpu: CpuByProcess::new(),
            converging_cpu: CpuByProcess::new(),
            baseline_cpu: CpuByProcess::new(),
            components: counters.iter().cloned().collect(),
            converging_components: Counters::new(),
            baseline_components: Counters::new(),
        }
    }

    #[test]
    fn the_components_busiest_queues_by_median_and_a_claims_mean_wait() {
        let working = components::working;
        let claims = components::CLAIM_QUEUE;
        // Seven queues; "a" busiest in one run only, so its median is the smallest.
        let run = |a: f64| {
            let mut counters: Vec<(String, f64)> = ["b", "c", "d", "e", "f", "g"]
                .iter()
                .zip([60.0, 50.0, 40.0, 30.0, 20.0, 10.0])
                .map(|(queue, seconds)| (working(queue), seconds))
                .collect();
            counters.push((working("a"), a));
            counters.push((components::waiting(claims), 100.0 * a));
            counters.push((components::taken(claims), a));
            counting(&counters)
        };
        let runs = [run(1000.0), run(1.0), run(2.0)];
        let names: Vec<String> = inside_the_components(10, &runs)
            .into_iter()
            .map(|entry| format!("{} = {:?}", entry.name, entry.value))
            .collect();
        let queue = |queue: &str, seconds: f64| {
            format!(
                "10 objects: {}, during the operator's run = Some({seconds:?})",
                working(queue)
            )
        };
        assert_eq!(
            names,
            [
                queue("b", 60.0),
                queue("c", 50.0),
                queue("d", 40.0),
                queue("e", 30.0),
                queue("f", 20.0),
                "10 objects: kube-controller-manager: mean seconds a claim waited for the volume binder, during the operator's run = Some(100.0)".to_owned(),
            ]
        );
    }

    #[test]
    fn the_requests_the_operators_runs_added_most_come_first_beside_the_baselines() {
        // Ten kinds of request: the operator's runs add i per object of "GET ki"; the third
        // run adds far more of "GET k0" alone, which its median does not follow.
        let run = |k0_extra: f64| {
            let mut run = counting(&[]);
            for i in 0..10 {
                let kind = components::requested(&format!("GET k{i}"));
                let extra = if i == 0 { k0_extra } else { 0.0 };
                run.converging_components
                    .insert(kind.clone(), 100.0 + 10.0 * i as f64 + extra);
                run.baseline_components.insert(kind, 100.0);
            }
            run
        };
        let runs = [run(0.0), run(0.0), run(1000.0)];
        let entries = requests_beyond_the_baseline(10, &runs);
        let names: Vec<String> = entries
            .iter()
            .map(|entry| format!("{} = {:?}", entry.name, entry.value))
            .collect();
        let pair = |i: usize| {
            let kind = format!("kube-apiserver: requests per object, GET k{i}");
            [
                format!(
                    "10 objects: {kind}, to convergence = Some({:?})",
                    10.0 + i as f64
                ),
                format!("10 objects: {kind}, during the baseline = Some(10.0)"),
            ]
        };
        let expected: Vec<String> = (2..10).rev().flat_map(pair).collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn a_run_with_no_single_objects_claims_none_of_their_targets() {
        let figures = |samples: usize| Figures {
            machine: Value::Null,
            samples,
            latency: Latency {
                children_ms: vec![40.0; samples],
                ready_ms: vec![90.0; samples],
                requests: Requests::from([("PATCH services".to_owned(), 2.0 * samples as f64)]),
            },
            idle: counting(&[]).usage,
            scales: Vec::new(),
            steady_writes: None,
            steady_seconds: 10,
        };
        let single = |samples| {
            entries(&figures(samples))
                .into_iter()
                .filter(|entry| entry.name.starts_with("single object"))
                .map(|entry| (entry.name, entry.value, entry.target.is_some()))
                .collect::<Vec<_>>()
        };
        assert_eq!(single(0), []);
        let measured = single(2);
        assert!(
            measured.contains(&(
                "single object: API requests per object: PATCH services".to_owned(),
                Some(2.0),
                false
            )),
            "{measured:?}"
        );
        assert!(
            measured.iter().all(|(_, value, _)| value.is_some()),
            "{measured:?}"
        );
    }

    #[test]
    fn slope_of_a_line() {
        let points = [(0.0, 13.0), (100.0, 15.0), (1000.0, 33.0)];
        let slope = least_squares_slope(&points).unwrap();
        assert!((slope - 0.02).abs() < 1e-9, "{slope}");
        assert_eq!(least_squares_slope(&[(5.0, 1.0)]), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), Some(25.0));
        assert_eq!(percentile(&values, 99.0), Some(50.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
