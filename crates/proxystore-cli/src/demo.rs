//! `proxystore demo`: the README's main job.

use clap::Args;

/// Options of `proxystore demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {}

pub(crate) fn run(_args: DemoArgs) -> anyhow::Result<()> {
    Ok(())
}
