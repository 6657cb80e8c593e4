//! `proxystore bench`: latency, throughput, small-object rate, reference size and peak memory
//! of every connector, each next to the raw client of its backend measured in the same run,
//! and, with `--python`, next to Python ProxyStore measured against the same servers.
//!
//! The command starts the servers it needs on loopback (redis-server, an in-process S3 server,
//! the embedded gRPC store service) unless given their addresses, runs children of itself for
//! first resolves in fresh processes and for peak memory, prints a table of ratios, and writes
//! JSON, a Markdown report and (through `scripts/bench_plots.py`) plots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use proxystore::connector::file::FileConnector;
use proxystore::connector::grpc::{GrpcConfig, GrpcConnector};
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::connector::s3::{S3Config, S3Connector};
use proxystore::{Connector, DigestAlgorithm, Proxy, Store};

mod measure;
mod python;
mod report;
mod rss;
mod servers;
mod small;
mod stats;
mod subjects;

use measure::{Row, Stores};
use stats::{Repeat, fmt_size};
use subjects::{Raw, RawKind, Subject};

/// Default object sizes.
const DEFAULT_SIZES: &str = "100B,1KiB,100KiB,1MiB,10MiB,100MiB";

/// Measure every connector against the raw client of its backend (and Python ProxyStore).
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    child: Option<Child>,

    /// Object sizes, comma-separated, with units (B, KiB, MiB, GiB).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_SIZES)]
    sizes: Vec<String>,

    /// Also measure 1 GiB objects (slow; needs several GiB of free memory).
    #[arg(long)]
    gib: bool,

    /// Connectors to measure.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memory,file,redis,s3,grpc"
    )]
    connectors: Vec<Name>,

    /// Use this Redis server (default: start redis-server on a free loopback port).
    #[arg(long, env = "PROXYSTORE_BENCH_REDIS_URL")]
    redis_url: Option<String>,

    /// Use this S3 endpoint (default: an in-process s3s-fs server on loopback); credentials
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "PROXYSTORE_BENCH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// Bucket on `--s3-endpoint` (must exist).
    #[arg(long, default_value = servers::S3_BUCKET)]
    s3_bucket: String,

    /// Use this gRPC store server (default: the service embedded in this process).
    #[arg(long, env = "PROXYSTORE_BENCH_GRPC_URL")]
    grpc_url: Option<String>,

    /// Parent directory of the file connector's directory (and of Python's, with --python).
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Repeat each measurement until this many seconds were timed (and --min-reps reached).
    #[arg(long, default_value_t = 0.5)]
    min_time: f64,

    /// At least this many repetitions of each measurement.
    #[arg(long, default_value_t = 5)]
    min_reps: usize,

    /// At most this many repetitions of each measurement.
    #[arg(long, default_value_t = 20000)]
    max_reps: usize,

    /// Exactly this many repetitions of each measurement (instead of adaptive).
    #[arg(long)]
    repeat: Option<usize>,

    /// Fresh child processes per connector and size for first resolves (0: skip).
    #[arg(long, default_value_t = 5)]
    processes: usize,

    /// Seconds of each small-object (100 B) loop.
    #[arg(long, default_value_t = 2.0)]
    small_seconds: f64,

    /// Concurrent clients of the small-object loops.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,

    /// Skip the small-object loops.
    #[arg(long)]
    skip_small: bool,

    /// Measure peak RSS of a put and of a resolve of a --rss-size object per connector
    /// (slow).
    #[arg(long)]
    rss: bool,

    /// Object size of the peak-RSS measurement.
    #[arg(long, default_value = "1GiB")]
    rss_size: String,

    /// Also run Python ProxyStore's benchmark against the same redis-server and directory
    /// (installs `proxystore[all]` and `redis` with pip when missing).
    #[arg(long)]
    python: bool,

    /// The Python benchmark script.
    #[arg(long, default_value = "../shared/bench/python_proxystore_bench.py")]
    python_script: PathBuf,

    /// Python interpreter for --python.
    #[arg(long, default_value = "python3")]
    python_bin: String,

    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,

    /// Write the generated Markdown report here.
    #[arg(long)]
    markdown: Option<PathBuf>,

    /// Replace the generated part (between `<!-- bench:begin -->` and `<!-- bench:end -->`)
    /// of this Markdown document with the report.
    #[arg(long)]
    update_doc: Option<PathBuf>,

    /// Draw PNG plots into this directory (runs --plot-script with the JSON; needs matplotlib,
    /// installed with pip when missing).
    #[arg(long)]
    plots: Option<PathBuf>,

    /// The plotting script.
    #[arg(long, default_value = "scripts/bench_plots.py")]
    plot_script: PathBuf,
}

/// Child processes the benchmark starts (not for direct use).
#[derive(Debug, Subcommand)]
enum Child {
    /// Resolve the serialized proxies of a file and report timings as JSON.
    #[command(hide = true)]
    ResolveChild {
        /// Input written by the parent.
        input: PathBuf,
    },
    /// Put or resolve one large object and report peak RSS as JSON.
    #[command(hide = true)]
    RssChild {
        #[arg(long, value_enum)]
        op: rss::RssOp,
        /// Connector config (JSON).
        #[arg(long)]
        connector: String,
        #[arg(long)]
        size: u64,
        /// File of the serialized proxy.
        #[arg(long)]
        refs: PathBuf,
    },
}

/// A connector the benchmark can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Name {
    Memory,
    File,
    Redis,
    S3,
    Grpc,
}

/// Servers and clients of one run.
struct Setup {
    subjects: Vec<Subject>,
    raw: Raw,
    work: PathBuf,
    redis_port: Option<u16>,
    _redis: Option<servers::RedisServer>,
    _s3: Option<servers::S3Server>,
    _grpc: Option<servers::GrpcServer>,
    _dir: tempfile::TempDir,
}

/// Run `proxystore bench`.
///
/// # Errors
/// When a server cannot start or an output cannot be written; failed measurements are listed
/// in the report instead.
pub(crate) fn run(args: BenchArgs) -> Result<()> {
    match &args.child {
        Some(Child::ResolveChild { input }) => return measure::resolve_child(input),
        Some(Child::RssChild {
            op,
            connector,
            size,
            refs,
        }) => return rss::child(*op, connector, *size, refs),
        None => {}
    }
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; measure with `cargo run --release -p proxystore-cli -- bench`"
        );
    }
    let wall = Instant::now();
    let mut sizes = args
        .sizes
        .iter()
        .map(|s| proxystore_server::parse_size(s).map_err(anyhow::Error::msg))
        .collect::<Result<Vec<u64>>>()?;
    if args.gib {
        sizes.push(1 << 30);
    }
    sizes.sort_unstable();
    sizes.dedup();
    let rss_size = proxystore_server::parse_size(&args.rss_size).map_err(anyhow::Error::msg)?;
    let repeat = Repeat {
        min_time: Duration::from_secs_f64(args.min_time),
        min_reps: args.min_reps.max(1),
        max_reps: args.max_reps.max(1),
        fixed: args.repeat,
        wall_cap: Duration::from_secs_f64((3.0 * args.min_time).max(1.0)),
    };
    let mut names = args.connectors.clone();
    names.sort_unstable();
    names.dedup();

    let load_before = report::loadavg();
    let setup = setup(&args, &names)?;
    let env = report::environment(&setup.work, setup.redis_port);
    eprintln!(
        "[bench] {} on {} ({} cores, load {}); files in {}",
        names
            .iter()
            .map(|n| format!("{n:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(","),
        env["cpu_model"].as_str().unwrap_or("?"),
        env["cpu_count"],
        load_before,
        setup.work.display()
    );

    let mut out = report::Report::new(&args, &sizes, env);
    out.environment["loadavg_start"] = load_before.into();
    proxystore::runtime::io_handle().block_on(measure_all(
        &args, &setup, &sizes, rss_size, &repeat, &mut out,
    ));

    if args.python {
        let py_sizes: Vec<u64> = sizes.iter().copied().filter(|s| *s <= 100 << 20).collect();
        match python::run(
            &args.python_bin,
            &args.python_script,
            setup.redis_port,
            &setup.work,
            &py_sizes,
            args.min_time,
        ) {
            Ok(v) => out.python = Some(v),
            Err(e) => out.errors.push(format!("python: {e:#}")),
        }
    }
    out.environment["loadavg_end"] = report::loadavg().into();
    out.total_wall_s = wall.elapsed().as_secs_f64();
    out.finish();

    println!("{}", out.table());
    if let Some(path) = &args.json {
        write(path, &serde_json::to_vec_pretty(&out)?)?;
        eprintln!("[bench] wrote {}", path.display());
    }
    let md = out.markdown(args.plots.as_deref(), args.update_doc.as_deref());
    if let Some(path) = &args.markdown {
        write(path, md.as_bytes())?;
    }
    if let Some(doc) = &args.update_doc {
        report::update_doc(doc, &md)?;
        eprintln!("[bench] updated {}", doc.display());
    }
    if let Some(dir) = &args.plots {
        let Some(json) = &args.json else {
            bail!("--plots needs --json (the plotting script reads it)");
        };
        python::plots(&args.python_bin, &args.plot_script, json, dir)?;
    }
    if !out.errors.is_empty() {
        eprintln!("[bench] {} measurement(s) failed:", out.errors.len());
        for e in &out.errors {
            eprintln!("  - {e}");
        }
    }
    drop(setup);
    Ok(())
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))
}

fn setup(args: &BenchArgs, names: &[Name]) -> Result<Setup> {
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (dir, work) = servers::work_dir(&parent)?;
    let filestore = work.join("filestore");
    std::fs::create_dir_all(&filestore)?;

    let wants_redis = names.contains(&Name::Redis) || names.contains(&Name::Grpc) || args.python;
    let (redis, redis_url, redis_port) = match (&args.redis_url, wants_redis) {
        (Some(url), _) => {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok());
            (None, Some(url.clone()), port)
        }
        (None, true) => {
            let s = servers::RedisServer::start()?;
            let port = s.port();
            (
                Some(s),
                Some(format!("redis://127.0.0.1:{port}")),
                Some(port),
            )
        }
        (None, false) => (None, None, None),
    };
    let (s3, s3_config) = if names.contains(&Name::S3) {
        match &args.s3_endpoint {
            Some(endpoint) => (
                None,
                Some(S3Config {
                    endpoint_url: Some(endpoint.clone()),
                    force_path_style: true,
                    access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
                    secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
                    region: std::env::var("AWS_REGION")
                        .ok()
                        .or(Some("us-east-1".into())),
                    prefix: format!("bench-{}/", proxystore::Key::random()),
                    ..S3Config::new(args.s3_bucket.clone())
                }),
            ),
            None => {
                // With credentials in the environment, the server accepts those and the
                // connector finds them through the standard chain, so that references carry
                // no secret (as in a deployment); otherwise the config carries generated ones.
                let env = match (
                    std::env::var("AWS_ACCESS_KEY_ID"),
                    std::env::var("AWS_SECRET_ACCESS_KEY"),
                ) {
                    (Ok(id), Ok(secret)) => Some((id, secret)),
                    _ => None,
                };
                let s = servers::S3Server::start(&work, env)?;
                let c = s.config("bench/");
                (Some(s), Some(c))
            }
        }
    } else {
        (None, None)
    };
    let (grpc, grpc_config) = if names.contains(&Name::Grpc) {
        match &args.grpc_url {
            Some(url) => (None, Some(GrpcConfig::new(url.clone()))),
            None => {
                let s = servers::GrpcServer::start()?;
                let c = s.config();
                (Some(s), Some(c))
            }
        }
    } else {
        (None, None)
    };

    let mut subjects = Vec::new();
    for name in names {
        let (label, connector, baseline, cross): (_, Arc<dyn Connector>, _, _) = match name {
            Name::Memory => (
                "memory",
                Arc::new(MemoryConnector::new("proxystore-bench")),
                RawKind::Memcpy,
                false,
            ),
            Name::File => (
                "file",
                Arc::new(FileConnector::new(&filestore)?),
                RawKind::Fs,
                true,
            ),
            Name::Redis => {
                let url = redis_url.clone().context("no Redis URL")?;
                (
                    "redis",
                    Arc::new(RedisConnector::with_config(RedisConfig {
                        prefix: "bench:".into(),
                        ..RedisConfig::new(url)
                    })?),
                    RawKind::Redis,
                    true,
                )
            }
            Name::S3 => (
                "s3",
                Arc::new(S3Connector::with_config(
                    s3_config.clone().context("no S3 config")?,
                )?),
                RawKind::S3,
                true,
            ),
            Name::Grpc => (
                "grpc",
                Arc::new(GrpcConnector::with_config(
                    grpc_config.clone().context("no gRPC config")?,
                )?),
                RawKind::Redis,
                true,
            ),
        };
        subjects.push(Subject {
            name: label,
            connector,
            baseline,
            cross_process: cross,
        });
    }
    let raw = proxystore::runtime::io_handle().block_on(Raw::new(
        filestore,
        redis_url.as_deref(),
        s3_config.as_ref(),
    ))?;
    Ok(Setup {
        subjects,
        raw,
        work,
        redis_port,
        _redis: redis,
        _s3: s3,
        _grpc: grpc,
        _dir: dir,
    })
}

/// How many proxies each fresh child resolves: a few, within about 64 MiB per child.
fn per_process(size: u64) -> usize {
    ((64u64 << 20) / size.max(1)).clamp(1, 4) as usize
}

async fn measure_all(
    args: &BenchArgs,
    setup: &Setup,
    sizes: &[u64],
    rss_size: u64,
    repeat: &Repeat,
    out: &mut report::Report,
) {
    let mut stores = Vec::new();
    for s in &setup.subjects {
        match Stores::new(s) {
            Ok(st) => stores.push(Some(st)),
            Err(e) => {
                out.errors.push(format!("{}: stores: {e:#}", s.name));
                stores.push(None);
            }
        }
    }
    for (s, st) in setup.subjects.iter().zip(&stores) {
        let Some(st) = st else { continue };
        match measure::ref_size(s, st).await {
            Ok(r) => out.reference_sizes.push(r),
            Err(e) => out
                .errors
                .push(format!("{}: reference size: {e:#}", s.name)),
        }
    }

    for &size in sizes {
        eprintln!("[bench] size {}", fmt_size(size));
        let payload = rss::payload(usize::try_from(size).unwrap_or(usize::MAX), size);
        // Big objects: fewer repetitions, so that a run stays within minutes.
        let rep = if size >= 1 << 30 {
            repeat.at_most(3)
        } else {
            *repeat
        };
        let mut raw_done = Vec::new();
        for (s, st) in setup.subjects.iter().zip(&stores) {
            let Some(st) = st else { continue };
            let t = Instant::now();
            match measure::store_ops(s, st, &payload, &rep, &setup.raw).await {
                Ok((rows, raw_rows)) => {
                    out.results.extend(rows);
                    // Baseline rows from the first connector compared with that baseline.
                    if !raw_done.contains(&s.baseline) {
                        raw_done.push(s.baseline);
                        out.results.extend(raw_rows);
                    }
                }
                Err(e) => out
                    .errors
                    .push(format!("{} {}: {e:#}", s.name, fmt_size(size))),
            }
            if s.cross_process && args.processes > 0 {
                let procs = if size >= 1 << 30 { 2 } else { args.processes };
                match measure::fresh_process(s, st, &payload, procs, per_process(size), &setup.work)
                    .await
                {
                    Ok(rows) => out.results.extend(rows),
                    Err(e) => out.errors.push(format!(
                        "{} {} fresh-process resolve: {e:#}",
                        s.name,
                        fmt_size(size)
                    )),
                }
            }
            eprintln!("[bench]   {}: {:.1}s", s.name, t.elapsed().as_secs_f64());
        }
    }

    if setup.subjects.iter().any(|s| s.name == "file") {
        eprintln!("[bench] core: first resolve per digest, digest throughput");
        match core_checks(&setup.raw, repeat).await {
            Ok(rows) => out.core.extend(rows),
            Err(e) => out.errors.push(format!("core: {e:#}")),
        }
    }

    if !args.skip_small {
        eprintln!("[bench] small objects (100 B)");
        let mut raw_done = Vec::new();
        for (s, st) in setup.subjects.iter().zip(&stores) {
            let Some(st) = st else { continue };
            for &clients in &args.clients {
                match small_pair_of_loops(args, setup, s, &st.cold, clients).await {
                    Ok((ours, base)) => {
                        out.small_ops.push(ours);
                        if let Some(b) = base
                            && !raw_done.contains(&(s.baseline, clients))
                        {
                            raw_done.push((s.baseline, clients));
                            out.small_ops.push(b);
                        }
                    }
                    Err(e) => out
                        .errors
                        .push(format!("small {} x{clients}: {e:#}", s.name)),
                }
            }
        }
    }

    if args.rss {
        for s in &setup.subjects {
            eprintln!("[bench] peak RSS: {} {}", s.name, fmt_size(rss_size));
            match rss::measure(s, rss_size, &setup.work).await {
                Ok(r) => out.rss.push(r),
                Err(e) => out.errors.push(format!("rss {}: {e:#}", s.name)),
            }
        }
    }
    for (s, st) in setup.subjects.iter().zip(&stores) {
        if st.is_some() {
            proxystore::unregister_store(&format!("bench-{}-cold", s.name));
        }
    }
}

/// The small-object loop of `subject`'s store and of its raw baseline, alternated in slices
/// (ours, raw, ours, raw) so that both see the same machine.
async fn small_pair_of_loops(
    args: &BenchArgs,
    setup: &Setup,
    subject: &Subject,
    store: &Store,
    clients: usize,
) -> Result<(small::SmallOps, Option<small::SmallOps>)> {
    // Short slices: file creation on a shared ext4 disk drifts by 10x within seconds.
    const SLICES: usize = 6;
    let seconds = args.small_seconds / SLICES as f64;
    let raw_kind = (subject.baseline != RawKind::Memcpy).then_some(subject.baseline);
    let mut ours: Option<small::SmallOps> = None;
    let mut base: Option<small::SmallOps> = None;
    for slice in 0..SLICES {
        let l = small::Loop {
            name: subject.name,
            clients,
            seconds,
            store: Some(store),
            raw: &setup.raw,
            raw_kind: None,
            blocking: false,
            warm_up: slice == 0,
        };
        let r = small::run(l, small::store_pair(store.clone())).await?;
        ours = Some(small::merge(ours, r));
        if let Some(kind) = raw_kind {
            let l = small::Loop {
                name: kind.small_name(),
                clients,
                seconds,
                store: None,
                raw: &setup.raw,
                raw_kind: Some(kind),
                blocking: kind == RawKind::Fs,
                warm_up: slice == 0,
            };
            let r = small::run(l, small::raw_pair(setup.raw.clone(), kind)).await?;
            base = Some(small::merge(base, r));
        }
    }
    let mut ours = ours.context("no small-object slices")?;
    if let (Some(kind), Some(b)) = (raw_kind, &base) {
        ours.baseline = Some(kind.small_name().to_owned());
        ours.ratio = Some(ours.put_get_pairs_per_s / b.put_get_pairs_per_s);
    }
    Ok((ours, base))
}

/// The core figures of the file connector and digests: the first resolve of a deserialized
/// 1 MiB proxy per digest against a raw read of the same file, and each digest's throughput.
async fn core_checks(raw: &Raw, repeat: &Repeat) -> Result<Vec<Row>> {
    const SIZE: u64 = 1 << 20;
    let payload = rss::payload(SIZE as usize, 17);
    let mut rows = Vec::new();
    let connector = FileConnector::new(&raw.fs_dir)?;
    let mut keys = Vec::new();
    let first = connector.put(payload.clone()).await?;
    let path = raw.fs_dir.join(first.as_str());
    let raw_read = || {
        let path = path.clone();
        async move {
            let start = Instant::now();
            let v = std::fs::read(&path)?;
            let dt = start.elapsed();
            anyhow::ensure!(v.len() as u64 == SIZE, "read {} bytes", v.len());
            Ok(dt)
        }
    };
    for alg in [
        DigestAlgorithm::None,
        DigestAlgorithm::Xxh3,
        DigestAlgorithm::Blake3,
    ] {
        let store = Store::builder(format!("bench-core-{}", alg.as_str()), connector.clone())
            .digest(alg)
            .cache_bytes(0)
            .build();
        proxystore::register_store(&store)?;
        let proxy = store.proxy(&payload).await?;
        let key = proxy.key().context("no key")?.clone();
        keys.push((store.clone(), key));
        let wire = postcard::to_stdvec(&proxy)?;
        let (s, b) = repeat
            .run_paired(
                || {
                    let wire = wire.clone();
                    async move {
                        let q: Proxy<Bytes> = postcard::from_bytes(&wire)?;
                        let start = Instant::now();
                        let n = q.resolve().await?.len();
                        let dt = start.elapsed();
                        anyhow::ensure!(n as u64 == SIZE, "resolved {n} bytes");
                        Ok(dt)
                    }
                },
                raw_read,
            )
            .await?;
        let mut row = Row::new(
            "file",
            &format!("resolve_first_digest_{}", alg.as_str()),
            SIZE,
            s,
        );
        row.baseline = Some("raw/fs_read".into());
        row.ratio = Some(row.summary.median_s / b.median_s);
        rows.push(row);
        if alg == DigestAlgorithm::None {
            rows.push(Row::new("raw", "fs_read", SIZE, b));
        }
        proxystore::unregister_store(store.name());
    }
    connector.evict(&first).await?;
    for (store, key) in keys {
        store.evict(&key).await?;
    }

    let big = rss::payload(100 << 20, 3);
    for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
        for data in [payload.clone(), big.clone()] {
            let s = repeat
                .run(|| {
                    let data = data.clone();
                    async move {
                        let start = Instant::now();
                        std::hint::black_box(alg.digest(&data));
                        Ok(start.elapsed())
                    }
                })
                .await?;
            rows.push(Row::new("digest", alg.as_str(), data.len() as u64, s));
        }
    }
    Ok(rows)
}

/// Baseline kinds by connector name.
pub(crate) fn baselines() -> BTreeMap<&'static str, RawKind> {
    BTreeMap::from([
        ("memory", RawKind::Memcpy),
        ("file", RawKind::Fs),
        ("redis", RawKind::Redis),
        ("s3", RawKind::S3),
        ("grpc", RawKind::Redis),
    ])
}
