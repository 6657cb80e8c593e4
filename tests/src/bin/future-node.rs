//! A second OS process for the distributed-futures tests (tests/tests/futures.rs).
//!
//! - `future-node consume FILE TIMEOUT_MS`: FILE holds a postcard `Proxy<Vec<u8>>` of a future;
//!   prints `waiting` on a line of its own, resolves it (waiting at most TIMEOUT_MS), then prints
//!   one JSON line: `{"ok": true, "len": N, "sum": S, "at_ns": T}` (T: Unix time when the value
//!   was in hand) or `{"ok": false, "kind": "...", "error": "..."}`.
//! - `future-node produce FILE DELAY_MS SIZE (set|drop|hang)`: FILE holds a postcard
//!   `Promise<Vec<u8>>` (moved to this process: it takes the heartbeat over); prints `live`, sleeps
//!   DELAY_MS, then sets the value `pattern(SIZE)`, or drops the promise and exits normally, or
//!   hangs until it is killed (the test kills it to play a crashed producer).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use proxystore::future::Promise;
use proxystore::{Error, FutureProblem, Proxy};
use proxystore_tests::pattern;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["consume", file, timeout_ms] => consume(file, timeout_ms.parse()?),
        ["produce", file, delay_ms, size, mode] => {
            produce(file, delay_ms.parse()?, size.parse()?, mode)
        }
        _ => bail!("usage: future-node consume FILE TIMEOUT_MS | produce FILE DELAY_MS SIZE MODE"),
    }
}

fn consume(file: &str, timeout_ms: u64) -> anyhow::Result<()> {
    let proxy: Proxy<Vec<u8>> =
        postcard::from_bytes(&std::fs::read(file).context("reading the proxy")?)?;
    println!("waiting");
    let got = proxystore::runtime::block_on_within(None, async move {
        let r = proxy
            .resolve_within(Duration::from_millis(timeout_ms))
            .await
            .map(|v| (v.len(), v.iter().map(|&b| u64::from(b)).sum::<u64>()));
        (r, now_ns())
    })?;
    let line = match got {
        (Ok((len, sum)), at_ns) => {
            serde_json::json!({"ok": true, "len": len, "sum": sum, "at_ns": at_ns})
        }
        (Err(e), _) => {
            serde_json::json!({"ok": false, "kind": kind(&e), "error": e.to_string(), "debug": format!("{e:?}")})
        }
    };
    println!("{line}");
    Ok(())
}

/// A short name for the error, for the test to match on.
fn kind(e: &Error) -> &'static str {
    match e {
        Error::Timeout { .. } => "timeout",
        Error::Future { problem, .. } => match problem {
            FutureProblem::Failed { .. } => "failed",
            FutureProblem::Dropped => "dropped",
            FutureProblem::ProducerGone { .. } => "producer-gone",
            FutureProblem::AlreadySet => "already-set",
            FutureProblem::Moved => "moved",
            _ => "future",
        },
        _ => "other",
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

fn produce(file: &str, delay_ms: u64, size: usize, mode: &str) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).context("reading the promise")?;
    let mode = mode.to_owned();
    proxystore::runtime::block_on_within(None, async move {
        let promise: Promise<Vec<u8>> = postcard::from_bytes(&bytes)?;
        println!("live");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        match mode.as_str() {
            "set" => promise.set(&pattern(size)).await?,
            "drop" => drop(promise),
            "hang" => {
                let _kept = promise;
                std::future::pending::<()>().await;
            }
            other => bail!("unknown mode {other}"),
        }
        Ok(())
    })?
}
