//! First resolves in fresh processes: children of the current executable that each resolve a
//! few proxies put by the parent, and report their timings as JSON.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use proxystore::Proxy;
use serde::{Deserialize, Serialize};

use super::SUBCOMMAND;
use super::repeat::Summary;
use super::store_ops::{Row, Stores};
use crate::setup::Subject;

/// What a resolving child process reads.
#[derive(Serialize, Deserialize)]
pub(crate) struct ChildInput {
    /// Object size, to check what resolves.
    pub(crate) size: u64,
    /// Serialized proxies (postcard), one per object.
    pub(crate) refs: Vec<Vec<u8>>,
}

/// What a resolving child process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct ChildOutput {
    /// The first resolve of the process: builds the store from the reference and connects.
    pub(crate) first_s: f64,
    /// Deserializing the first proxy.
    pub(crate) first_decode_s: f64,
    /// The following resolves (each of another object, store already built).
    pub(crate) rest_s: Vec<f64>,
}

/// First resolves in fresh processes: `processes` children of this binary each resolve
/// `per_process` proxies of `payload` put beforehand. Gives `resolve_new_process` (the first
/// resolve of each child: store built from the reference, connection opened) and
/// `resolve_child` (the following resolves in those children).
pub(crate) async fn fresh_process(
    subject: &Subject,
    stores: &Stores,
    payload: &Bytes,
    processes: usize,
    per_process: usize,
    work: &Path,
) -> Result<Vec<Row>> {
    let size = payload.len() as u64;
    let exe = std::env::current_exe().context("path of this executable")?;
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for i in 0..processes {
        let mut refs = Vec::with_capacity(per_process);
        let mut keys = Vec::with_capacity(per_process);
        for _ in 0..per_process {
            let p = stores.cold.proxy(payload).await?;
            refs.push(postcard::to_stdvec(&p)?);
            keys.extend(p.key().cloned());
        }
        let input = work.join(format!("refs-{}-{i}.json", subject.name));
        std::fs::write(&input, serde_json::to_vec(&ChildInput { size, refs })?)?;
        let out = tokio::task::spawn_blocking({
            let (exe, input) = (exe.clone(), input.clone());
            move || {
                Command::new(exe)
                    .args([SUBCOMMAND, "resolve-child"])
                    .arg(&input)
                    .output()
            }
        })
        .await??;
        let _ = std::fs::remove_file(&input);
        stores.cold.evict_batch(&keys).await?;
        if !out.status.success() {
            bail!(
                "resolving child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let report: ChildOutput = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "child output {:?}",
                String::from_utf8_lossy(&out.stdout).trim()
            )
        })?;
        first.push(report.first_s);
        rest.extend(report.rest_s);
    }
    let mut rows = Vec::new();
    first.sort_by(f64::total_cmp);
    rows.push(Row::new(
        subject.name,
        "resolve_new_process",
        size,
        Summary::of_sorted_secs(&first),
    ));
    if !rest.is_empty() {
        rest.sort_by(f64::total_cmp);
        rows.push(Row::new(
            subject.name,
            "resolve_child",
            size,
            Summary::of_sorted_secs(&rest),
        ));
    }
    Ok(rows)
}

/// The child side of [`fresh_process`]: resolve every proxy of `input` through the synchronous
/// path (`Deref` uses it) and print a [`ChildOutput`] as JSON.
pub(crate) fn resolve_child(input: &Path) -> Result<()> {
    let input: ChildInput = serde_json::from_slice(
        &std::fs::read(input).with_context(|| format!("read {}", input.display()))?,
    )?;
    let mut out = ChildOutput::default();
    for (i, wire) in input.refs.iter().enumerate() {
        let start = Instant::now();
        let p: Proxy<Bytes> = postcard::from_bytes(wire)?;
        let decode = start.elapsed();
        let start = Instant::now();
        let n = p.try_get()?.len();
        let dt = start.elapsed().as_secs_f64();
        ensure!(
            n as u64 == input.size,
            "resolved {n} bytes of {}",
            input.size
        );
        if i == 0 {
            out.first_s = dt;
            out.first_decode_s = decode.as_secs_f64();
        } else {
            out.rest_s.push(dt);
        }
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}
