//! A producer or worker process on apalis-redis with the plugin, for the cross-process tests.
//!
//! ```text
//! proxystore-apalis-node produce --redis URL --queue Q --store NAME --dir DIR --tasks N
//!     [--mib 10] [--audit-kib 1024] [--owned-kib 0] [--forward-to Q2] [--fail-first 2,5]
//!     [--max-attempts N] [--threshold B]
//! proxystore-apalis-node work --redis URL --queue Q --store NAME --dir DIR --name W
//!     [--batch 1] [--heartbeat-secs 1] [--hang-on INDEX] [--results 1]
//! proxystore-apalis-node read --redis URL --queue Q --store NAME --dir DIR --tasks N
//! ```
//!
//! Tasks carry `data`, `mib` MiB of f64 (the worker sums it) and `audit`, bytes that the worker
//! declares as a lazy `Proxy` and never touches. With `--owned-kib K`, each task also owns an
//! object of `K` KiB (an `OwnedProxy` moved into the task when it is pushed): the worker reads
//! its length, and the task's cleanup evicts it once the task is over. With `--forward-to Q2`,
//! the worker passes the owned object on: it pushes a task to queue `Q2` that owns it (the move
//! happens when that task is serialized), and it is evicted when that task is over. The worker pushes one JSON line per finished
//! task to the Redis list `{queue}:results`, runs until its stdin closes, then prints its store
//! and codec counters as JSON. With `--hang-on I` it never finishes task `I` (after noting it
//! in `{queue}:started`), to be killed mid-task. With `--results 1` each task also returns its
//! data doubled, through `TaskCodec::proxy_result` (a reference in apalis's result storage,
//! the object in the store, evicted when read); `read` waits for the `N` results, reads each one
//! from the result storage and prints a JSON line per result (its sum and its size in Redis).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use apalis_core::backend::TaskSink;
use apalis_core::backend::ext::BackendExt;
use apalis_core::error::BoxDynError;
use apalis_core::task::attempt::Attempt;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use proxystore::connector::file::FileConnector;
use proxystore::{OwnedProxy, Proxy, Store};
use proxystore_apalis::{PollEvery, ProxyCodec, resolve};
use proxystore_middleware::{ArgumentPolicy, TaskCodec};
use serde::{Deserialize, Serialize};

/// The task as the producer writes it (apalis codecs need both serde directions).
#[derive(Serialize, Deserialize)]
struct JobOut {
    index: u32,
    data: Vec<f64>,
    audit: Vec<u8>,
    owned: Option<OwnedProxy<Vec<u8>>>,
    fail_first: bool,
    forward_to: Option<String>,
}

/// The task as the worker reads it: `audit` stays a reference unless used.
#[derive(Serialize, Deserialize)]
struct JobIn {
    index: u32,
    data: Vec<f64>,
    audit: Proxy<Vec<u8>>,
    owned: Option<OwnedProxy<Vec<u8>>>,
    fail_first: bool,
    forward_to: Option<String>,
}

/// Value `i` of task `index`'s data (the tests recompute the sums).
fn value(index: u32, i: usize) -> f64 {
    (i % 1000) as f64 + f64::from(index)
}

#[derive(Clone)]
struct Ctx {
    codec: TaskCodec,
    conn: ConnectionManager,
    queue: String,
    worker: String,
    hang_on: Option<u32>,
}

#[derive(Serialize)]
struct Outcome<'a> {
    index: u32,
    sum: f64,
    attempt: usize,
    worker: &'a str,
    audit_resolved: bool,
    owned_len: Option<usize>,
}

async fn work(mut job: JobIn, attempt: Attempt, ctx: Data<Ctx>) -> Result<f64, BoxDynError> {
    let mut conn = ctx.conn.clone();
    if ctx.hang_on == Some(job.index) {
        redis::cmd("RPUSH")
            .arg(format!("{}:started", ctx.queue))
            .arg(job.index)
            .query_async::<()>(&mut conn)
            .await?;
        std::future::pending::<()>().await;
    }
    if job.fail_first && attempt.current() <= 1 {
        return Err(format!("task {}: planned failure on the first attempt", job.index).into());
    }
    let sum: f64 = job.data.iter().sum();
    // Long enough for the second worker to get its share.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let line = serde_json::to_string(&Outcome {
        index: job.index,
        sum,
        attempt: attempt.current(),
        worker: &ctx.worker,
        audit_resolved: job.audit.is_resolved(),
        owned_len: job.owned.as_ref().map(|o| o.len()),
    })?;
    if let Some(queue) = job.forward_to.take() {
        // Ownership of `owned` moves into the next task as it is pushed.
        let mut next = RedisStorage::<JobOut>::new(ctx.conn.clone())
            .with_config(Config::default().queue(&queue))
            .with_codec(ProxyCodec::new(ctx.codec.clone()));
        next.push(JobOut {
            index: job.index + 1000,
            data: Vec::new(),
            audit: Vec::new(),
            owned: job.owned.take(),
            fail_first: false,
            forward_to: None,
        })
        .await?;
    }
    redis::cmd("RPUSH")
        .arg(format!("{}:results", ctx.queue))
        .arg(line)
        .query_async::<()>(&mut conn)
        .await?;
    Ok(sum)
}

/// [`work`], returning the task's data doubled as a proxied result.
async fn work_returning(
    job: JobIn,
    attempt: Attempt,
    ctx: Data<Ctx>,
) -> Result<Proxy<Vec<f64>>, BoxDynError> {
    let doubled: Vec<f64> = job.data.iter().map(|v| v * 2.0).collect();
    let codec = ctx.codec.clone();
    work(job, attempt, ctx).await?;
    Ok(codec.proxy_result("xproc", doubled).await?)
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .ok_or_else(|| format!("expected --option, got {k:?}"))?;
            let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), v.clone());
        }
        Ok(Args(map))
    }

    fn get(&self, key: &str) -> Result<&str, String> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.0.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad number {v:?}")),
        }
    }
}

fn store(args: &Args) -> Result<Store, BoxDynError> {
    let store = Store::new(args.get("store")?, FileConnector::new(args.get("dir")?)?);
    proxystore::register_store(&store)?;
    Ok(store)
}

async fn produce(args: &Args) -> Result<(), BoxDynError> {
    let store = store(args)?;
    let threshold = args.num("threshold", proxystore_middleware::DEFAULT_THRESHOLD)?;
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::from_parts(
            store.name().to_owned(),
            threshold,
        ))
        .with_store(store.clone()),
    )
    .named("xproc");
    let conn = proxystore_apalis::connect(args.get("redis")?).await?;
    let mut storage = RedisStorage::<JobOut>::new(conn)
        .with_config(Config::default().queue(args.get("queue")?))
        .with_codec(codec.clone());
    let tasks: u32 = args.num("tasks", 1)?;
    let len = args.num::<usize>("mib", 10)? * 1024 * 1024 / 8;
    let audit = vec![7u8; args.num::<usize>("audit-kib", 1024)? * 1024];
    let owned_kib = args.num::<usize>("owned-kib", 0)?;
    let fail_first: Vec<u32> = match args.0.get("fail-first") {
        Some(list) if !list.is_empty() => list
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?,
        _ => Vec::new(),
    };
    let max_attempts: Option<usize> = args.0.get("max-attempts").map(|v| v.parse()).transpose()?;
    for index in 0..tasks {
        let owned = match owned_kib {
            0 => None,
            k => Some(store.owned_proxy(&vec![9u8; k * 1024]).await?),
        };
        let job = JobOut {
            index,
            data: (0..len).map(|i| value(index, i)).collect(),
            audit: audit.clone(),
            owned,
            fail_first: fail_first.contains(&index),
            forward_to: args.0.get("forward-to").cloned(),
        };
        let mut task = TaskBuilder::new(job);
        if let Some(m) = max_attempts {
            task = task.max_attempts(m);
        }
        storage.push_task(task.build()).await?;
    }
    println!("{}", serde_json::to_string(&codec.stats())?);
    Ok(())
}

async fn run_worker(args: &Args) -> Result<(), BoxDynError> {
    let store = store(args)?;
    let queue = args.get("queue")?.to_owned();
    let name = args.get("name")?.to_owned();
    let codec = ProxyCodec::new(
        TaskCodec::new(ArgumentPolicy::with_store(store.name())).with_store(store.clone()),
    );
    let url = args.get("redis")?;
    let heartbeat = Duration::from_secs(args.num("heartbeat-secs", 5)?);
    let config = Config::default()
        .queue(&queue)
        .batch_size(args.num("batch", 1)?)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(2);
    let storage = RedisStorage::<JobIn>::new(proxystore_apalis::connect(url).await?)
        .with_config(config)
        .with_codec(codec.clone())
        .poll_with_strategy(PollEvery::millis(50));
    let ctx = Ctx {
        codec: codec.task_codec().clone(),
        conn: proxystore_apalis::connect(url).await?,
        queue,
        worker: name.clone(),
        hang_on: args.0.get("hang-on").map(|v| v.parse()).transpose()?,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // Run until the parent closes our stdin.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop_tx.send(());
    });
    let stopped = async move {
        let _ = stop_rx.await;
        Ok::<_, std::io::Error>(())
    };
    let builder = WorkerBuilder::new(name).backend(storage).data(ctx);
    if args.num("results", 0u8)? == 1 {
        builder
            .build(resolve(work_returning))
            .run_until(stopped)
            .await?;
    } else {
        builder.build(resolve(work)).run_until(stopped).await?;
    }
    let m = store.metrics();
    println!(
        "{}",
        serde_json::json!({
            "gets": m.get.count,
            "get_bytes": m.get.bytes,
            "evicts": m.evict.count,
            "codec": codec.stats(),
        })
    );
    Ok(())
}

/// Read `--tasks` results from apalis-redis's result storage as `Proxy<Vec<f64>>`.
async fn read(args: &Args) -> Result<(), BoxDynError> {
    let _store = store(args)?;
    let config = Config::default().queue(args.get("queue")?);
    let mut conn = proxystore_apalis::connect(args.get("redis")?).await?;
    let tasks: usize = args.num("tasks", 1)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ids: Vec<String> = loop {
        let ids: Vec<String> = redis::cmd("HKEYS")
            .arg(config.job_data_hash())
            .query_async(&mut conn)
            .await?;
        if ids.len() >= tasks {
            break ids;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{} of {tasks} tasks in the queue", ids.len()).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for id in ids {
        let doc: String = loop {
            let doc: Option<String> = redis::cmd("HGET")
                .arg(format!("{}:{id}", config.job_meta_hash()))
                .arg("result")
                .query_async(&mut conn)
                .await?;
            if let Some(d) = doc {
                break d;
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("no result for task {id}").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let result: Result<Proxy<Vec<f64>>, String> = serde_json::from_str(&doc)?;
        let values = result?;
        let sum: f64 = values.iter().sum();
        println!(
            "{}",
            serde_json::json!({ "sum": sum, "doc_bytes": doc.len(), "len": values.len() })
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.split_first() {
        Some((cmd, rest)) => match Args::parse(rest) {
            Ok(args) if cmd == "produce" => produce(&args).await,
            Ok(args) if cmd == "work" => run_worker(&args).await,
            Ok(args) if cmd == "read" => read(&args).await,
            Ok(_) => Err(format!("unknown command {cmd:?} (produce | work | read)").into()),
            Err(e) => Err(e.into()),
        },
        None => {
            Err("usage: proxystore-apalis-node (produce | work | read) --option value ...".into())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxystore-apalis-node: {e}");
            ExitCode::FAILURE
        }
    }
}
