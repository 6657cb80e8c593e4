//! NATS JetStream: at-least-once delivery with durable consumers and acknowledgements.
//!
//! - A topic is the JetStream stream `<stream_prefix><topic>` (file storage, limits retention:
//!   [`NatsConfig::max_messages`], [`NatsConfig::max_age`]) holding the subjects
//!   `<subject_prefix>.<topic>.events` (the messages) and `<subject_prefix>.<topic>.ended.<producer>`
//!   (one per producer that ended the topic). A topic or producer name is escaped into subject
//!   tokens (characters other than ASCII letters, digits and `-` become `_XX`), so any name is a
//!   topic and two names never share a stream.
//! - `publish` waits for JetStream's acknowledgement (the message is stored) and carries a
//!   `Nats-Msg-Id` made from the message's bytes: a publish retried after a lost
//!   acknowledgement is stored once (within the stream's duplicate window, 2 minutes).
//! - A subscription is a pull consumer. A group is a durable consumer named after it, so its
//!   consumers share the topic's messages and a consumer that comes back resumes where the
//!   group is; a consumer alone gets a durable consumer of its own that the server removes
//!   after [`NatsConfig::inactive_threshold`] without a pull.
//! - A message is acknowledged when the consumer has consumed its events. The messages a
//!   consumer settles together are acknowledged at once, and the server confirms the last
//!   (it takes a consumer's acknowledgements in order): one request for them all. A message not acknowledged within
//!   [`NatsConfig::ack_wait`] (its consumer died, or hangs) is delivered again to a consumer of
//!   the group: at least once, so a message may be delivered twice.
//! - Order: messages reach a group in publish order, except redeliveries.
//! - The client reconnects by itself when the server goes away; meanwhile calls fail with
//!   temporary errors, and with file storage nothing acknowledged is lost when the server
//!   restarts.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;

use super::{
    Acknowledge, Broker, Delivered, Delivery, Guarantee, Polled, SubscribeOptions, Subscription,
};
use crate::error::{Result, StreamError};

const KIND: &str = "nats-jetstream";

/// Options of a [`NatsBroker`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NatsConfig {
    /// Server URL (`nats://127.0.0.1:4222`; `tls://` for TLS).
    pub url: String,
    /// Prefix of the JetStream streams' names (letters, digits, `-`, `_`).
    pub stream_prefix: String,
    /// First token(s) of the subjects.
    pub subject_prefix: String,
    /// Messages a topic's stream keeps at most; older ones go, acknowledged or not.
    pub max_messages: i64,
    /// How long a topic's stream keeps a message (`None`: until `max_messages` pushes it out).
    /// Messages never consumed go after this: pair it with a TTL on the objects' store.
    pub max_age: Option<Duration>,
    /// How long a delivered message may stay unacknowledged before it is delivered again.
    pub ack_wait: Duration,
    /// How long one pull waits for new messages before the subscription reports idle.
    pub block: Duration,
    /// Messages pulled at once.
    pub count: usize,
    /// How long the server keeps the consumer of a consumer alone after its last pull.
    pub inactive_threshold: Duration,
    /// How long a request (publish acknowledgement, consumer info) may take.
    pub request_timeout: Duration,
}

impl NatsConfig {
    /// Defaults for `url`: streams `PROXYSTORE_<topic>`, subjects `proxystore.stream.<topic>.*`,
    /// 100,000 messages, no age limit, redelivery after 30 s, pulls of 16 waiting 1 s, lone
    /// consumers kept 1 h, requests of 5 s.
    pub fn new(url: impl Into<String>) -> Self {
        NatsConfig {
            url: url.into(),
            stream_prefix: "PROXYSTORE_".into(),
            subject_prefix: "proxystore.stream".into(),
            max_messages: 100_000,
            max_age: None,
            ack_wait: Duration::from_secs(30),
            block: Duration::from_secs(1),
            count: 16,
            inactive_threshold: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// The NATS JetStream broker.
#[derive(Clone)]
pub struct NatsBroker {
    inner: Arc<Inner>,
}

struct Inner {
    config: NatsConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    /// Topics whose stream this process made sure of.
    streams: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for NatsBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBroker")
            .field("url", &self.inner.config.url)
            .field("stream_prefix", &self.inner.config.stream_prefix)
            .finish_non_exhaustive()
    }
}

/// A broker error; temporary when the client is not connected (the server went away and the
/// client is reconnecting) or the call timed out.
fn error(
    client: &async_nats::Client,
    what: &str,
    e: impl std::error::Error + Send + Sync + 'static,
    timed_out: bool,
) -> StreamError {
    let disconnected = client.connection_state() != async_nats::connection::State::Connected;
    StreamError::broker(KIND, what.to_owned(), e, timed_out || disconnected)
}

/// `name` as one subject token: ASCII letters, digits and `-` stay, every other byte is `_XX`.
fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The inverse of [`token`]; `None` for what `token` does not make.
fn untoken(t: &str) -> Option<String> {
    let mut out = Vec::with_capacity(t.len());
    let mut bytes = t.bytes();
    while let Some(b) = bytes.next() {
        if b == b'_' {
            let hi = char::from(bytes.next()?).to_digit(16)?;
            let lo = char::from(bytes.next()?).to_digit(16)?;
            out.push(u8::try_from(hi * 16 + lo).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

impl NatsBroker {
    /// Connect with `config`. The client reconnects by itself when the connection is lost.
    ///
    /// # Errors
    /// [`StreamError::Broker`] when the server cannot be reached.
    pub async fn connect(config: NatsConfig) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            // Back to a restarted server quickly: 50 ms doubling to at most 2 s.
            .reconnect_delay_callback(|attempts| {
                let shift = u32::try_from(attempts.min(6)).unwrap_or(6);
                Duration::from_millis(50 << shift).min(Duration::from_secs(2))
            })
            .connect(config.url.as_str())
            .await
            .map_err(|e| {
                StreamError::broker(KIND, format!("connect to {}", config.url), e, true)
            })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.request_timeout);
        Ok(NatsBroker {
            inner: Arc::new(Inner {
                config,
                client,
                js,
                streams: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The client, for callers that want to share its connection.
    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// The name of the JetStream stream that holds `topic`'s messages (for inspection:
    /// `nats stream info`, its storage, its removal).
    ///
    /// ```
    /// # async fn f(broker: proxystore_stream::broker::nats::NatsBroker) {
    /// assert_eq!(broker.stream_name("frames/a"), "PROXYSTORE_frames_2Fa");
    /// # }
    /// ```
    pub fn stream_name(&self, topic: &str) -> String {
        self.inner.stream_name(topic)
    }
}

impl Inner {
    fn stream_name(&self, topic: &str) -> String {
        format!("{}{}", self.config.stream_prefix, token(topic))
    }

    fn subject(&self, topic: &str) -> String {
        format!("{}.{}", self.config.subject_prefix, token(topic))
    }

    fn err(&self, what: &str, e: impl std::error::Error + Send + Sync + 'static) -> StreamError {
        error(&self.client, what, e, false)
    }

    /// The topic's stream, made if missing.
    async fn stream(&self, topic: &str) -> Result<stream::Stream> {
        let base = self.subject(topic);
        let config = stream::Config {
            name: self.stream_name(topic),
            subjects: vec![format!("{base}.>")],
            max_messages: self.config.max_messages,
            max_age: self.config.max_age.unwrap_or(Duration::ZERO),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            ..Default::default()
        };
        let s = self.js.get_or_create_stream(config).await.map_err(|e| {
            let timed_out = matches!(
                e.kind(),
                jetstream::context::CreateStreamErrorKind::TimedOut
                    | jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
            );
            error(&self.client, "create stream", e, timed_out)
        })?;
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_owned());
        Ok(s)
    }

    async fn ensure_stream(&self, topic: &str) -> Result<()> {
        let known = self
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(topic);
        if !known {
            self.stream(topic).await?;
        }
        Ok(())
    }

    /// Publish `payload` on `subject` of `topic`'s stream and wait for it to be stored; the
    /// stream is made again if the server lost it.
    async fn publish(&self, topic: &str, subject: String, payload: Bytes) -> Result<()> {
        use jetstream::context::PublishErrorKind as K;
        self.ensure_stream(topic).await?;
        let headers = message_id(&payload);
        for attempt in 0..2 {
            let sent = self
                .js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await;
            let acked = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match acked {
                Ok(_) => return Ok(()),
                // No stream takes the subject (the server lost it, or was reset): make it.
                Err(e) if e.kind() == K::StreamNotFound && attempt == 0 => {
                    self.stream(topic).await?;
                }
                Err(e) => {
                    let timed_out = matches!(e.kind(), K::TimedOut | K::BrokenPipe);
                    return Err(error(&self.client, "publish", e, timed_out));
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// Publish `payloads` on `subject` of `topic`'s stream: all sent, then every
    /// acknowledgement awaited (one round trip, not one each). On any failure they are
    /// published again one by one ([`Inner::publish`]); their message ids keep those stored
    /// already from being stored twice.
    async fn publish_many(&self, topic: &str, subject: String, payloads: Vec<Bytes>) -> Result<()> {
        self.ensure_stream(topic).await?;
        let mut acks = Vec::with_capacity(payloads.len());
        let mut sent_all = true;
        for payload in &payloads {
            match self
                .js
                .publish_with_headers(subject.clone(), message_id(payload), payload.clone())
                .await
            {
                Ok(ack) => acks.push(ack),
                Err(_) => {
                    sent_all = false;
                    break;
                }
            }
        }
        let mut stored_all = sent_all;
        for ack in acks {
            stored_all &= ack.await.is_ok();
        }
        if stored_all {
            return Ok(());
        }
        for payload in payloads {
            self.publish(topic, subject.clone(), payload).await?;
        }
        Ok(())
    }
}

/// The `Nats-Msg-Id` header of `payload`, made from its bytes: JetStream stores a message
/// published again (after a lost acknowledgement) once.
fn message_id(payload: &[u8]) -> async_nats::HeaderMap {
    let id = xxhash_rust::xxh3::xxh3_128(payload);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{id:032x}").as_str(),
    );
    headers
}

#[async_trait]
impl Broker for NatsBroker {
    fn kind(&self) -> &str {
        KIND
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            guarantee: Guarantee::AtLeastOnce,
            ordered: true,
        }
    }

    async fn publish(&self, topic: &str, message: Bytes) -> Result<()> {
        let subject = format!("{}.events", self.inner.subject(topic));
        self.inner.publish(topic, subject, message).await
    }

    async fn publish_many(&self, topic: &str, messages: Vec<Bytes>) -> Result<()> {
        let subject = format!("{}.events", self.inner.subject(topic));
        self.inner.publish_many(topic, subject, messages).await
    }

    /// An empty message on `<topic subject>.ended.<producer>`.
    async fn mark_ended(&self, topic: &str, producer: &str) -> Result<()> {
        let subject = format!("{}.ended.{}", self.inner.subject(topic), token(producer));
        self.inner.publish(topic, subject, Bytes::new()).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let stream = self.inner.stream(topic).await?;
        let consumer_name = options
            .consumer
            .clone()
            .unwrap_or_else(|| proxystore::Key::random().as_str().to_owned());
        let (durable, inactive) = match &options.group {
            Some(g) => (format!("g-{}", token(g)), Duration::ZERO),
            None => (
                format!("alone-{}", token(&consumer_name)),
                self.inner.config.inactive_threshold,
            ),
        };
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.inner.config.ack_wait,
            filter_subject: format!("{}.events", self.inner.subject(topic)),
            inactive_threshold: inactive,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&durable, config)
            .await
            .map_err(|e| {
                let timed_out = matches!(e.kind(), jetstream::stream::ConsumerErrorKind::TimedOut);
                error(&self.inner.client, "create consumer", e, timed_out)
            })?;
        Ok(Box::new(NatsSubscription {
            inner: self.inner.clone(),
            topic: topic.to_owned(),
            stream,
            consumer,
            messages: None,
            buffered: VecDeque::new(),
        }))
    }
}

struct NatsSubscription {
    inner: Arc<Inner>,
    topic: String,
    stream: stream::Stream,
    consumer: consumer::PullConsumer,
    /// The continuous pull, made on first use and again after it failed.
    messages: Option<consumer::pull::Stream>,
    buffered: VecDeque<jetstream::Message>,
}

impl NatsSubscription {
    async fn pull(&mut self) -> Result<&mut consumer::pull::Stream> {
        if self.messages.is_none() {
            let config = &self.inner.config;
            let messages = self
                .consumer
                .stream()
                .max_messages_per_batch(config.count)
                .expires(config.block.max(Duration::from_millis(100)))
                .heartbeat(config.block.max(Duration::from_millis(100)) / 2)
                .messages()
                .await
                .map_err(|e| {
                    let timed_out =
                        matches!(e.kind(), jetstream::consumer::StreamErrorKind::TimedOut);
                    error(&self.inner.client, "pull", e, timed_out)
                })?;
            self.messages = Some(messages);
        }
        Ok(self
            .messages
            .as_mut()
            .unwrap_or_else(|| unreachable!("set above")))
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self) -> Result<Polled> {
        use jetstream::consumer::pull::MessagesErrorKind as K;
        if let Some(m) = self.buffered.pop_front() {
            return Ok(Polled::Message(delivered(m)));
        }
        let block = self.inner.config.block;
        let client = self.inner.client.clone();
        let messages = self.pull().await?;
        match tokio::time::timeout(block, messages.next()).await {
            Err(_) => Ok(Polled::Idle),
            Ok(Some(Ok(m))) => Ok(Polled::Message(delivered(m))),
            // The pull went away (the server restarted, the connection dropped): pull again.
            Ok(Some(Err(e))) if matches!(e.kind(), K::MissingHeartbeat | K::NoResponders) => {
                tracing::debug!(topic = self.topic, error = %e, "nats: pulling again");
                self.messages = None;
                Ok(Polled::Idle)
            }
            Ok(Some(Err(e))) => {
                self.messages = None;
                let temporary = matches!(e.kind(), K::Pull | K::Other);
                Err(error(&client, "pull", e, temporary))
            }
            Ok(None) => {
                self.messages = None;
                Ok(Polled::Idle)
            }
        }
    }

    /// What the pull has received already.
    fn ready(&mut self, max: usize) -> Vec<Delivered> {
        use futures::FutureExt as _;
        let mut out: Vec<Delivered> = Vec::new();
        while out.len() < max {
            if let Some(m) = self.buffered.pop_front() {
                out.push(delivered(m));
                continue;
            }
            let Some(messages) = self.messages.as_mut() else {
                break;
            };
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => out.push(delivered(m)),
                // An error or the pull's end: the next `next` pulls again.
                Some(Some(Err(_)) | None) => {
                    self.messages = None;
                    break;
                }
                None => break,
            }
        }
        out
    }

    /// The producers whose `ended` subject holds a message.
    async fn ended(&mut self) -> Result<Vec<String>> {
        let filter = format!("{}.ended.>", self.inner.subject(&self.topic));
        let mut subjects = self
            .stream
            .info_with_subjects(&filter)
            .await
            .map_err(|e| self.inner.err("stream info", e))?;
        let prefix = format!("{}.ended.", self.inner.subject(&self.topic));
        let mut out = Vec::new();
        while let Some(next) = subjects.next().await {
            let (subject, _) = next.map_err(|e| self.inner.err("stream info", e))?;
            if let Some(p) = subject.strip_prefix(&prefix).and_then(untoken) {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// The consumer has no message left to deliver and none awaiting acknowledgement.
    async fn drained(&mut self) -> Result<bool> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| self.inner.err("consumer info", e))?;
        Ok(info.num_pending == 0 && info.num_ack_pending == 0 && self.buffered.is_empty())
    }
}

fn delivered(m: jetstream::Message) -> Delivered {
    let again = m.info().is_ok_and(|i| i.delivered > 1);
    Delivered::new(m.message.payload.clone(), Some(Box::new(NatsAck(m)))).redelivered(again)
}

struct NatsAck(jetstream::Message);

#[async_trait]
impl Acknowledge for NatsAck {
    /// Acknowledged and confirmed by the server: a message acknowledged here is not
    /// delivered again.
    async fn ack(&self) -> Result<()> {
        self.0
            .double_ack()
            .await
            .map_err(|source| StreamError::Broker {
                broker: KIND.to_owned(),
                message: "ack".to_owned(),
                source: Some(source),
                temporary: true,
            })
    }

    /// `+ACK` published, not confirmed: the consumer's acknowledgements reach the server in
    /// order on the client's one connection, and it confirms the last of a settlement.
    async fn ack_unconfirmed(&self) -> Result<()> {
        self.0.ack().await.map_err(|source| StreamError::Broker {
            broker: KIND.to_owned(),
            message: "ack".to_owned(),
            source: Some(source),
            temporary: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe_and_invert() {
        for name in ["frames", "a.b", "a b", "*", ">", "x_y", "héllo", "", "A-9"] {
            let t = token(name);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
            assert_eq!(untoken(&t).as_deref(), Some(name));
        }
        // Two names never share a token.
        assert_ne!(token("a.b"), token("a_2Eb"));
        assert_eq!(untoken("_Z1"), None);
        assert_eq!(untoken("_4"), None);
    }
}
