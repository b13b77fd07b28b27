//! `operator`: runs the FlaskMongoApp controller, prints its CRD, or prepares volumes'
//! directories on a node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use flaskmongo_operator::telemetry::{self, LogFormat};
use flaskmongo_operator::{Config, Error, LeaseConfig};

#[derive(Parser)]
#[command(version, about = "Kubernetes operator for FlaskMongoApp objects")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller against the cluster of the current kubeconfig (or in-cluster).
    Run(RunArgs),
    /// Print the CustomResourceDefinition as YAML.
    Crd,
    /// Hand a volume's directory and everything in it to a user (what the operator's
    /// one-shot pods run on a node, as root, before MongoDB starts there without root).
    PrepareVolume(PrepareArgs),
    /// Hand every new volume directory under a root to a user, until stopped (what the
    /// volume preparer runs on every node, as root with CHOWN alone).
    PrepareVolumes(PrepareRootArgs),
    /// Wait until a directory is writable (what MongoDB's pod runs first, unprivileged).
    AwaitVolume(AwaitArgs),
}

#[derive(Args)]
struct PrepareRootArgs {
    /// The volume root, as mounted in the pod.
    root: PathBuf,
    /// The new owner, UID:GID.
    #[arg(long, value_parser = flaskmongo_operator::prepare::parse_owner)]
    owner: (u32, u32),
    /// Milliseconds between two looks at the root.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    interval_ms: u64,
}

#[derive(Args)]
struct AwaitArgs {
    /// The directory, as mounted in the pod.
    directory: PathBuf,
    /// Seconds to wait at most.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout_seconds: u64,
}

#[derive(Args)]
struct PrepareArgs {
    /// The directory, as mounted in the pod.
    directory: PathBuf,
    /// The new owner, UID:GID.
    #[arg(long, value_parser = flaskmongo_operator::prepare::parse_owner)]
    owner: (u32, u32),
}

#[derive(Args)]
struct RunArgs {
    /// Namespace to watch; empty or absent watches all namespaces.
    #[arg(long, env = "WATCH_NAMESPACE", default_value = "")]
    namespace: String,
    /// Address of the /metrics, /healthz and /readyz server.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Hold a Lease before reconciling, so only one replica works at a time (on/off).
    #[arg(long, env = "LEADER_ELECTION", default_value = "false", default_missing_value = "true", num_args = 0..=1, value_parser = BoolishValueParser::new())]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "flaskmongo-operator")]
    lease_name: String,
    /// Namespace of the leader Lease; defaults to the client's namespace (the pod's own
    /// namespace in a cluster).
    #[arg(long, env = "LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Identity of this process in the Lease and in Events; defaults to the host name
    /// with a random suffix.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Directory on the nodes under which every MongoDB volume gets a directory of its own.
    #[arg(long, env = "VOLUME_ROOT", default_value = flaskmongo_operator::DEFAULT_VOLUME_ROOT)]
    volume_root: String,
    /// Namespace of the volume preparer and the one-shot pods that prepare the volumes'
    /// directories; it must admit root pods with a hostPath volume, and no user needs any
    /// right in it.
    #[arg(long, env = "VOLUME_PREPARATION_NAMESPACE", default_value = flaskmongo_operator::DEFAULT_PREPARATION_NAMESPACE)]
    volume_preparation_namespace: String,
    /// Image of those pods and of MongoDB's wait for its volume: this operator's own image
    /// [default: flaskmongo/operator:VERSION].
    #[arg(long, env = "VOLUME_PREPARATION_IMAGE")]
    volume_preparation_image: Option<String>,
    /// Most objects reconciled at once.
    #[arg(long, env = "CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
}

/// One thread: the operator waits on the API server far more than it computes (a few percent
/// of a core at 5,000 objects), and glibc's allocator keeps an arena of freed memory for
/// each thread that allocates, which more threads would add to the operator's footprint.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Crd => match flaskmongo_operator::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        },
        Command::PrepareVolume(args) => {
            let (uid, gid) = args.owner;
            match flaskmongo_operator::prepare::prepare(&args.directory, uid, gid) {
                Ok(prepared) => {
                    println!(
                        "{}: owner {uid}:{gid}, mode 0700; {} of {} entries changed owner",
                        args.directory.display(),
                        prepared.owners_changed,
                        prepared.entries
                    );
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::PrepareVolumes(args) => {
            let (uid, gid) = args.owner;
            let every = Duration::from_millis(args.interval_ms);
            flaskmongo_operator::prepare::keep_handing_over(&args.root, uid, gid, every)
        }
        Command::AwaitVolume(args) => {
            let every = Duration::from_millis(50);
            let limit = Duration::from_secs(args.timeout_seconds);
            match flaskmongo_operator::prepare::await_writable(&args.directory, every, limit) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run(args) => {
            telemetry::init(args.log_format);
            match run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn run(args: RunArgs) -> flaskmongo_operator::Result<()> {
    // Listening before anything else, so a signal during start-up stops gracefully too.
    let shutdown = shutdown_signal()?;
    let client = kube::Client::try_default()
        .await
        .map_err(|e| Error::kube("connect to the cluster (kubeconfig or in-cluster)", e))?;
    let namespace = Some(args.namespace).filter(|n| !n.is_empty());
    let mut config = Config::new(namespace);
    if let Some(identity) = args.identity {
        config.identity = identity;
    }
    config.concurrency = args.concurrency;
    config.volumes.root = flaskmongo_operator::volume_root(&args.volume_root)?;
    config.volumes.preparation_namespace = args.volume_preparation_namespace;
    if let Some(image) = args.volume_preparation_image {
        config.volumes.preparation_image = image;
    }
    config.metrics_addr = Some(args.metrics_addr);
    if args.leader_election {
        let lease_namespace = args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned());
        config.leader_election = Some(LeaseConfig::new(
            args.lease_name,
            lease_namespace,
            config.identity.clone(),
        ));
    }
    tracing::info!(namespace = ?config.namespace, identity = %config.identity, leader_election = args.leader_election, "starting");
    flaskmongo_operator::run(client, config, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Listens for SIGINT and SIGTERM from now on; the future resolves on the first.
fn shutdown_signal() -> flaskmongo_operator::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen =
        |kind| signal(kind).map_err(|e| Error::Config(format!("cannot listen for signals: {e}")));
    let (mut terminate, mut interrupt) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
    );
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down");
    })
}
