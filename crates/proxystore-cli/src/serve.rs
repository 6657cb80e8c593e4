//! `proxystore serve`: run the store service in the foreground.

use std::io::Write;

use clap::{Args, ValueEnum};
use proxystore_server::{BackendKind, ServeArgs};

use crate::exit::{self, Coded};

/// Options of `proxystore serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeCmd {
    #[command(flatten)]
    serve: ServeArgs,

    /// Listen on this port instead of the one in --listen (0: any free port; the URL printed
    /// says which).
    #[arg(long, env = "PROXYSTORE_PORT")]
    port: Option<u16>,
}

pub(crate) fn serve(cmd: ServeCmd) -> anyhow::Result<u8> {
    let mut args = cmd.serve;
    if let Some(port) = cmd.port {
        args.listen.set_port(port);
    }
    let backend = match &args.backend_config {
        Some(path) => format!("backend from {}", path.display()),
        None => match args.backend.to_possible_value() {
            Some(v) => format!("{} backend", v.get_name()),
            None => "backend".to_owned(),
        },
    };
    let shared = args.backend_config.is_some()
        || matches!(args.backend, BackendKind::Redis | BackendKind::S3);
    let config = args
        .into_config()
        .map_err(|e| Coded::new(exit::USAGE, e.to_string()))?;
    if shared && config.max_total_bytes.is_some() {
        eprintln!(
            "proxystore: --max-total-bytes counts what this server stores; other servers on the \
             same backend count their own"
        );
    }
    let auth = if config.token.is_some() {
        "token required"
    } else {
        "no token"
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(proxystore_server::serve(config, |server| {
        let url = server.url();
        let mut out = std::io::stdout().lock();
        // The first line of stdout is the contract for scripts and tests: it names the URL.
        let _ = writeln!(out, "proxystore listening on {url}");
        let _ = out.flush();
        eprintln!(
            "proxystore: {backend}, {auth}; clients: export PROXYSTORE_URL={url}; \
             stop with Ctrl-C or SIGTERM"
        );
    }))?;
    eprintln!("proxystore: stopped");
    Ok(exit::OK)
}
