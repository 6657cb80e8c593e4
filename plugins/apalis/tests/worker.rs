//! Policy decisions, store failures, retries and cleanup through a real apalis-redis worker.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::attempt::Attempt;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::event::Event;
use apalis_core::worker::ext::event_listener::EventListenerExt;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use proxystore::connector::file::FileConnector;
use proxystore::{Key, Proxy, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, ResolveError, resolve};
use proxystore_middleware::{ArgumentPolicy, ArgumentPolicyConfig, TaskCodec};
use proxystore_tests::redis_server::RedisServer;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// A redis-server, a file store in a temporary directory and a queue of their own.
struct Env {
    _redis: RedisServer,
    url: String,
    dir: tempfile::TempDir,
    store: Store,
    queue: String,
}

impl Env {
    fn new() -> Self {
        let redis = RedisServer::start().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(
            format!("worker-{}", Key::random()),
            FileConnector::new(dir.path()).unwrap(),
        );
        proxystore::register_store(&store).unwrap();
        Env {
            url: redis.url(),
            _redis: redis,
            dir,
            store,
            queue: format!("q{}", Key::random()),
        }
    }

    fn codec(&self, threshold: u64) -> ProxyCodec {
        self.codec_with(ArgumentPolicy::from_parts(
            self.store.name().to_owned(),
            threshold,
        ))
    }

    fn codec_with(&self, policy: ArgumentPolicy) -> ProxyCodec {
        ProxyCodec::new(TaskCodec::new(policy).with_store(self.store.clone())).recording()
    }

    fn config(&self) -> Config {
        Config::default().queue(&self.queue)
    }

    async fn conn(&self) -> ConnectionManager {
        proxystore_apalis::connect(&self.url).await.unwrap()
    }

    fn objects(&self) -> usize {
        std::fs::read_dir(self.dir.path())
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The task ids in the queue's data hash.
    async fn task_ids(&self) -> Vec<String> {
        redis::cmd("HKEYS")
            .arg(format!("{}:data", self.queue))
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// A field of a task's metadata (status, attempts, result).
    async fn meta(&self, id: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(format!("{}:meta:{id}", self.queue))
            .arg(field)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    /// Two fields of a task's metadata, read in one command.
    async fn meta_pair(&self, id: &str, a: &str, b: &str) -> (Option<String>, Option<String>) {
        redis::cmd("HMGET")
            .arg(format!("{}:meta:{id}", self.queue))
            .arg(a)
            .arg(b)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn job_len(&self, id: &str) -> u64 {
        redis::cmd("HSTRLEN")
            .arg(format!("{}:data", self.queue))
            .arg(id)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn is_dead(&self, id: &str) -> bool {
        redis::cmd("SISMEMBER")
            .arg(format!("{}:dead", self.queue))
            .arg(id)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }
}

/// Poll `f` until it returns `Some`.
async fn wait_for<T, Fut: Future<Output = Option<T>>>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Errors a worker reported through its events.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<Arc<BoxDynError>>>>);

impl Errors {
    fn listener(&self) -> impl Fn(&apalis_core::worker::context::WorkerContext, &Event) + use<> {
        let errors = self.0.clone();
        move |_, ev| {
            if let Event::Error(e) = ev {
                errors.lock().unwrap().push(e.clone());
            }
        }
    }

    fn all(&self) -> Vec<Arc<BoxDynError>> {
        self.0.lock().unwrap().clone()
    }
}

/// Build a worker with `resolve(handler)` on `storage` and run it until the returned sender
/// fires; the join handle says whether it stopped cleanly.
macro_rules! spawn_worker {
    ($name:expr, $storage:expr, $errors:expr, $data:expr, $handler:expr) => {{
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let worker = WorkerBuilder::new($name)
            .backend($storage)
            .data($data)
            .on_event($errors.listener())
            .build(resolve($handler));
        let handle = tokio::spawn(worker.run_until(async move {
            let _ = stop_rx.await;
            Ok::<_, std::io::Error>(())
        }));
        (stop_tx, handle)
    }};
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Bulk {
    index: u32,
    values: Vec<f64>,
    raw: Vec<u8>,
    label: String,
}

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    index: u32,
    sum: f64,
    raw_len: usize,
    attempt: usize,
}

async fn record_bulk(
    job: Bulk,
    attempt: Attempt,
    seen: Data<mpsc::UnboundedSender<Seen>>,
) -> Result<f64, BoxDynError> {
    let sum = job.values.iter().sum();
    seen.send(Seen {
        index: job.index,
        sum,
        raw_len: job.raw.len(),
        attempt: attempt.current(),
    })?;
    Ok(sum)
}

fn bulk(index: u32, values: usize, raw: usize) -> Bulk {
    Bulk {
        index,
        values: (0..values).map(|i| i as f64 + f64::from(index)).collect(),
        raw: vec![3; raw],
        label: format!("bulk {index}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arguments_below_the_threshold_or_excluded_stay_in_the_job() {
    let env = Env::new();
    let policy = ArgumentPolicyConfig {
        store: env.store.name().to_owned(),
        threshold: 100_000,
        exclude: vec!["bulk/raw".into()],
        ..ArgumentPolicyConfig::default()
    }
    .compile()
    .unwrap();
    let codec = env.codec_with(policy).named("bulk");
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());

    // values: 1.6 MB, proxied; raw: 300 kB but excluded; label: small.
    let big = bulk(0, 200_000, 300_000);
    producer.push(big.clone()).await.unwrap();
    assert_eq!(codec.recorded().len(), 1, "only `values` went to the store");
    assert_eq!(env.objects(), 1);
    let id = env.task_ids().await.pop().unwrap();
    let len = env.job_len(&id).await;
    assert!(
        len > 300_000,
        "the excluded argument is inline ({len} bytes)"
    );
    assert!(
        len < 1_600_000,
        "the large argument is not inline ({len} bytes)"
    );

    // Everything below the threshold: nothing in the store, the job holds it all.
    let small = bulk(1, 1_000, 1_000);
    producer.push(small.clone()).await.unwrap();
    assert_eq!(codec.recorded().len(), 1);
    assert_eq!(env.objects(), 1);

    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!("bulk-worker", storage, errors, tx, record_bulk);
    let mut got = [rx.recv().await.unwrap(), rx.recv().await.unwrap()];
    got.sort_by_key(|s| s.index);
    for (s, job) in got.iter().zip([&big, &small]) {
        assert_eq!(s.sum, job.values.iter().sum::<f64>());
        assert_eq!(s.raw_len, job.raw.len());
    }
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(errors.all().is_empty());
    assert_eq!(codec.stats().refs_evicted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_fails_the_attempt_with_a_typed_error_and_the_retry_resolves() {
    let env = Env::new();
    let codec = env.codec(10_000);
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    let job = bulk(0, 100_000, 10);
    producer.push(job.clone()).await.unwrap();
    let key = codec.recorded()[0].key.clone();
    let path = env.dir.path().join(key.as_str());
    let saved = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let id = env.task_ids().await.pop().unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!("missing-worker", storage, errors, tx, record_bulk);

    // The attempt fails with a typed, retryable error, recorded by apalis.
    let e = wait_for(Duration::from_secs(10), "a resolve error", || async {
        errors.all().first().cloned()
    })
    .await;
    let re = e.downcast_ref::<ResolveError>().expect("a ResolveError");
    assert!(re.is_retryable());
    assert_eq!(re.task_id(), Some(id.as_str()));
    assert!(
        matches!(
            re.cause(),
            proxystore_middleware::MiddlewareError::Store(proxystore::Error::NotFound { .. })
        ),
        "{re}"
    );
    // apalis records an attempt's result and status together, and a retry sets the status
    // back to Running (keeping the last result): wait until the failure is the latest record,
    // reading both at once.
    let result = wait_for(Duration::from_secs(20), "the failure in Redis", || async {
        let (result, status) = env.meta_pair(&id, "result", "status").await;
        result.filter(|_| status.as_deref() == Some("Failed"))
    })
    .await;
    assert!(
        result.contains("cannot resolve the arguments of task"),
        "{result}"
    );
    assert!(!env.is_dead(&id).await, "a missing object is retried");

    // The worker keeps running other tasks.
    let other = bulk(1, 100_000, 10);
    producer.push(other.clone()).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.index, 1);
    assert_eq!(s.sum, other.values.iter().sum::<f64>());

    // The store is back: the retry finds the arguments.
    std::fs::write(&path, saved).unwrap();
    let s = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.index, 0);
    assert!(s.attempt >= 2, "{s:?}");
    assert_eq!(s.sum, job.values.iter().sum::<f64>());
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_store_kills_the_task_after_max_attempts_and_the_worker_goes_on() {
    let env = Env::new();
    let codec = env.codec(10_000);
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    producer
        .push_task(
            TaskBuilder::new(bulk(0, 100_000, 10))
                .max_attempts(2)
                .build(),
        )
        .await
        .unwrap();
    let id = env.task_ids().await.pop().unwrap();
    // The whole store directory disappears.
    std::fs::remove_dir_all(env.dir.path()).unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!("removed-worker", storage, errors, tx, record_bulk);

    wait_for(
        Duration::from_secs(20),
        "the task in the dead set",
        || async { env.is_dead(&id).await.then_some(()) },
    )
    .await;
    // The dead set and the task's status and attempts are written by one script.
    assert_eq!(env.meta(&id, "status").await.as_deref(), Some("Killed"));
    assert_eq!(env.meta(&id, "attempts").await.as_deref(), Some("2"));
    // Results reach Redis from the worker's acknowledgement sink, events reach the listener
    // from its run loop: either may come first.
    let all = wait_for(Duration::from_secs(10), "two failure events", || async {
        let all = errors.all();
        (all.len() >= 2).then_some(all)
    })
    .await;
    assert_eq!(all.len(), 2, "one failure per attempt: {all:?}");
    for e in &all {
        let re = e.downcast_ref::<ResolveError>().expect("a ResolveError");
        assert!(
            matches!(re.cause(), proxystore_middleware::MiddlewareError::Store(_)),
            "{re}"
        );
    }

    // Still alive: a task small enough to travel inline runs.
    producer.push(bulk(1, 10, 10)).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.index, 1);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

async fn always_fails(job: Bulk, calls: Data<Arc<AtomicU32>>) -> Result<f64, BoxDynError> {
    calls.fetch_add(1, Ordering::SeqCst);
    Err(format!("task {} always fails", job.index).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_is_honoured_and_the_last_failure_evicts_the_arguments() {
    let env = Env::new();
    let codec = env.codec(10_000);
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    producer
        .push_task(
            TaskBuilder::new(bulk(0, 100_000, 20_000))
                .max_attempts(3)
                .build(),
        )
        .await
        .unwrap();
    assert_eq!(env.objects(), 2);
    let id = env.task_ids().await.pop().unwrap();

    let calls = Arc::new(AtomicU32::new(0));
    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!(
        "failing-worker",
        storage,
        errors,
        calls.clone(),
        always_fails
    );

    wait_for(
        Duration::from_secs(20),
        "the task in the dead set",
        || async { env.is_dead(&id).await.then_some(()) },
    )
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(env.meta(&id, "status").await.as_deref(), Some("Killed"));
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
    // Without the plugin apalis-redis would run it again after a second.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_that_is_not_a_task_is_killed_without_stopping_the_worker() {
    let env = Env::new();
    let codec = env.codec(10_000);
    // Another producer writes plain JSON into the queue.
    let mut stranger = RedisStorage::<u32>::new(env.conn().await).with_config(env.config());
    stranger.push(7).await.unwrap();
    let id = env.task_ids().await.pop().unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!("strict-worker", storage, errors, tx, record_bulk);
    wait_for(
        Duration::from_secs(10),
        "the task in the dead set",
        || async { env.is_dead(&id).await.then_some(()) },
    )
    .await;
    let all = wait_for(Duration::from_secs(10), "the failure event", || async {
        let all = errors.all();
        (!all.is_empty()).then_some(all)
    })
    .await;
    assert_eq!(all.len(), 1, "killed at once, not retried: {all:?}");
    let abort = all[0].downcast_ref::<AbortError>().expect("an AbortError");
    let re = std::error::Error::source(abort)
        .and_then(|s| s.downcast_ref::<ResolveError>())
        .expect("around a ResolveError");
    assert!(
        matches!(
            re.cause(),
            proxystore_middleware::MiddlewareError::Decode(_)
        ),
        "{re}"
    );

    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec);
    producer.push(bulk(1, 100_000, 10)).await.unwrap();
    let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.index, 1);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_evicts_the_objects_of_tasks_nobody_runs() {
    let env = Env::new();
    let codec = env.codec(10_000).with_lease(Duration::from_millis(300));
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec);
    producer.push(bulk(0, 100_000, 20_000)).await.unwrap();
    assert_eq!(env.objects(), 2);
    wait_for(Duration::from_secs(5), "the lease to expire", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
}

async fn plain_handler(
    job: Bulk,
    seen: Data<mpsc::UnboundedSender<Seen>>,
) -> Result<f64, BoxDynError> {
    let sum = job.values.iter().sum();
    seen.send(Seen {
        index: job.index,
        sum,
        raw_len: job.raw.len(),
        attempt: 0,
    })?;
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_codec_alone_also_resolves_for_a_plain_worker() {
    // Without `resolve`, apalis decodes with `Codec<Bulk>`: arguments are resolved while the
    // storage is polled (a store failure would stop this worker, and nothing is evicted).
    let env = Env::new();
    let codec = env.codec(10_000);
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    let job = bulk(0, 100_000, 10);
    producer.push(job.clone()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec)
        .poll_with_strategy(PollEvery::millis(50));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = WorkerBuilder::new("plain-worker")
        .backend(storage)
        .data(tx)
        .build(plain_handler);
    let handle = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<_, std::io::Error>(())
    }));
    let s = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(s.sum, job.values.iter().sum::<f64>());
    stop_tx.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

/// A map task whose large output goes back as a proxy through apalis's result storage.
async fn double(job: Bulk, codec: Data<TaskCodec>) -> Result<Proxy<Vec<f64>>, BoxDynError> {
    let out: Vec<f64> = job.values.iter().map(|v| v * 2.0).collect();
    Ok(codec.proxy_result("double", out).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_results_come_back_as_proxies_and_redis_holds_only_small_documents() {
    let env = Env::new();
    let codec = env.codec(10_000).named("double");
    let mut producer = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    let jobs: Vec<Bulk> = (0..3).map(|i| bulk(i, 200_000, 10)).collect();
    for j in &jobs {
        producer.push(j.clone()).await.unwrap();
    }
    let ids = env.task_ids().await;
    for id in &ids {
        assert!(env.job_len(id).await < 2_000, "a job document is small");
    }

    let errors = Errors::default();
    let storage = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!(
        "double-worker",
        storage,
        errors,
        codec.task_codec().clone(),
        double
    );
    // Read through apalis's own result API, typed as proxies.
    let mut reader = RedisStorage::<Bulk>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    let task_ids: Vec<apalis_core::task::task_id::TaskId> =
        ids.iter().map(|id| id.parse().unwrap()).collect();
    let stream =
        apalis_core::backend::WaitForCompletion::<Proxy<Vec<f64>>>::wait_for(&mut reader, task_ids);
    let finished: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        futures::StreamExt::collect::<Vec<_>>(futures::StreamExt::take(stream, ids.len())),
    )
    .await
    .expect("every result within 30 s");
    let results: Vec<Proxy<Vec<f64>>> = finished
        .into_iter()
        .map(|r| r.unwrap().take().unwrap())
        .collect();
    for id in &ids {
        // The result storage holds a reference, not 1.6 MB of floats.
        let doc = env.meta(id, "result").await.unwrap();
        assert!(doc.len() < 1_000, "result document of {} bytes", doc.len());
    }
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(errors.all().is_empty(), "{:?}", errors.all());

    // Read by the producer: correct, fetched on first use, evicted once read.
    let mut sums: Vec<f64> = results.iter().map(|p| p.iter().sum()).collect();
    sums.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = jobs
        .iter()
        .map(|j| j.values.iter().map(|v| v * 2.0).sum())
        .collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(sums, expected);
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
}

#[derive(Serialize, Deserialize)]
struct OwnedJob {
    input: proxystore::OwnedProxy<Vec<u8>>,
}

/// Reads its owned input; the first call fails.
async fn fails_once(job: OwnedJob, calls: Data<Arc<AtomicU32>>) -> Result<usize, BoxDynError> {
    let n = job.input.len();
    if calls.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err("the first attempt fails".into());
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owned_input_survives_a_failed_attempt_and_is_evicted_once_after_success() {
    let env = Env::new();
    let codec = env.codec(10_000);
    let mut producer = RedisStorage::<OwnedJob>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone());
    let owned = env.store.owned_proxy(&vec![5u8; 50_000]).await.unwrap();
    // Pushing moves ownership into the task; the producer's handle evicts nothing.
    producer
        .push_task(
            TaskBuilder::new(OwnedJob { input: owned })
                .max_attempts(3)
                .build(),
        )
        .await
        .unwrap();
    assert!(proxystore::lifetime::wait_for_evictions(
        Duration::from_secs(5)
    ));
    assert_eq!(env.objects(), 1);
    let evictions = env.store.metrics().evict.count;

    let calls = Arc::new(AtomicU32::new(0));
    let errors = Errors::default();
    let storage = RedisStorage::<OwnedJob>::new(env.conn().await)
        .with_config(env.config())
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop, handle) = spawn_worker!("owned-worker", storage, errors, calls.clone(), fails_once);
    wait_for(Duration::from_secs(20), "the first attempt", || async {
        (calls.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    assert_eq!(env.objects(), 1, "kept for the retry");
    wait_for(Duration::from_secs(20), "an empty store", || async {
        (env.objects() == 0).then_some(())
    })
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The object is gone from the backend before the store counts the eviction in its
    // metrics: wait for the background eviction to finish before counting.
    assert!(proxystore::lifetime::wait_for_evictions(
        Duration::from_secs(5)
    ));
    assert_eq!(
        env.store.metrics().evict.count,
        evictions + 1,
        "evicted once"
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

/// The upstream task of a pipeline: it completes the future its downstream task waits on.
#[derive(Serialize, Deserialize)]
struct Extract {
    raw: Vec<u8>,
    out: proxystore::Promise<Vec<f64>>,
}

/// The downstream task: enqueued with a future of the upstream result, before it exists.
#[derive(Serialize, Deserialize)]
struct Train {
    features: Proxy<Vec<f64>>,
}

/// Fails its first `fail_first` attempts (the promise it holds is dropped unset), then sets it.
async fn extract(
    job: Extract,
    calls: Data<Arc<AtomicU32>>,
    fail_first: Data<u32>,
) -> Result<(), BoxDynError> {
    if calls.fetch_add(1, Ordering::SeqCst) < *fail_first {
        return Err("extract failed on purpose".into());
    }
    let features: Vec<f64> = job.raw.iter().map(|&b| f64::from(b)).collect();
    job.out.set(&features).await?;
    Ok(())
}

/// Waits for its features (on first use) and reports their sum, or the error it got.
async fn train(
    job: Train,
    seen: Data<mpsc::UnboundedSender<Result<f64, String>>>,
) -> Result<(), BoxDynError> {
    let got = job
        .features
        .resolve()
        .await
        .map(|f| f.iter().sum::<f64>())
        .map_err(|e| e.to_string());
    seen.send(got).unwrap();
    Ok(())
}

/// A two-stage pipeline enqueued at once, the downstream task first: `Train` gets a proxy of
/// the future that `Extract` completes. Returns what `Train` saw and how often `Extract` ran.
async fn pipeline(
    env: &Env,
    fail_first: u32,
    max_attempts: usize,
) -> (Result<f64, String>, u32, Vec<u8>) {
    let codec = env.codec(10_000);
    let extract_queue = Config::default().queue(format!("{}-extract", env.queue));
    let train_queue = Config::default().queue(format!("{}-train", env.queue));
    let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let (promise, features) = env
        .store
        .future_with::<Vec<f64>>(proxystore::FutureOptions::default().named("extract/return"))
        .await
        .unwrap();
    let mut trains = RedisStorage::<Train>::new(env.conn().await)
        .with_config(train_queue.clone())
        .with_codec(codec.clone());
    trains.push(Train { features }).await.unwrap();
    let mut extracts = RedisStorage::<Extract>::new(env.conn().await)
        .with_config(extract_queue.clone())
        .with_codec(codec.clone());
    extracts
        .push_task(
            TaskBuilder::new(Extract {
                raw: raw.clone(),
                out: promise,
            })
            .max_attempts(max_attempts)
            .build(),
        )
        .await
        .unwrap();

    // The downstream worker starts first and waits inside its task.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let train_errors = Errors::default();
    let storage = RedisStorage::<Train>::new(env.conn().await)
        .with_config(train_queue)
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let (stop_train, train_handle) = spawn_worker!("train", storage, train_errors, tx, train);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let calls = Arc::new(AtomicU32::new(0));
    let errors = Errors::default();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let worker = WorkerBuilder::new("extract")
        .backend(
            RedisStorage::<Extract>::new(env.conn().await)
                .with_config(extract_queue)
                .with_codec(codec)
                .poll_with_strategy(PollEvery::millis(50)),
        )
        .data(calls.clone())
        .data(fail_first)
        .on_event(errors.listener())
        .build(resolve(extract));
    let extract_handle = tokio::spawn(worker.run_until(async move {
        let _ = stop_rx.await;
        Ok::<_, std::io::Error>(())
    }));
    let seen = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("the downstream task finished")
        .unwrap();
    stop_tx.send(()).unwrap();
    extract_handle.await.unwrap().unwrap();
    stop_train.send(()).unwrap();
    train_handle.await.unwrap().unwrap();
    (seen, calls.load(Ordering::SeqCst), raw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waits_on_the_future_of_an_upstream_task_that_succeeds_on_its_retry() {
    let env = Env::new();
    let (seen, calls, raw) = pipeline(&env, 1, 3).await;
    // The failed first attempt did not fail the future: the retry completed it.
    assert_eq!(calls, 2);
    let expected: f64 = raw.iter().map(|&b| f64::from(b)).sum();
    assert_eq!(seen, Ok(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_on_an_upstream_task_that_fails_for_good_gets_its_error() {
    let env = Env::new();
    let (seen, calls, _) = pipeline(&env, u32::MAX, 2).await;
    assert_eq!(calls, 2);
    let err = seen.unwrap_err();
    assert!(
        err.contains("extract failed on purpose") && err.contains("extract/return"),
        "{err}"
    );
}
