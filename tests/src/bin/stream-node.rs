//! A consumer process for the streams tests (tests/tests/streams.rs).
//!
//! `stream-node consume REDIS_URL PREFIX TOPIC GROUP NAME CLAIM_MS DELAY_MS`: reads `Vec<u8>` objects of
//! TOPIC from Redis Streams as consumer NAME of GROUP, and for each prints one line
//! `item I LEN SUM` (I: the `i` metadata) once it has resolved it, then works DELAY_MS on it,
//! then `end` at the end of the stream. Each item is consumed (acknowledged, evicted) when the next one is asked for.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use proxystore_stream::StreamConsumer;
use proxystore_stream::broker::SubscribeOptions;
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [cmd, url, prefix, topic, group, name, claim_ms, delay_ms] = args.as_slice() else {
        bail!("usage: stream-node consume REDIS_URL PREFIX TOPIC GROUP NAME CLAIM_MS DELAY_MS");
    };
    let delay = Duration::from_millis(delay_ms.parse()?);
    if cmd != "consume" {
        bail!("unknown command {cmd}");
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut config = RedisStreamsConfig::new(url.as_str());
        config.prefix = prefix.clone();
        config.claim_idle = Duration::from_millis(claim_ms.parse()?);
        config.block = Duration::from_millis(100);
        let broker = RedisStreamsBroker::connect(config).await?;
        let mut consumer = StreamConsumer::<Vec<u8>>::subscribe(
            &broker,
            topic,
            SubscribeOptions::group(group.as_str()).named(name.as_str()),
        )
        .await?;
        let mut out = std::io::stdout().lock();
        while let Some(item) = consumer.next().await {
            let item = item?;
            let v = item.proxy.resolve().await?;
            let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
            writeln!(out, "item {} {} {sum}", item.metadata["i"], v.len())?;
            out.flush()?;
            tokio::time::sleep(delay).await;
        }
        consumer.close().await?;
        writeln!(out, "end")?;
        Ok(())
    })
}
