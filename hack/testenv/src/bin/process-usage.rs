//! `process-usage PID`: the memory and CPU time of a process and its descendants as one line
//! of JSON (`rss_bytes`, `peak_rss_bytes`, `cpu_seconds`, `system_cpu_seconds`), so the
//! benchmark scripts read `/proc` the way the Rust tests and benchmarks do.

use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(Ok(pid)) = std::env::args().nth(1).map(|arg| arg.parse::<u32>()) else {
        eprintln!("usage: process-usage PID (a process id, a positive integer)");
        return ExitCode::from(2);
    };
    match testenv::process::usage(pid) {
        Ok(usage) => {
            println!(
                concat!(
                    r#"{{"rss_bytes": {}, "peak_rss_bytes": {}, "cpu_seconds": {}, "#,
                    r#""system_cpu_seconds": {}}}"#
                ),
                usage.rss_bytes, usage.peak_rss_bytes, usage.cpu_seconds, usage.system_cpu_seconds
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("process-usage: cannot read /proc/{pid}: {error}");
            ExitCode::FAILURE
        }
    }
}
