//! Support for the integration tests: the service in-process or as its built binary, and a
//! private FerretDB that a test may stop and restart.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;
use flaskmongo_webapp::{App, Config, serve};

/// Longest wait for a process to start listening or to exit.
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(20);

/// A `mongodb://` URI of the local stack's FerretDB, with a database of the caller's own.
pub fn stack_uri(prefix: &str) -> String {
    testenv::stack().mongodb_uri_for(&testenv::unique_name(prefix))
}

/// An HTTP client whose every request is bounded in time.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Sends `request`; returns its status and body text.
pub async fn send(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("a response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a body"))
}

/// GET `url`: its status and body text.
pub async fn get_text(url: &str) -> (u16, String) {
    send(http().get(url)).await
}

/// Serves the service in this process on a free port; returns its base URL.
/// `args` are extra command-line flags.
pub async fn spawn_app(mongodb_uri: &str, args: &[&str]) -> String {
    let argv = ["webapp", "--mongodb-uri", mongodb_uri]
        .into_iter()
        .chain(args.iter().copied());
    let config = Config::try_parse_from(argv).expect("valid flags");
    let app = App::new(&config).await.expect("valid MongoDB URI");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    tokio::spawn(serve(
        listener,
        app,
        std::future::pending(),
        config.shutdown(),
    ));
    url
}

/// Polls `url` until it answers `status` or `timeout` passes; returns whether it did.
pub async fn wait_for_status(url: &str, status: u16, timeout: Duration) -> bool {
    let client = http();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(response) = client.get(url).timeout(Duration::from_secs(5)).send().await
            && response.status().as_u16() == status
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// A FerretDB of the test's own on a free port, over SQLite files in a fresh directory.
/// It can be stopped and started again on the same port and data.
pub struct FerretDb {
    dir: PathBuf,
    port: u16,
    /// Where it serves its own metrics.
    debug_port: u16,
    child: Option<Child>,
}

impl FerretDb {
    /// Picks a free port and a fresh directory; nothing runs until [`FerretDb::start`].
    pub fn on_free_port() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(testenv::unique_name("ferretdb"));
        std::fs::create_dir_all(&dir).expect("create the FerretDB directory");
        Self {
            dir,
            port: testenv::process::free_addr().port(),
            debug_port: testenv::process::free_addr().port(),
            child: None,
        }
    }

    /// A `mongodb://` URI for `database` on this server.
    pub fn uri(&self, database: &str) -> String {
        format!("mongodb://{}/{database}", self.address())
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "FerretDB is already running");
        let log =
            std::fs::File::create(self.dir.join("ferretdb.log")).expect("create the FerretDB log");
        // The one launcher of FerretDB, which the local stack and the benchmark use too.
        let launcher = workspace_root().join("hack/ferretdb.sh");
        let child = Command::new(&launcher)
            .arg(self.port.to_string())
            .arg(&self.dir)
            .arg(self.debug_port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", launcher.display()));
        let child = self.child.insert(child);
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            let exited = child.try_wait().expect("FerretDB status");
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.join("ferretdb.log")).unwrap_or_default();
                panic!(
                    "FerretDB did not start listening on port {} ({exited:?}):\n{log}",
                    self.port
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// How many `command`s it has received since it started, by its own metrics.
    pub async fn commands(&self, command: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/debug/metrics", self.debug_port);
        let (status, text) = get_text(&url).await;
        assert_eq!(status, 200, "FerretDB's metrics at {url}: {text}");
        testenv::process::metric_series(&text, "ferretdb_client_requests_total")
            .into_iter()
            .filter(|(labels, _)| {
                labels
                    .iter()
                    .any(|(label, value)| label == "command" && value == command)
            })
            .map(|(_, count)| count)
            .sum()
    }

    /// Kills the server at once, as a crash would, and waits for it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FerretDb {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `webapp` binary, run with JSON logs on a free port of 127.0.0.1.
pub struct Webapp {
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Webapp {
    /// Starts the binary with only `MONGODB_URI` and `env` set, and waits for it to listen.
    /// It stops without a drain period unless `env` sets `DRAIN_SECS`.
    pub fn start(mongodb_uri: &str, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_webapp"))
            .env_clear()
            .env("MONGODB_URI", mongodb_uri)
            .env("LISTEN_ADDRESS", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("DRAIN_SECS", "0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the webapp binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect_lines(child.stdout.take().expect("stdout"), Arc::clone(&output)),
            collect_lines(child.stderr.take().expect("stderr"), Arc::clone(&output)),
        ];
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let address = loop {
            let listening = output.lock().expect("output lock").iter().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                (event["message"] == "listening")
                    .then(|| event["address"].as_str()?.parse().ok())?
            });
            if let Some(address) = listening {
                break address;
            }
            let exited = child.try_wait().expect("webapp status");
            if exited.is_some() || Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "webapp did not start listening ({exited:?}):\n{}",
                    output.lock().expect("output lock").join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            address,
            output,
            readers,
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://address` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `timeout`; `None` if it is still running.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("webapp status") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it has printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().expect("output lock").clone()
    }

    /// Stops it with SIGTERM, checks that it exits 0, and returns everything it printed.
    pub fn stop(mut self) -> Vec<String> {
        self.terminate();
        let status = self.wait_for_exit(PROCESS_TIMEOUT);
        if status.is_some() {
            // The pipes close with the process, so the readers have the last lines once they end.
            for reader in self.readers.drain(..) {
                let _ = reader.join();
            }
        }
        let output = self.output.lock().expect("output lock").clone();
        assert!(
            status.is_some_and(|status| status.success()),
            "webapp exit: {status:?}\n{}",
            output.join("\n")
        );
        output
    }
}

impl Drop for Webapp {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn collect_lines(
    stream: impl Read + Send + 'static,
    output: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            output.lock().expect("output lock").push(line);
        }
    })
}
