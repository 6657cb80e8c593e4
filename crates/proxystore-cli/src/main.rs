//! The `proxystore` command.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, with its background threads, gives freed memory back to the system even while
/// the server is idle: with glibc's allocator the buffers of many stalled or cut-off uploads
/// stayed in the process after they were freed (794 MiB RSS for 4 MiB stored), and mimalloc
/// returns memory only when the thread that freed it allocates again (see
/// docs/reliability.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod bench;
mod client;
mod demo;
mod exit;
mod info;
mod inspect;
mod serve;
mod terminal;
mod transfer;
mod util;

const AFTER_HELP: &str = "\
Environment:
  PROXYSTORE_URL     server URL of the client commands (default http://127.0.0.1:50051)
  PROXYSTORE_TOKEN   bearer token: `serve` requires it from clients, the clients send it
  Every option's own variable is shown by `proxystore <COMMAND> --help`.

Examples:
  proxystore serve &                          # memory store on 127.0.0.1:50051
  key=$(proxystore put weights.bin)           # upload, print the key
  proxystore get \"$key\" -o copy.bin           # download
  proxystore put --reference weights.bin      # upload, print a proxy reference
  proxystore inspect \"$ref\"                   # decode a reference without fetching
";

/// ProxyStore: move large objects between tasks by reference.
///
/// `serve` runs the gRPC store service; `put`, `get`, `stat`, `exists` and `evict` talk to
/// one; `inspect` decodes a serialized proxy reference offline; `demo` runs a small workflow
/// whose large arguments travel as proxies.
#[derive(Debug, Parser)]
#[command(
    name = "proxystore",
    version,
    after_help = format!("{AFTER_HELP}\n{}", exit::HELP),
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the store service (gRPC, with health and reflection) until SIGINT or SIGTERM.
    ///
    /// Prints `proxystore listening on URL` on standard output once it accepts connections.
    /// On SIGINT or SIGTERM it stops accepting, lets the calls in flight finish (up to 30 s)
    /// and exits with 0.
    #[command(after_help = "\
Examples:
  proxystore serve                                    # memory, 127.0.0.1:50051
  proxystore serve --port 0                           # any free port (printed)
  proxystore serve --backend file --directory /data/ps --max-total-bytes 100GiB
  PROXYSTORE_TOKEN=s3cret proxystore serve --listen 0.0.0.0:50051")]
    Serve(serve::ServeCmd),

    /// Upload a file or standard input; print its key (or a proxy reference).
    ///
    /// The object streams in 1 MiB chunks with flow control, so memory use stays constant
    /// whatever its size. A put that fails part-way leaves nothing on the server.
    #[command(after_help = "\
Examples:
  proxystore put data.bin                             # prints the key
  tar c dir | proxystore put -                        # from standard input
  proxystore put --ttl 1h --key run-42/input data.bin
  proxystore put --reference data.bin                 # base64 proxy reference
  proxystore put --json --store results data.bin      # the reference as JSON")]
    Put(transfer::PutArgs),

    /// Download an object to a file or standard output.
    ///
    /// The object streams in chunks; a whole-object download is checked against the digest
    /// the server recorded (exit code 7 on mismatch).
    #[command(after_help = "\
Examples:
  proxystore get \"$key\" -o data.bin
  proxystore get \"$key\" | tar x
  proxystore get \"$key\" --range 0..1KiB | xxd | head")]
    Get(transfer::GetArgs),

    /// Show the server's backend, usage, limits and version.
    #[command(after_help = "\
Examples:
  proxystore stat
  proxystore stat --json | jq .bytes_used")]
    Stat(info::StatArgs),

    /// Tell whether an object exists: prints true or false, exit code 0 or 3.
    #[command(after_help = "\
Examples:
  proxystore exists \"$key\"
  if proxystore exists -q \"$key\"; then echo present; fi")]
    Exists(info::ExistsArgs),

    /// Evict objects (keys that do not exist are not an error).
    #[command(after_help = "\
Examples:
  proxystore evict \"$key\"
  proxystore evict k1 k2 k3")]
    Evict(info::EvictArgs),

    /// Decode a serialized proxy reference and show its fields, without fetching anything.
    ///
    /// Accepts base64 or hex of the protobuf bytes (proto/proxystore_rs/v1/proxy.proto), raw
    /// protobuf bytes in a file, or JSON (bare, or a proxy's `{"$proxy": {...}}`). Secrets in
    /// the connector options (tokens, passwords, keys, passwords inside URLs) are shown as
    /// <redacted>. Input that is not a valid reference exits with code 7.
    #[command(after_help = "\
Examples:
  proxystore inspect \"$(proxystore put --reference data.bin)\"
  proxystore inspect @ref.txt
  proxystore put --json data.bin | proxystore inspect -
  proxystore inspect --json \"$ref\" | jq .key")]
    Inspect(inspect::InspectArgs),

    /// Run a small workflow whose large arguments travel as proxies, on the embedded default
    /// store, and show what moved where.
    Demo(demo::DemoArgs),

    /// Measure every connector against the raw client of its backend (and, with --python,
    /// against Python ProxyStore) on this machine; print ratios, write JSON and a report.
    ///
    /// Starts redis-server, an S3 server and the gRPC store service on loopback unless given
    /// their addresses. Run it from a release build.
    #[command(after_help = "\
Examples:
  cargo run --release -p proxystore-cli -- bench
  proxystore bench --sizes 1KiB,1MiB --connectors memory,file --json out.json
  proxystore bench --python --rss --json bench/results/bench.json \\
      --update-doc docs/benchmarks.md --plots docs/images      # what scripts/bench-report runs
  proxystore bench futures --python    # distributed futures, beside Python ProxyStore's
  proxystore bench streams --python    # streams of proxies, beside Python ProxyStore's")]
    Bench(Box<bench::BenchArgs>),
}

/// A runtime for the client commands: their transfers run on the library's own I/O runtime,
/// this one only drives the command.
fn client<F>(fut: F) -> anyhow::Result<u8>
where
    F: std::future::Future<Output = anyhow::Result<u8>>,
{
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs on stderr (RUST_LOG); spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set,
    // flushed when the guard drops at the end of main.
    let _telemetry = proxystore_telemetry::init("proxystore")
        .map_err(|e| eprintln!("warning: telemetry off: {e}"))
        .ok();
    let result = match cli.command {
        Command::Serve(args) => serve::serve(args),
        Command::Put(args) => client(transfer::put(args)),
        Command::Get(args) => client(transfer::get(args)),
        Command::Stat(args) => client(info::stat(args)),
        Command::Exists(args) => client(info::exists(args)),
        Command::Evict(args) => client(info::evict(args)),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Demo(args) => demo::run(args).map(|()| exit::OK),
        Command::Bench(args) => bench::run(*args).map(|()| exit::OK),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = exit::code_of(&e);
            if code == exit::OK {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", exit::message(&e));
            if let Some(hint) = exit::hint(&e, code) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(code)
        }
    }
}
