//! Prometheus metrics: reconciles, failures by reason, reconcile duration, and every
//! request the operator sends to the API server (counted on the wire, by a client layer).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use http::{Request, Response};
use kube::Client;
use kube::client::Body;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The operator's metrics; clones share the same counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    reconciles: Counter,
    failures: Family<Labels, Counter>,
    duration: Histogram,
    requests: Family<Labels, Counter>,
    writes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("reconciles", &self.inner.reconciles.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Fresh counters in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flaskmongo");
        let reconciles = Counter::default();
        let failures = Family::<Labels, Counter>::default();
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let requests = Family::<Labels, Counter>::default();
        let writes = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            duration.clone(),
        );
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, by HTTP method and resource",
            requests.clone(),
        );
        registry.register(
            "api_writes",
            "Write requests sent to the API server, except Lease renewals",
            writes.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                reconciles,
                failures,
                duration,
                requests,
                writes,
            }),
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &self.inner.registry);
        text
    }

    /// Counts a reconcile; the returned guard records its duration when dropped.
    pub fn reconcile_started(&self) -> ReconcileTimer {
        self.inner.reconciles.inc();
        ReconcileTimer {
            metrics: self.clone(),
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, reason: &str) {
        self.inner
            .failures
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }

    /// Reconciles started so far.
    pub fn reconciles(&self) -> u64 {
        self.inner.reconciles.get()
    }

    /// Requests sent so far with `method` to `resource` (e.g. `PATCH`, `deployments`).
    pub fn requests(&self, method: &str, resource: &str) -> u64 {
        self.inner
            .requests
            .get(&request_labels(method, resource))
            .map_or(0, |c| c.get())
    }

    /// Write requests (any method but GET) sent so far, except to `leases`, whose renewal
    /// is the leader's heartbeat rather than reconciling.
    pub fn writes_excluding_leases(&self) -> u64 {
        self.inner.writes.get()
    }

    fn count_request(&self, method: &str, path: &str) {
        let resource = resource_of(path);
        if method != "GET" && resource != "leases" {
            self.inner.writes.inc();
        }
        self.inner
            .requests
            .get_or_create(&request_labels(method, &resource))
            .inc();
    }
}

fn request_labels(method: &str, resource: &str) -> Labels {
    vec![
        ("method".to_owned(), method.to_owned()),
        ("resource".to_owned(), resource.to_owned()),
    ]
}

/// The resource (with its subresource) a request path names:
/// `/apis/apps/v1/namespaces/x/deployments/y/status` → `deployments/status`.
pub fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return "other".to_owned(),
    };
    let rest = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => [&[*resource][..], tail].concat(),
        other => other.to_vec(),
    };
    match rest.as_slice() {
        [] => "other".to_owned(),
        [resource] | [resource, _] => (*resource).to_owned(),
        [resource, _, subresource, ..] => format!("{resource}/{subresource}"),
    }
}

/// Records the duration of one reconcile when dropped.
pub struct ReconcileTimer {
    metrics: Metrics,
    started: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics
            .inner
            .duration
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// A client that sends through `client` and counts each request in `metrics`.
pub fn counting_client(client: Client, metrics: Metrics) -> Client {
    let namespace = client.default_namespace().to_owned();
    Client::new(Counting { client, metrics }, namespace)
}

#[derive(Clone)]
struct Counting {
    client: Client,
    metrics: Metrics,
}

impl tower::Service<Request<Body>> for Counting {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<'static, Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        self.metrics
            .count_request(request.method().as_str(), request.uri().path());
        let client = self.client.clone();
        Box::pin(async move { client.send(request).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_from_paths() {
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/a/deployments/b"),
            "deployments"
        );
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/a/deployments"),
            "deployments"
        );
        assert_eq!(
            resource_of("/apis/apps/v1/namespaces/a/deployments/b/scale"),
            "deployments/scale"
        );
        assert_eq!(
            resource_of("/api/v1/persistentvolumes/pv"),
            "persistentvolumes"
        );
        assert_eq!(resource_of("/api/v1/namespaces/a"), "namespaces");
        assert_eq!(resource_of("/api/v1/namespaces"), "namespaces");
        assert_eq!(
            resource_of("/apis/flaskmongo.dev/v1alpha1/namespaces/a/flaskmongoapps/x/status"),
            "flaskmongoapps/status"
        );
        assert_eq!(resource_of("/version"), "other");
    }

    #[test]
    fn counts_render_as_prometheus_text() {
        let metrics = Metrics::new();
        drop(metrics.reconcile_started());
        metrics.reconcile_failed("Conflict");
        metrics.count_request("PATCH", "/apis/apps/v1/namespaces/a/deployments/b");
        metrics.count_request("PUT", "/apis/coordination.k8s.io/v1/namespaces/a/leases/l");
        assert_eq!(metrics.reconciles(), 1);
        assert_eq!(metrics.writes_excluding_leases(), 1);
        let text = metrics.render();
        assert!(text.contains("flaskmongo_reconciles_total 1"), "{text}");
        assert!(
            text.contains("flaskmongo_reconcile_failures_total{reason=\"Conflict\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("flaskmongo_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "flaskmongo_api_requests_total{method=\"PATCH\",resource=\"deployments\"} 1"
            ),
            "{text}"
        );
    }
}
