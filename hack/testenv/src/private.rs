//! A stack of a test's own, for fault tests that stop the API server or FerretDB: stopping
//! a component of the shared stack would break the tests running beside them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Stack;

/// A local stack started with its own state directory; stopped and removed when dropped,
/// also when the test panics.
pub struct PrivateStack {
    dir: PathBuf,
    /// The stack's env file, read like the shared one.
    pub stack: Stack,
}

impl PrivateStack {
    /// Runs `hack/local-stack.sh up` with state under `target/<name>` (ports are chosen
    /// free, so it never collides with another stack); panics if it does not start.
    pub fn up(name: &str) -> Self {
        let dir = workspace_root().join("target").join(name);
        let mut guard = Self {
            dir,
            stack: Stack {
                kubeconfig: PathBuf::new(),
                mongodb_uri: String::new(),
                vars: Default::default(),
            },
        };
        guard.run("up", None);
        guard.stack = crate::stack_from(&guard.dir.join("env"));
        guard
    }

    /// Stops one component (`kube-apiserver`, `ferretdb`, ...).
    pub fn stop(&self, component: &str) {
        self.run("stop", Some(component));
    }

    /// Starts one stopped component again and waits until it is healthy.
    pub fn start(&self, component: &str) {
        self.run("start", Some(component));
    }

    fn run(&self, command: &str, component: Option<&str>) {
        let status = Command::new(workspace_root().join("hack/local-stack.sh"))
            .arg(command)
            .args(component)
            .env("LOCAL_STACK_DIR", &self.dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run hack/local-stack.sh {command}: {e}"));
        assert!(
            status.success(),
            "hack/local-stack.sh {command} {} failed ({status}) for {}",
            component.unwrap_or_default(),
            self.dir.display()
        );
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        // Best effort: a failure to stop is printed by the script, and a panic here would
        // hide the test's own.
        let _ = Command::new(workspace_root().join("hack/local-stack.sh"))
            .arg("down")
            .env("LOCAL_STACK_DIR", &self.dir)
            .status();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}
