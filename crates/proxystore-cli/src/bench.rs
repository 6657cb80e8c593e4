//! `proxystore bench`: the command line of the benchmark harness (crate proxystore-bench),
//! and of the child processes it starts as `proxystore bench <child> ...`.

use std::path::PathBuf;

use clap::Args;
use proxystore_bench::{Child, ConnectorName, Options};

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
    connectors: Vec<ConnectorName>,

    /// Use this Redis server (default: start redis-server on a free loopback port).
    #[arg(long, env = "PROXYSTORE_BENCH_REDIS_URL")]
    redis_url: Option<String>,

    /// Use this S3 endpoint (default: an in-process s3s-fs server on loopback); credentials
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "PROXYSTORE_BENCH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,

    /// Bucket on `--s3-endpoint` (must exist).
    #[arg(long, default_value = proxystore_bench::S3_BUCKET)]
    s3_bucket: String,

    /// Part size of the S3 connector's multipart uploads, with units, and the size above which
    /// it uses them (default: the connector's, 8 MiB parts above 100 MiB).
    #[arg(long)]
    s3_part_size: Option<String>,

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

/// Run `proxystore bench`, or the child process it names.
///
/// # Errors
/// When a server cannot start or an output cannot be written; failed measurements are listed
/// in the report instead.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let BenchArgs {
        child,
        sizes,
        gib,
        connectors,
        redis_url,
        s3_endpoint,
        s3_bucket,
        s3_part_size,
        grpc_url,
        dir,
        min_time,
        min_reps,
        max_reps,
        repeat,
        processes,
        small_seconds,
        clients,
        skip_small,
        rss,
        rss_size,
        python,
        python_script,
        python_bin,
        json,
        markdown,
        update_doc,
        plots,
        plot_script,
    } = args;
    if let Some(child) = child {
        return proxystore_bench::run_child(child);
    }
    proxystore_bench::run(Options {
        sizes,
        gib,
        connectors,
        redis_url,
        s3_endpoint,
        s3_bucket,
        s3_part_size,
        grpc_url,
        dir,
        min_time,
        min_reps,
        max_reps,
        repeat,
        processes,
        small_seconds,
        clients,
        skip_small,
        rss,
        rss_size,
        python,
        python_script,
        python_bin,
        json,
        markdown,
        update_doc,
        plots,
        plot_script,
    })
}
