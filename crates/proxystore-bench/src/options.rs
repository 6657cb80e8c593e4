//! The options of a run: what to measure, against which servers, how often, and which files
//! to write. The command line that fills them is the caller's (`proxystore bench`).

use std::path::PathBuf;

/// What a run measures and writes.
///
/// Sizes keep the text they were given (`100B`, `1MiB`, ...): they are parsed when the run
/// starts and recorded as given in the JSON report.
#[derive(Clone, Debug)]
pub struct Options {
    /// Object sizes, with units (B, KiB, MiB, GiB).
    pub sizes: Vec<String>,
    /// Also measure 1 GiB objects.
    pub gib: bool,
    /// Connectors to measure.
    pub connectors: Vec<ConnectorName>,
    /// Use this Redis server instead of starting redis-server on a free loopback port.
    pub redis_url: Option<String>,
    /// Use this S3 endpoint instead of an in-process s3s-fs server on loopback; credentials
    /// from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub s3_endpoint: Option<String>,
    /// Bucket on `s3_endpoint` (must exist).
    pub s3_bucket: String,
    /// Part size of the S3 connector's multipart uploads (`None`: the connector's default).
    pub s3_part_size: Option<String>,
    /// Use this gRPC store server instead of the service embedded in this process.
    pub grpc_url: Option<String>,
    /// Parent directory of the file connector's directory (and of Python's); default: the
    /// system's temporary directory.
    pub dir: Option<PathBuf>,
    /// Repeat each measurement until this many seconds were timed (and `min_reps` reached).
    pub min_time: f64,
    /// At least this many repetitions of each measurement.
    pub min_reps: usize,
    /// At most this many repetitions of each measurement.
    pub max_reps: usize,
    /// Exactly this many repetitions of each measurement (instead of adaptive).
    pub repeat: Option<usize>,
    /// Fresh child processes per connector and size for first resolves (0: skip).
    pub processes: usize,
    /// Seconds of each small-object (100 B) loop.
    pub small_seconds: f64,
    /// Concurrent clients of the small-object loops.
    pub clients: Vec<usize>,
    /// Skip the small-object loops.
    pub skip_small: bool,
    /// Measure peak RSS of a put and of a resolve of a `rss_size` object per connector.
    pub rss: bool,
    /// Object size of the peak-RSS measurement, with its unit.
    pub rss_size: String,
    /// Also run Python ProxyStore's benchmark against the same redis-server and directory.
    pub python: bool,
    /// The Python benchmark script.
    pub python_script: PathBuf,
    /// Python interpreter of the benchmark script and of the plotting script.
    pub python_bin: String,
    /// Write every figure as JSON here.
    pub json: Option<PathBuf>,
    /// Write the generated Markdown report here.
    pub markdown: Option<PathBuf>,
    /// Replace the generated part (between `<!-- bench:begin -->` and `<!-- bench:end -->`)
    /// of this Markdown document with the report.
    pub update_doc: Option<PathBuf>,
    /// Draw PNG plots into this directory (runs `plot_script` on the JSON, so needs `json`).
    pub plots: Option<PathBuf>,
    /// The plotting script.
    pub plot_script: PathBuf,
}

/// A connector the benchmark can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnectorName {
    /// The in-process memory connector, against memcpy.
    Memory,
    /// The file connector, against `std::fs` in the same directory.
    File,
    /// The Redis connector, against the redis crate on the same server.
    Redis,
    /// The S3 connector, against aws-sdk-s3 on the same server.
    S3,
    /// The gRPC connector to the store service, against the redis crate.
    Grpc,
}

impl ConnectorName {
    /// Its name on the command line and in the report: `memory`, `file`, `redis`, `s3`,
    /// `grpc`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ConnectorName::Memory => "memory",
            ConnectorName::File => "file",
            ConnectorName::Redis => "redis",
            ConnectorName::S3 => "s3",
            ConnectorName::Grpc => "grpc",
        }
    }
}

/// Parsed from its label. Written out rather than derived: a derived parser would list the
/// variants' documentation in `--help`.
impl clap::ValueEnum for ConnectorName {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            ConnectorName::Memory,
            ConnectorName::File,
            ConnectorName::Redis,
            ConnectorName::S3,
            ConnectorName::Grpc,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.label()))
    }
}
