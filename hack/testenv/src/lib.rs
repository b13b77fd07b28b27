//! Access to the local test stack that `make local-up` starts.
//!
//! Integration tests never look at the caller's own `KUBECONFIG` or `MONGODB_URI`: they
//! read the stack's env file, so they cannot touch a real cluster by accident. Without a
//! stack they fail and say how to start one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

pub mod private;
pub mod process;

/// What `make local-up` wrote into its env file.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Path of the admin kubeconfig of the local API server.
    pub kubeconfig: PathBuf,
    /// `mongodb://` URI of the local MongoDB-wire server (FerretDB).
    pub mongodb_uri: String,
    /// Every variable of the env file.
    pub vars: HashMap<String, String>,
}

/// The env file: `$LOCAL_STACK_ENV`, else `.local/env` at the workspace root.
pub fn env_file() -> PathBuf {
    match std::env::var_os("LOCAL_STACK_ENV") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.local/env"),
    }
}

/// A client of `config`, or a panic that says why not.
fn client_of(config: Config) -> Client {
    Client::try_from(config).unwrap_or_else(|err| panic!("cannot build a kube client: {err}"))
}

/// Reads the stack's env file, or panics with how to start the stack.
pub fn stack() -> Stack {
    stack_from(&env_file())
}

/// Reads the env file at `path`, or panics with how to start the stack.
pub fn stack_from(path: &Path) -> Stack {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| {
        panic!(
            "no local test stack: cannot read {} ({err}).\n\
             Start one with `make local-up` (or run everything with `make test`).",
            path.display()
        )
    });
    let vars: HashMap<String, String> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.trim_matches(['\'', '"']).to_owned()))
        .collect();
    let required = |key: &str| {
        vars.get(key).cloned().unwrap_or_else(|| {
            panic!(
                "{} has no {key}; restart the stack with `make local-down local-up`",
                path.display()
            )
        })
    };
    Stack {
        kubeconfig: PathBuf::from(required("KUBECONFIG")),
        mongodb_uri: required("MONGODB_URI"),
        vars,
    }
}

impl Stack {
    /// A kube client for the local API server, as its administrator.
    pub async fn client(&self) -> Client {
        client_of(self.admin_config().await)
    }

    /// The administrator's kubeconfig, as a client's configuration.
    async fn admin_config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", self.kubeconfig.display()));
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap_or_else(|err| panic!("bad kubeconfig {}: {err}", self.kubeconfig.display()))
    }

    /// A client for the stack's component serving at `url` on 127.0.0.1 (its `/metrics`), as
    /// the administrator. The controller-manager and the scheduler serve with certificates
    /// they made themselves, so none is verified: the address is this machine's.
    pub async fn component_client(&self, url: &str) -> Client {
        let mut config = self.admin_config().await;
        config.cluster_url = url
            .parse()
            .unwrap_or_else(|err| panic!("bad component URL {url}: {err}"));
        config.accept_invalid_certs = true;
        client_of(config)
    }

    /// The port `name` (`KCM_PORT`, ...) that `hack/local-stack.sh up` chose, from its
    /// `ports` file.
    pub fn port(&self, name: &str) -> std::io::Result<u16> {
        let path = self.dir()?.join("ports");
        std::fs::read_to_string(&path)?
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("{}: no {name}", path.display())))
    }

    /// `kubectl` of the pinned version, talking to the local API server as its administrator.
    pub fn kubectl(&self) -> std::process::Command {
        let kube_bin = self
            .vars
            .get("KUBE_BIN")
            .map(PathBuf::from)
            .unwrap_or_default();
        let mut command = std::process::Command::new(kube_bin.join("kubectl"));
        command.env("KUBECONFIG", &self.kubeconfig);
        command
    }

    /// The stack's processes by name (`etcd`, `kube-apiserver`, ...), from the pid files that
    /// `hack/local-stack.sh up` writes, sorted by name.
    pub fn components(&self) -> std::io::Result<Vec<(String, u32)>> {
        let mut components = Vec::new();
        for entry in std::fs::read_dir(self.dir()?.join("pids"))? {
            let path = entry?.path();
            let Some(name) = path.file_stem().and_then(|stem| stem.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path)?;
            let pid = text.trim().parse().map_err(|err| {
                std::io::Error::other(format!("{}: not a pid: {err}", path.display()))
            })?;
            components.push((name.to_owned(), pid));
        }
        components.sort();
        Ok(components)
    }

    /// The folder `hack/local-stack.sh up` keeps the stack's state in.
    fn dir(&self) -> std::io::Result<&Path> {
        self.vars
            .get("LOCAL_STACK_DIR")
            .map(Path::new)
            .ok_or_else(|| {
                std::io::Error::other(
                    "the stack's env file has no LOCAL_STACK_DIR: restart the stack",
                )
            })
    }

    /// A `mongodb://` URI for a database of its own, so tests do not see each other's data.
    pub fn mongodb_uri_for(&self, database: &str) -> String {
        let (base, query) = match self.mongodb_uri.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.mongodb_uri.as_str(), String::new()),
        };
        let authority = base.trim_end_matches('/');
        let authority = match authority
            .strip_prefix("mongodb://")
            .and_then(|rest| rest.split_once('/'))
        {
            Some((hosts, _old_database)) => format!("mongodb://{hosts}"),
            None => authority.to_owned(),
        };
        format!("{authority}/{database}{query}")
    }
}

/// Installs (or updates) `crd` by server-side apply as `manager`, then waits (at most
/// 30 s) until the API server serves it.
pub async fn install_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    manager: &str,
) -> Result<(), String> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.name_any();
    crds.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(crd),
    )
    .await
    .map_err(|e| format!("cannot apply the CRD {name}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let served = crds
            .get(&name)
            .await
            .map_err(|e| format!("cannot read the CRD {name}: {e}"))?;
        let established = served
            .status
            .and_then(|status| status.conditions)
            .iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("the CRD {name} is not established after 30 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A name no other test uses: `prefix` plus random lowercase letters and digits.
pub fn unique_name(prefix: &str) -> String {
    use rand::Rng;
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    format!("{prefix}-{suffix}")
}

/// A namespace of the test's own. A failed test leaves it behind for inspection;
/// the stack is thrown away as a whole by `make local-down`.
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Creates a namespace named `prefix-<random>`.
    pub async fn create(client: &Client, prefix: &str) -> Self {
        let name = unique_name(prefix);
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("cannot create namespace {name}: {err}"));
        Self {
            name,
            client: client.clone(),
        }
    }

    /// Deletes the namespace (the namespace controller removes what is in it).
    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::background())
            .await
            .unwrap_or_else(|err| panic!("cannot delete namespace {}: {err}", self.name));
    }
}
