//! The operator as a separate process (the built binary), for tests and benchmarks that
//! kill it, restart it or measure its memory and CPU time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `operator run`, killed when dropped.
pub struct OperatorProcess {
    child: Child,
    /// Address of its `/metrics`, `/healthz` and `/readyz` server.
    pub metrics_addr: SocketAddr,
    /// File its standard output and error go to.
    pub log: PathBuf,
}

/// Memory and CPU time of a process and its descendants, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Resident set size now (`VmRSS`), in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size (`VmHWM`), in bytes, summed over the processes.
    pub peak_rss_bytes: u64,
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// The system part of `cpu_seconds`: time the kernel spent on the process's behalf (its
    /// system calls: sockets, waits, wake-ups).
    pub system_cpu_seconds: f64,
}

impl OperatorProcess {
    /// Starts `binary run` for `namespace` against the cluster of `kubeconfig`, with the
    /// extra arguments `args`, logging to `log`; returns once `/readyz` answers 200 (at most
    /// 60 s, then panics with the log's tail).
    pub fn start(
        binary: &Path,
        kubeconfig: &Path,
        namespace: &str,
        args: &[&str],
        log: PathBuf,
    ) -> Self {
        let metrics_addr = free_addr();
        let output = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let stderr = output.try_clone().expect("a log file handle can be cloned");
        let child = Command::new(binary)
            .arg("run")
            .args(["--namespace", namespace])
            .args(["--metrics-addr", &metrics_addr.to_string()])
            .args(["--log-format", "json"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("WATCH_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut process = Self {
            child,
            metrics_addr,
            log,
        };
        process.wait_ready(Duration::from_secs(60));
        process
    }

    /// The operating system's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn wait_ready(&mut self, timeout: Duration) {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = http_get(self.metrics_addr, "/readyz") {
                return;
            }
            if !self.is_running() || started.elapsed() > timeout {
                panic!(
                    "the operator did not become ready within {timeout:?}; its log ends with:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the process's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The process's `/metrics` text.
    pub fn metrics(&self) -> std::io::Result<String> {
        http_get(self.metrics_addr, "/metrics").map(|(_, body)| body)
    }

    /// The value of the counter or gauge sample `name` (the whole series name with its
    /// labels, as the text format writes it), summed over every series that starts so.
    pub fn metric(&self, name: &str) -> f64 {
        let text = self
            .metrics()
            .unwrap_or_else(|e| panic!("cannot read the operator's /metrics: {e}"));
        sum_metric(&text, name)
    }

    /// Memory and CPU time so far.
    pub fn usage(&self) -> Usage {
        usage(self.pid()).unwrap_or_else(|e| panic!("cannot read /proc of the operator: {e}"))
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(mut self) {
        self.kill_now();
    }

    fn kill_now(&mut self) {
        // SIGKILL: no graceful shutdown, no Lease released, as when a node dies.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill_now();
    }
}

/// Sum of the samples whose series name (with labels) starts with `prefix`.
pub fn sum_metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(prefix))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// The series of the metric `name` in the text format `text`: each one's labels, as
/// `(label, value)` pairs in the order written (none for a metric without labels), and its
/// value.
pub fn metric_series(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let labels = labels
                .split(',')
                .filter_map(|pair| {
                    let (label, value) = pair.split_once('=')?;
                    Some((label.to_owned(), value.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.trim().parse().ok()?))
        })
        .collect()
}

/// `VmRSS`, `VmHWM` and `utime + stime` of process `pid` and all its descendants alive now
/// (the workers of a server that forks them count as the server).
pub fn usage(pid: u32) -> std::io::Result<Usage> {
    let mut total = Usage {
        rss_bytes: 0,
        peak_rss_bytes: 0,
        cpu_seconds: 0.0,
        system_cpu_seconds: 0.0,
    };
    let ticks_per_second = clock_ticks_per_second();
    for (index, member) in process_tree(pid)?.into_iter().enumerate() {
        let read = |file: &str| std::fs::read_to_string(format!("/proc/{member}/{file}"));
        let (status, stat) = match (read("status"), read("stat")) {
            (Ok(status), Ok(stat)) => (status, stat),
            // A descendant may exit while it is read; the process itself may not.
            (Err(error), _) | (_, Err(error)) if index == 0 => return Err(error),
            _ => continue,
        };
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        total.rss_bytes += kib("VmRSS:") * 1024;
        total.peak_rss_bytes += kib("VmHWM:") * 1024;
        let fields = stat_fields(&stat);
        let ticks =
            |index: usize| -> u64 { fields.get(index).and_then(|f| f.parse().ok()).unwrap_or(0) };
        total.cpu_seconds += (ticks(11) + ticks(12)) as f64 / ticks_per_second;
        total.system_cpu_seconds += ticks(12) as f64 / ticks_per_second;
    }
    Ok(total)
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and
/// parentheses), from the state (field 3) on: the parent is index 1, utime and stime 11 and 12.
fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect()
}

/// `root` first, then its descendants, from the parents named in `/proc/*/stat`.
fn process_tree(root: u32) -> std::io::Result<Vec<u32>> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Gone since the directory was listed: not part of any tree.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some(parent) = stat_fields(&stat).get(1).and_then(|f| f.parse().ok()) {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        tree.extend(children.get(&pid).into_iter().flatten());
        next += 1;
    }
    Ok(tree)
}

/// `getconf CLK_TCK` (100 on every Linux this runs on, asked rather than assumed).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// A plain HTTP/1.0 GET: the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_series_of_a_metric() {
        let text = "# HELP x_total X\n\
                    x_total{method=\"GET\"} 3\n\
                    x_total{method=\"PATCH\"} 4\n\
                    xy_total 100\n";
        assert_eq!(sum_metric(text, "x_total"), 7.0);
        assert_eq!(sum_metric(text, "x_total{method=\"PATCH\"}"), 4.0);
        assert_eq!(sum_metric(text, "absent"), 0.0);
    }

    #[test]
    fn splits_a_metric_by_its_labels() {
        let text = "# HELP x_total X\n\
                    x_total{method=\"GET\",resource=\"pods\"} 3\n\
                    x_total{method=\"PATCH\",resource=\"deployments/status\"} 4\n\
                    xy_total{method=\"GET\"} 100\n";
        let pair = |label: &str, value: &str| (label.to_owned(), value.to_owned());
        assert_eq!(
            metric_series(text, "x_total"),
            vec![
                (vec![pair("method", "GET"), pair("resource", "pods")], 3.0),
                (
                    vec![
                        pair("method", "PATCH"),
                        pair("resource", "deployments/status")
                    ],
                    4.0
                ),
            ]
        );
        assert!(metric_series(text, "absent").is_empty());
        let unlabelled = "x_seconds_sum 2.5\nx_seconds_sum_more 1\n";
        assert_eq!(
            metric_series(unlabelled, "x_seconds_sum"),
            vec![(vec![], 2.5)]
        );
    }

    #[test]
    fn reads_its_own_usage() {
        // System calls for a moment, so that the kernel's part is more than a few ticks.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            let _ = std::fs::metadata("/proc/self/stat");
        }
        let usage = usage(std::process::id()).expect("/proc of this process");
        assert!(usage.rss_bytes > 0, "{usage:?}");
        assert!(usage.peak_rss_bytes >= usage.rss_bytes, "{usage:?}");
        assert!(usage.system_cpu_seconds > 0.0, "{usage:?}");
        assert!(usage.cpu_seconds > usage.system_cpu_seconds, "{usage:?}");
    }

    #[test]
    fn counts_the_children_of_a_process() {
        let mut child = Command::new("sleep").arg("30").spawn().expect("run sleep");
        let tree = process_tree(std::process::id()).expect("/proc");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], std::process::id(), "the process itself first");
        assert!(
            tree.contains(&child.id()),
            "{tree:?} lacks sleep's {}",
            child.id()
        );
        let after = process_tree(std::process::id()).expect("/proc");
        assert!(
            !after.contains(&child.id()),
            "{after:?} still has {}",
            child.id()
        );
    }

    #[test]
    fn a_process_that_is_gone_is_an_error() {
        let mut child = Command::new("true").spawn().expect("run true");
        let pid = child.id();
        child.wait().expect("wait for true");
        assert!(usage(pid).is_err());
    }
}
