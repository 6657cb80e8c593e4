//! Results and ownership across two processes: an owned proxy moves to another process with
//! the task that uses it, borrows are counted, a mutable borrow writes back, a task's result
//! comes back as a proxy, and everything is evicted exactly when its owner is done.
//!
//! Run with `cargo run -p proxystore-examples --bin ownership`. The "worker" is this binary run
//! again as a child process; the two talk through its standard input and output, where only
//! references travel.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use proxystore::connector::file::FileConnector;
use proxystore::lifetime::{self, OwnedProxy};
use proxystore::{Error, Proxy, Store, register_store};
use proxystore_middleware::{ArgumentPolicy, ResultCleanup, TaskCodec};
use serde::{Deserialize, Serialize};

/// What the producer sends the worker: the input moves with it.
#[derive(Serialize, Deserialize)]
struct Task {
    scale: f64,
    samples: OwnedProxy<Vec<f64>>,
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    match std::env::args().nth(1).as_deref() {
        Some("worker") => rt.block_on(worker(&std::env::args().nth(2).unwrap_or_default())),
        _ => rt.block_on(producer()),
    }
}

fn store(dir: &str) -> anyhow::Result<Store> {
    let store = Store::new("ownership", FileConnector::new(dir)?);
    register_store(&store)?;
    Ok(store)
}

fn objects(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn producer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = store(&dir.path().to_string_lossy())?;

    // 1. An owned proxy: this process evicts the object when it is done with it.
    let mut samples = store
        .owned_proxy(&(0..1_000_000).map(f64::from).collect::<Vec<_>>())
        .await?;

    // 2. Borrows are counted: while one is alive the owner cannot evict, move or mutate.
    let reader = samples.borrow()?;
    println!("borrowed: {} samples", reader.len());
    match samples.borrow_mut() {
        Err(Error::Ownership { problem, .. }) => println!("mutable borrow refused: {problem}"),
        other => anyhow::bail!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    drop(reader);

    // 3. A mutable borrow writes a new version under the same key.
    samples
        .borrow_mut()?
        .update((0..1_000_000).map(|i| f64::from(i) / 2.0).collect())
        .await?;
    println!("updated: first samples {:?}", &samples[..3]);

    // 4. Move it to another process with a task: only the reference travels, and the
    // producer's handle no longer owns it (sending it twice would be an error).
    let task = Task {
        scale: 3.0,
        samples,
    };
    let line = serde_json::to_string(&task)?;
    println!("task on the wire: {} bytes", line.len());
    assert!(!task.samples.is_owner());
    drop(task); // evicts nothing: the worker owns the samples now
    lifetime::wait_for_evictions(Duration::from_secs(5));
    println!("objects after the move: {}", objects(dir.path()));

    let mut child = Command::new(std::env::current_exe()?)
        .args(["worker", &dir.path().to_string_lossy()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    writeln!(stdin, "{line}")?;
    drop(stdin);
    let mut result_line = String::new();
    BufReader::new(
        child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?,
    )
    .read_line(&mut result_line)?;
    anyhow::ensure!(child.wait()?.success(), "the worker failed");

    // 5. The result came back as a proxy; reading it evicts it (ResultCleanup::OnRead).
    println!("result on the wire: {} bytes", result_line.trim().len());
    let result: Proxy<Vec<f64>> = serde_json::from_str(&result_line)?;
    let total: f64 = result.iter().sum();
    println!("result: {} values, sum {total}", result.len());
    println!("objects left in the store: {}", objects(dir.path()));
    Ok(())
}

async fn worker(dir: &str) -> anyhow::Result<()> {
    let store = store(dir)?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    // Taking the task takes ownership of its samples.
    let task: Task = serde_json::from_str(&line)?;
    let scaled: Vec<f64> = task.samples.iter().map(|x| x * task.scale).collect();
    let codec = TaskCodec::new(ArgumentPolicy::with_store("ownership"))
        .with_store(store)
        .with_result_cleanup(ResultCleanup::OnRead);
    let result = codec.proxy_result("scale", scaled).await?;
    println!("{}", serde_json::to_string(&result)?);
    eprintln!("worker: done; dropping the samples it owns");
    drop(task); // the last owner: evicted now (and before this process exits)
    Ok(())
}
