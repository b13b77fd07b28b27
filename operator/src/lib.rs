//! The FlaskMongoApp operator: keeps a web app, its MongoDB and everything they need
//! matching one `FlaskMongoApp` object.
//!
//! [`run`] is the whole operator (controller, optional leader election, metrics and health
//! server) as a library call, so it can run in-process, scoped to one namespace.

pub mod apply;
pub mod backoff;
pub mod cache;
pub mod children;
pub mod controller;
pub mod error;
pub mod events;
pub mod execute;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod orphans;
pub mod plan;
pub mod prepare;
pub mod preparer_keeper;
pub mod server;
pub mod status;
pub mod status_queue;
pub mod telemetry;
pub mod watches;

use std::net::SocketAddr;
use std::time::Duration;

use flaskmongo_crd::FlaskMongoApp;
use futures::FutureExt;
use kube::{Client, CustomResourceExt};

pub use crate::error::{Error, Result};
pub use crate::leader::LeaseConfig;
pub use crate::metrics::Metrics;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The namespace to watch; `None` watches all.
    pub namespace: Option<String>,
    /// Most objects reconciled at once.
    pub concurrency: u16,
    /// Interval of the periodic re-check of a healthy object.
    pub requeue: Duration,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None` serves nothing.
    pub metrics_addr: Option<SocketAddr>,
    /// The Lease to hold before reconciling; `None` reconciles at once.
    pub leader_election: Option<LeaseConfig>,
    /// Identity of this process in Events (and, usually, in the Lease).
    pub identity: String,
    /// Where the counters go.
    pub metrics: Metrics,
    /// Where the static volumes live and what prepares them.
    pub volumes: Volumes,
}

/// Where the static volumes live and what prepares their directories: the
/// administrator's choices, never a user's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volumes {
    /// The directory on the nodes under which every static volume gets a directory of its
    /// own.
    pub root: String,
    /// The namespace of the volume preparer (a DaemonSet) and of the one-shot pods that hand
    /// volumes' directories to MongoDB's user. They run as root with a directory of the node
    /// mounted, so it must admit such pods, and no user needs any right in it.
    pub preparation_namespace: String,
    /// The image of those pods, and of the container in MongoDB's pod that waits for its
    /// directory: the operator's own (they run `operator prepare-volumes`,
    /// `prepare-volume` and `await-volume`).
    pub preparation_image: String,
}

/// Default of [`Volumes::root`].
pub const DEFAULT_VOLUME_ROOT: &str = "/var/lib/flaskmongo";
/// Default of [`Volumes::preparation_namespace`].
pub const DEFAULT_PREPARATION_NAMESPACE: &str = "flaskmongo-volumes";

/// The image this operator is released as, the default of [`Volumes::preparation_image`].
pub fn default_preparation_image() -> String {
    format!("flaskmongo/operator:{}", env!("CARGO_PKG_VERSION"))
}

impl Default for Volumes {
    fn default() -> Self {
        Self {
            root: DEFAULT_VOLUME_ROOT.to_owned(),
            preparation_namespace: DEFAULT_PREPARATION_NAMESPACE.to_owned(),
            preparation_image: default_preparation_image(),
        }
    }
}

impl Config {
    /// Defaults: 8 reconciles at once, a re-check every 5 minutes, no server, no election.
    pub fn new(namespace: Option<String>) -> Self {
        Self {
            namespace,
            concurrency: 8,
            requeue: Duration::from_secs(300),
            metrics_addr: None,
            leader_election: None,
            identity: default_identity(),
            metrics: Metrics::new(),
            volumes: Volumes::default(),
        }
    }
}

/// `path` as a volume root: absolute, below `/`, without `.` or `..`, written without
/// repeated or trailing slashes, so every volume's directory is inside it.
pub fn volume_root(path: &str) -> Result<String> {
    use std::path::{Component, Path};
    let mut components = Path::new(path).components();
    let names: Option<Vec<&str>> = match components.next() {
        Some(Component::RootDir) => components
            .map(|c| match c {
                Component::Normal(name) => name.to_str(),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    match names {
        Some(names) if !names.is_empty() => Ok(format!("/{}", names.join("/"))),
        _ => Err(Error::Config(format!(
            "volume root {path:?} must be an absolute directory below / without . or .."
        ))),
    }
}

/// `$HOSTNAME` (the pod's name in a cluster) with a random suffix.
pub fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "operator".to_owned());
    format!(
        "{host}-{}",
        &children::secret::generate_password()[..6].to_ascii_lowercase()
    )
}

/// The CRD as YAML, as `operator crd` prints it and `config/crd/` holds it.
///
/// Keys are sorted: whether `serde_json` keeps insertion order depends on the features
/// other crates of a build turn on, and the text must not.
pub fn crd_yaml() -> Result<String> {
    let crd = serde_json::to_value(FlaskMongoApp::crd()).map_err(|source| Error::Serialize {
        what: "the CRD".to_owned(),
        source,
    })?;
    Ok(serde_yaml::to_string(&sort_keys(crd))?)
}

/// `value` with the keys of every object in sorted order.
pub(crate) fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(sort_keys).collect())
        }
        other => other,
    }
}

/// Runs the operator until `shutdown` resolves (then stops gracefully and gives up the
/// Lease) or, with leader election, until the Lease is lost (an error: the process should
/// exit and be restarted as a standby).
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = shutdown.shared();
    let client = metrics::counting_client(client, config.metrics.clone());
    let readiness = server::Readiness::default();
    if let Some(addr) = config.metrics_addr {
        server::serve(
            addr,
            config.metrics.clone(),
            readiness.clone(),
            shutdown.clone(),
        )
        .await?;
    }
    let elector = config
        .leader_election
        .clone()
        .map(|lease| leader::LeaderElector::new(client.clone(), lease))
        .transpose()?;
    if let Some(elector) = &elector {
        // A standby is healthy and ready: it is waiting, by design.
        readiness.set_ready();
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.clone() => return Ok(()),
        }
    }
    let ready = readiness.clone();
    let controller = controller::run(
        client.clone(),
        &config,
        config.identity.clone(),
        shutdown.clone(),
        move || ready.set_ready(),
    );
    let Some(elector) = elector else {
        controller.await;
        return Ok(());
    };
    tokio::select! {
        () = controller => {}
        lost = elector.hold() => return Err(lost),
    }
    // The work is done either way; an unreleased Lease only makes a standby wait it out.
    if let Err(error) = elector.release().await {
        tracing::warn!(%error, "cannot release the leader Lease");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_volume_root_is_an_absolute_directory_below_the_root() {
        let root = super::volume_root;
        assert_eq!(root("/var/lib/flaskmongo").unwrap(), "/var/lib/flaskmongo");
        assert_eq!(root("//srv//data/").unwrap(), "/srv/data");
        assert_eq!(root("/srv/./data").unwrap(), "/srv/data");
        for bad in ["/", "", "data", "/srv/../etc", "./srv"] {
            assert!(root(bad).is_err(), "{bad:?} is refused");
        }
    }
}
