//! A Redis Cluster on loopback: six `redis-server --cluster-enabled yes` children (three
//! masters with a replica each), joined by `redis-cli --cluster create`, killed when the guard
//! drops. Nothing is kept on disk but each node's cluster config, in a temporary directory.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::free_port;

/// How long the cluster may take to form, or to fail a master over.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node may be unreachable before its replica takes over (ms).
const NODE_TIMEOUT_MS: u64 = 1000;

/// One node of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running Redis Cluster owned by a test.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("ports", &self.ports())
            .finish_non_exhaustive()
    }
}

impl RedisCluster {
    /// Start six nodes on free ports and make them a cluster of three masters with one
    /// replica each; returns once every slot is served and every replica is in sync.
    ///
    /// # Errors
    /// When `redis-server` or `redis-cli` is missing (run `scripts/install-deps`), or the
    /// cluster does not form in time.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().context("temporary directory for the cluster")?;
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..6 {
            let node = cluster.start_node()?;
            cluster.nodes.push(node);
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &cluster.nodes {
            create.arg(format!("127.0.0.1:{}", n.port));
        }
        create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null());
        let out = match create.output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("redis-cli is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => return Err(e).context("run redis-cli --cluster create"),
        };
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// A node on a free port, answering. Another process may take the port between picking
    /// and binding it (the node then exits): try a few.
    fn start_node(&self) -> Result<Node> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port_pair()?;
            let mut child = self.spawn(port)?;
            let answered = wait_for(&format!("node {port} answering"), || {
                if let Some(status) = child.try_wait()? {
                    bail!("node {port} exited with {status}");
                }
                Ok(query(port, &["PING"]).is_ok())
            });
            match answered {
                Ok(()) => {
                    return Ok(Node {
                        port,
                        child: Some(child),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node started")))
    }

    fn spawn(&self, port: u16) -> Result<Child> {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir)?;
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .arg("--cluster-node-timeout")
            .arg(NODE_TIMEOUT_MS.to_string())
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        match cmd.spawn() {
            Ok(c) => Ok(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("redis-server is not installed (not on PATH): run scripts/install-deps")
            }
            Err(e) => Err(e).context("start redis-server"),
        }
    }

    /// The ports of the nodes started (running or not).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:PORT` of every node, the seeds a client is given.
    pub fn urls(&self) -> Vec<String> {
        self.ports()
            .into_iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.running()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The ports of the masters that serve slots, as a running node sees them.
    ///
    /// # Errors
    /// When no running node answers.
    pub fn masters(&self) -> Result<Vec<u16>> {
        for n in self.running() {
            if let Ok(nodes) = query(n.port, &["CLUSTER", "NODES"]) {
                return Ok(masters_in(&nodes));
            }
        }
        bail!("no node of the cluster answers")
    }

    /// The port of the master serving the slot of `key` (a Redis key).
    ///
    /// # Errors
    /// When no running node answers.
    pub fn master_of(&self, key: &[u8]) -> Result<u16> {
        for n in self.running() {
            let Ok(mut con) = connection(n.port) else {
                continue;
            };
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(&mut con)?;
            if let Ok(slots) = query_value(n.port, &["CLUSTER", "SLOTS"]) {
                return master_of_slot(&slots, slot)
                    .with_context(|| format!("no master for slot {slot}"));
            }
        }
        bail!("no node of the cluster answers")
    }

    /// Kill the node on `port` (SIGKILL) and wait for it to exit.
    pub fn kill(&mut self, port: u16) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = n.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the node on `port` again (after [`RedisCluster::kill`]), with its cluster config:
    /// it rejoins the cluster, as a replica if its replica took over meanwhile.
    ///
    /// # Errors
    /// When it does not start or answer in time.
    pub fn restart(&mut self, port: u16) -> Result<()> {
        self.kill(port);
        let child = self.spawn(port)?;
        if let Some(n) = self.nodes.iter_mut().find(|n| n.port == port) {
            n.child = Some(child);
        }
        wait_for(&format!("node {port} answering again"), || {
            Ok(query(port, &["PING"]).is_ok())
        })
    }

    /// Wait until the running nodes agree that every slot is served (a dead master's replica
    /// promoted) and each running replica is in sync with its master.
    ///
    /// # Errors
    /// When that does not happen within 30 s.
    pub fn wait_healthy(&self) -> Result<()> {
        wait_for("the cluster to serve every slot", || {
            for n in self.running() {
                let Ok(info) = query(n.port, &["CLUSTER", "INFO"]) else {
                    return Ok(false);
                };
                if !info.contains("cluster_state:ok") || !info.contains("cluster_slots_ok:16384") {
                    return Ok(false);
                }
                let Ok(replication) = query(n.port, &["INFO", "replication"]) else {
                    return Ok(false);
                };
                if replication.contains("role:slave")
                    && !replication.contains("master_link_status:up")
                {
                    return Ok(false);
                }
            }
            // Every master serving slots is a running node.
            let masters = self.masters()?;
            Ok(masters.len() == 3 && masters.iter().all(|m| self.running().any(|n| n.port == *m)))
        })
    }

    /// The logs of every node, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let log =
                std::fs::read_to_string(self.dir.path().join(n.port.to_string()).join("redis.log"))
                    .unwrap_or_default();
            out.push_str(&format!("--- node {} ---\n{log}", n.port));
        }
        out
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A free port whose cluster bus port (10000 above it) is free too.
fn free_port_pair() -> Result<u16> {
    for _ in 0..100 {
        let port = free_port()?;
        if port <= u16::MAX - 10000
            && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            return Ok(port);
        }
    }
    bail!("no free port with a free cluster bus port 10000 above it")
}

/// Poll `ready` every 50 ms until it says yes, for at most [`CLUSTER_TIMEOUT`].
fn wait_for(what: &str, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let mut last = None;
    loop {
        match ready() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            // A node that exited does not come back.
            Err(e) if e.to_string().contains("exited with") => return Err(e),
            Err(e) => last = Some(e),
        }
        if Instant::now() > deadline {
            bail!("waited {CLUSTER_TIMEOUT:?} for {what} (last error: {last:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connection(port: u16) -> Result<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let con = client.get_connection_with_timeout(Duration::from_millis(500))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    Ok(con)
}

/// A command to the node on `port`, its reply as text.
fn query(port: u16, args: &[&str]) -> Result<String> {
    let mut con = connection(port)?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query::<String>(&mut con)?)
}

fn query_value(port: u16, args: &[&str]) -> Result<redis::Value> {
    let mut con = connection(port)?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    Ok(cmd.query::<redis::Value>(&mut con)?)
}

/// The ports of the masters in a `CLUSTER NODES` reply that serve slots and are not failed.
fn masters_in(nodes: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // id addr flags master ping pong epoch link slots...
        if fields.len() < 9 {
            continue;
        }
        let flags = fields[2];
        if !flags.split(',').any(|f| f == "master") || flags.contains("fail") {
            continue;
        }
        if let Some(port) = fields[1]
            .split('@')
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
        {
            out.push(port);
        }
    }
    out.sort_unstable();
    out
}

/// The master's port of `slot` in a `CLUSTER SLOTS` reply.
fn master_of_slot(slots: &redis::Value, slot: u16) -> Option<u16> {
    let redis::Value::Array(ranges) = slots else {
        return None;
    };
    for range in ranges {
        let redis::Value::Array(r) = range else {
            continue;
        };
        let (
            Some(redis::Value::Int(lo)),
            Some(redis::Value::Int(hi)),
            Some(redis::Value::Array(master)),
        ) = (r.first(), r.get(1), r.get(2))
        else {
            continue;
        };
        if (*lo..=*hi).contains(&i64::from(slot))
            && let Some(redis::Value::Int(port)) = master.get(1)
        {
            return u16::try_from(*port).ok();
        }
    }
    None
}
