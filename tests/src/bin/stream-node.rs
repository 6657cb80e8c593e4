//! A consumer process for the streams tests (tests/tests/streams.rs).
//!
//! `stream-node consume BROKER URL PREFIX TOPIC GROUP NAME CLAIM_MS DELAY_MS [FILTER]`:
//! - BROKER is `redis-streams`, `redis-pubsub` or `nats`; URL its server; PREFIX the prefix of
//!   its keys (Redis) or streams (NATS); CLAIM_MS how long a message may stay unacknowledged
//!   before another consumer of the group gets it.
//! - Reads `Vec<u8>` objects of TOPIC as consumer NAME of GROUP (`-`: no group), printing
//!   `ready` once subscribed, then for each object `item I LEN SUM OK` once it has resolved it
//!   (I: its `i` metadata; OK: `ok` when its bytes are `proxystore_tests::object(I, LEN)`, else
//!   `bad`), then works DELAY_MS on it; at the end of the stream `end MISSED SKIPPED DUPLICATES`.
//! - FILTER `even`: only objects whose `i` is even are resolved; the others are skipped
//!   unresolved.
//!
//! Each item is consumed (acknowledged, evicted) when the next one is asked for.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use proxystore_stream::StreamConsumer;
use proxystore_stream::broker::nats::{NatsBroker, NatsConfig};
use proxystore_stream::broker::redis_pubsub::RedisPubSubBroker;
use proxystore_stream::broker::redis_streams::{RedisStreamsBroker, RedisStreamsConfig};
use proxystore_stream::broker::{Broker, SubscribeOptions};

const USAGE: &str =
    "usage: stream-node consume BROKER URL PREFIX TOPIC GROUP NAME CLAIM_MS DELAY_MS [FILTER]";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (args, filter) = match args.as_slice() {
        [head @ .., f] if args.len() == 10 => (head, Some(f.as_str())),
        all => (all, None),
    };
    let [
        cmd,
        kind,
        url,
        prefix,
        topic,
        group,
        name,
        claim_ms,
        delay_ms,
    ] = args
    else {
        bail!("{USAGE}");
    };
    if cmd != "consume" {
        bail!("unknown command {cmd}; {USAGE}");
    }
    let claim = Duration::from_millis(claim_ms.parse()?);
    let delay = Duration::from_millis(delay_ms.parse()?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let broker: Box<dyn Broker> = match kind.as_str() {
            "redis-streams" => {
                let mut config = RedisStreamsConfig::new(url.as_str());
                config.prefix = prefix.clone();
                config.claim_idle = claim;
                config.block = Duration::from_millis(100);
                Box::new(RedisStreamsBroker::connect(config).await?)
            }
            "redis-pubsub" => {
                Box::new(RedisPubSubBroker::connect(url.as_str(), prefix.as_str()).await?)
            }
            "nats" => {
                let mut config = NatsConfig::new(url.as_str());
                config.stream_prefix = prefix.clone();
                config.ack_wait = claim;
                config.block = Duration::from_millis(100);
                Box::new(NatsBroker::connect(config).await?)
            }
            other => bail!("unknown broker {other}"),
        };
        let options = match group.as_str() {
            "-" => SubscribeOptions::default(),
            g => SubscribeOptions::group(g).named(name.as_str()),
        };
        let mut consumer = StreamConsumer::<Vec<u8>>::subscribe(&*broker, topic, options).await?;
        if filter == Some("even") {
            consumer = consumer.filter(|m| {
                m.get("i")
                    .and_then(|i| i.parse::<u64>().ok())
                    .is_some_and(|i| i % 2 == 0)
            });
        }
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready")?;
        out.flush()?;
        while let Some(item) = consumer.next().await {
            let item = item?;
            let i: u64 = item.metadata["i"].parse()?;
            let v = item.proxy.resolve().await?;
            let sum: u64 = v.iter().map(|&b| u64::from(b)).sum();
            let ok = if **v == proxystore_tests::object(i, v.len()) {
                "ok"
            } else {
                "bad"
            };
            writeln!(out, "item {i} {} {sum} {ok}", v.len())?;
            out.flush()?;
            tokio::time::sleep(delay).await;
        }
        let (missed, skipped, duplicates) =
            (consumer.missed(), consumer.skipped(), consumer.duplicates());
        consumer.close().await?;
        writeln!(out, "end {missed} {skipped} {duplicates}")?;
        Ok(())
    })
}
