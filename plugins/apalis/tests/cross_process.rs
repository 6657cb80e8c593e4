//! A producer process and worker processes on a real redis-server, sharing a file store.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::Key;
use proxystore_tests::redis_server::RedisServer;
use redis::aio::ConnectionManager;

const NODE: &str = env!("CARGO_BIN_EXE_proxystore-apalis-node");

/// A worker process; killed on drop unless it was stopped.
struct Worker {
    child: Option<Child>,
    name: String,
}

impl Worker {
    fn start(
        redis: &str,
        queue: &str,
        store: &str,
        dir: &Path,
        name: &str,
        extra: &[&str],
    ) -> Self {
        let child = Command::new(NODE)
            .args(["work", "--redis", redis, "--queue", queue, "--store", store])
            .arg("--dir")
            .arg(dir)
            .args(["--name", name])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a worker process");
        Worker {
            child: Some(child),
            name: name.to_owned(),
        }
    }

    /// Close stdin (the worker stops gracefully) and read the counters it prints.
    fn stop(mut self) -> serde_json::Value {
        let mut child = self.child.take().unwrap();
        drop(child.stdin.take());
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "worker {} exited with {status}",
            self.name
        );
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
    }

    fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn produce(redis: &str, queue: &str, store: &str, dir: &Path, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(NODE)
        .args([
            "produce", "--redis", redis, "--queue", queue, "--store", store,
        ])
        .arg("--dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run the producer");
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn conn(url: &str) -> ConnectionManager {
    proxystore_apalis::connect(url).await.unwrap()
}

async fn cmd<T: redis::FromRedisValue>(c: &mut ConnectionManager, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(c).await.unwrap()
}

/// Poll `f` until it returns `Some`, failing after `timeout` with `what`.
async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
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

fn files_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Sum of task `index`'s data as the node generates it (10 MiB of f64).
fn expected_sum(index: u32, len: usize) -> f64 {
    (0..len).map(|i| (i % 1000) as f64 + f64::from(index)).sum()
}

const TEN_MIB_OF_F64: usize = 10 * 1024 * 1024 / 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_and_two_workers_share_10_mib_arguments_through_the_store() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("xproc-{}", Key::random());
    let queue = format!("xproc{}", Key::random());
    const TASKS: u32 = 8;

    let a = Worker::start(&url, &queue, &store, dir.path(), "worker-a", &[]);
    let b = Worker::start(&url, &queue, &store, dir.path(), "worker-b", &[]);
    let mut c = conn(&url).await;
    // Both workers registered before the first task. Which one runs which task is up to
    // them: on a busy machine one may take all of them.
    let workers = format!("{queue}:workers");
    wait_for(Duration::from_secs(30), "two registered workers", || {
        let mut c = c.clone();
        let key = workers.clone();
        async move { (cmd::<u64>(&mut c, &["ZCARD", &key]).await == 2).then_some(()) }
    })
    .await;
    let produced = produce(
        &url,
        &queue,
        &store,
        dir.path(),
        &[
            "--tasks",
            &TASKS.to_string(),
            "--mib",
            "10",
            "--fail-first",
            "2,5",
        ],
    );
    assert_eq!(produced["args_proxied"], 2 * TASKS as u64, "{produced}");

    // The jobs in Redis are small: every argument went to the store.
    let data_hash = format!("{queue}:data");
    let ids: Vec<String> = cmd(&mut c, &["HKEYS", &data_hash]).await;
    assert_eq!(ids.len(), TASKS as usize);
    for id in &ids {
        let len: u64 = cmd(&mut c, &["HSTRLEN", &data_hash, id]).await;
        assert!(len < 2048, "job {id} holds {len} bytes in Redis");
    }

    let results_key = format!("{queue}:results");
    let lines: Vec<String> = wait_for(Duration::from_secs(120), "all results", || {
        let mut c = c.clone();
        let key = results_key.clone();
        async move {
            let lines: Vec<String> = cmd(&mut c, &["LRANGE", &key, "0", "-1"]).await;
            (lines.len() >= TASKS as usize).then_some(lines)
        }
    })
    .await;
    assert_eq!(
        lines.len(),
        TASKS as usize,
        "each task finished once: {lines:?}"
    );
    let mut seen = Vec::new();
    for line in &lines {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let index = r["index"].as_u64().unwrap() as u32;
        seen.push(index);
        assert_eq!(
            r["sum"].as_f64().unwrap(),
            expected_sum(index, TEN_MIB_OF_F64),
            "task {index}"
        );
        assert_eq!(r["audit_resolved"], false, "the audit proxy is never used");
        let expected_attempt = if index == 2 || index == 5 { 2 } else { 1 };
        assert_eq!(r["attempt"], expected_attempt, "task {index}: {r}");
        assert!(
            ["worker-a", "worker-b"].contains(&r["worker"].as_str().unwrap()),
            "task {index}: {r}"
        );
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..TASKS).collect::<Vec<_>>(), "each task ran once");

    // Every task recorded as done, and its objects evicted.
    let done_key = format!("{queue}:done");
    wait_for(Duration::from_secs(30), "all tasks done", || {
        let mut c = c.clone();
        let key = done_key.clone();
        async move { (cmd::<u64>(&mut c, &["SCARD", &key]).await == u64::from(TASKS)).then_some(()) }
    })
    .await;
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (files_in(dir.path()) == 0).then_some(())
    })
    .await;

    let stats_a = a.stop();
    let stats_b = b.stop();
    let gets = stats_a["gets"].as_u64().unwrap() + stats_b["gets"].as_u64().unwrap();
    let get_bytes = stats_a["get_bytes"].as_u64().unwrap() + stats_b["get_bytes"].as_u64().unwrap();
    // One fetch of `data` per run (8 tasks + 2 failed first attempts); `audit` never.
    assert_eq!(gets, u64::from(TASKS) + 2, "{stats_a} {stats_b}");
    assert!(
        get_bytes < (u64::from(TASKS) + 2) * (TEN_MIB_OF_F64 as u64 * 8 + 16),
        "{get_bytes}"
    );
    let lazy = stats_a["codec"]["refs_lazy"].as_u64().unwrap()
        + stats_b["codec"]["refs_lazy"].as_u64().unwrap();
    assert_eq!(
        lazy,
        u64::from(TASKS) + 2,
        "audit handed over lazily in every run"
    );
    let evicted = stats_a["codec"]["refs_evicted"].as_u64().unwrap()
        + stats_b["codec"]["refs_evicted"].as_u64().unwrap();
    assert_eq!(evicted, 2 * u64::from(TASKS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_of_a_killed_worker_is_finished_and_cleaned_up_by_another() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("crash-{}", Key::random());
    let queue = format!("crash{}", Key::random());

    // The first worker takes the task and never finishes it.
    let crashing = Worker::start(
        &url,
        &queue,
        &store,
        dir.path(),
        "crashing",
        &["--hang-on", "0"],
    );
    // The task also owns an object, moved into it when it was pushed.
    produce(
        &url,
        &queue,
        &store,
        dir.path(),
        &["--tasks", "1", "--mib", "10", "--owned-kib", "64"],
    );
    let c = conn(&url).await;
    let started = format!("{queue}:started");
    wait_for(Duration::from_secs(30), "the task to start", || {
        let mut c = c.clone();
        let key = started.clone();
        async move { (cmd::<u64>(&mut c, &["LLEN", &key]).await == 1).then_some(()) }
    })
    .await;
    crashing.kill();
    assert_eq!(
        files_in(dir.path()),
        3,
        "the crashed worker's task still owns its objects"
    );

    // A second worker re-runs the orphaned task once the first one's heartbeats are overdue.
    let rescuer = Worker::start(
        &url,
        &queue,
        &store,
        dir.path(),
        "rescuer",
        &["--heartbeat-secs", "1"],
    );
    let results = format!("{queue}:results");
    let line: String = wait_for(Duration::from_secs(60), "the rescued result", || {
        let mut c = c.clone();
        let key = results.clone();
        async move { cmd::<Option<String>>(&mut c, &["LINDEX", &key, "0"]).await }
    })
    .await;
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["worker"], "rescuer");
    assert_eq!(r["sum"].as_f64().unwrap(), expected_sum(0, TEN_MIB_OF_F64));
    assert_eq!(
        r["owned_len"],
        64 * 1024,
        "the retried task found its owned input"
    );
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (files_in(dir.path()) == 0).then_some(())
    })
    .await;
    rescuer.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_worker_and_reader_processes_pass_10_mib_results_as_proxies() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("xres-{}", Key::random());
    let queue = format!("xres{}", Key::random());
    const TASKS: u32 = 4;

    let worker = Worker::start(
        &url,
        &queue,
        &store,
        dir.path(),
        "worker-r",
        &["--results", "1"],
    );
    produce(
        &url,
        &queue,
        &store,
        dir.path(),
        &["--tasks", &TASKS.to_string(), "--mib", "10"],
    );
    let mut c = conn(&url).await;
    let data_hash = format!("{queue}:data");
    let ids: Vec<String> = cmd(&mut c, &["HKEYS", &data_hash]).await;
    for id in &ids {
        let len: u64 = cmd(&mut c, &["HSTRLEN", &data_hash, id]).await;
        assert!(len < 2048, "job {id} holds {len} bytes in Redis");
    }

    // The reader is a third process: it reads each result from apalis's result storage.
    let out = Command::new(NODE)
        .args([
            "read", "--redis", &url, "--queue", &queue, "--store", &store,
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(["--tasks", &TASKS.to_string()])
        .output()
        .expect("run the reader");
    assert!(
        out.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sums = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["len"], TEN_MIB_OF_F64, "{r}");
        let doc = r["doc_bytes"].as_u64().unwrap();
        assert!(doc < 1024, "a result holds {doc} bytes in Redis");
        sums.push(r["sum"].as_f64().unwrap());
    }
    sums.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = (0..TASKS)
        .map(|i| 2.0 * expected_sum(i, TEN_MIB_OF_F64))
        .collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(sums, expected);

    // Arguments evicted by the worker, results by their reader: nothing left.
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (files_in(dir.path()) == 0).then_some(())
    })
    .await;
    worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_moves_producer_to_task_a_to_task_b_and_is_evicted_once_after_b() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("chain-{}", Key::random());
    let (qa, qb) = (
        format!("chainA{}", Key::random()),
        format!("chainB{}", Key::random()),
    );

    // The producer moves an owned 64 KiB object into task A, which moves it into task B.
    let a = Worker::start(&url, &qa, &store, dir.path(), "worker-a", &[]);
    produce(
        &url,
        &qa,
        &store,
        dir.path(),
        &[
            "--tasks",
            "1",
            "--mib",
            "1",
            "--owned-kib",
            "64",
            "--forward-to",
            &qb,
        ],
    );
    let c = conn(&url).await;
    let results_a = format!("{qa}:results");
    let line: String = wait_for(Duration::from_secs(60), "task A's result", || {
        let mut c = c.clone();
        let key = results_a.clone();
        async move { cmd::<Option<String>>(&mut c, &["LINDEX", &key, "0"]).await }
    })
    .await;
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["owned_len"], 64 * 1024, "task A read its owned input");
    // A is over and its arguments are gone; the owned object is B's now and stays.
    wait_for(
        Duration::from_secs(10),
        "task A's arguments evicted",
        || async { (files_in(dir.path()) == 1).then_some(()) },
    )
    .await;
    let stats_a = a.stop();
    assert_eq!(
        stats_a["evicts"], 2,
        "A evicts its two arguments, not the owned object: {stats_a}"
    );
    assert_eq!(files_in(dir.path()), 1);

    // Task B, in another worker process, is the last owner.
    let b = Worker::start(&url, &qb, &store, dir.path(), "worker-b", &[]);
    let results_b = format!("{qb}:results");
    let line: String = wait_for(Duration::from_secs(60), "task B's result", || {
        let mut c = c.clone();
        let key = results_b.clone();
        async move { cmd::<Option<String>>(&mut c, &["LINDEX", &key, "0"]).await }
    })
    .await;
    let r: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(r["owned_len"], 64 * 1024, "task B received it");
    wait_for(Duration::from_secs(10), "an empty store", || async {
        (files_in(dir.path()) == 0).then_some(())
    })
    .await;
    let stats_b = b.stop();
    assert_eq!(
        stats_b["evicts"], 1,
        "B evicts the owned object, once: {stats_b}"
    );
}
