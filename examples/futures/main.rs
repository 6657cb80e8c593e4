//! Distributed futures across two processes: a consumer process starts, and does its own
//! set-up, before its producer has finished; it blocks only when it first uses the value, and
//! wakes when the producer sets it (by a file notification here, not by polling). A producer
//! that gives up without setting is an error its consumer sees, never a hang.
//!
//! Run with `cargo run -p proxystore-examples --bin futures`. The consumer is this binary run
//! again as a child process; only references travel between the two (on its standard input).

use std::io::{BufRead, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proxystore::connector::file::FileConnector;
use proxystore::{Error, Proxy, Store};

/// What the consumer gets: two futures, one that its producer sets and one it abandons.
#[derive(serde::Serialize, serde::Deserialize)]
struct Inputs {
    features: Proxy<Vec<f64>>,
    labels: Proxy<Vec<u8>>,
}

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("consumer") => consumer(),
        _ => tokio::runtime::Runtime::new()?.block_on(producer()),
    }
}

async fn producer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::new("futures-example", FileConnector::new(dir.path())?);
    println!(
        "store: file, consumers wait by {}",
        store.connector().wait_mechanism()
    );

    // Two futures: a promise for this process to complete, a proxy for the consumer.
    let (features_promise, features) = store.future::<Vec<f64>>().await?;
    let (labels_promise, labels) = store.future::<Vec<u8>>().await?;
    let keys = [features_promise.key().clone(), labels_promise.key().clone()];

    // The consumer starts now, long before the values exist.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("consumer")
        .stdin(Stdio::piped())
        .spawn()?;
    let line = serde_json::to_string(&Inputs { features, labels })?;
    println!(
        "producer: consumer started with {} bytes of references",
        line.len()
    );
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    writeln!(stdin, "{line}")?;
    drop(stdin);

    // The producer's own work, while the consumer sets itself up and then waits.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let values: Vec<f64> = (0..1_000_000).map(|i| f64::from(i) * 0.5).collect();
    let started = Instant::now();
    features_promise.set(&values).await?;
    println!(
        "producer: features set ({} values) in {:.1} ms",
        values.len(),
        started.elapsed().as_secs_f64() * 1e3
    );

    // Giving up on the labels: the dropped promise fails the future for its consumers.
    drop(labels_promise);
    println!("producer: labels abandoned");

    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    anyhow::ensure!(status.success(), "the consumer failed: {status}");

    // The futures' objects belong to whoever made them: evicted here, once consumed.
    for key in &keys {
        store.evict(key).await?;
    }
    println!(
        "objects left in the store: {}",
        std::fs::read_dir(dir.path())?.count()
    );
    Ok(())
}

fn consumer() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let inputs: Inputs = serde_json::from_str(&line)?;
    let started = Instant::now();
    println!("consumer: started; the features are not set yet");

    // Its own set-up, overlapping the producer's work.
    std::thread::sleep(Duration::from_millis(300));
    println!("consumer: set up, now using the features");

    // First use blocks until the producer sets the value.
    let waiting = Instant::now();
    let sum: f64 = inputs.features.iter().sum();
    println!(
        "consumer: features resolved after waiting {:.0} ms: {} values, sum {sum}",
        waiting.elapsed().as_secs_f64() * 1e3,
        inputs.features.len(),
    );

    // A future whose producer gave up: a typed error, not a hang.
    match inputs.labels.try_get() {
        Err(Error::Future { problem, .. }) => println!("consumer: labels failed: {problem}"),
        Err(e) => anyhow::bail!("unexpected error: {e}"),
        Ok(v) => anyhow::bail!("labels should have failed, got {} bytes", v.len()),
    }
    println!(
        "consumer: done {:.0} ms after it started",
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
