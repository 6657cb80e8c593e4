//! The `proxystore` command.

use clap::{Parser, Subcommand};

mod demo;

/// ProxyStore: move large objects between tasks by reference.
#[derive(Debug, Parser)]
#[command(name = "proxystore", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a small workflow whose large arguments travel as proxies, on the embedded default
    /// store, and show what moved where.
    Demo(demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
