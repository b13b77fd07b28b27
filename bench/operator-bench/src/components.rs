//! Where a run's time goes inside the stack, from each component's own `/metrics`, read
//! before and after the run: the controller-manager's work and waiting per queue, the
//! scheduler's attempts by result, the API server's time per resource and etcd's commits
//! (the local stack runs it without fsync).

use anyhow::{Context, Result};
use kube::Client;
use testenv::Stack;
use testenv::process::metric_series;

use crate::report::Counters;

/// The controller-manager's figures start with this.
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// The API server's figures start with this.
pub const API_SERVER: &str = "kube-apiserver";
/// The queue of the volume binder's claims in the controller-manager.
pub const CLAIM_QUEUE: &str = "claims";

/// Verbs whose requests last as long as a watch: their time is waiting, not work.
const LONG_RUNNING: [&str; 3] = ["WATCH", "WATCHLIST", "CONNECT"];

/// Names the figure of one value of a label.
type Figure<'a> = &'a dyn Fn(&str) -> String;

/// Clients of the stack's components.
pub struct Components {
    apiserver: Client,
    controller_manager: Client,
    scheduler: Client,
    etcd: Client,
}

/// The figure of the seconds the controller-manager's workers spent on items of `queue`,
/// their own requests to the API server included (several workers at once count each).
pub fn working(queue: &str) -> String {
    format!("{CONTROLLER_MANAGER}: worker seconds, queue {queue}")
}

/// The figure of the seconds items waited in `queue` before a worker took them.
pub fn waiting(queue: &str) -> String {
    format!("{CONTROLLER_MANAGER}: seconds waiting, queue {queue}")
}

/// The figure of the items workers took from `queue`.
pub fn taken(queue: &str) -> String {
    format!("{CONTROLLER_MANAGER}: items taken, queue {queue}")
}

/// The figure of the seconds the API server spent on requests for `resource`, from
/// receiving each to answering it (requests at once count each; watches left out).
pub fn handling(resource: &str) -> String {
    format!("{API_SERVER}: request seconds, {resource}")
}

impl Components {
    /// Clients of the components of `stack`, as its administrator.
    pub async fn connect(stack: &Stack) -> Result<Self> {
        let local = |scheme: &str, port: &str| -> Result<String> {
            let port = stack
                .port(port)
                .with_context(|| format!("the stack's {port}"))?;
            Ok(format!("{scheme}://127.0.0.1:{port}"))
        };
        Ok(Self {
            apiserver: stack.client().await,
            controller_manager: stack.component_client(&local("https", "KCM_PORT")?).await,
            scheduler: stack.component_client(&local("https", "SCHED_PORT")?).await,
            etcd: stack
                .component_client(&local("http", "ETCD_METRICS_PORT")?)
                .await,
        })
    }

    /// Every counter the report reads, as it is now.
    pub async fn read(&self) -> Result<Counters> {
        let (apiserver, controller_manager, scheduler, etcd) = futures::try_join!(
            metrics(&self.apiserver, API_SERVER),
            metrics(&self.controller_manager, CONTROLLER_MANAGER),
            metrics(&self.scheduler, "kube-scheduler"),
            metrics(&self.etcd, "etcd"),
        )?;
        let scheduled = |result: &str| format!("kube-scheduler: scheduling attempts, {result}");
        let committing = |_: &str| "etcd: seconds committing to its database".to_owned();
        // (text, metric, the label it is summed by, the figure of each of the label's values)
        let series: [(&str, &str, &str, Figure<'_>); 6] = [
            (
                &controller_manager,
                "workqueue_work_duration_seconds_sum",
                "name",
                &working,
            ),
            (
                &controller_manager,
                "workqueue_queue_duration_seconds_sum",
                "name",
                &waiting,
            ),
            (
                &controller_manager,
                "workqueue_queue_duration_seconds_count",
                "name",
                &taken,
            ),
            (
                &scheduler,
                "scheduler_schedule_attempts_total",
                "result",
                &scheduled,
            ),
            (
                &apiserver,
                "apiserver_request_duration_seconds_sum",
                "resource",
                &handling,
            ),
            (
                &etcd,
                "etcd_disk_backend_commit_duration_seconds_sum",
                "",
                &committing,
            ),
        ];
        let mut counters = Counters::new();
        for (text, metric, label, figure) in series {
            for (labels, value) in metric_series(text, metric) {
                let of = |name: &str| labels.iter().find(|(l, _)| l == name).map(|(_, v)| v);
                if of("verb").is_some_and(|verb| LONG_RUNNING.contains(&verb.as_str())) {
                    continue;
                }
                // Requests for no resource (`/healthz`, `/metrics`) are not the run's work.
                let key = match of(label) {
                    Some(value) if !value.is_empty() => figure(value),
                    None if label.is_empty() => figure(""),
                    _ => continue,
                };
                *counters.entry(key).or_default() += value;
            }
        }
        Ok(counters)
    }
}

/// The `/metrics` text of the component `name` behind `client`.
async fn metrics(client: &Client, name: &str) -> Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("read the /metrics of {name}"))
}
