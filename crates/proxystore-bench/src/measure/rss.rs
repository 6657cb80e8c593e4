//! Peak memory of a large put and of its resolve, each in a child process of its own (the
//! kernel's `VmHWM`), as a ratio to the object size.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use bytes::Bytes;
use proxystore::connector::ConnectorConfig;
use proxystore::connector::file::FileConfig;
use proxystore::connector::redis::RedisConfig;
use proxystore::connector::s3::S3Config;
use proxystore::{Proxy, Store};
use serde::{Deserialize, Serialize};

use super::SUBCOMMAND;
use crate::baselines::{Raw, RawKey, RawKind};
use crate::setup::Subject;

/// One connector's peak RSS figures.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub(crate) struct RssRow {
    pub(crate) connector: String,
    pub(crate) size_bytes: u64,
    /// Peak RSS of the process that made the object and put it (the object itself included).
    pub(crate) put_peak_bytes: u64,
    pub(crate) put_ratio: f64,
    /// Peak RSS of a fresh process that resolved a proxy of it.
    pub(crate) resolve_peak_bytes: u64,
    pub(crate) resolve_ratio: f64,
    /// Peak RSS of a child right after start-up, before any object exists (for context).
    pub(crate) idle_peak_bytes: u64,
    /// The same for the raw client of the backend (redis crate, aws-sdk-s3, `std::fs`), when
    /// it has one.
    pub(crate) raw_put_peak_bytes: Option<u64>,
    pub(crate) raw_put_ratio: Option<f64>,
    pub(crate) raw_get_peak_bytes: Option<u64>,
    pub(crate) raw_get_ratio: Option<f64>,
}

/// What one RSS child reports.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct RssReport {
    pub(crate) idle_hwm: u64,
    pub(crate) put_hwm: Option<u64>,
    pub(crate) resolve_hwm: Option<u64>,
}

/// `VmHWM` of this process, in bytes.
pub(crate) fn hwm() -> Result<u64> {
    status_field("VmHWM")
}

fn status_field(name: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("read /proc/self/status")?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(name).and_then(|r| r.strip_prefix(':')) {
            let kb: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("parse {name} {rest:?}"))?;
            return Ok(kb * 1024);
        }
    }
    bail!("no {name} in /proc/self/status")
}

/// Reset `VmHWM` to the current RSS (Linux `clear_refs` value 5).
fn reset_hwm() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("reset VmHWM through clear_refs")
}

/// `size` bytes of pseudo-random data, every page written.
pub(crate) fn payload(size: usize, seed: u64) -> Bytes {
    let mut v = vec![0u8; size];
    let mut x = seed | 1;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(v)
}

/// Which side of the measurement a child performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RssOp {
    /// Make the object, put it, write the serialized proxy to the refs file.
    Put,
    /// Resolve the proxy in the refs file.
    Resolve,
    /// Both in this process (for the in-process memory connector); the peak is reset between.
    PutResolve,
    /// Write the object with the backend's raw client; the handle goes to the refs file.
    RawPut,
    /// Read it back with the raw client.
    RawGet,
}

impl RssOp {
    fn name(self) -> &'static str {
        match self {
            RssOp::Put => "put",
            RssOp::Resolve => "resolve",
            RssOp::PutResolve => "put-resolve",
            RssOp::RawPut => "raw-put",
            RssOp::RawGet => "raw-get",
        }
    }
}

/// The raw client matching a connector config, and its kind.
fn raw_for(config: &ConnectorConfig) -> Result<Option<(RawKind, Raw)>> {
    let rt = proxystore::runtime::io_handle();
    Ok(Some(match config.kind() {
        "redis" => {
            let c: RedisConfig = config.options()?;
            (
                RawKind::Redis,
                rt.block_on(Raw::new(PathBuf::new(), Some(&c.url), None))?,
            )
        }
        "s3" => {
            let c: S3Config = config.options()?;
            (
                RawKind::S3,
                rt.block_on(Raw::new(PathBuf::new(), None, Some(&c)))?,
            )
        }
        "file" => {
            let c: FileConfig = config.options()?;
            (RawKind::Fs, rt.block_on(Raw::new(c.directory, None, None))?)
        }
        _ => return Ok(None),
    }))
}

fn raw_child(op: RssOp, config: &ConnectorConfig, size: u64, refs: &Path) -> Result<u64> {
    let (kind, raw) = raw_for(config)?.context("no raw client for this connector")?;
    let rt = proxystore::runtime::io_handle();
    if op == RssOp::RawPut {
        let data = payload(usize::try_from(size)?, 0x9e37_79b9_7f4a_7c15);
        let (_, key) = rt.block_on(raw.write(kind, &data))?;
        let handle = match key {
            RawKey::Path(p) => p.display().to_string(),
            RawKey::Name(n) => n,
        };
        std::fs::write(refs, handle)?;
    } else {
        let handle = std::fs::read_to_string(refs)?;
        let key = if kind == RawKind::Fs {
            RawKey::Path(PathBuf::from(handle))
        } else {
            RawKey::Name(handle)
        };
        let (_, n) = rt.block_on(raw.read(kind, &key))?;
        ensure!(n as u64 == size, "raw read {n} bytes of {size}");
    }
    hwm()
}

/// The child side: perform `op` and print an [`RssReport`] as JSON.
pub(crate) fn child(op: RssOp, connector: &str, size: u64, refs: &Path) -> Result<()> {
    let mut report = RssReport {
        idle_hwm: hwm()?,
        ..RssReport::default()
    };
    let config: ConnectorConfig = serde_json::from_str(connector).context("connector config")?;
    if matches!(op, RssOp::RawPut | RssOp::RawGet) {
        let peak = raw_child(op, &config, size, refs)?;
        if op == RssOp::RawPut {
            report.put_hwm = Some(peak);
        } else {
            report.resolve_hwm = Some(peak);
        }
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let wire = if matches!(op, RssOp::Put | RssOp::PutResolve) {
        let data = payload(usize::try_from(size)?, 0x9e37_79b9_7f4a_7c15);
        let store = Store::new("bench-rss", proxystore::kinds::from_config(&config)?);
        proxystore::register_store(&store)?;
        let proxy = proxystore::runtime::block_on(async move { store.proxy(&data).await })??;
        report.put_hwm = Some(hwm()?);
        let wire = postcard::to_stdvec(&proxy)?;
        std::fs::write(refs, &wire).with_context(|| format!("write {}", refs.display()))?;
        wire
    } else {
        std::fs::read(refs).with_context(|| format!("read {}", refs.display()))?
    };
    if matches!(op, RssOp::Resolve | RssOp::PutResolve) {
        if op == RssOp::PutResolve {
            reset_hwm()?;
        }
        let p: Proxy<Bytes> = postcard::from_bytes(&wire)?;
        let n = p.try_get()?.len();
        ensure!(n as u64 == size, "resolved {n} bytes of {size}");
        report.resolve_hwm = Some(hwm()?);
    }
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn run_child(op: RssOp, config: &ConnectorConfig, size: u64, refs: &Path) -> Result<RssReport> {
    let exe = std::env::current_exe().context("path of this executable")?;
    let out = Command::new(exe)
        .args([SUBCOMMAND, "rss-child", "--op", op.name()])
        .arg("--connector")
        .arg(serde_json::to_string(config)?)
        .arg("--size")
        .arg(size.to_string())
        .arg("--refs")
        .arg(refs)
        .output()
        .context("start the RSS child")?;
    if !out.status.success() {
        bail!(
            "RSS child ({op:?}) failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "RSS child output {:?}",
            String::from_utf8_lossy(&out.stdout).trim()
        )
    })
}

/// Peak RSS of a put and of a resolve of a `size`-byte object through `subject`.
pub(crate) async fn measure(subject: &Subject, size: u64, work: &Path) -> Result<RssRow> {
    let config = subject.connector.config();
    let refs: PathBuf = work.join(format!("rss-{}.ref", subject.name));
    let (put, resolve) = if subject.cross_process {
        let put = {
            let (c, r) = (config.clone(), refs.clone());
            tokio::task::spawn_blocking(move || run_child(RssOp::Put, &c, size, &r)).await??
        };
        let resolve = {
            let (c, r) = (config.clone(), refs.clone());
            tokio::task::spawn_blocking(move || run_child(RssOp::Resolve, &c, size, &r)).await?
        };
        // Remove the object whatever the resolve did.
        let wire = std::fs::read(&refs)?;
        let p: Proxy<Bytes> = postcard::from_bytes(&wire)?;
        if let Some(k) = p.key() {
            subject.connector.evict(k).await?;
        }
        (put, resolve?)
    } else {
        let r = {
            let (c, r) = (config.clone(), refs.clone());
            tokio::task::spawn_blocking(move || run_child(RssOp::PutResolve, &c, size, &r))
                .await??
        };
        let idle = r.idle_hwm;
        (
            RssReport {
                idle_hwm: idle,
                put_hwm: r.put_hwm,
                resolve_hwm: None,
            },
            RssReport {
                idle_hwm: idle,
                put_hwm: None,
                resolve_hwm: r.resolve_hwm,
            },
        )
    };
    let _ = std::fs::remove_file(&refs);
    let (raw_put, raw_get) = if subject.name == "grpc" {
        // Its baseline is Redis, measured with the redis connector.
        (None, None)
    } else {
        raw_peaks(&config, size, work).await?
    };
    let put_peak = put.put_hwm.context("put child reported no peak")?;
    let resolve_peak = resolve
        .resolve_hwm
        .context("resolve child reported no peak")?;
    Ok(RssRow {
        connector: subject.name.to_owned(),
        size_bytes: size,
        put_peak_bytes: put_peak,
        put_ratio: put_peak as f64 / size as f64,
        resolve_peak_bytes: resolve_peak,
        resolve_ratio: resolve_peak as f64 / size as f64,
        idle_peak_bytes: put.idle_hwm,
        raw_put_peak_bytes: raw_put,
        raw_put_ratio: raw_put.map(|p| p as f64 / size as f64),
        raw_get_peak_bytes: raw_get,
        raw_get_ratio: raw_get.map(|p| p as f64 / size as f64),
    })
}

/// Peak RSS of a raw write and of a raw read of a `size`-byte object, each in a child; the
/// object is removed afterwards. `None`s when the connector has no raw client here.
async fn raw_peaks(
    config: &ConnectorConfig,
    size: u64,
    work: &Path,
) -> Result<(Option<u64>, Option<u64>)> {
    let Some((kind, raw)) = ({
        let c = config.clone();
        tokio::task::spawn_blocking(move || raw_for(&c)).await??
    }) else {
        return Ok((None, None));
    };
    let refs = work.join("rss-raw.ref");
    let put = {
        let (c, r) = (config.clone(), refs.clone());
        tokio::task::spawn_blocking(move || run_child(RssOp::RawPut, &c, size, &r)).await??
    };
    let get = {
        let (c, r) = (config.clone(), refs.clone());
        tokio::task::spawn_blocking(move || run_child(RssOp::RawGet, &c, size, &r)).await?
    };
    let handle = std::fs::read_to_string(&refs)?;
    let _ = std::fs::remove_file(&refs);
    let key = if kind == RawKind::Fs {
        RawKey::Path(PathBuf::from(handle))
    } else {
        RawKey::Name(handle)
    };
    raw.delete(kind, key).await?;
    Ok((put.put_hwm, get?.resolve_hwm))
}
