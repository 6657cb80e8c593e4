//! Starting the `proxystore-server` binary for tests, and reading peak memory.

#![allow(dead_code)]
// Test helpers fail tests the way tests do: by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The built server binary (cargo builds it for this package's integration tests).
pub(crate) const SERVER_BIN: &str = env!("CARGO_BIN_EXE_proxystore-server");

/// A server child process, killed when dropped.
pub(crate) struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub(crate) url: String,
    output: Arc<Mutex<Vec<u8>>>,
    drains: Vec<std::thread::JoinHandle<()>>,
}

impl ServerProcess {
    /// Start the binary on a free loopback port with extra `args`, and wait until it
    /// prints the address it listens on.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// As [`ServerProcess::start`], with environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", args, env, false)
    }

    /// Start the binary listening on `listen` (e.g. the port of a server that was killed, to
    /// restart it there). With `capture`, everything it writes to stdout and stderr is kept
    /// (see [`ServerProcess::output`]) instead of stderr going to the test's stderr.
    pub(crate) fn start_on(
        listen: &str,
        args: &[&str],
        env: &[(&str, &str)],
        capture: bool,
    ) -> Self {
        let mut cmd = Command::new(SERVER_BIN);
        cmd.arg("--listen")
            .arg(listen)
            .args(args)
            .env_remove("PROXYSTORE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(if capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SERVER_BIN}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut drains = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let output = output.clone();
            drains.push(std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let mut stderr = stderr;
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }));
        }
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        drains.push(std::thread::spawn({
            let output = output.clone();
            move || {
                let mut lines = BufReader::new(stdout).split(b'\n');
                if let Some(Ok(line)) = lines.next() {
                    output.lock().unwrap().extend_from_slice(&line);
                    output.lock().unwrap().push(b'\n');
                    let _ = tx.send(String::from_utf8_lossy(&line).into_owned());
                }
                // Keep draining so the child never blocks on a full pipe.
                for line in lines.map_while(Result::ok) {
                    if capture {
                        let mut out = output.lock().unwrap();
                        out.extend_from_slice(&line);
                        out.push(b'\n');
                    }
                }
            }
        }));
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("proxystore-server did not report its address within 30 s");
            }
        };
        let url = line
            .strip_prefix("proxystore-server listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from the server: {line:?}"))
            .to_owned();
        ServerProcess {
            child,
            url,
            output,
            drains,
        }
    }

    /// Everything the process wrote to stdout and (when started with `capture`) stderr, once
    /// it has exited: call after [`ServerProcess::kill`] or [`ServerProcess::terminate`].
    pub(crate) fn output(&mut self) -> Vec<u8> {
        for d in self.drains.drain(..) {
            let _ = d.join();
        }
        self.output.lock().unwrap().clone()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `host:port` of the server.
    pub(crate) fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// Kill it hard (SIGKILL) and reap it.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for the exit status, at most `timeout`.
    pub(crate) fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `VmHWM`/`VmRSS`-style field of `/proc/<pid>/status`, in bytes.
pub(crate) fn proc_status_bytes(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Reset this process's peak RSS (`VmHWM`) to its current RSS (Linux: clear_refs 5).
pub(crate) fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

/// Format bytes as MiB.
pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}
