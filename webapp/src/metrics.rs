//! Prometheus metrics of the service, served at `/metrics` in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the latency buckets, in seconds: from half a millisecond to ten seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabels {
    operation: &'static str,
}

/// The service's counters and histograms. Routes are the router's own patterns and methods
/// a fixed set, so a client cannot grow the label sets.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    database_errors: Family<DatabaseLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        let latency: Family<LatencyLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "http_request_duration_seconds",
            "Time until the response head was ready, by route and method",
            latency.clone(),
        );
        let database_errors = Family::<DatabaseLabels, Counter>::default();
        registry.register(
            "database_errors",
            "Failed MongoDB operations by operation",
            database_errors.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            database_errors,
        }
    }
}

impl Metrics {
    /// Counts one answered request. `route` is the matched route or `unmatched`.
    pub fn observe_request(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
        latency: Duration,
    ) {
        self.latency
            .get_or_create(&LatencyLabels { route, method })
            .observe(latency.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
    }

    /// Counts one failed database operation (`insert`, `find`, `ping`).
    pub fn database_error(&self, operation: &'static str) {
        self.database_errors
            .get_or_create(&DatabaseLabels { operation })
            .inc();
    }

    /// Every metric in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Encoding into a String only fails if a metric's own encoder does, which these do not.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
