//! Where a run's time goes inside the stack, from each component's own `/metrics`, read
//! before and after the run: the controller-manager's work and waiting per queue, the
//! scheduler's attempts by result, the API server's requests and time per resource and
//! etcd's commits (the local stack runs it without fsync).

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

/// A series' labels, as `metric_series` reads them.
type Labels = [(String, String)];

/// The figure a series adds to, from its labels; `None` leaves the series out.
type Key<'a> = Box<dyn Fn(&Labels) -> Option<String> + 'a>;

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

/// The figure of the API server's requests with `verb` for `resource` (`PATCH pods/status`).
pub fn requested(verb_and_resource: &str) -> String {
    format!("{API_SERVER}: requests, {verb_and_resource}")
}

/// The value of `name` among `labels`, if it has a non-empty one.
fn label<'l>(labels: &'l Labels, name: &str) -> Option<&'l str> {
    labels
        .iter()
        .find(|(l, value)| l == name && !value.is_empty())
        .map(|(_, value)| value.as_str())
}

/// Sums a metric's series by their value of `name`, each value named by `figure`. Requests
/// for no resource (`/healthz`, `/metrics`) have none, and are not the run's work.
fn by<'a>(name: &'a str, figure: &'a dyn Fn(&str) -> String) -> Key<'a> {
    Box::new(move |labels| label(labels, name).map(figure))
}

/// The figure of one series of `apiserver_request_total`: its verb and resource, with the
/// subresource if any.
fn request(labels: &Labels) -> Option<String> {
    let resource = label(labels, "resource")?;
    let verb = label(labels, "verb")?;
    Some(requested(&match label(labels, "subresource") {
        Some(subresource) => format!("{verb} {resource}/{subresource}"),
        None => format!("{verb} {resource}"),
    }))
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
        Ok(counters(&apiserver, &controller_manager, &scheduler, &etcd))
    }
}

/// The counters the report reads, from the `/metrics` texts of the components.
fn counters(apiserver: &str, controller_manager: &str, scheduler: &str, etcd: &str) -> Counters {
    let scheduled = |result: &str| format!("kube-scheduler: scheduling attempts, {result}");
    // (text, metric, the figure each series adds to)
    let series: [(&str, &str, Key<'_>); 7] = [
        (
            controller_manager,
            "workqueue_work_duration_seconds_sum",
            by("name", &working),
        ),
        (
            controller_manager,
            "workqueue_queue_duration_seconds_sum",
            by("name", &waiting),
        ),
        (
            controller_manager,
            "workqueue_queue_duration_seconds_count",
            by("name", &taken),
        ),
        (
            scheduler,
            "scheduler_schedule_attempts_total",
            by("result", &scheduled),
        ),
        (
            apiserver,
            "apiserver_request_duration_seconds_sum",
            by("resource", &handling),
        ),
        (apiserver, "apiserver_request_total", Box::new(request)),
        (
            etcd,
            "etcd_disk_backend_commit_duration_seconds_sum",
            Box::new(|_| Some("etcd: seconds committing to its database".to_owned())),
        ),
    ];
    let mut counters = Counters::new();
    for (text, metric, key) in series {
        for (labels, value) in metric_series(text, metric) {
            if label(&labels, "verb").is_some_and(|verb| LONG_RUNNING.contains(&verb)) {
                continue;
            }
            if let Some(figure) = key(&labels) {
                *counters.entry(figure).or_default() += value;
            }
        }
    }
    counters
}

/// The `/metrics` text of the component `name` behind `client`.
async fn metrics(client: &Client, name: &str) -> Result<String> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("read the /metrics of {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_verb_and_resource_without_watches_or_plain_paths() {
        let apiserver = r#"apiserver_request_total{code="201",resource="events",verb="POST"} 3
apiserver_request_total{code="409",resource="events",verb="POST"} 1
apiserver_request_total{code="200",resource="pods",subresource="status",verb="PATCH"} 5
apiserver_request_total{code="200",resource="pods",subresource="",verb="WATCH"} 7
apiserver_request_total{code="200",resource="",verb="GET"} 11
apiserver_request_duration_seconds_sum{resource="pods",verb="PATCH"} 0.5
"#;
        let counted = counters(apiserver, "", "", "");
        let expected: Counters = [
            (requested("POST events"), 4.0),
            (requested("PATCH pods/status"), 5.0),
            (handling("pods"), 0.5),
        ]
        .into_iter()
        .collect();
        assert_eq!(counted, expected);
    }
}
