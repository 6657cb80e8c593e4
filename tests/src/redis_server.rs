//! A `redis-server` child process on a free loopback port, killed when its guard drops.
//!
//! The server keeps nothing on disk (`--save '' --appendonly no`, in a temporary directory;
//! [`RedisServer::start_persistent`] keeps an append-only file there) and can be stopped, restarted on the same port, paused and resumed, for fault tests.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How long a starting server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Certificate and key (PEM files) for a TLS port.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// Server certificate; also given as the server's CA file.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// A running (or stopped) `redis-server` owned by a test.
pub struct RedisServer {
    port: u16,
    password: Option<String>,
    /// TLS files and the TLS port (the plain port stays open for the readiness probe).
    tls: Option<(TlsFiles, u16)>,
    dir: tempfile::TempDir,
    /// Append-only file, fsynced at every write: what was acknowledged survives a kill.
    persistent: bool,
    child: Option<Child>,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

impl RedisServer {
    /// Start a server without a password on a free port.
    ///
    /// # Errors
    /// When `redis-server` is missing (run `scripts/install-deps`) or does not answer in time.
    pub fn start() -> Result<Self> {
        Self::start_with(None, None)
    }

    /// Start a server that keeps what it acknowledged across a kill and a
    /// [`RedisServer::restart`] (`--appendonly yes --appendfsync always`).
    ///
    /// # Errors
    /// As for [`RedisServer::start`].
    pub fn start_persistent() -> Result<Self> {
        let mut s = RedisServer {
            port: free_port()?,
            password: None,
            tls: None,
            dir: tempfile::tempdir().context("temporary directory for redis-server")?,
            persistent: true,
            child: None,
        };
        s.spawn_and_wait(START_TIMEOUT)?;
        Ok(s)
    }

    /// Start a server that also serves TLS with `files` on a second free port (see
    /// [`RedisServer::tls_url`]); clients are not asked for certificates.
    ///
    /// # Errors
    /// As for [`RedisServer::start`].
    pub fn start_tls(files: TlsFiles) -> Result<Self> {
        Self::start_with(None, Some(files))
    }

    /// Start a server that requires `password` (`--requirepass`).
    ///
    /// # Errors
    /// As for [`RedisServer::start`].
    pub fn start_with_password(password: &str) -> Result<Self> {
        Self::start_with(Some(password.to_owned()), None)
    }

    fn start_with(password: Option<String>, tls: Option<TlsFiles>) -> Result<Self> {
        let mut last = None;
        // Another process may take the port between picking and binding it: try a few.
        for _ in 0..5 {
            let mut s = RedisServer {
                port: free_port()?,
                password: password.clone(),
                tls: match &tls {
                    Some(files) => Some((files.clone(), free_port()?)),
                    None => None,
                },
                dir: tempfile::tempdir().context("temporary directory for redis-server")?,
                persistent: false,
                child: None,
            };
            match s.spawn_and_wait(START_TIMEOUT) {
                Ok(()) => return Ok(s),
                Err(e) if e.to_string().contains("scripts/install-deps") => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// The port it listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (without the password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `rediss://127.0.0.1:TLS_PORT` when started with [`RedisServer::start_tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(_, port)| format!("rediss://127.0.0.1:{port}"))
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kill the server (SIGKILL: no goodbye to clients) and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same port (stopping it first if it runs).
    ///
    /// # Errors
    /// When it does not answer in time.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.spawn_and_wait(START_TIMEOUT) {
                Ok(()) => return Ok(()),
                // The port may be briefly unavailable after the kill.
                Err(e) if Instant::now() < deadline && !e.to_string().contains("install-deps") => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Freeze the server (SIGSTOP): connections stay open but nothing is answered.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn pause(&self) -> Result<()> {
        self.signal("STOP")
    }

    /// Resume a paused server (SIGCONT).
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn resume(&self) -> Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.pid().context("redis-server is not running")?;
        let status = Command::new("kill")
            .args([format!("-{sig}"), pid.to_string()])
            .status()
            .context("run kill")?;
        if !status.success() {
            bail!("kill -{sig} {pid} failed: {status}");
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn_and_wait(&mut self, timeout: Duration) -> Result<()> {
        let log = self.log_path();
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log"))?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "everysec"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        if let Some((files, port)) = &self.tls {
            cmd.arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(&files.cert)
                .arg("--tls-key-file")
                .arg(&files.key)
                .arg("--tls-ca-cert-file")
                .arg(&files.cert)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("redis-server is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => return Err(e).context("start redis-server"),
        };
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!(
                    "redis-server on port {} exited with {status}: {}",
                    self.port,
                    self.logs()
                );
            }
            // The server that answers must be ours, not another one that won the port.
            if self.server_pid().ok() == Some(pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "redis-server on port {} did not answer within {timeout:?}: {}",
                    self.port,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid the server on our port reports (`INFO server`), after `AUTH` if needed.
    fn server_pid(&self) -> Result<u32> {
        let mut s = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(500),
        )?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut req = String::new();
        if let Some(p) = &self.password {
            req.push_str(&format!("AUTH {p}\r\n"));
        }
        req.push_str("INFO server\r\n");
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = s.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(rest) = text.split("process_id:").nth(1)
                && let Some((pid, _)) = rest.split_once("\r\n")
            {
                return Ok(pid.trim().parse()?);
            }
            if text.starts_with('-') && text.contains("\r\n") {
                bail!("redis answered {text}");
            }
        }
    }

    /// The server's log and stderr, for failure messages.
    pub fn logs(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let err = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        format!("{log}{err}")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // SIGKILL also ends a paused (SIGSTOPped) process.
        self.stop();
    }
}
