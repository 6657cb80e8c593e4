//! The servers a benchmark run starts for itself on loopback when no address is given: a
//! `redis-server` child process, an S3 server (`s3s-fs` over a directory) served in-process,
//! and the project's gRPC store service embedded in-process. Each runs on threads of its own,
//! apart from the library's I/O runtime that the clients under test use, and stops when its
//! guard drops.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use proxystore::connector::grpc::GrpcConfig;
use proxystore::connector::s3::S3Config;
use proxystore_server::{Server, ServerConfig};

const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A `redis-server` child on a free loopback port, persisting nothing, accepting values up to
/// 2 GiB (so that 1 GiB objects fit); killed on drop.
pub(crate) struct RedisServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start one.
    ///
    /// # Errors
    /// When `redis-server` is not installed (run `scripts/install-deps`) or does not answer.
    pub(crate) fn start() -> Result<Self> {
        let mut last = None;
        // Another process may take the port between picking and binding it: try a few.
        for _ in 0..5 {
            match Self::try_start() {
                Ok(s) => return Ok(s),
                Err(e) if e.to_string().contains("install-deps") => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn try_start() -> Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir().context("temporary directory for redis-server")?;
        let child = Command::new("redis-server")
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--proto-max-bulk-len", "2gb"])
            .args(["--client-query-buffer-limit", "2gb"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("redis-server is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => return Err(e).context("start redis-server"),
        };
        let mut s = RedisServer {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = s.child.try_wait()? {
                bail!("redis-server on port {port} exited with {status}");
            }
            // The server that answers must be ours, not another one that won the port.
            if info_field(port, "process_id").ok().as_deref() == Some(&s.child.id().to_string()) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Its process id (for its CPU time in `/proc`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `nats-server` child with JetStream (file storage in a temporary directory) on a free
/// loopback port, with the server's default limits (`max_payload` 1 MiB); killed on drop.
pub(crate) struct NatsServer {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    /// Start one.
    ///
    /// # Errors
    /// When `nats-server` is not installed (run `scripts/install-deps`) or is not ready.
    pub(crate) fn start() -> Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir().context("temporary directory for nats-server")?;
        let log = dir.path().join("nats.log");
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-sd")
            .arg(dir.path().join("jetstream"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("nats-server is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => return Err(e).context("start nats-server"),
        };
        let mut s = NatsServer {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let logs = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(status) = s.child.try_wait()? {
                bail!("nats-server on port {port} exited with {status}: {logs}");
            }
            if logs.contains("Server is ready") {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("nats-server on port {port} was not ready within {START_TIMEOUT:?}: {logs}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Its process id (for its CPU time in `/proc`).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `INFO server` of the Redis server on `127.0.0.1:port` (no password).
pub(crate) fn info_field(port: u16, field: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    s.set_read_timeout(Some(Duration::from_millis(500)))?;
    s.write_all(b"INFO server\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let needle = format!("{field}:");
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(rest) = text.split(needle.as_str()).nth(1)
            && let Some((value, _)) = rest.split_once("\r\n")
        {
            return Ok(value.trim().to_owned());
        }
        if text.starts_with('-') && text.contains("\r\n") {
            bail!("redis answered {text}");
        }
    }
}

/// The bucket of the in-process S3 server, and the default bucket on another S3 endpoint.
pub const S3_BUCKET: &str = "proxystore-bench";

/// `s3s-fs` over a temporary directory, served with hyper on a thread and runtime of its own;
/// stopped on drop.
pub(crate) struct S3Server {
    addr: SocketAddr,
    access_key: String,
    secret_key: String,
    /// The credentials came from the environment: configs leave them out.
    from_env: bool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    _root: tempfile::TempDir,
}

impl S3Server {
    /// Start one with the bucket [`S3_BUCKET`], keeping objects under `parent`, accepting
    /// `credentials` (access key id, secret) or, without them, a generated pair that
    /// [`S3Server::config`] then carries.
    ///
    /// # Errors
    /// When the directory, listener or runtime cannot be made.
    pub(crate) fn start(parent: &Path, credentials: Option<(String, String)>) -> Result<Self> {
        let root = tempfile::Builder::new()
            .prefix("s3-server-")
            .tempdir_in(parent)
            .context("directory for the S3 server")?;
        std::fs::create_dir(root.path().join(S3_BUCKET)).context("create the bucket")?;
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let from_env = credentials.is_some();
        let (access_key, secret_key) = credentials.unwrap_or_else(|| {
            (
                format!("AKBENCH{}", &random_hex()[..12]).to_uppercase(),
                random_hex(),
            )
        });
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| anyhow::anyhow!("s3s-fs over {}: {e:?}", root.path().display()))?;
        let service = {
            let mut b = s3s::service::S3ServiceBuilder::new(fs);
            b.set_auth(s3s::auth::SimpleAuth::from_single(
                access_key.as_str(),
                secret_key.as_str(),
            ));
            b.build()
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-s3-server")
            .enable_all()
            .build()
            .context("runtime for the S3 server")?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-s3-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    let http = ConnBuilder::new(TokioExecutor::new());
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((socket, _)) = accepted else { continue };
                                let _ = socket.set_nodelay(true);
                                let conn = http
                                    .serve_connection(TokioIo::new(socket), service.clone())
                                    .into_owned();
                                tokio::spawn(conn);
                            }
                        }
                    }
                });
                runtime.shutdown_background();
            })
            .context("start the S3 server thread")?;
        Ok(S3Server {
            addr,
            access_key,
            secret_key,
            from_env,
            stop: Some(stop),
            thread: Some(thread),
            _root: root,
        })
    }

    /// A connector config for this server (path-style, [`S3_BUCKET`], and its credentials
    /// unless they come from the environment).
    pub(crate) fn config(&self, prefix: &str) -> S3Config {
        let keys = !self.from_env;
        S3Config {
            prefix: prefix.to_owned(),
            region: Some("us-east-1".into()),
            endpoint_url: Some(format!("http://{}", self.addr)),
            force_path_style: true,
            access_key_id: keys.then(|| self.access_key.clone()),
            secret_access_key: keys.then(|| self.secret_key.clone()),
            ..S3Config::new(S3_BUCKET)
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn random_hex() -> String {
    proxystore::Key::random().as_str().replace('-', "")
}

/// The gRPC store service (memory backend, the library's tuned chunk and window settings)
/// embedded in this process on a runtime of its own; stopped on drop.
pub(crate) struct GrpcServer {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl GrpcServer {
    /// Start one on a free loopback port.
    ///
    /// # Errors
    /// When the runtime cannot start or the server cannot bind.
    pub(crate) fn start() -> Result<Self> {
        // The server serves its connections on threads of its own; this runtime runs its
        // accept loop and its sweeper.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("runtime for the gRPC server")?;
        let config = ServerConfig {
            shutdown_grace: Duration::from_millis(200),
            ..ServerConfig::default()
        };
        let server = runtime
            .block_on(Server::bind(config))
            .context("start the embedded gRPC server")?;
        let url = server.url();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("bench-grpc-server".into())
            .spawn(move || {
                let run = server.run_until(async move {
                    let _ = stopped.await;
                });
                if let Err(e) = runtime.block_on(run) {
                    eprintln!("bench: embedded gRPC server: {e}");
                }
                runtime.shutdown_background();
            })
            .context("start the gRPC server thread")?;
        Ok(GrpcServer {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// A connector config for this server.
    pub(crate) fn config(&self) -> GrpcConfig {
        GrpcConfig::new(self.url.clone())
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A directory for benchmark files under `parent`, removed on drop.
pub(crate) fn work_dir(parent: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("proxystore-bench-")
        .tempdir_in(parent)
        .with_context(|| format!("temporary directory in {}", parent.display()))?;
    let path = dir.path().to_path_buf();
    Ok((dir, path))
}
