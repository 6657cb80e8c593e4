//! The child processes a run starts: first resolves in fresh processes, peak memory of one
//! put or resolve, the consumers of `bench futures` and `bench streams` (and those two
//! benchmarks themselves, subcommands of `bench`). Both sides of their command line live here:
//! a run starts the current executable as `<exe> bench resolve-child ...` or
//! `<exe> bench rss-child ...`, and that executable hands the parsed [`Child`] to [`run_child`].

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::measure::rss::RssOp;

/// Child processes the benchmark starts (not for direct use).
///
/// Mount it as the (optional) subcommand of the arguments of `bench`, and hand what was
/// parsed to [`run_child`].
#[derive(Debug, Subcommand)]
pub enum Child {
    /// Distributed futures: latency from `set` to the value in another process, the
    /// consumer's CPU while it waits, and a pipeline; with `--python`, Python ProxyStore's.
    Futures(crate::futures::FuturesArgs),
    /// The consumer process of `bench futures`: resolves the futures it reads on stdin.
    #[command(hide = true)]
    FutureChild,
    /// Streams of proxies: objects/s and MB/s from a producer to a consumer process, per
    /// broker, store, size and batch, beside a raw Redis list and the store alone; with
    /// `--python`, Python ProxyStore's.
    Streams(crate::streams::StreamsArgs),
    /// Aggregate put/get throughput through 1, 2, 3 store-service replicas over a shared
    /// backend (a Redis Cluster, S3), beside the backend's raw client and the connector.
    Scale(crate::scale::ScaleArgs),
    /// The consumer process of `bench streams`: consumes the trials it reads on stdin.
    #[command(hide = true)]
    StreamChild,
    /// Resolve the serialized proxies of a file and report timings as JSON.
    #[command(hide = true)]
    ResolveChild {
        /// Input written by the parent.
        input: PathBuf,
    },
    /// Put or resolve one large object and report peak RSS as JSON.
    #[command(hide = true)]
    RssChild {
        /// Which side of the measurement.
        #[arg(long, value_enum)]
        op: RssOp,
        /// Connector config (JSON).
        #[arg(long)]
        connector: String,
        /// Object size in bytes.
        #[arg(long)]
        size: u64,
        /// File of the serialized proxy.
        #[arg(long)]
        refs: PathBuf,
    },
}

/// Run the child process `child` of a benchmark: it reports on standard output as JSON.
///
/// # Errors
/// When its measurement fails; the parent reports the error with its standard error.
pub fn run_child(child: Child) -> Result<()> {
    // The references a child resolves are the ones its parent run just made against the
    // subjects it set up (a bucket of the test S3 server among them), handed over in files of
    // the run's own work directory: they are trusted as the parent trusts its stores.
    proxystore::set_resolve_policy(proxystore::ResolvePolicy::allow_all());
    match child {
        Child::Futures(args) => crate::futures::run(args),
        Child::FutureChild => crate::futures::child(),
        Child::Streams(args) => crate::streams::run(args),
        Child::StreamChild => crate::streams::child(),
        Child::Scale(args) => crate::scale::run(args),
        Child::ResolveChild { input } => crate::measure::fresh_process::resolve_child(&input),
        Child::RssChild {
            op,
            connector,
            size,
            refs,
        } => crate::measure::rss::child(op, &connector, size, &refs),
    }
}
