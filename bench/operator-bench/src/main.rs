//! The operator's benchmarks against a local control plane: single-object latency and the
//! API requests it takes, convergence of 100 and 1,000 objects in runs that alternate with a
//! baseline creating the same children with no controller, the operator's memory and CPU
//! time, and writes at steady state. Writes `target/bench/operator.json` (`bench/report.py` turns it into
//! the operator section of `BENCHMARKS.md`).

mod components;
mod observe;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use flaskmongo_crd::FlaskMongoApp;
use flaskmongo_operator::children::persistent_volume::{self, Placement};
use flaskmongo_operator::children::{self, Instance, secret};
use flaskmongo_operator::{apply, labels, plan};
use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;
use testenv::Stack;
use testenv::process::{OperatorProcess, Usage, metric_series, usage};

use crate::components::Components;
use crate::observe::Observer;
use crate::report::{Counters, CpuByProcess, Figures, Latency, Requests, Run, Scale};

/// Operator benchmarks; the stack is the one of `$LOCAL_STACK_ENV` (or `.local/env`).
#[derive(Parser, Debug)]
struct Args {
    /// The operator binary (a release build).
    #[arg(long, default_value = "target/release/operator")]
    operator: PathBuf,
    /// Objects created one at a time for the latency figures.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Object counts of the convergence runs.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    scales: Vec<usize>,
    /// Runs of the operator at each scale, each followed by one of the baseline.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pairs: u32,
    /// Requests in flight from the benchmark's client, reconciles at once in the operator
    /// and in the baseline.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Length of the steady-state window, in seconds.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Longest wait for every object of a run to be Ready, in seconds.
    #[arg(long, default_value_t = 600)]
    ready_timeout: u64,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/operator.json")]
    json: PathBuf,
}

/// The namespace of the single-object runs.
const LATENCY_NAMESPACE: &str = "bench-latency";

/// The namespace of the operator's run `pair` at `count` objects.
fn scale_namespace(count: usize, pair: u32) -> String {
    format!("bench-scale-{count}-{pair}")
}

/// The namespace of the baseline's run `pair` at `count` objects.
fn baseline_namespace(count: usize, pair: u32) -> String {
    format!("bench-baseline-{count}-{pair}")
}

/// The bench's field manager.
const MANAGER: &str = "flaskmongo-bench";
/// The operator's name among the processes whose CPU time is measured.
const OPERATOR: &str = "operator";
/// This process's name among them.
const BENCH: &str = "bench";

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let stack = testenv::stack();
    let client = stack.client().await;
    install_crd(&client).await?;
    let logs = args
        .json
        .parent()
        .map(|dir| dir.join("operator-logs"))
        .unwrap_or_else(|| PathBuf::from("operator-logs"));
    std::fs::create_dir_all(&logs)?;
    let components = Components::connect(&stack).await?;
    let bench = Bench {
        client,
        stack,
        components,
        args,
        logs,
    };

    let idle = bench.idle().await?;
    eprintln!("[bench] idle: {idle:?}");
    let latency = bench.latency().await?;
    bench.remove(LATENCY_NAMESPACE).await?;
    let mut scales = Vec::new();
    let mut steady_writes = None;
    let pairs = bench.args.pairs;
    let last = bench.args.scales.last().copied();
    for &count in &bench.args.scales {
        let mut runs = Vec::new();
        // Operator, baseline, operator, baseline, ...: a change of conditions during the
        // benchmark moves both sides of the ratio alike.
        for pair in 1..=pairs {
            let steady = Some(count) == last && pair == pairs;
            let (mut run, writes) = bench.scale(count, pair, steady).await?;
            bench.remove(&scale_namespace(count, pair)).await?;
            (
                run.baseline_seconds,
                run.baseline_cpu,
                run.baseline_components,
            ) = bench.baseline(count, pair).await?;
            bench.remove(&baseline_namespace(count, pair)).await?;
            eprintln!("[bench] {count} objects, pair {pair} of {pairs}: {run:?}");
            runs.push(run);
            steady_writes = writes.or(steady_writes);
        }
        scales.push(Scale {
            objects: count,
            runs,
        });
    }
    let figures = Figures {
        machine: report::machine(&bench.client, &bench.args.operator, bench.args.parallelism).await,
        samples: bench.args.samples,
        latency,
        idle,
        scales,
        steady_writes,
        steady_seconds: bench.args.steady_seconds,
    };
    report::write(&figures, &bench.args.json)?;
    Ok(())
}

struct Bench {
    client: Client,
    stack: Stack,
    components: Components,
    args: Args,
    logs: PathBuf,
}

/// The figures of one operator process.
struct Footprint {
    usage: Usage,
    reconciles: f64,
    requests: Requests,
}

impl Bench {
    /// A fresh namespace and an operator process of its own for it, so each run's peak
    /// memory and CPU time are its alone.
    async fn operator_for(&self, namespace: &str) -> Result<OperatorProcess> {
        create_namespace(&self.client, namespace).await?;
        let concurrency = self.args.parallelism.to_string();
        Ok(OperatorProcess::start(
            &self.args.operator,
            &self.stack.kubeconfig,
            namespace,
            &["--leader-election=false", "--concurrency", &concurrency],
            self.logs.join(format!("{namespace}.log")),
        ))
    }

    /// The operator watching an empty namespace for 10 s.
    async fn idle(&self) -> Result<Usage> {
        let operator = self.operator_for("bench-idle").await?;
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(operator.usage())
    }

    /// `samples` objects, each created once the previous one is Ready: milliseconds from
    /// the create call returning to all eight children, and to `Ready=True`, and the API
    /// requests the operator sent for them, its last Events included.
    async fn latency(&self) -> Result<Latency> {
        let namespace = LATENCY_NAMESPACE;
        let operator = self.operator_for(namespace).await?;
        let observer = Observer::start(&self.client, namespace).await;
        let api: Api<FlaskMongoApp> = Api::namespaced(self.client.clone(), namespace);
        let (mut children_ms, mut ready_ms) = (Vec::new(), Vec::new());
        let before = footprint(&operator);
        for index in 0..self.args.samples {
            let name = format!("latency-{index:03}");
            create_app(&api, &name).await?;
            let created = Instant::now();
            let children = wait(&format!("the children of {name}"), 30, || {
                observer.children_done(&name)
            })
            .await?;
            let ready = wait(&format!("{name} to be Ready"), 120, || {
                observer.app(&name).ready
            })
            .await?;
            children_ms.push(millis(children.saturating_duration_since(created)));
            ready_ms.push(millis(ready.saturating_duration_since(created)));
        }
        // The last objects' Events go out a moment after they are Ready: count them too.
        tokio::time::sleep(flaskmongo_operator::events::GATHERING + Duration::from_secs(1)).await;
        Ok(Latency {
            children_ms,
            ready_ms,
            requests: delta(&before.requests, &footprint(&operator).requests),
        })
    }

    /// `count` objects created as fast as the client can, in a namespace of run `pair`;
    /// with `steady`, then the writes of the operator over the steady-state window.
    async fn scale(&self, count: usize, pair: u32, steady: bool) -> Result<(Run, Option<f64>)> {
        let namespace = scale_namespace(count, pair);
        let operator = self.operator_for(&namespace).await?;
        let observer = Observer::start(&self.client, &namespace).await;
        let api: Api<FlaskMongoApp> = Api::namespaced(self.client.clone(), &namespace);
        let names: Vec<String> = (0..count).map(|i| format!("scale-{i:04}")).collect();
        let before = footprint(&operator);
        let cpu_before = self.cpu_by_process(Some(&operator))?;
        let counted_before = self.components.read().await?;
        let started = Instant::now();
        let created: Vec<Result<FlaskMongoApp>> = stream::iter(&names)
            .map(|name| create_app(&api, name))
            .buffer_unordered(self.args.parallelism)
            .collect()
            .await;
        created.into_iter().collect::<Result<Vec<_>>>()?;
        let converged = wait(
            &format!("{count} objects to have every child and a current status"),
            self.args.ready_timeout,
            || {
                names
                    .iter()
                    .map(|name| {
                        let current = observer.app(name).current?;
                        Some(observer.children_done(name)?.max(current))
                    })
                    .collect::<Option<Vec<_>>>()?
                    .into_iter()
                    .max()
            },
        )
        .await;
        let converging_cpu = delta(&cpu_before, &self.cpu_by_process(Some(&operator))?);
        let converging_components = delta(&counted_before, &self.components.read().await?);
        let ready_deadline = self
            .args
            .ready_timeout
            .saturating_sub(started.elapsed().as_secs());
        let ready = wait(
            &format!("{count} objects to be Ready"),
            ready_deadline,
            || {
                names
                    .iter()
                    .map(|name| observer.app(name).ready)
                    .collect::<Option<Vec<_>>>()?
                    .into_iter()
                    .max()
            },
        )
        .await;
        let ready_count = names
            .iter()
            .filter(|name| observer.app(name).ready.is_some())
            .count();
        let after = footprint(&operator);
        let mut to_ready_cpu = delta(&cpu_before, &self.cpu_by_process(Some(&operator))?);
        let components = delta(&counted_before, &self.components.read().await?);
        // The operator's own CPU time is reported with its footprint.
        to_ready_cpu.remove(OPERATOR);
        let steady_writes = if steady {
            Some(self.steady_writes(&operator).await)
        } else {
            None
        };
        let run = Run {
            converged_seconds: converged
                .ok()
                .map(|at| at.duration_since(started).as_secs_f64()),
            ready_seconds: ready
                .ok()
                .map(|at| at.duration_since(started).as_secs_f64()),
            ready_count,
            baseline_seconds: 0.0,
            usage: after.usage,
            reconciles: after.reconciles - before.reconciles,
            requests: delta(&before.requests, &after.requests),
            to_ready_cpu,
            converging_cpu,
            baseline_cpu: CpuByProcess::new(),
            components,
            converging_components,
            baseline_components: Counters::new(),
        };
        Ok((run, steady_writes))
    }

    /// Deletes `namespace` and the volumes of its objects, and waits, up to
    /// `--ready-timeout`, until they are gone: every run then starts on the same cluster,
    /// where runs left in place made each pair slower than the one before.
    async fn remove(&self, namespace: &str) -> Result<()> {
        let started = Instant::now();
        let of_run =
            ListParams::default().labels(&format!("{}={namespace}", labels::OWNER_NAMESPACE));
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let all = DeleteParams::default();
        namespaces
            .delete(namespace, &all)
            .await
            .with_context(|| format!("delete namespace {namespace}"))?;
        volumes
            .delete_collection(&all, &of_run)
            .await
            .with_context(|| format!("delete the volumes of {namespace}"))?;
        let deadline = started + Duration::from_secs(self.args.ready_timeout);
        loop {
            let namespace_left = namespaces.get_opt(namespace).await?.is_some();
            let volumes_left = volumes.list_metadata(&of_run).await?.items.len();
            if !namespace_left && volumes_left == 0 {
                eprintln!(
                    "[bench] {namespace} removed in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            if Instant::now() > deadline {
                // The next run shares the cluster with what is left.
                eprintln!(
                    "[bench] {namespace}: still there after {} s (namespace: {namespace_left}, \
                     volumes: {volumes_left}); going on",
                    self.args.ready_timeout
                );
                return Ok(());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Writes the operator sends over the steady-state window (Lease renewals aside, and
    /// there is no Lease here), counted by its own client layer, per minute.
    async fn steady_writes(&self, operator: &OperatorProcess) -> f64 {
        // Let the last status updates and Events of the run go out first.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let writes = || operator.metric("flaskmongo_api_writes_total");
        let before = writes();
        tokio::time::sleep(Duration::from_secs(self.args.steady_seconds)).await;
        (writes() - before) * 60.0 / self.args.steady_seconds as f64
    }

    /// CPU seconds each process of the stack, this one (the bench: the client of the
    /// baseline, the objects' creator and observer in the operator's runs) and `operator`
    /// have used so far.
    fn cpu_by_process(&self, operator: Option<&OperatorProcess>) -> Result<CpuByProcess> {
        let mut cpu = CpuByProcess::new();
        let processes = self.stack.components()?.into_iter().chain(
            [(BENCH.to_owned(), std::process::id())]
                .into_iter()
                .chain(operator.map(|operator| (OPERATOR.to_owned(), operator.pid()))),
        );
        for (name, pid) in processes {
            let used = usage(pid).with_context(|| format!("reading /proc of {name} ({pid})"))?;
            cpu.insert(name, used.cpu_seconds);
        }
        // The operator is this process's child, so the tree of this one holds its time too.
        if let (Some(operator), Some(bench)) = (cpu.get(OPERATOR).copied(), cpu.get_mut(BENCH)) {
            *bench -= operator;
        }
        Ok(cpu)
    }

    /// Seconds the same client, at the same parallelism, takes to create `count` objects
    /// and their eight children straight through the API, with no controller: the
    /// `FlaskMongoApp` (for the owner references), the Secret, then the operator's own
    /// desired children by server-side apply, as one reconcile would; with the CPU time
    /// each process used and what the components counted meanwhile.
    async fn baseline(&self, count: usize, pair: u32) -> Result<(f64, CpuByProcess, Counters)> {
        let namespace = baseline_namespace(count, pair);
        create_namespace(&self.client, &namespace).await?;
        let api: Api<FlaskMongoApp> = Api::namespaced(self.client.clone(), &namespace);
        let names: Vec<String> = (0..count).map(|i| format!("baseline-{i:04}")).collect();
        let cpu_before = self.cpu_by_process(None)?;
        let counted_before = self.components.read().await?;
        let started = Instant::now();
        let results: Vec<Result<()>> = stream::iter(&names)
            .map(|name| async {
                let app = create_app(&api, name).await?;
                create_children(&self.client, &app).await
            })
            .buffer_unordered(self.args.parallelism)
            .collect()
            .await;
        let seconds = started.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<Vec<_>>>()?;
        let cpu = delta(&cpu_before, &self.cpu_by_process(None)?);
        let counted = delta(&counted_before, &self.components.read().await?);
        self.settle(&namespace, count).await?;
        Ok((seconds, cpu, counted))
    }

    /// Waits, untimed and up to `--ready-timeout`, until the `count` objects' workloads in
    /// `namespace` have every replica ready: the baseline's time ends with its writes, while
    /// the controllers, the scheduler and the nodes still make its pods, and the next run
    /// must not pay for that work.
    async fn settle(&self, namespace: &str, count: usize) -> Result<()> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), namespace);
        let statefulsets: Api<StatefulSet> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + Duration::from_secs(self.args.ready_timeout);
        // A Deployment and a StatefulSet per object.
        let workloads = 2 * count;
        loop {
            let all = ListParams::default();
            // (replicas wanted, replicas ready) of each workload.
            let of_deployments = deployments.list(&all).await?.items.into_iter().map(|d| {
                (
                    d.spec.replicas,
                    d.status.and_then(|status| status.ready_replicas),
                )
            });
            let of_statefulsets = statefulsets.list(&all).await?.items.into_iter().map(|s| {
                (
                    s.spec.replicas,
                    s.status.and_then(|status| status.ready_replicas),
                )
            });
            let ready = of_deployments
                .chain(of_statefulsets)
                .filter(|(wanted, ready)| wanted == ready)
                .count();
            if ready == workloads {
                return Ok(());
            }
            if Instant::now() > deadline {
                // The baseline's figures stand; the next run shares the machine with the rest.
                eprintln!(
                    "[bench] {namespace}: {ready} of {workloads} workloads ready after {} s; going on",
                    self.args.ready_timeout
                );
                return Ok(());
            }
            // Seldom: each poll lists every workload of the run.
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
}

async fn create_children(client: &Client, app: &FlaskMongoApp) -> Result<()> {
    let instance = Instance::new(app)?;
    let namespace = instance.namespace;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(labels::MANAGER.to_owned()),
        ..PostParams::default()
    };
    secrets
        .create(
            &params,
            &secret::build(&instance, &secret::generate_password()),
        )
        .await?;
    let mut desired = children::desired(&instance, &flaskmongo_operator::Volumes::default());
    // As the operator's plan creates it, not at one pod for the autoscaler to scale up.
    plan::start_at_the_minimum(&mut desired.deployment, app.spec.autoscaling.min_replicas);
    // Concurrently, as a reconcile applies them.
    futures::try_join!(
        apply_child(
            Api::namespaced(client.clone(), namespace),
            desired.mongo_service
        ),
        async {
            if !app.spec.mongo.storage.persistent_volume.create {
                return Ok(());
            }
            let placement = Placement::new(&instance, flaskmongo_operator::DEFAULT_VOLUME_ROOT);
            let volume = persistent_volume::build(&instance, &placement);
            apply_child(Api::all(client.clone()), volume).await
        },
        apply_child(
            Api::namespaced(client.clone(), namespace),
            desired.statefulset
        ),
        apply_child(
            Api::namespaced(client.clone(), namespace),
            desired.web_service
        ),
        apply_child(
            Api::namespaced(client.clone(), namespace),
            desired.deployment
        ),
        async {
            match desired.hpa {
                Some(hpa) => apply_child(Api::namespaced(client.clone(), namespace), hpa).await,
                None => Ok(()),
            }
        },
        async {
            match desired.network_policy {
                Some(policy) => {
                    apply_child(Api::namespaced(client.clone(), namespace), policy).await
                }
                None => Ok(()),
            }
        },
    )?;
    Ok(())
}

/// Applies a child as the operator does: stamped with its hash, by server-side apply.
async fn apply_child<K>(api: Api<K>, desired: K) -> Result<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    apply::apply(&api, &apply::with_hash(desired)?).await?;
    Ok(())
}

fn footprint(operator: &OperatorProcess) -> Footprint {
    let metrics = operator
        .metrics()
        .unwrap_or_else(|e| panic!("cannot read the operator's /metrics: {e}"));
    let requests = metric_series(&metrics, "flaskmongo_api_requests_total")
        .into_iter()
        .map(|(labels, value)| {
            let label = |name: &str| {
                labels
                    .iter()
                    .find(|(label, _)| label == name)
                    .map_or("?", |(_, value)| value.as_str())
                    .to_owned()
            };
            (format!("{} {}", label("method"), label("resource")), value)
        })
        .collect();
    Footprint {
        usage: operator.usage(),
        reconciles: operator.metric("flaskmongo_reconciles_total"),
        requests,
    }
}

/// What `after` counts beyond `before`, key by key (requests, CPU seconds), zeros left out.
fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, value)| (key.clone(), value - before.get(key).unwrap_or(&0.0)))
        .filter(|(_, sent)| *sent > 0.0)
        .collect()
}

/// A `FlaskMongoApp` as the benchmark measures it: autoscaling on, a created hostPath
/// volume, no fixed node port (so any number of them can coexist).
async fn create_app(api: &Api<FlaskMongoApp>, name: &str) -> Result<FlaskMongoApp> {
    let object: FlaskMongoApp = serde_json::from_value(json!({
        "apiVersion": "flaskmongo.dev/v1alpha1",
        "kind": "FlaskMongoApp",
        "metadata": { "name": name },
        "spec": {
            "autoscaling": { "enabled": true },
            "mongo": { "storage": { "persistentVolume": { "create": true } } },
        },
    }))?;
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    api.create(&params, &object)
        .await
        .with_context(|| format!("create FlaskMongoApp {name}"))
}

async fn create_namespace(client: &Client, name: &str) -> Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } }))?;
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            bail!("namespace {name} exists: run the benchmark on a fresh stack")
        }
        Err(error) => Err(error).context(format!("create namespace {name}")),
    }
}

async fn install_crd(client: &Client) -> Result<()> {
    testenv::install_crd(client, &FlaskMongoApp::crd(), MANAGER)
        .await
        .map_err(anyhow::Error::msg)
}

/// Polls `check` every 50 ms until it returns `Some`, failing after `seconds`.
async fn wait<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("timed out after {seconds} s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
