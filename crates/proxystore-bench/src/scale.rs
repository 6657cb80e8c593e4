//! `proxystore bench scale`: aggregate put/get throughput through 1, 2, 3 store-service
//! replicas (`proxystore serve` processes) over one shared backend, a Redis Cluster and an S3
//! server, beside the backend's raw client and the connector used directly, in the same run;
//! with the CPU each tier spends per operation, the inputs of the model in `docs/scaling.md`.
//!
//! Each path runs `--clients` tasks for `--seconds`, each in a loop: put an object, get it,
//! check its length, evict it. The clients of a service row share one gRPC connector listing
//! every replica, which spreads their calls round-robin.

use std::io::{BufRead, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child as Process, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use proxystore::Connector;
use proxystore::connector::ConnectorConfig;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use proxystore::connector::redis::RedisConfig;
use proxystore_testkit::redis_cluster::RedisCluster;
use serde::Serialize;

use crate::format::{fmt_rate, fmt_ratio, fmt_size};
use crate::machine::{pid_cpu_s, process_cpu_s};
use crate::servers::{S3Server, work_dir};

/// Aggregate throughput through 1, 2, 3 service replicas over a shared backend.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Shared backends: `redis-cluster` (six redis-server nodes started here, three masters
    /// with a replica each) and `s3` (an in-process S3 server).
    #[arg(long, value_delimiter = ',', default_value = "redis-cluster,s3")]
    backends: Vec<Backend>,

    /// Numbers of service replicas.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    replicas: Vec<usize>,

    /// Object sizes, comma-separated, with units.
    #[arg(long, value_delimiter = ',', default_value = "100B,1MiB")]
    sizes: Vec<String>,

    /// Concurrent clients of every path.
    #[arg(long, default_value_t = 16)]
    clients: usize,

    /// Seconds each path runs.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,

    /// Parent directory of the S3 server's files (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// A shared backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Backend {
    RedisCluster,
    S3,
}

/// One measured path.
#[derive(Debug, Serialize)]
struct Row {
    backend: Backend,
    size_bytes: u64,
    /// `raw`, `connector`, or `service` (with `replicas`).
    path: String,
    replicas: usize,
    clients: usize,
    /// Put+get(+evict) rounds per second, all clients together.
    pairs_per_s: f64,
    /// Bytes moved per second (each round puts and gets the object).
    bytes_per_s: f64,
    /// Of the same backend and size's raw row.
    vs_raw: f64,
    /// CPU seconds per round: this process (clients), the service replicas, the backend's
    /// servers (the Redis nodes; the S3 server runs in this process, so it counts as client).
    cpu_client_s: f64,
    cpu_service_s: Option<f64>,
    cpu_backend_s: Option<f64>,
    errors: u64,
}

/// A running backend and what reaches it.
struct Shared {
    backend: Backend,
    /// The connector config the services are given (`--backend-config`).
    config: ConnectorConfig,
    /// Pids of the backend's server processes (for their CPU).
    pids: Vec<u32>,
    _cluster: Option<RedisCluster>,
    _s3: Option<S3Server>,
}

impl Shared {
    fn start(backend: Backend, parent: &std::path::Path) -> Result<Self> {
        match backend {
            Backend::RedisCluster => {
                let cluster = RedisCluster::start()?;
                let config = RedisConfig {
                    prefix: "bench-scale:".into(),
                    ..RedisConfig::cluster(cluster.urls())
                };
                Ok(Shared {
                    backend,
                    config: ConnectorConfig::from_options(
                        proxystore::connector::redis::KIND,
                        &config,
                    )?,
                    pids: cluster.pids(),
                    _cluster: Some(cluster),
                    _s3: None,
                })
            }
            Backend::S3 => {
                let s3 = S3Server::start(parent, None)?;
                let config = s3.config("bench-scale/");
                Ok(Shared {
                    backend,
                    config: ConnectorConfig::from_options(
                        proxystore::connector::s3::KIND,
                        &config,
                    )?,
                    pids: Vec::new(),
                    _cluster: None,
                    _s3: Some(s3),
                })
            }
        }
    }

    fn backend_cpu(&self) -> Option<f64> {
        if self.pids.is_empty() {
            return None;
        }
        Some(self.pids.iter().filter_map(|p| pid_cpu_s(*p)).sum())
    }
}

/// `proxystore serve` replicas over one backend config; killed on drop.
struct Replicas {
    children: Vec<Process>,
    urls: Vec<String>,
}

impl Replicas {
    fn start(n: usize, config_file: &std::path::Path) -> Result<Self> {
        let exe = std::env::current_exe().context("the current executable")?;
        let mut r = Replicas {
            children: Vec::new(),
            urls: Vec::new(),
        };
        for _ in 0..n {
            let mut child = Command::new(&exe)
                .args(["serve", "--listen", "127.0.0.1:0", "--backend-config"])
                .arg(config_file)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("start `proxystore serve`")?;
            let stdout = child.stdout.take().context("its stdout")?;
            r.children.push(child);
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line)?;
            let url = line
                .trim()
                .strip_prefix("proxystore listening on ")
                .with_context(|| format!("`proxystore serve` said {line:?}"))?;
            r.urls.push(url.to_owned());
        }
        Ok(r)
    }

    fn cpu(&self) -> f64 {
        self.children.iter().filter_map(|c| pid_cpu_s(c.id())).sum()
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One client's operations on the backend.
#[async_trait::async_trait]
trait Client: Send + Sync {
    /// Put `data`, get it back (its length checked), evict it.
    async fn round(&self, data: Bytes) -> Result<()>;
}

/// Through a connector (direct, or the gRPC client of a replica).
struct ViaConnector(Arc<dyn Connector>);

#[async_trait::async_trait]
impl Client for ViaConnector {
    async fn round(&self, data: Bytes) -> Result<()> {
        let len = data.len();
        let key = self.0.put(data).await?;
        let got = self.0.get(&key).await?.context("object gone")?;
        if got.len() != len {
            bail!("read {} bytes of {len}", got.len());
        }
        self.0.evict(&key).await?;
        Ok(())
    }
}

/// The redis crate's own cluster client: SET, GET, DEL.
struct RawCluster(redis::cluster_async::ClusterConnection);

#[async_trait::async_trait]
impl Client for RawCluster {
    async fn round(&self, data: Bytes) -> Result<()> {
        let mut con = self.0.clone();
        let key = format!("bench-scale-raw:{}", proxystore::Key::random());
        redis::cmd("SET")
            .arg(&key)
            .arg(data.as_ref())
            .query_async::<()>(&mut con)
            .await?;
        let got: Vec<u8> = redis::cmd("GET").arg(&key).query_async(&mut con).await?;
        if got.len() != data.len() {
            bail!("read {} bytes of {}", got.len(), data.len());
        }
        redis::cmd("DEL")
            .arg(&key)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }
}

/// aws-sdk-s3: PUT, GET, DELETE.
struct RawS3 {
    client: aws_sdk_s3::Client,
    bucket: String,
}

#[async_trait::async_trait]
impl Client for RawS3 {
    async fn round(&self, data: Bytes) -> Result<()> {
        let key = format!("bench-scale-raw/{}", proxystore::Key::random());
        let len = data.len();
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .body(data.into())
            .send()
            .await?;
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await?
            .body
            .collect()
            .await?
            .into_bytes();
        if got.len() != len {
            bail!("read {} bytes of {len}", got.len());
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await?;
        Ok(())
    }
}

/// A path to measure: its name, its replicas (0: none), a client per replica (or one), and
/// the replica processes.
type Lane<'a> = (String, usize, Vec<Arc<dyn Client>>, Option<&'a Replicas>);

/// What a path did: rounds, errors, wall time.
struct Outcome {
    rounds: u64,
    errors: u64,
    elapsed: f64,
}

/// `clients` tasks, client `i` on `per_client[i % len]`, each doing rounds for `seconds`.
async fn drive(
    per_client: &[Arc<dyn Client>],
    clients: usize,
    size: usize,
    seconds: f64,
) -> Outcome {
    let data = Bytes::from(vec![0x5a; size]);
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let client = per_client[i % per_client.len()].clone();
            let (data, stop, rounds, errors) =
                (data.clone(), stop.clone(), rounds.clone(), errors.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.round(data.clone()).await {
                        Ok(()) => rounds.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("[bench] scale: a round failed: {e:#}");
                            }
                            0
                        }
                    };
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Outcome {
        rounds: rounds.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: start.elapsed().as_secs_f64(),
    }
}

/// Run the scale benchmark: print its table, write its JSON.
///
/// # Errors
/// When a server cannot start, a size does not parse or a path fails outright.
pub fn run(args: ScaleArgs) -> Result<()> {
    proxystore::set_resolve_policy(proxystore::ResolvePolicy::allow_all());
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (_guard, work) = work_dir(&parent)?;
    let sizes = crate::format::parse_sizes(&args.sizes)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows: Vec<Row> = Vec::new();
    for &backend in &args.backends {
        let shared = Shared::start(backend, &parent)?;
        let config_file = work.join(format!("{backend:?}.json"));
        std::fs::write(&config_file, serde_json::to_vec(&shared.config)?)?;
        let direct = proxystore::kinds::from_config(&shared.config)?;
        let raw: Arc<dyn Client> = runtime.block_on(raw_client(&shared))?;
        // Built after the raw client so that its connections are warm by the first size.
        let mut replica_sets = Vec::new();
        for &r in &args.replicas {
            replica_sets.push((r, Replicas::start(r, &config_file)?));
        }
        for &size in &sizes {
            let mut paths: Vec<Lane<'_>> = vec![
                ("raw".into(), 0, vec![raw.clone()], None),
                (
                    "connector".into(),
                    0,
                    vec![Arc::new(ViaConnector(direct.clone()))],
                    None,
                ),
            ];
            for (r, replicas) in &replica_sets {
                // One connector listing every replica, as a client of a deployment has: its
                // calls go round-robin over them.
                let config = GrpcConfig::new(replicas.urls[0].clone())
                    .addresses(replicas.urls[1..].iter().cloned());
                let client: Arc<dyn Client> =
                    Arc::new(ViaConnector(Arc::new(GrpcConnector::with_config(config)?)));
                paths.push(("service".into(), *r, vec![client], Some(replicas)));
            }
            let mut raw_rate = f64::NAN;
            for (path, r, clients, replicas) in paths {
                let (c0, s0, b0) = (
                    process_cpu_s(),
                    replicas.map(Replicas::cpu),
                    shared.backend_cpu(),
                );
                let out =
                    runtime.block_on(drive(&clients, args.clients, size as usize, args.seconds));
                let (c1, s1, b1) = (
                    process_cpu_s(),
                    replicas.map(Replicas::cpu),
                    shared.backend_cpu(),
                );
                let n = out.rounds.max(1) as f64;
                let rate = out.rounds as f64 / out.elapsed;
                if path == "raw" {
                    raw_rate = rate;
                }
                let row = Row {
                    backend,
                    size_bytes: size,
                    path: path.clone(),
                    replicas: r,
                    clients: args.clients,
                    pairs_per_s: rate,
                    bytes_per_s: rate * 2.0 * size as f64,
                    vs_raw: rate / raw_rate,
                    cpu_client_s: (c1 - c0) / n,
                    cpu_service_s: s0.zip(s1).map(|(a, b)| (b - a) / n),
                    cpu_backend_s: b0.zip(b1).map(|(a, b)| (b - a) / n),
                    errors: out.errors,
                };
                eprintln!(
                    "[bench] scale {backend:?} {} {path} x{r}: {rate:.0} rounds/s ({} errors)",
                    fmt_size(size),
                    out.errors
                );
                rows.push(row);
            }
        }
    }
    print_table(&rows, &args);
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "machine": crate::machine::environment(&work, None),
            "date": crate::machine::utc_now(),
            "loadavg": crate::machine::loadavg(),
            "clients": args.clients,
            "seconds": args.seconds,
            "rows": rows,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
        eprintln!("[bench] wrote {}", path.display());
    }
    Ok(())
}

async fn raw_client(shared: &Shared) -> Result<Arc<dyn Client>> {
    Ok(match shared.backend {
        Backend::RedisCluster => {
            let config: RedisConfig = shared.config.options()?;
            let seeds = std::iter::once(config.url.clone()).chain(config.nodes.clone());
            let client = redis::cluster::ClusterClientBuilder::new(seeds)
                .response_timeout(Duration::from_secs(30))
                .build()?;
            Arc::new(RawCluster(client.get_async_connection().await?))
        }
        Backend::S3 => {
            let config: proxystore::connector::s3::S3Config = shared.config.options()?;
            let creds = aws_sdk_s3::config::Credentials::new(
                config.access_key_id.clone().unwrap_or_default(),
                config.secret_access_key.clone().unwrap_or_default(),
                None,
                None,
                "proxystore-bench",
            );
            let conf = aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .force_path_style(true)
                .endpoint_url(config.endpoint_url.clone().unwrap_or_default())
                .credentials_provider(creds)
                .build();
            Arc::new(RawS3 {
                client: aws_sdk_s3::Client::from_conf(conf),
                bucket: config.bucket.clone(),
            })
        }
    })
}

fn print_table(rows: &[Row], args: &ScaleArgs) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\n{} clients, {} s per path; CPU per round in us: clients (this process) / service replicas / backend servers\n",
        args.clients, args.seconds
    );
    let _ = writeln!(
        out,
        "| backend | size | path | replicas | rounds/s | MB/s (put+get) | vs raw | CPU us/round client/service/backend | errors |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let us = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{:.0}", v * 1e6));
    for r in rows {
        let _ = writeln!(
            out,
            "| {:?} | {} | {} | {} | {:.0} | {} | {} | {}/{}/{} | {} |",
            r.backend,
            fmt_size(r.size_bytes),
            r.path,
            if r.replicas == 0 {
                "-".to_owned()
            } else {
                r.replicas.to_string()
            },
            r.pairs_per_s,
            fmt_rate(r.bytes_per_s),
            fmt_ratio(r.vs_raw),
            us(Some(r.cpu_client_s)),
            us(r.cpu_service_s),
            us(r.cpu_backend_s),
            r.errors,
        );
    }
}
