//! `proxystore-server`: run the ProxyStore gRPC store service.
//!
//! Prints `proxystore-server listening on <url>` on stdout once it accepts connections, runs
//! until SIGINT or SIGTERM, then finishes the calls in flight. Logs go to stderr (`RUST_LOG`);
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a span per call is exported over OTLP (see
//! `proxystore-telemetry`).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// jemalloc, with its background threads, gives freed memory back to the system even while
/// the server is idle: with glibc's allocator the buffers of many stalled or cut-off uploads
/// stayed in the process after they were freed (794 MiB RSS for 4 MiB stored), and mimalloc
/// returns memory only when the thread that freed it allocates again (see
/// docs/reliability.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Run the ProxyStore gRPC store service (store, health, reflection).
#[derive(Parser)]
#[command(name = "proxystore-server", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    serve: proxystore_server::ServeArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = proxystore_telemetry::init("proxystore-server")
        .map_err(|e| eprintln!("proxystore-server: telemetry off: {e}"))
        .ok();
    let result = match cli.serve.into_config() {
        Ok(config) => {
            proxystore_server::serve(config, |server| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "proxystore-server listening on {}", server.url());
                let _ = out.flush();
            })
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("proxystore-server: {message}");
            ExitCode::FAILURE
        }
    }
}
