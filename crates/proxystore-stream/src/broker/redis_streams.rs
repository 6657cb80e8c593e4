//! Redis Streams: at-least-once delivery with consumer groups and acknowledgements.
//!
//! - A topic is the stream `<prefix><topic>`; `publish` is `XADD` (trimmed to about
//!   [`RedisStreamsConfig::max_len`] entries).
//! - A subscription is a consumer of a group (`XGROUP CREATE ... 0 MKSTREAM`: a new group
//!   starts at the beginning of what the stream holds). It reads with `XREADGROUP`, first its
//!   own pending entries (what it was given before a restart under the same name), then new
//!   ones, blocking up to [`RedisStreamsConfig::block`] on a connection of its own.
//! - An entry is acknowledged (`XACK`) when the consumer has consumed its events. Entries
//!   another consumer of the group was given and has not acknowledged for
//!   [`RedisStreamsConfig::claim_idle`] (it died, or hangs) are claimed (`XAUTOCLAIM`) and
//!   delivered here: at least once, so an entry may be delivered twice.
//! - Order: entries reach a group in the order they were added, except that claimed entries
//!   come when they are claimed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};

use super::{
    Acknowledge, Broker, Delivered, Delivery, Guarantee, Polled, SubscribeOptions, Subscription,
};
use crate::error::{Result, StreamError};

const KIND: &str = "redis-streams";
/// The field of an entry that holds the message.
const FIELD: &str = "m";

/// Options of a [`RedisStreamsBroker`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStreamsConfig {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Prefix of the streams' keys.
    pub prefix: String,
    /// Entries a stream keeps, about (`XADD MAXLEN ~`): acknowledged or not, older entries
    /// go. Size it above what consumers may lag behind.
    pub max_len: u64,
    /// How long an entry given to a consumer may stay unacknowledged before another consumer
    /// of its group takes it over.
    pub claim_idle: Duration,
    /// How long one read blocks waiting for new entries.
    pub block: Duration,
    /// Entries read at once.
    pub count: usize,
}

impl RedisStreamsConfig {
    /// Defaults for `url`: prefix `proxystore:stream:`, 100,000 entries, claim after 30 s,
    /// block 1 s, 16 entries a read.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStreamsConfig {
            url: url.into(),
            prefix: "proxystore:stream:".into(),
            max_len: 100_000,
            claim_idle: Duration::from_secs(30),
            block: Duration::from_secs(1),
            count: 16,
        }
    }
}

/// The Redis Streams broker.
#[derive(Clone)]
pub struct RedisStreamsBroker {
    config: RedisStreamsConfig,
    client: redis::Client,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisStreamsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStreamsBroker")
            .field("prefix", &self.config.prefix)
            .field("claim_idle", &self.config.claim_idle)
            .finish_non_exhaustive()
    }
}

fn error(what: &str, e: redis::RedisError) -> StreamError {
    let temporary =
        e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout();
    StreamError::broker(KIND, what.to_owned(), e, temporary)
}

impl RedisStreamsBroker {
    /// Connect with `config`.
    ///
    /// # Errors
    /// [`StreamError::Broker`] when the URL is bad or the server cannot be reached.
    pub async fn connect(config: RedisStreamsConfig) -> Result<Self> {
        let client = redis::Client::open(config.url.as_str()).map_err(|e| error("client", e))?;
        let manager = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| error("connect", e))?;
        Ok(RedisStreamsBroker {
            config,
            client,
            manager,
        })
    }

    fn key(&self, topic: &str) -> String {
        format!("{}{topic}", self.config.prefix)
    }
}

/// The hash of the producers that ended the stream `key`.
fn ended_key(key: &str) -> String {
    format!("{key}:ended")
}

/// The fields of a reply that is a map (RESP3) or a flat list of names and values (RESP2).
fn fields(v: &redis::Value) -> std::collections::HashMap<String, redis::Value> {
    let mut out = std::collections::HashMap::new();
    match v {
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                if let Some(k) = as_text(k) {
                    out.insert(k, v.clone());
                }
            }
        }
        redis::Value::Array(items) => {
            for pair in items.chunks(2) {
                if let [k, v] = pair
                    && let Some(k) = as_text(k)
                {
                    out.insert(k, v.clone());
                }
            }
        }
        _ => {}
    }
    out
}

/// [`fields`] of each element of a list reply.
fn fields_of_list(v: &redis::Value) -> Vec<std::collections::HashMap<String, redis::Value>> {
    match v {
        redis::Value::Array(items) => items.iter().map(fields).collect(),
        _ => Vec::new(),
    }
}

fn as_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn as_int(v: &redis::Value) -> Option<i64> {
    match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    }
}

#[async_trait]
impl Broker for RedisStreamsBroker {
    fn kind(&self) -> &str {
        KIND
    }

    /// `HSET <stream>:ended <producer> 1`.
    async fn mark_ended(&self, topic: &str, producer: &str) -> Result<()> {
        let mut con = self.manager.clone();
        redis::cmd("HSET")
            .arg(ended_key(&self.key(topic)))
            .arg(producer)
            .arg(1)
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| error("HSET", e))
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            guarantee: Guarantee::AtLeastOnce,
            ordered: true,
        }
    }

    async fn publish(&self, topic: &str, message: Bytes) -> Result<()> {
        self.publish_many(topic, vec![message]).await
    }

    /// One pipeline of `XADD`s: one round trip.
    async fn publish_many(&self, topic: &str, messages: Vec<Bytes>) -> Result<()> {
        let key = self.key(topic);
        let mut pipe = redis::pipe();
        for m in &messages {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.max_len)
                .arg("*")
                .arg(FIELD)
                .arg(m.as_ref())
                .ignore();
        }
        pipe.query_async::<()>(&mut self.manager.clone())
            .await
            .map_err(|e| error("XADD", e))
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let key = self.key(topic);
        let consumer = options
            .consumer
            .clone()
            .unwrap_or_else(|| proxystore::Key::random().as_str().to_owned());
        let group = options
            .group
            .clone()
            .unwrap_or_else(|| format!("alone-{consumer}"));
        create_group(&mut self.manager.clone(), &key, &group).await?;
        // Blocking reads hold their connection: one of its own.
        let reader = reader(&self.client, self.config.block).await?;
        Ok(Box::new(RedisStreamsSubscription {
            config: self.config.clone(),
            client: self.client.clone(),
            key,
            group,
            consumer,
            reader: Some(reader),
            acker: self.manager.clone(),
            buffered: VecDeque::new(),
            own_pending: Some("0".into()),
            next_claim: Instant::now(),
        }))
    }
}

/// A connection for blocking reads of up to `block`: its replies may take that long, past the
/// client's default response timeout (500 ms), which would fail every read that waits.
async fn reader(client: &redis::Client, block: Duration) -> Result<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(block + Duration::from_secs(5)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| error("connect", e))
}

/// `XGROUP CREATE <key> <group> 0 MKSTREAM`: a new group starts at the beginning of the stream;
/// a group that exists is left as it is.
async fn create_group(con: &mut ConnectionManager, key: &str, group: &str) -> Result<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(con)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(error("XGROUP CREATE", e)),
    }
}

struct RedisStreamsSubscription {
    config: RedisStreamsConfig,
    client: redis::Client,
    key: String,
    group: String,
    consumer: String,
    /// The connection of the blocking reads; `None` after it failed (made again on the next
    /// read: a multiplexed connection does not reconnect by itself).
    reader: Option<MultiplexedConnection>,
    acker: ConnectionManager,
    /// Entries read, and whether each was delivered before (own pending, claimed).
    buffered: VecDeque<(StreamId, bool)>,
    /// Where reading this consumer's own pending entries (given to it before a restart under
    /// the same name) goes on from; `None` once they are all read.
    own_pending: Option<String>,
    next_claim: Instant,
}

impl RedisStreamsSubscription {
    /// Read entries from `from` (`0`: this consumer's pending ones; `>`: new ones).
    async fn read(&mut self, from: &str, block: Option<Duration>) -> Result<Vec<StreamId>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.count);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis().max(1) as u64);
        }
        cmd.arg("STREAMS").arg(&self.key).arg(from);
        let reader = match &mut self.reader {
            Some(r) => r,
            None => self
                .reader
                .insert(reader(&self.client, self.config.block).await?),
        };
        let reply: Option<StreamReadReply> = match cmd.query_async(reader).await {
            Ok(r) => r,
            Err(e) => {
                self.reader = None;
                return Err(self.lost_group(e, "XREADGROUP").await);
            }
        };
        Ok(reply
            .map(|r| r.keys.into_iter().flat_map(|k| k.ids).collect())
            .unwrap_or_default())
    }

    /// Take over entries other consumers of the group left unacknowledged too long.
    async fn claim(&mut self) -> Result<Vec<StreamId>> {
        let reply: redis::RedisResult<StreamAutoClaimReply> = redis::cmd("XAUTOCLAIM")
            .arg(&self.key)
            .arg(&self.group)
            .arg(&self.consumer)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.config.count)
            .query_async(&mut self.acker)
            .await;
        match reply {
            Ok(r) => Ok(r.claimed),
            Err(e) => Err(self.lost_group(e, "XAUTOCLAIM").await),
        }
    }

    /// The error of `what`; when the group is gone (a server that restarted without the
    /// stream), the group is made again first and the error is temporary: the next try reads
    /// from the start of what the stream holds.
    async fn lost_group(&mut self, e: redis::RedisError, what: &str) -> StreamError {
        if e.code() != Some("NOGROUP") {
            return error(what, e);
        }
        tracing::warn!(
            stream = self.key,
            group = self.group,
            "redis streams: the group is gone (server restarted without it?); making it again"
        );
        if let Err(again) = create_group(&mut self.acker, &self.key, &self.group).await {
            return again;
        }
        self.own_pending = Some("0".into());
        StreamError::broker(KIND, format!("{what}: the group was gone"), e, true)
    }

    fn delivered(&self, entry: StreamId) -> Delivered {
        let message = match entry.map.get(FIELD) {
            Some(redis::Value::BulkString(b)) => Bytes::from(b.clone()),
            // Not ours: an empty message, which the consumer skips (and acknowledges).
            _ => Bytes::new(),
        };
        Delivered::new(
            message,
            Some(Box::new(RedisStreamsAck {
                con: self.acker.clone(),
                key: self.key.clone(),
                group: self.group.clone(),
                id: entry.id,
            })),
        )
    }
}

#[async_trait]
impl Subscription for RedisStreamsSubscription {
    async fn next(&mut self) -> Result<Polled> {
        loop {
            if let Some((entry, again)) = self.buffered.pop_front() {
                return Ok(Polled::Message(self.delivered(entry).redelivered(again)));
            }
            if let Some(from) = self.own_pending.take() {
                let own = self.read(&from, None).await?;
                self.own_pending = own.last().map(|e| e.id.clone());
                self.buffered.extend(own.into_iter().map(|e| (e, true)));
                continue;
            }
            if Instant::now() >= self.next_claim {
                self.next_claim = Instant::now() + self.config.claim_idle / 2;
                let claimed = self.claim().await?;
                if !claimed.is_empty() {
                    self.buffered.extend(claimed.into_iter().map(|e| (e, true)));
                    continue;
                }
            }
            let block = self
                .config
                .block
                .min(self.next_claim.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let fresh = self.read(">", Some(block)).await?;
            if fresh.is_empty() {
                return Ok(Polled::Idle);
            }
            self.buffered.extend(fresh.into_iter().map(|e| (e, false)));
        }
    }

    /// Entries of the last read not handed out yet.
    fn ready(&mut self, max: usize) -> Vec<Delivered> {
        let n = max.min(self.buffered.len());
        let taken: Vec<(StreamId, bool)> = self.buffered.drain(..n).collect();
        taken
            .into_iter()
            .map(|(entry, again)| self.delivered(entry).redelivered(again))
            .collect()
    }

    async fn ended(&mut self) -> Result<Vec<String>> {
        redis::cmd("HKEYS")
            .arg(ended_key(&self.key))
            .query_async(&mut self.acker)
            .await
            .map_err(|e| error("HKEYS", e))
    }

    /// `XINFO GROUPS`: the group has no entry pending and none left to read (`lag` 0; when
    /// Redis cannot tell the lag, its last delivered id is the stream's last id).
    async fn drained(&mut self) -> Result<bool> {
        let groups: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.key)
            .query_async(&mut self.acker)
            .await
            .map_err(|e| error("XINFO GROUPS", e))?;
        let Some(info) = fields_of_list(&groups)
            .into_iter()
            .find(|g| g.get("name").and_then(as_text).as_deref() == Some(self.group.as_str()))
        else {
            return Ok(false);
        };
        let pending = info.get("pending").and_then(as_int).unwrap_or(1);
        if pending > 0 {
            return Ok(false);
        }
        if let Some(lag) = info.get("lag").and_then(as_int) {
            return Ok(lag == 0);
        }
        let stream: redis::Value = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(&self.key)
            .query_async(&mut self.acker)
            .await
            .map_err(|e| error("XINFO STREAM", e))?;
        let last = fields(&stream).get("last-generated-id").and_then(as_text);
        Ok(last.is_some() && last == info.get("last-delivered-id").and_then(as_text))
    }
}

struct RedisStreamsAck {
    con: ConnectionManager,
    key: String,
    group: String,
    id: String,
}

#[async_trait]
impl Acknowledge for RedisStreamsAck {
    async fn ack(&self) -> Result<()> {
        let mut con = self.con.clone();
        con.xack::<_, _, _, ()>(&self.key, &self.group, &[&self.id])
            .await
            .map_err(|e| error("XACK", e))
    }
}
