//! The ProxyStore walk-through: build a store, put and get, make a proxy, send it to another
//! process, and use it there as if it were the object.
//!
//! Run with `cargo run -p proxystore-examples --bin quickstart`. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, both processes export their spans: the consumer's resolve
//! links to the producer's put (see `docs/observability.md`).

use std::io::Write;
use std::process::{Command, Stdio};

use proxystore::connector::file::FileConnector;
use proxystore::{Proxy, Store, register_store};
use serde::{Deserialize, Serialize};

/// A large object, as a workflow would pass between tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("consume") {
        let _telemetry = proxystore_telemetry::init("quickstart-consumer")?;
        return consume();
    }
    let _telemetry = proxystore_telemetry::init("quickstart")?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(produce())
}

async fn produce() -> anyhow::Result<()> {
    // 1. A store: a named connector (here files in a directory) plus codec, cache and metrics.
    let dir = tempfile::tempdir()?;
    let store = Store::new("quickstart", FileConnector::new(dir.path())?);
    // Registering makes the store available by name to proxies in this process.
    register_store(&store)?;

    // 2. put and get, like a key-value store.
    let key = store.put(&"hello, proxystore".to_string()).await?;
    let back: Option<String> = store.get(&key).await?;
    println!("put/get: {key} -> {back:?}");

    // 3. A proxy: the object goes into the store, a small reference comes back.
    let matrix = Matrix {
        rows: 1000,
        cols: 1000,
        data: (0..1_000_000).map(|i| i as f64).collect(),
    };
    let proxy: Proxy<Matrix> = store.proxy(&matrix).await?;
    let wire = postcard::to_stdvec(&proxy)?;
    println!(
        "proxy: {} bytes on the wire for an object of {} bytes",
        wire.len(),
        proxy.reference().map_or(0, |r| r.size)
    );

    // 4. Send the reference to another OS process, which has never seen this store.
    let mut child = Command::new(std::env::current_exe()?)
        .arg("consume")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdin"))?
        .write_all(&wire)?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "consumer process failed");
    print!("{}", String::from_utf8_lossy(&out.stdout));

    // 5. The proxy is transparent here too: first use resolves (from the cache next time).
    println!("local use: trace = {}", trace(&proxy));
    let m = store.metrics();
    println!(
        "store metrics: {} puts, {} connector reads, {} cache hits",
        m.put.count, m.get.count, m.cache_hits
    );
    Ok(())
}

/// The consumer side: plain code that takes a `&Matrix`, handed a proxy.
fn consume() -> anyhow::Result<()> {
    let mut wire = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut wire)?;
    let proxy: Proxy<Matrix> = postcard::from_bytes(&wire)?;
    println!(
        "consumer (pid {}): received a proxy, resolved = {}",
        std::process::id(),
        proxy.is_resolved()
    );
    // `&proxy` derefs to `&Matrix`: the object is fetched and decoded here, on first use.
    println!("consumer: trace = {}", trace(&proxy));
    println!("consumer: resolved = {}", proxy.is_resolved());
    Ok(())
}

fn trace(m: &Matrix) -> f64 {
    (0..m.rows.min(m.cols))
        .map(|i| m.data[i * m.cols + i])
        .sum()
}
