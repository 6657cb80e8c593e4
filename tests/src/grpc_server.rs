//! The project's gRPC store server for tests: started inside the test process
//! ([`in_process`], [`in_process_file`]), as the built `proxystore-server` binary in a child
//! process ([`start_binary`]), or as `proxystore serve` replicas over one shared backend
//! ([`Replicas`]).
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! let server = proxystore_tests::grpc_server::in_process()?;
//! let connector = server.connector()?; // a GrpcConnector to it
//! # Ok(()) }
//! ```

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub use proxystore_server::{RunningServer, ServerConfig, spawn};

use crate::front::Front;
use crate::process::ChildGuard;

/// A memory-backed server in this process on a free loopback port; stops when dropped.
///
/// # Errors
/// When the server cannot start.
pub fn in_process() -> anyhow::Result<RunningServer> {
    Ok(spawn(ServerConfig::default())?)
}

/// A file-backed server in this process, with the temporary directory it stores into.
#[derive(Debug)]
pub struct FileServer {
    /// The server (stops when dropped).
    pub server: RunningServer,
    /// Its object directory (removed when dropped, after the server).
    pub dir: tempfile::TempDir,
}

/// A file-backed server in this process, storing into a new temporary directory.
///
/// # Errors
/// When the directory or the server cannot be created.
pub fn in_process_file() -> anyhow::Result<FileServer> {
    let dir = tempfile::tempdir()?;
    let server = spawn(ServerConfig::default().file(dir.path().join("objects")))?;
    Ok(FileServer { server, dir })
}

/// The built `proxystore-server` binary: `$PROXYSTORE_SERVER_BIN`, or the one cargo built into
/// the same target directory as the running test.
///
/// # Errors
/// When it cannot be found, with a message saying how to build it.
pub fn server_binary() -> anyhow::Result<PathBuf> {
    workspace_binary(
        "proxystore-server",
        "PROXYSTORE_SERVER_BIN",
        "proxystore-server",
    )
}

/// The built `proxystore` command: `$PROXYSTORE_BIN`, or the one cargo built into the same
/// target directory as the running test (the README's test command builds every binary).
///
/// # Errors
/// When it cannot be found, with a message saying how to build it.
pub fn cli_binary() -> anyhow::Result<PathBuf> {
    workspace_binary("proxystore", "PROXYSTORE_BIN", "proxystore-cli")
}

/// Binary `name` of package `package`: `$env_var`, or the one beside the running test.
fn workspace_binary(name: &str, env_var: &str, package: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    // Tests run from <target>/<profile>/deps/; binaries live in <target>/<profile>/.
    let exe = std::env::current_exe()?;
    let candidate = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(name));
    match candidate {
        Some(p) if p.exists() => Ok(p),
        _ => anyhow::bail!(
            "the {name} binary is not built next to {}; run `cargo build -p {package}` (or set \
             {env_var})",
            exe.display()
        ),
    }
}

/// The server binary running as a child process; killed when dropped.
#[derive(Debug)]
pub struct ServerChild {
    /// The child process.
    pub process: ChildGuard,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// Start the server binary on a free loopback port with extra `args` (e.g. `--backend file
/// --directory D`), and wait until it reports the address it listens on.
///
/// # Errors
/// When the binary is missing, fails to start, or does not report an address within 30 s.
pub fn start_binary(args: &[&str]) -> anyhow::Result<ServerChild> {
    let bin = server_binary()?;
    let mut cmd = Command::new(&bin);
    cmd.args(["--listen", "127.0.0.1:0"]).args(args);
    start_child(cmd, "proxystore-server listening on ")
}

/// `proxystore serve` on a free loopback port with extra `args` (e.g. `--backend redis
/// --redis-url URL`) and environment `env`, once it reports the address it listens on.
///
/// # Errors
/// When the binary is missing, fails to start, or does not report an address within 30 s.
pub fn start_serve(args: &[String], env: &[(String, String)]) -> anyhow::Result<ServerChild> {
    let mut cmd = Command::new(cli_binary()?);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)));
    start_child(cmd, "proxystore listening on ")
}

/// Start `cmd` and read the URL from its first line of stdout, which starts with `prefix`.
fn start_child(mut cmd: Command, prefix: &str) -> anyhow::Result<ServerChild> {
    let bin = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut process = ChildGuard::spawn(&bin, &mut cmd)?;
    let stdout = process
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout from {bin}"))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Keep draining so that the child never blocks on a full pipe.
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| anyhow::anyhow!("{bin} did not report its address in 30 s"))?;
    let url = line
        .strip_prefix(prefix)
        .ok_or_else(|| anyhow::anyhow!("unexpected first line from {bin}: {line:?}"))?
        .to_owned();
    Ok(ServerChild { process, url })
}

/// Several `proxystore serve` processes over one shared backend (a Redis Cluster, an S3
/// bucket): the same `args` and `env` for each, so that they serve the same objects. Clients
/// dial each through a [`Front`] of the test's own, so that the port of a killed replica is
/// never another test's server.
#[derive(Debug)]
pub struct Replicas {
    /// The servers; a killed one stays in place (its process ended).
    pub servers: Vec<ServerChild>,
    fronts: Vec<Front>,
}

impl Replicas {
    /// Start `n` replicas with the same backend `args` and `env`.
    ///
    /// # Errors
    /// When one cannot start (the others are stopped).
    pub fn start(n: usize, args: &[String], env: &[(String, String)]) -> anyhow::Result<Self> {
        let servers: Vec<ServerChild> = (0..n)
            .map(|_| start_serve(args, env))
            .collect::<anyhow::Result<_>>()?;
        let fronts = servers
            .iter()
            .map(|s| Front::start(&s.url))
            .collect::<anyhow::Result<_>>()?;
        Ok(Replicas { servers, fronts })
    }

    /// Every replica's URL (its front's), in start order.
    pub fn urls(&self) -> Vec<String> {
        self.fronts.iter().map(Front::url).collect()
    }

    /// Kill replica `i` at once (SIGKILL: no graceful end for the calls in flight), then
    /// close its front for good.
    pub fn kill(&mut self, i: usize) {
        self.servers[i].process.kill();
        self.fronts[i].stop();
    }
}
