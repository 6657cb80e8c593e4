//! A real `nats-server` with JetStream (Debian package `nats-server`) on a free loopback port,
//! its storage in a temp dir that survives restarts of the server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `nats-server -js` process, killed when dropped.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

impl NatsServer {
    /// Start a server with JetStream (file storage) on a free port.
    ///
    /// # Errors
    /// When `nats-server` is missing (run `scripts/install-deps`) or is not ready in time.
    pub fn start() -> Result<Self> {
        let mut s = NatsServer {
            port: crate::process::free_port()?,
            dir: tempfile::tempdir()?,
            child: None,
        };
        s.spawn_and_wait()?;
        Ok(s)
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kill the server (SIGKILL: no goodbye to clients) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port with the same storage (stopping it first if it runs).
    ///
    /// # Errors
    /// When it is not ready in time.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The port may be briefly unavailable after the kill.
                Err(e) if Instant::now() < deadline && !e.to_string().contains("install-deps") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let log = self.log_path();
        // A fresh log per start: readiness is read from it.
        let _ = std::fs::remove_file(&log);
        let child = match Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path().join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("nats-server is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => return Err(e).context("start nats-server"),
        };
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "nats-server on port {} exited with {status}: {}",
                    self.port,
                    self.logs()
                );
            }
            if self.logs().contains("Server is ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "nats-server on port {} was not ready within {START_TIMEOUT:?}: {}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
