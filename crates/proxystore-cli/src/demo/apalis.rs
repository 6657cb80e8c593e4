//! `proxystore demo --redis URL`: a map-reduce pipeline on apalis-redis with the
//! `proxystore-apalis` plugin.
//!
//! A producer pushes one task per chunk of a large array of measurements (each chunk with a
//! baseline to compare against); workers calibrate each chunk, looking at the baseline only
//! when the chunk looks anomalous, and return the calibrated chunk (as large as the input)
//! through apalis's result storage; the producer reads each result with apalis's own
//! `WaitForCompletion` and reduces them to the statistics of the whole calibrated array. The
//! chunks, baselines and calibrated chunks travel through the store; Redis carries small
//! documents both ways. The [`Summary`] says what went where.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::{TaskSink, WaitForCompletion};
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, RedisStorage};
use futures::StreamExt as _;
use proxystore::{Key, Proxy, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, connect, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use serde::{Deserialize, Serialize};

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] proxystore::Error),
    /// A task could not be pushed.
    #[error("cannot push a task: {0}")]
    Push(String),
    /// The worker stopped with an error.
    #[error("worker: {0}")]
    Worker(String),
    /// apalis could not read the results.
    #[error("cannot read results: {0}")]
    Results(String),
    /// A task failed, or its result could not be read.
    #[error("task {task}: {error}")]
    Task {
        /// The task's id in apalis.
        task: String,
        /// What went wrong.
        error: String,
    },
    /// The tasks did not all finish in time.
    #[error("only {done} of {total} tasks finished within {after:?}")]
    Timeout {
        /// Tasks finished.
        done: usize,
        /// Tasks pushed.
        total: usize,
        /// How long the demo waited.
        after: Duration,
    },
}

/// The shape of a demo run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    /// Number of map tasks (chunks).
    pub(crate) tasks: usize,
    /// Values (f64) per chunk; the baseline has as many. 1,310,720 values = 10 MiB.
    pub(crate) chunk_len: usize,
    /// Every `anomaly_every`-th chunk is shifted, so its worker resolves its baseline; the
    /// other baselines are never fetched.
    pub(crate) anomaly_every: usize,
    /// Size threshold of the policy in bytes.
    pub(crate) threshold: u64,
    /// Worker instances (each an apalis worker with its own connection) on the queue.
    pub(crate) workers: usize,
    /// Give up waiting for the tasks after this long.
    pub(crate) timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tasks: 16,
            chunk_len: 1 << 20,
            anomaly_every: 4,
            threshold: proxystore_middleware::DEFAULT_THRESHOLD,
            workers: 2,
            timeout: Duration::from_secs(300),
        }
    }
}

/// A map task as the producer writes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Chunk {
    /// Position of the chunk in the array.
    index: u32,
    /// The measurements.
    values: Vec<f64>,
    /// The same chunk in a reference run, consulted when the chunk looks anomalous.
    baseline: Vec<f64>,
}

/// The same task as the worker reads it: the baseline stays a lazy proxy until used.
#[derive(Debug, Serialize, Deserialize)]
struct ChunkJob {
    /// Position of the chunk in the array.
    index: u32,
    /// The measurements (resolved before the task runs).
    values: Vec<f64>,
    /// Fetched only if the task looks at it.
    baseline: Proxy<Vec<f64>>,
}

/// What a map task returns: its chunk, calibrated against the baseline when it looked
/// anomalous. As large as the task's input: the policy proxies it at `map/return`.
#[derive(Debug, Serialize, Deserialize)]
struct Calibrated {
    /// Position of the chunk.
    index: u32,
    /// The calibrated values.
    values: Vec<f64>,
    /// Mean of the baseline, when the chunk looked anomalous (and its baseline was fetched).
    baseline_mean: Option<f64>,
}

impl Calibrated {
    /// Calibrate the chunk `index` of `values`: when its mean is off, shift it onto the mean
    /// of the baseline, which only then is fetched (`baseline` is called at most once).
    async fn of<'a, F, E>(index: u32, mut values: Vec<f64>, baseline: F) -> Result<Self, E>
    where
        F: AsyncFnOnce() -> Result<&'a [f64], E>,
    {
        let mean = Partial::of(index, &values).mean();
        let mut baseline_mean = None;
        if (mean - EXPECTED_MEAN).abs() > ANOMALY_DISTANCE {
            let base = Partial::of(index, baseline().await?).mean();
            for v in &mut values {
                *v -= mean - base;
            }
            baseline_mean = Some(base);
        }
        Ok(Calibrated {
            index,
            values,
            baseline_mean,
        })
    }
}

/// The reducer's statistics of one calibrated chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Partial {
    /// Position of the chunk.
    index: u32,
    /// Number of values.
    count: u64,
    /// Sum of the values.
    sum: f64,
    /// Sum of their squares.
    sum_sq: f64,
    /// Smallest value.
    min: f64,
    /// Largest value.
    max: f64,
}

impl Partial {
    /// The statistics of `values` (without a baseline).
    fn of(index: u32, values: &[f64]) -> Partial {
        let mut p = Partial {
            index,
            count: values.len() as u64,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            ..Partial::default()
        };
        for &v in values {
            p.sum += v;
            p.sum_sq += v * v;
            p.min = p.min.min(v);
            p.max = p.max.max(v);
        }
        p
    }

    /// Mean of the values.
    fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// The statistics of the whole array, reduced from the partials.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Totals {
    /// Number of values.
    count: u64,
    /// Mean.
    mean: f64,
    /// Standard deviation.
    std_dev: f64,
    /// Smallest value.
    min: f64,
    /// Largest value.
    max: f64,
}

/// Reduce partial results (in any order) to the statistics of the whole array.
fn reduce(partials: &[Partial]) -> Totals {
    let mut count = 0u64;
    let (mut sum, mut sum_sq) = (0.0, 0.0);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut sorted: Vec<&Partial> = partials.iter().collect();
    // A fixed order makes the floating-point sums reproducible.
    sorted.sort_by_key(|p| p.index);
    for p in sorted {
        count += p.count;
        sum += p.sum;
        sum_sq += p.sum_sq;
        min = min.min(p.min);
        max = max.max(p.max);
    }
    let n = count.max(1) as f64;
    let mean = sum / n;
    Totals {
        count,
        mean,
        std_dev: (sum_sq / n - mean * mean).max(0.0).sqrt(),
        min,
        max,
    }
}

/// Mean of an ordinary chunk's values (uniform in [0, 1)).
const EXPECTED_MEAN: f64 = 0.5;
/// A chunk whose mean is further than this from [`EXPECTED_MEAN`] is anomalous.
const ANOMALY_DISTANCE: f64 = 0.1;
/// How far anomalous chunks are shifted.
const SHIFT: f64 = 0.25;

/// Deterministic pseudo-random values in [0, 1) for chunk `index` (shifted when anomalous).
fn chunk_values(index: u32, len: usize, shifted: bool, salt: u64) -> Vec<f64> {
    let mut x = (u64::from(index) + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt)
        | 1;
    let shift = if shifted { SHIFT } else { 0.0 };
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
            r as f64 / (1u64 << 53) as f64 + shift
        })
        .collect()
}

/// The producer's task for chunk `index`.
fn make_chunk(index: u32, options: &Options) -> Chunk {
    let anomalous =
        options.anomaly_every > 0 && (index as usize).is_multiple_of(options.anomaly_every);
    Chunk {
        index,
        values: chunk_values(index, options.chunk_len, anomalous, 0),
        baseline: chunk_values(index, options.chunk_len, false, 0xBA5E),
    }
}

/// The map task: calibrate a chunk, with a look at its baseline if it seems anomalous, and
/// return it by proxy (a small document in apalis's result storage, evicted once read).
///
/// # Errors
/// When the baseline cannot be fetched or the result cannot be stored.
async fn map_chunk(
    job: ChunkJob,
    codec: Data<TaskCodec>,
) -> Result<Proxy<Calibrated>, apalis_core::error::BoxDynError> {
    let baseline = &job.baseline;
    let out = Calibrated::of(job.index, job.values, async || {
        baseline.resolve().await.map(Vec::as_slice)
    })
    .await?;
    Ok(codec.proxy_result("map", out).await?)
}

/// What a demo run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Summary {
    /// Map tasks pushed and finished.
    tasks: usize,
    /// Arguments the policy put into the store instead of the task.
    args_proxied: u64,
    /// Results the policy put into the store instead of apalis's result storage.
    results_proxied: u64,
    /// Bytes of the task documents that went through Redis.
    bytes_through_broker: u64,
    /// Bytes of the result documents in Redis (as Redis reports them).
    result_bytes_in_redis: u64,
    /// Bytes that went through the store instead (arguments and results).
    bytes_through_store: u64,
    /// Largest job stored in Redis, in bytes (as Redis reports it).
    largest_job_in_redis: u64,
    /// Largest result document stored in Redis, in bytes.
    largest_result_in_redis: u64,
    /// Proxies handed to tasks that the tasks never used (never fetched).
    proxies_never_resolved: u64,
    /// Objects still in the store after the run (zero when cleanup worked).
    pub(crate) objects_left: usize,
    /// Chunks whose baseline was fetched.
    anomalies: usize,
    /// The reduced statistics.
    totals: Totals,
    /// Whether the reduced statistics match a direct computation over the same data.
    pub(crate) correct: bool,
    /// From the first push to the last result.
    elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        writeln!(f, "tasks run               {}", self.tasks)?;
        writeln!(f, "arguments proxied       {}", self.args_proxied)?;
        writeln!(f, "results proxied         {}", self.results_proxied)?;
        writeln!(f, "bytes through the broker")?;
        writeln!(
            f,
            "  arguments             {} B in {} jobs (largest {} B)",
            self.bytes_through_broker, self.tasks, self.largest_job_in_redis
        )?;
        writeln!(
            f,
            "  results               {} B in {} results (largest {} B)",
            self.result_bytes_in_redis, self.tasks, self.largest_result_in_redis
        )?;
        writeln!(
            f,
            "bytes through the store {} ({:.1} MiB)",
            self.bytes_through_store,
            mib(self.bytes_through_store)
        )?;
        writeln!(f, "proxies never resolved  {}", self.proxies_never_resolved)?;
        writeln!(f, "anomalous chunks        {}", self.anomalies)?;
        writeln!(f, "objects left behind     {}", self.objects_left)?;
        writeln!(
            f,
            "result                  n={} mean={:.6} std={:.6} min={:.6} max={:.6} ({})",
            self.totals.count,
            self.totals.mean,
            self.totals.std_dev,
            self.totals.min,
            self.totals.max,
            if self.correct { "correct" } else { "WRONG" }
        )?;
        write!(f, "time taken              {:.2?}", self.elapsed)
    }
}

/// Run the pipeline on the Redis at `redis_url`, proxying through `store`;
/// `progress(done, total)` is called as results arrive.
///
/// The demo uses its own queue (removed at the end) and leaves nothing in the store.
///
/// # Errors
/// See [`DemoError`].
pub(crate) async fn run(
    redis_url: &str,
    store: Store,
    options: &Options,
    mut progress: impl FnMut(usize, usize) + Send,
) -> Result<Summary, DemoError> {
    let queue = format!("proxystore-demo-{}", Key::random());
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::from_parts(
            store.name().to_owned(),
            options.threshold,
        ))
        .with_store(store.clone()),
    )
    .named("map")
    .recording();
    let config = Config::default()
        .queue(&queue)
        .heartbeat_interval(Duration::from_secs(5));

    let mut producer = RedisStorage::<Chunk>::new(connect(redis_url).await?)
        .with_config(config.clone())
        .with_codec(codec.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut workers = Vec::new();
    for i in 0..options.workers.max(1) {
        let storage = RedisStorage::<ChunkJob>::new(connect(redis_url).await?)
            .with_config(config.clone())
            .with_codec(codec.clone())
            .poll_with_strategy(PollEvery::millis(50));
        let worker = WorkerBuilder::new(format!("{queue}-worker-{i}"))
            .backend(storage)
            .data(codec.task_codec().clone())
            .build(resolve(map_chunk));
        let mut stop = stop_rx.clone();
        workers.push(tokio::spawn(worker.run_until(async move {
            let _ = stop.wait_for(|stop| *stop).await;
            Ok::<_, std::io::Error>(())
        })));
    }

    let started = Instant::now();
    let mut expected = Vec::with_capacity(options.tasks);
    for index in 0..options.tasks {
        let chunk = make_chunk(index as u32, options);
        let baseline = &chunk.baseline;
        let calibrated = Calibrated::of(chunk.index, chunk.values.clone(), async || {
            Ok::<_, DemoError>(baseline.as_slice())
        })
        .await?;
        expected.push(Partial::of(chunk.index, &calibrated.values));
        producer
            .push(chunk)
            .await
            .map_err(|e| DemoError::Push(e.to_string()))?;
    }

    // Read every result through apalis's result API, typed as proxies: each is fetched from
    // the store when the reducer uses it, and evicted then (read once).
    let mut conn = connect(redis_url).await?;
    let ids: Vec<String> = redis::cmd("HKEYS")
        .arg(config.job_data_hash())
        .query_async(&mut conn)
        .await?;
    let task_ids = ids.iter().filter_map(|id| id.parse::<TaskId>().ok());
    let mut reader = RedisStorage::<Chunk>::new(connect(redis_url).await?)
        .with_config(config.clone())
        .with_codec(codec.clone());
    let mut results = WaitForCompletion::<Proxy<Calibrated>>::wait_for(&mut reader, task_ids);
    let mut partials = Vec::with_capacity(options.tasks);
    let mut result_keys = Vec::with_capacity(options.tasks);
    let mut anomalies = 0;
    let deadline = tokio::time::Instant::now() + options.timeout;
    while partials.len() < options.tasks {
        let next = match tokio::time::timeout_at(deadline, results.next()).await {
            Ok(Some(next)) => next.map_err(|e| DemoError::Results(e.to_string()))?,
            _ => {
                let _ = stop_tx.send(true);
                return Err(DemoError::Timeout {
                    done: partials.len(),
                    total: options.tasks,
                    after: options.timeout,
                });
            }
        };
        let task = next.task_id().to_string();
        let proxy = next.take().map_err(|error| DemoError::Task {
            task: task.clone(),
            error,
        })?;
        if let Some(r) = proxy.reference() {
            result_keys.push(r.key.clone());
        }
        let calibrated = proxy.resolve().await.map_err(|e| DemoError::Task {
            task,
            error: e.to_string(),
        })?;
        anomalies += usize::from(calibrated.baseline_mean.is_some());
        partials.push(Partial::of(calibrated.index, &calibrated.values));
        progress(partials.len(), options.tasks);
    }
    drop(results);
    let elapsed = started.elapsed();
    // Stopping waits for the running tasks, whose cleanup is part of them, and records their
    // outcomes in Redis.
    let _ = stop_tx.send(true);
    for worker in workers {
        match worker.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(DemoError::Worker(e.to_string())),
            Err(e) => return Err(DemoError::Worker(e.to_string())),
        }
    }

    let largest_job_in_redis = largest_job(&mut conn, &config.job_data_hash()).await?;
    let (result_bytes_in_redis, largest_result_in_redis) =
        result_documents(&mut conn, &queue, &ids).await?;
    delete_queue(&mut conn, &queue).await?;

    let refs = codec.recorded();
    let mut objects_left = 0;
    let keys: HashSet<&Key> = refs.iter().map(|r| &r.key).chain(&result_keys).collect();
    for key in keys {
        if store.exists(key).await? {
            objects_left += 1;
        }
    }
    let stats = codec.stats();
    let totals = reduce(&partials);
    let reference = reduce(&expected);
    let correct = totals.count == reference.count
        && (totals.mean - reference.mean).abs() < 1e-9
        && (totals.std_dev - reference.std_dev).abs() < 1e-9
        && totals.min == reference.min
        && totals.max == reference.max;
    Ok(Summary {
        tasks: partials.len(),
        args_proxied: stats.args_proxied,
        results_proxied: stats.results_proxied,
        bytes_through_broker: stats.bytes_inline,
        result_bytes_in_redis,
        bytes_through_store: stats.bytes_proxied + stats.result_bytes_proxied,
        largest_job_in_redis,
        largest_result_in_redis,
        proxies_never_resolved: stats.refs_lazy.saturating_sub(anomalies as u64),
        objects_left,
        anomalies,
        totals,
        correct,
        elapsed,
    })
}

/// The size in bytes of the largest job in an apalis-redis data hash.
///
/// # Errors
/// When Redis fails.
async fn largest_job(
    conn: &mut apalis_redis::ConnectionManager,
    data_hash: &str,
) -> Result<u64, redis::RedisError> {
    let ids: Vec<String> = redis::cmd("HKEYS").arg(data_hash).query_async(conn).await?;
    let mut largest = 0;
    for id in ids {
        let len: u64 = redis::cmd("HSTRLEN")
            .arg(data_hash)
            .arg(&id)
            .query_async(conn)
            .await?;
        largest = largest.max(len);
    }
    Ok(largest)
}

/// The total and the largest size in bytes of the result documents of tasks `ids` in
/// apalis-redis's result storage (the `result` field of each task's metadata hash).
///
/// # Errors
/// When Redis fails.
async fn result_documents(
    conn: &mut apalis_redis::ConnectionManager,
    queue: &str,
    ids: &[String],
) -> Result<(u64, u64), redis::RedisError> {
    let (mut total, mut largest) = (0, 0);
    for id in ids {
        let len: u64 = redis::cmd("HSTRLEN")
            .arg(format!("{queue}:meta:{id}"))
            .arg("result")
            .query_async(conn)
            .await?;
        total += len;
        largest = largest.max(len);
    }
    Ok((total, largest))
}

/// Delete every key of an apalis-redis queue (`{queue}:*`).
///
/// # Errors
/// When Redis fails.
async fn delete_queue(
    conn: &mut apalis_redis::ConnectionManager,
    queue: &str,
) -> Result<(), redis::RedisError> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{queue}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use proxystore::connector::file::FileConnector;
    use proxystore_tests::redis_server::RedisServer;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_runs_and_leaves_nothing_behind() {
        let redis = RedisServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            format!("demo-{}", Key::random()),
            FileConnector::new(dir.path()).unwrap(),
        );
        let options = Options {
            tasks: 8,
            chunk_len: 100_000,
            anomaly_every: 4,
            ..Options::default()
        };
        let mut seen = Vec::new();
        let summary = run(&redis.url(), store, &options, |done, total| {
            seen.push((done, total))
        })
        .await
        .unwrap();
        println!("{summary}");
        assert_eq!(summary.tasks, 8);
        assert!(summary.correct, "{summary}");
        assert_eq!(
            summary.args_proxied, 16,
            "values and baseline of each chunk"
        );
        assert_eq!(summary.results_proxied, 8, "each calibrated chunk");
        assert!(summary.largest_result_in_redis > 0, "{summary}");
        assert!(summary.largest_result_in_redis < 1_000, "{summary}");
        assert_eq!(summary.anomalies, 2);
        assert_eq!(summary.proxies_never_resolved, 6);
        assert_eq!(summary.objects_left, 0);
        assert!(summary.largest_job_in_redis < 2_000, "{summary}");
        assert_eq!(seen.last(), Some(&(8, 8)));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
