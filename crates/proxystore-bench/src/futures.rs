//! `proxystore bench futures`: distributed futures, side by side with Python ProxyStore's.
//!
//! - **Latency from `set` to the value in the consumer's hands**, the consumer a separate OS
//!   process (a child of this executable, `bench future-child`) that started waiting before
//!   the producer set: the producer sleeps `delay + U(0, 10 ms)` after the consumer says it is
//!   ready, sets, and notes the time when `set` returned; the consumer notes the time when the
//!   value is decoded. Same clock, same machine. Memory futures have their consumer in a task
//!   of this process (memory is not shared between processes).
//! - **The consumer's CPU while it waits**: the CPU time of all its threads over the wait
//!   (from `/proc/self/task/*/schedstat`), per second of wait.
//! - **A three-stage pipeline's makespan**: each stage sets up (100 ms) and computes (100 ms)
//!   and hands 1 MiB to the next through a file store. Stage by stage, each stage starts when
//!   the one before has finished; with futures, all start at once and each waits on the
//!   future of the stage before it, so set-ups overlap upstream work.
//! - With `--python`, `../shared/bench/python_patterns_bench.py`'s futures section in the same
//!   run (file and Redis stores, polling at 1 s, 10 ms and 1 ms).
//!
//! Measured the way the Python script measures, so the rows compare.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use proxystore::connector::file::FileConnector;
use proxystore::connector::grpc::GrpcConnector;
use proxystore::connector::memory::MemoryConnector;
use proxystore::connector::redis::{RedisConfig, RedisConnector};
use proxystore::{Connector, Proxy, Store};
use serde::{Deserialize, Serialize};

use crate::machine::process_cpu_s;
use crate::options::ConnectorName;
use crate::servers::{GrpcServer, RedisServer, work_dir};

/// Distributed futures: latency from `set` to the value in another process, the consumer's
/// CPU while it waits, a three-stage pipeline; with `--python`, Python ProxyStore's futures
/// in the same run.
#[derive(Debug, Args)]
pub struct FuturesArgs {
    /// Connectors to measure (memory, file, redis, grpc).
    #[arg(long, value_delimiter = ',', default_value = "memory,file,redis,grpc")]
    connectors: Vec<ConnectorName>,

    /// Object sizes, comma-separated, with units.
    #[arg(long, value_delimiter = ',', default_value = "1KiB,1MiB")]
    sizes: Vec<String>,

    /// Repetitions per connector and size.
    #[arg(long, default_value_t = 15)]
    reps: usize,

    /// Seconds the producer waits after the consumer is ready, before it sets (plus a random
    /// 0-10 ms).
    #[arg(long, default_value_t = 0.2)]
    delay: f64,

    /// Parent directory of the file stores (default: the system's temporary directory).
    #[arg(long)]
    dir: Option<PathBuf>,

    /// Also run Python ProxyStore's futures benchmark (installs `proxystore` and `redis` with
    /// pip when missing).
    #[arg(long)]
    python: bool,

    /// Python ProxyStore's patterns benchmark script.
    #[arg(long, default_value = "../shared/bench/python_patterns_bench.py")]
    python_script: PathBuf,

    /// Python interpreter.
    #[arg(long, default_value = "python3")]
    python_bin: String,

    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One row: a connector and size.
#[derive(Debug, Serialize)]
struct Row {
    connector: String,
    mechanism: String,
    size_bytes: u64,
    reps: usize,
    latency_p50_s: f64,
    latency_p99_s: f64,
    latency_max_s: f64,
    /// p50 from the call of `set` (its return includes retiring the heartbeat).
    latency_from_set_start_p50_s: f64,
    /// p50 of a plain read of an object of the same size through the same store (fetch and
    /// decode): the part of the latency that is moving the bytes, not waiting.
    plain_read_p50_s: f64,
    /// CPU seconds of the consumer per future (wake-up, fetch and decode included).
    consumer_cpu_per_future_s: Option<f64>,
    /// CPU seconds of the consumer per second of waiting (None: consumer in this process).
    consumer_cpu_per_wait_s: Option<f64>,
}

/// What the consumer child reports for one future.
#[derive(Debug, Serialize, Deserialize)]
struct ChildReport {
    /// Unix time (ns) when the value was decoded.
    done_ns: u128,
    /// Seconds between "ready" and the value.
    wait_s: f64,
    /// CPU seconds of all its threads over the wait.
    cpu_s: f64,
    /// Bytes it got.
    len: usize,
}

pub(crate) fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (sorted.len() - 1) as f64 * q / 100.0;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn payload(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i.wrapping_mul(131) % 251) as u8)
        .collect()
}

/// The consumer child: per line of standard input (hex of a postcard `Proxy<Vec<u8>>`), say
/// `ready`, resolve it, report a [`ChildReport`] as one JSON line.
///
/// # Errors
/// When its input or a resolve fails.
pub(crate) fn child() -> Result<()> {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let bytes = decode_hex(line.trim())?;
        let proxy: Proxy<Vec<u8>> = postcard::from_bytes(&bytes)?;
        let cpu0 = process_cpu_s();
        let t0 = Instant::now();
        writeln!(out, "ready")?;
        out.flush()?;
        let (len, done_ns) = proxystore::runtime::block_on_within(None, async move {
            let v = proxy.resolve().await.map(Vec::len);
            (v, now_ns())
        })?;
        let wait_s = t0.elapsed().as_secs_f64();
        let report = ChildReport {
            done_ns,
            wait_s,
            cpu_s: process_cpu_s() - cpu0,
            len: len?,
        };
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        out.flush()?;
    }
    Ok(())
}

fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_hex(s: &str) -> Result<Vec<u8>> {
    ensure!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

/// The consumer process.
struct Consumer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    out: BufReader<std::process::ChildStdout>,
}

impl Consumer {
    fn start() -> Result<Self> {
        let exe = std::env::current_exe().context("path of this executable")?;
        let mut child = Command::new(exe)
            .args([crate::measure::SUBCOMMAND, "future-child"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the consumer process")?;
        let stdin = child.stdin.take().context("consumer stdin")?;
        let out = BufReader::new(child.stdout.take().context("consumer stdout")?);
        Ok(Consumer { child, stdin, out })
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        self.out.read_line(&mut l)?;
        ensure!(!l.is_empty(), "the consumer process ended");
        Ok(l.trim_end().to_owned())
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A little randomness without a dependency: the low bits of the clock.
fn jitter(max: Duration) -> Duration {
    let n = now_ns() as u64;
    Duration::from_nanos(n % (max.as_nanos().max(1) as u64))
}

/// What `reps` futures measured.
struct Samples {
    /// From `set` returning (s).
    latencies: Vec<f64>,
    /// From `set` being called (s).
    from_start: Vec<f64>,
    /// Consumer CPU seconds and seconds waited, summed (cross-process only).
    cpu: Option<(f64, f64)>,
}

/// Latency samples and the consumer's CPU of `reps` futures (after one untimed warm-up):
/// the consumer is the `consumer` process, or a task of this process when there is none
/// (memory is not shared between processes).
async fn measure(
    store: &Store,
    mut consumer: Option<&mut Consumer>,
    size: usize,
    reps: usize,
    delay: Duration,
) -> Result<Samples> {
    let value = payload(size);
    let mut latencies = Vec::with_capacity(reps);
    let mut from_start = Vec::with_capacity(reps);
    let mut cpu_wait: Option<(f64, f64)> = None;
    for rep in 0..=reps {
        let (promise, proxy) = store.future::<Vec<u8>>().await?;
        let local = match consumer.as_deref_mut() {
            Some(c) => {
                writeln!(c.stdin, "{}", encode_hex(&postcard::to_stdvec(&proxy)?))?;
                c.stdin.flush()?;
                ensure!(c.line()? == "ready", "the consumer did not say ready");
                None
            }
            None => {
                let proxy = proxy.clone();
                Some(tokio::spawn(async move {
                    let len = proxy.resolve().await.map(Vec::len);
                    (len, now_ns())
                }))
            }
        };
        tokio::time::sleep(delay + jitter(Duration::from_millis(10))).await;
        let start_ns = now_ns();
        promise.set(&value).await?;
        let set_ns = now_ns();
        let (len, done_ns, used) = match (local, consumer.as_deref_mut()) {
            (Some(task), _) => {
                let (len, done_ns) = task.await?;
                (len?, done_ns, None)
            }
            (None, Some(c)) => {
                let r: ChildReport = serde_json::from_str(&c.line()?)?;
                (r.len, r.done_ns, Some((r.cpu_s, r.wait_s)))
            }
            (None, None) => bail!("no consumer"),
        };
        ensure!(len == size, "the consumer got {len} bytes, not {size}");
        if let Some(key) = proxy.key() {
            store.evict(key).await?;
        }
        if rep == 0 {
            continue;
        }
        latencies.push((done_ns as f64 - set_ns as f64) / 1e9);
        from_start.push((done_ns as f64 - start_ns as f64) / 1e9);
        if let Some((cpu, waited)) = used {
            let total = cpu_wait.get_or_insert((0.0, 0.0));
            total.0 += cpu;
            total.1 += waited;
        }
    }
    Ok(Samples {
        latencies,
        from_start,
        cpu: cpu_wait,
    })
}

/// p50 of a plain read (fetch and decode) of a `size`-byte object through a store without a
/// cache over `connector`.
async fn plain_read(connector: Arc<dyn Connector>, size: usize, reps: usize) -> Result<f64> {
    let store = Store::builder("bench-futures-plain-read", connector)
        .cache_bytes(0)
        .build();
    let key = store.put(&payload(size)).await?;
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        let v: Option<Vec<u8>> = store.get(&key).await?;
        t.push(start.elapsed().as_secs_f64());
        ensure!(v.map(|v| v.len()) == Some(size), "plain read");
    }
    store.evict(&key).await?;
    t.sort_by(f64::total_cmp);
    Ok(percentile(&t, 50.0))
}

/// Pipeline makespans (s): stage by stage, and with futures.
async fn pipeline(
    store: &Store,
    stages: usize,
    setup: Duration,
    work: Duration,
) -> Result<(f64, f64)> {
    let input = payload(1 << 20);
    // Stage by stage: a stage is submitted when the one before has returned its result.
    let t = Instant::now();
    let mut data = input.clone();
    for _ in 0..stages {
        let proxy = store.proxy(&data).await?;
        let handle = tokio::spawn(async move {
            tokio::time::sleep(setup).await;
            let v = proxy.resolve().await?.clone();
            tokio::time::sleep(work).await;
            Ok::<_, proxystore::Error>(v)
        });
        data = handle.await??;
    }
    let sequential = t.elapsed().as_secs_f64();

    // Futures: every stage is submitted at once with the future of the one before.
    let t = Instant::now();
    let first = store.proxy(&input).await?;
    let mut upstream = first;
    let mut handles = Vec::new();
    let mut last = None;
    for _ in 0..stages {
        let (promise, proxy) = store.future::<Vec<u8>>().await?;
        let input = std::mem::replace(&mut upstream, proxy.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(setup).await;
            let v = input.resolve().await?.clone();
            tokio::time::sleep(work).await;
            promise.set(&v).await
        }));
        last = Some(proxy);
    }
    let out = last.context("no stage")?;
    ensure!(out.resolve().await?.len() == input.len(), "pipeline output");
    for h in handles {
        h.await??;
    }
    let with_futures = t.elapsed().as_secs_f64();
    Ok((sequential, with_futures))
}

/// Run the futures benchmark: print its table, write its JSON.
///
/// # Errors
/// When a server cannot start, a size does not parse or a measurement fails.
pub fn run(args: FuturesArgs) -> Result<()> {
    proxystore::set_resolve_policy(proxystore::ResolvePolicy::allow_all());
    let parent = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let (_guard, work) = work_dir(&parent)?;
    let sizes = crate::format::parse_sizes(&args.sizes)?;
    let delay = Duration::from_secs_f64(args.delay);
    let mut redis = None;
    let mut grpc = None;
    let mut rows = Vec::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    for name in &args.connectors {
        let (label, connector): (&str, Arc<dyn Connector>) = match name {
            ConnectorName::Memory => ("memory", Arc::new(MemoryConnector::new("bench-futures"))),
            ConnectorName::File => (
                "file",
                Arc::new(FileConnector::new(work.join("futures-file"))?),
            ),
            ConnectorName::Redis => {
                let server = redis.get_or_insert(RedisServer::start()?);
                (
                    "redis",
                    Arc::new(RedisConnector::with_config(RedisConfig::new(format!(
                        "redis://127.0.0.1:{}/0",
                        server.port()
                    )))?),
                )
            }
            ConnectorName::Grpc => {
                let server = grpc.get_or_insert(GrpcServer::start()?);
                (
                    "grpc",
                    Arc::new(GrpcConnector::with_config(server.config())?),
                )
            }
            other => bail!("futures are not measured on {other:?} here"),
        };
        let mechanism = connector.wait_mechanism().to_owned();
        let store = Store::new(format!("bench-futures-{label}"), connector.clone());
        let mut consumer = if label == "memory" {
            None
        } else {
            Some(Consumer::start()?)
        };
        for &size in &sizes {
            let (samples, read) = runtime.block_on(async {
                let samples =
                    measure(&store, consumer.as_mut(), size as usize, args.reps, delay).await?;
                let read = plain_read(connector.clone(), size as usize, args.reps.max(5)).await?;
                Ok::<_, anyhow::Error>((samples, read))
            })?;
            let mut lat = samples.latencies;
            lat.sort_by(f64::total_cmp);
            let mut from_start = samples.from_start;
            from_start.sort_by(f64::total_cmp);
            let n = lat.len().max(1) as f64;
            let cpu = samples.cpu.map(|(c, w)| c / w.max(f64::MIN_POSITIVE));
            let row = Row {
                connector: label.to_owned(),
                mechanism: mechanism.clone(),
                size_bytes: size,
                reps: lat.len(),
                latency_p50_s: percentile(&lat, 50.0),
                latency_p99_s: percentile(&lat, 99.0),
                latency_max_s: lat.last().copied().unwrap_or(f64::NAN),
                latency_from_set_start_p50_s: percentile(&from_start, 50.0),
                plain_read_p50_s: read,
                consumer_cpu_per_future_s: samples.cpu.map(|(c, _)| c / n),
                consumer_cpu_per_wait_s: cpu,
            };
            eprintln!(
                "[bench] future {label:<6} {size:>8} B  p50 {:.3} ms  p99 {:.3} ms  cpu {}",
                row.latency_p50_s * 1e3,
                row.latency_p99_s * 1e3,
                cpu.map_or("-".into(), |c| format!("{:.4}%", c * 100.0))
            );
            rows.push(row);
        }
    }

    let pipeline_store = Store::new(
        "bench-futures-pipeline",
        FileConnector::new(work.join("pipeline"))?,
    );
    let (setup, step) = (Duration::from_millis(100), Duration::from_millis(100));
    let mut makespans = Vec::new();
    for _ in 0..3 {
        makespans.push(runtime.block_on(pipeline(&pipeline_store, 3, setup, step))?);
    }
    makespans.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (sequential, with_futures) = makespans[1];

    let python = if args.python {
        Some(run_python(&args, &work)?)
    } else {
        None
    };
    let text = render(&rows, sequential, with_futures, python.as_ref());
    print!("{text}");
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "futures": rows,
            "pipeline": {
                "stages": 3, "setup_s": setup.as_secs_f64(), "work_s": step.as_secs_f64(),
                "stage_by_stage_s": sequential, "with_futures_s": with_futures,
            },
            "python": python,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Python ProxyStore's futures section of the patterns benchmark, in this run.
fn run_python(args: &FuturesArgs, work: &Path) -> Result<serde_json::Value> {
    ensure!(
        args.python_script.exists(),
        "Python benchmark script {} not found (give its path with --python-script)",
        args.python_script.display()
    );
    crate::python::ensure_modules(
        &args.python_bin,
        "proxystore, redis",
        &["proxystore[all]", "redis"],
    )?;
    let out = work.join("python_patterns.json");
    let status = Command::new(&args.python_bin)
        .arg(&args.python_script)
        .args(["--skip-streams", "--connectors", "file,redis"])
        .args(["--future-sizes", &args.sizes.join(",")])
        .arg("--tmpdir")
        .arg(work)
        .arg("--json")
        .arg(&out)
        .status()
        .context("run the Python benchmark")?;
    ensure!(status.success(), "the Python benchmark failed: {status}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    Ok(report["futures"].clone())
}

fn ms(s: f64) -> String {
    if s.abs() >= 1.0 {
        format!("{s:.2} s")
    } else {
        format!("{:.3} ms", s * 1e3)
    }
}

fn render(
    rows: &[Row],
    sequential: f64,
    with_futures: f64,
    python: Option<&serde_json::Value>,
) -> String {
    let mut t = String::new();
    t.push_str(
        "Distributed futures: latency from set() returning to the value in the consumer\n\n",
    );
    t.push_str("| impl | connector | wait | size | p50 | p99 | p50 from set() called | plain read | consumer CPU while waiting |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        t.push_str(&format!(
            "| Rust | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.connector,
            r.mechanism,
            crate::format::fmt_size(r.size_bytes),
            ms(r.latency_p50_s),
            ms(r.latency_p99_s),
            ms(r.latency_from_set_start_p50_s),
            ms(r.plain_read_p50_s),
            match (r.consumer_cpu_per_wait_s, r.consumer_cpu_per_future_s) {
                (Some(c), Some(f)) => format!("{:.3}% of a core ({} per future)", c * 100.0, ms(f)),
                _ => "(same process)".into(),
            },
        ));
    }
    if let Some(cells) = python.and_then(|p| p.as_array()) {
        for c in cells {
            let conn = c["connector"].as_str().unwrap_or("?");
            let size = c["size_bytes"].as_u64().unwrap_or(0);
            let interval = c["polling_interval_s"].as_f64().unwrap_or(f64::NAN);
            let p50 = c["latency_s"]["median"].as_f64().unwrap_or(f64::NAN);
            let p99 = c["latency_s"]["p99"].as_f64().unwrap_or(f64::NAN);
            let cpu = c["b_cpu_per_wait_s_pooled"].as_f64().unwrap_or(f64::NAN);
            // Ratios both ways: from `set` returning (the measure asked for; ours may be
            // negative when the consumer has the value before `set` returns, then it is
            // floored at 1 µs) and from `set` being called (like with like).
            let ours = rows
                .iter()
                .find(|r| r.connector == conn && r.size_bytes == size)
                .map(|r| (r.latency_p50_s, r.latency_from_set_start_p50_s));
            let from_start = c["latency_from_set_start_s"]["median"]
                .as_f64()
                .unwrap_or(f64::NAN);
            t.push_str(&format!(
                "| Python | {conn} | polling every {} | {} | {} | {} | {} | | {:.3}% of a core |{}\n",
                ms(interval),
                crate::format::fmt_size(size),
                ms(p50),
                ms(p99),
                ms(from_start),
                cpu * 100.0,
                ours.map_or(String::new(), |(r, c)| format!(
                    " ours {:.0}x lower from set() returning, {:.0}x from set() called",
                    p50 / r.max(1e-6),
                    from_start / c.max(1e-6)
                )),
            ));
        }
    }
    t.push_str(&format!(
        "\nThree-stage pipeline (100 ms set-up + 100 ms work per stage, 1 MiB between stages, file store):\n\
         stage by stage {}, all enqueued at once with futures {} ({:.2}x shorter)\n",
        ms(sequential),
        ms(with_futures),
        sequential / with_futures
    ));
    t
}
