//! Message brokers: what carries a stream's small messages from producers to consumers.
//!
//! [`Broker`] is open to third parties, like `proxystore::Connector`: implement it for any
//! system that can publish a message on a topic and deliver it to subscribers. The built-in
//! ones are [`memory::MemoryBroker`] (in-process: tests and single-process pipelines) and,
//! with the `redis` feature, `redis_streams::RedisStreamsBroker` (at least once, consumer
//! groups, acknowledgements) and `redis_pubsub::RedisPubSubBroker` (fan-out, at most once);
//! with the `nats` feature, `nats::NatsBroker` (NATS JetStream: at least once, durable
//! consumers, acknowledgements).
//!
//! A broker says what it promises in [`Broker::delivery`]: whether a consumer that dies before
//! acknowledging a message has it redelivered to another consumer of its group
//! ([`Guarantee::AtLeastOnce`]) or loses it ([`Guarantee::AtMostOnce`]), and whether messages
//! of a topic arrive in the order they were published.

pub mod memory;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis_pubsub;
#[cfg(feature = "redis")]
pub mod redis_streams;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// What a broker promises about delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// At most once or at least once.
    pub guarantee: Guarantee,
    /// Whether the messages of one topic reach each consumer group in publish order.
    pub ordered: bool,
}

/// How often a published message reaches a consumer group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Never twice, and lost if its consumer dies before using it (or nobody listens).
    AtMostOnce,
    /// Redelivered until a consumer of the group acknowledges it: possibly twice.
    AtLeastOnce,
}

/// Who receives a topic's messages.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// Consumers of one group share the topic's messages (each message goes to one of them);
    /// every group gets every message. `None`: a group of this consumer alone.
    pub group: Option<String>,
    /// This consumer's name within its group (brokers that track consumers by name use it to
    /// hand a dead consumer's messages to another). `None`: a random one.
    pub consumer: Option<String>,
}

impl SubscribeOptions {
    /// A consumer in group `group`.
    pub fn group(group: impl Into<String>) -> Self {
        SubscribeOptions {
            group: Some(group.into()),
            consumer: None,
        }
    }

    /// Name this consumer within its group.
    #[must_use]
    pub fn named(mut self, consumer: impl Into<String>) -> Self {
        self.consumer = Some(consumer.into());
        self
    }
}

/// A message broker: publishes messages on topics and delivers them to subscriptions.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// A short name of the broker kind, for errors and traces (`memory`, `redis-streams`, ...).
    fn kind(&self) -> &str;

    /// What it promises about delivery.
    fn delivery(&self) -> Delivery;

    /// Publish `message` on `topic`.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot take it.
    async fn publish(&self, topic: &str, message: Bytes) -> Result<()>;

    /// Publish `messages` on `topic`, in order. Brokers that can pipeline do it in one round
    /// trip; the default publishes them one by one. On an error some may have been published:
    /// the producer publishes them all again, and consumers skip what they handled already.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot take one of them.
    async fn publish_many(&self, topic: &str, messages: Vec<Bytes>) -> Result<()> {
        for message in messages {
            self.publish(topic, message).await?;
        }
        Ok(())
    }

    /// Record, where every subscription of the topic can read it, that `producer` ended
    /// `topic` (after publishing its end-of-stream message). Brokers that deliver every
    /// message to every consumer need not (the default does nothing).
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot take it.
    async fn mark_ended(&self, topic: &str, producer: &str) -> Result<()> {
        let _ = (topic, producer);
        Ok(())
    }

    /// Subscribe to `topic`.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot subscribe.
    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>>;
}

/// A subscription's side of a topic.
#[async_trait]
pub trait Subscription: Send {
    /// The next message; [`Polled::Idle`] after waiting a while (about a second at most) with
    /// nothing; [`Polled::Ended`] once the broker will deliver no more to this subscription.
    /// Must be cancel safe in the sense that nothing delivered is lost: return `Idle` rather
    /// than being cancelled.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker fails.
    async fn next(&mut self) -> Result<Polled>;

    /// Messages received already, up to `max`, without waiting: the consumer reads them
    /// with the one [`Subscription::next`] returned, to fetch their objects together and to
    /// acknowledge them together. Default: none.
    fn ready(&mut self, max: usize) -> Vec<Delivered> {
        let _ = max;
        Vec::new()
    }

    /// Producers that marked the topic ended ([`Broker::mark_ended`]): every consumer of a
    /// group learns it, not only the one the end-of-stream message went to. Default: none.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker fails.
    async fn ended(&mut self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    /// Whether every message published on the topic so far was delivered to this
    /// subscription's group and acknowledged: a consumer whose producers have ended goes on
    /// until then, so that what a dead consumer of the group held is not lost. Default: true.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker fails.
    async fn drained(&mut self) -> Result<bool> {
        Ok(true)
    }
}

/// What [`Subscription::next`] got.
#[derive(Debug)]
pub enum Polled {
    /// A message.
    Message(Delivered),
    /// Nothing for a while (ask again).
    Idle,
    /// Nothing ever again.
    Ended,
}

/// A delivered message, with how to acknowledge it.
#[non_exhaustive]
pub struct Delivered {
    /// The message as published.
    pub message: Bytes,
    /// Acknowledges it (at-least-once brokers redeliver it until then); `None` when the
    /// broker has nothing to acknowledge.
    pub ack: Option<Box<dyn Acknowledge>>,
    /// Whether the broker delivered it before (to this consumer or another of its group):
    /// then its objects may have been consumed already, and the consumer checks that they
    /// still exist before handing them out.
    pub redelivered: bool,
}

impl Delivered {
    /// A message delivered for the first time.
    pub fn new(message: Bytes, ack: Option<Box<dyn Acknowledge>>) -> Self {
        Delivered {
            message,
            ack,
            redelivered: false,
        }
    }

    /// Mark it delivered before ([`Delivered::redelivered`]).
    #[must_use]
    pub fn redelivered(mut self, again: bool) -> Self {
        self.redelivered = again;
        self
    }
}

impl std::fmt::Debug for Delivered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivered")
            .field("bytes", &self.message.len())
            .field("ack", &self.ack.is_some())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

/// Acknowledges one delivered message.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    /// The message was processed: the broker may forget it. Idempotent: the consumer calls it
    /// again when it failed with a temporary error.
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot take the acknowledgement.
    async fn ack(&self) -> Result<()>;

    /// Acknowledge without waiting for the broker to confirm it, where the broker can: the
    /// consumer acknowledges the messages it settles together this way, all but the last,
    /// which it acknowledges with [`Acknowledge::ack`] after them (a broker that takes one
    /// consumer's acknowledgements in order has then taken them all). One that is lost leaves
    /// its message to be delivered again. Default: [`Acknowledge::ack`].
    ///
    /// # Errors
    /// [`crate::StreamError::Broker`] when the broker cannot take the acknowledgement.
    async fn ack_unconfirmed(&self) -> Result<()> {
        self.ack().await
    }
}
