//! Python ProxyStore side by side: its benchmark script run against the same redis-server
//! and the same directory, and the plotting script.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::format::fmt_size;

/// Make sure `modules` import in `python`; otherwise `pip install` `packages`.
pub(crate) fn ensure_modules(python: &str, modules: &str, packages: &[&str]) -> Result<()> {
    let ok = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("run {python} (install Python 3)"))?
        .success();
    if ok {
        return Ok(());
    }
    eprintln!("[bench] installing {} with pip", packages.join(" "));
    let status = Command::new(python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(packages)
        .status()
        .with_context(|| format!("run {python} -m pip"))?;
    if !status.success() {
        bail!("pip install {} failed ({status})", packages.join(" "));
    }
    Ok(())
}

/// Run Python ProxyStore's benchmark at `sizes` against the Redis server on `redis_port` with
/// its file directories under `dir`, and return its JSON report.
///
/// # Errors
/// When Python, pip or the script fails or its JSON does not parse. A script that reports
/// failed sections (exit status 1) still returns its JSON; the failures are in its `errors`.
pub(crate) fn run(
    python: &str,
    script: &Path,
    redis_port: Option<u16>,
    dir: &Path,
    sizes: &[u64],
    min_time: f64,
) -> Result<serde_json::Value> {
    if !script.is_file() {
        bail!(
            "Python benchmark script {} not found (give its path with --python-script)",
            script.display()
        );
    }
    ensure_modules(python, "proxystore, redis", &["proxystore[all]", "redis"])?;
    let out = dir.join("python_proxystore.json");
    let table = dir.join("python_proxystore.txt");
    let sizes: Vec<String> = sizes.iter().map(|s| fmt_size(*s)).collect();
    let mut cmd = Command::new(python);
    cmd.arg(script)
        .args(["--skip-dask", "--sizes", &sizes.join(",")])
        .arg("--min-time")
        .arg(min_time.to_string())
        .arg("--tmpdir")
        .arg(dir);
    match redis_port {
        Some(port) => {
            cmd.arg("--redis-port").arg(port.to_string());
        }
        None => {
            cmd.args(["--connectors", "local,file,file_shm"]);
        }
    }
    run_script(cmd, &out, &table)
}

/// Run a Python benchmark `cmd` that writes its report as JSON to `out` and its table to
/// `table`, and return the report (with the table as `table_text`).
///
/// # Errors
/// When the script cannot start or wrote no JSON that parses.
pub(crate) fn run_script(mut cmd: Command, out: &Path, table: &Path) -> Result<serde_json::Value> {
    cmd.arg("--json")
        .arg(out)
        .arg("--table")
        .arg(table)
        .stdout(Stdio::null());
    eprintln!("[bench] Python ProxyStore: {cmd:?}");
    let status = cmd.status().context("run the Python benchmark")?;
    let json = std::fs::read(out)
        .with_context(|| format!("the Python benchmark ({status}) wrote no {}", out.display()))?;
    let mut v: serde_json::Value = serde_json::from_slice(&json).context("Python JSON")?;
    if let Ok(t) = std::fs::read_to_string(table) {
        v["table_text"] = t.into();
    }
    Ok(v)
}

/// Draw the plots of the report `json` into `dir` with `script` (matplotlib).
///
/// # Errors
/// When matplotlib cannot be installed or the script fails.
pub(crate) fn plots(python: &str, script: &Path, json: &Path, dir: &Path) -> Result<()> {
    if !script.is_file() {
        bail!(
            "plotting script {} not found (give its path with --plot-script)",
            script.display()
        );
    }
    ensure_modules(python, "matplotlib", &["matplotlib"])?;
    std::fs::create_dir_all(dir)?;
    let status = Command::new(python)
        .arg(script)
        .arg(json)
        .arg(dir)
        .status()
        .context("run the plotting script")?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    eprintln!("[bench] plots in {}", dir.display());
    Ok(())
}
