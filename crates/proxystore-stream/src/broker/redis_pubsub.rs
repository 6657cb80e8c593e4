//! Redis pub/sub: fan-out, at most once.
//!
//! A topic is the channel `<prefix><topic>`; `publish` is `PUBLISH`, and every subscription
//! (each on a connection of its own) gets every message published while it is subscribed.
//! Messages published while nobody listens, or while a subscriber's connection is down, are
//! lost: Redis keeps nothing. There are no consumer groups (a subscription that asks for one
//! is refused) and nothing to acknowledge. Order: as published, per channel.
//!
//! Objects of lost events stay in the store: give such topics a store with a TTL (or turn
//! evict-after-consume off and bound the objects otherwise).

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use redis::aio::ConnectionManager;

use super::{Broker, Delivered, Delivery, Guarantee, Polled, SubscribeOptions, Subscription};
use crate::error::{Result, StreamError};

const KIND: &str = "redis-pubsub";

/// The Redis pub/sub broker.
#[derive(Clone)]
pub struct RedisPubSubBroker {
    prefix: String,
    client: redis::Client,
    manager: ConnectionManager,
}

impl std::fmt::Debug for RedisPubSubBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPubSubBroker")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn error(what: &str, e: redis::RedisError) -> StreamError {
    let temporary = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
    StreamError::broker(KIND, what.to_owned(), e, temporary)
}

impl RedisPubSubBroker {
    /// Connect to `url`; channels are named `<prefix><topic>`.
    ///
    /// # Errors
    /// [`StreamError::Broker`] when the URL is bad or the server cannot be reached.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self> {
        let client = redis::Client::open(url).map_err(|e| error("client", e))?;
        let manager = ConnectionManager::new(client.clone())
            .await
            .map_err(|e| error("connect", e))?;
        Ok(RedisPubSubBroker {
            prefix: prefix.into(),
            client,
            manager,
        })
    }
}

#[async_trait]
impl Broker for RedisPubSubBroker {
    fn kind(&self) -> &str {
        KIND
    }

    fn delivery(&self) -> Delivery {
        Delivery {
            guarantee: Guarantee::AtMostOnce,
            ordered: true,
        }
    }

    async fn publish(&self, topic: &str, message: Bytes) -> Result<()> {
        self.publish_many(topic, vec![message]).await
    }

    /// One pipeline of `PUBLISH`es: one round trip.
    async fn publish_many(&self, topic: &str, messages: Vec<Bytes>) -> Result<()> {
        let channel = format!("{}{topic}", self.prefix);
        let mut pipe = redis::pipe();
        for m in &messages {
            pipe.cmd("PUBLISH").arg(&channel).arg(m.as_ref()).ignore();
        }
        pipe.query_async::<()>(&mut self.manager.clone())
            .await
            .map_err(|e| error("PUBLISH", e))
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        if let Some(group) = &options.group {
            return Err(StreamError::Broker {
                broker: KIND.into(),
                message: format!(
                    "pub/sub has no consumer groups (asked for group '{group}'): every subscriber gets every message; use Redis Streams to share a topic"
                ),
                source: None,
                temporary: false,
            });
        }
        let mut pubsub = self
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| error("connect", e))?;
        pubsub
            .subscribe(format!("{}{topic}", self.prefix))
            .await
            .map_err(|e| error("SUBSCRIBE", e))?;
        Ok(Box::new(PubSubSubscription {
            messages: Box::pin(pubsub.into_on_message()),
            ended: false,
        }))
    }
}

struct PubSubSubscription {
    messages: std::pin::Pin<Box<dyn futures::Stream<Item = redis::Msg> + Send>>,
    /// The connection ended (its stream is not polled again).
    ended: bool,
}

#[async_trait]
impl Subscription for PubSubSubscription {
    /// `Ended` when the connection is lost: what was published meanwhile is gone.
    async fn next(&mut self) -> Result<Polled> {
        if self.ended {
            return Ok(Polled::Ended);
        }
        // The messages wait in a channel: a timeout loses none.
        match tokio::time::timeout(std::time::Duration::from_millis(250), self.messages.next())
            .await
        {
            Err(_) => Ok(Polled::Idle),
            Ok(None) => {
                self.ended = true;
                Ok(Polled::Ended)
            }
            Ok(Some(m)) => Ok(Polled::Message(delivered(&m))),
        }
    }

    /// What the connection has received already.
    fn ready(&mut self, max: usize) -> Vec<Delivered> {
        use futures::FutureExt as _;
        let mut out = Vec::new();
        while out.len() < max && !self.ended {
            match self.messages.next().now_or_never() {
                Some(Some(m)) => out.push(delivered(&m)),
                // The connection ended: the next `next` says so.
                Some(None) => self.ended = true,
                None => break,
            }
        }
        out
    }
}

fn delivered(m: &redis::Msg) -> Delivered {
    Delivered::new(Bytes::copy_from_slice(m.get_payload_bytes()), None)
}
