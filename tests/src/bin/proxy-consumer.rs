//! A second OS process for the cross-process tests: reads serialized proxies from a file,
//! resolves the ones it is asked to, and prints what it saw and its store metrics as JSON.
//!
//! Usage: `proxy-consumer FILE INDEX...` where FILE holds a postcard `Vec<Proxy<Vec<u64>>>`.

use proxystore::Proxy;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let file = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: proxy-consumer FILE INDEX..."))?;
    let use_indices: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let proxies: Vec<Proxy<Vec<u64>>> = postcard::from_bytes(&std::fs::read(file)?)?;
    let store_name = proxies
        .first()
        .and_then(|p| p.reference())
        .map(|r| r.store.clone())
        .unwrap_or_default();
    let registered_before = proxystore::get_store(&store_name).is_some();
    let mut sums = Vec::new();
    for i in use_indices {
        let p = proxies
            .get(i)
            .ok_or_else(|| anyhow::anyhow!("no proxy at index {i}"))?;
        // Deref: transparent use, as consumer code would.
        sums.push(p.iter().sum::<u64>());
    }
    let resolved: Vec<bool> = proxies.iter().map(Proxy::is_resolved).collect();
    // The store rebuilt from the references is the proxies' own, not a registered one.
    let metrics = proxies
        .first()
        .and_then(Proxy::factory)
        .map(|f| f.store())
        .transpose()?
        .map(|s| s.metrics());
    println!(
        "{}",
        serde_json::json!({
            "registered_before": registered_before,
            "sums": sums,
            "resolved": resolved,
            "metrics": metrics,
        })
    );
    Ok(())
}
