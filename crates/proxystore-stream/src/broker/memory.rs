//! An in-process broker, for tests and single-process pipelines.
//!
//! Each topic is a log of messages; each consumer group reads it from the start of what the
//! log holds when the group is made, and shares its messages among its consumers (each message
//! to one of them). A message is dropped from the log once every group has read it. Delivery
//! is ordered and at most once: there is no process to die apart from this one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;

use super::{Broker, Delivered, Delivery, Guarantee, Polled, SubscribeOptions, Subscription};
use crate::error::Result;

/// How long a subscription waits before it says it is idle.
const IDLE: std::time::Duration = std::time::Duration::from_millis(250);

/// The in-process broker. Clones share its topics.
#[derive(Clone, Debug, Default)]
pub struct MemoryBroker {
    topics: Arc<Mutex<HashMap<String, Arc<Topic>>>>,
}

#[derive(Debug, Default)]
struct Topic {
    log: Mutex<Log>,
    published: Notify,
    ended: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
struct Log {
    /// Offset of `messages[0]`.
    base: u64,
    messages: VecDeque<Bytes>,
    /// Each group's next offset.
    groups: HashMap<String, u64>,
}

impl Log {
    /// Drop what every group has read (nothing while there is no group yet).
    fn trim(&mut self) {
        let Some(low) = self.groups.values().min().copied() else {
            return;
        };
        while self.base < low && self.messages.pop_front().is_some() {
            self.base += 1;
        }
    }
}

impl MemoryBroker {
    /// A broker with no topics.
    pub fn new() -> Self {
        MemoryBroker::default()
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        self.topics
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Messages of `topic` still held (not yet read by every group).
    pub fn held(&self, topic: &str) -> usize {
        self.topic(topic)
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .messages
            .len()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    fn kind(&self) -> &str {
        "memory"
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

    async fn publish_many(&self, topic: &str, messages: Vec<Bytes>) -> Result<()> {
        let t = self.topic(topic);
        t.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .messages
            .extend(messages);
        t.published.notify_waiters();
        Ok(())
    }

    async fn mark_ended(&self, topic: &str, producer: &str) -> Result<()> {
        self.topic(topic)
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(producer.to_owned());
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: &str,
        options: &SubscribeOptions,
    ) -> Result<Box<dyn Subscription>> {
        let t = self.topic(topic);
        let group = options
            .group
            .clone()
            .unwrap_or_else(|| format!("$alone-{}", proxystore::Key::random()));
        {
            let mut log = t.log.lock().unwrap_or_else(|e| e.into_inner());
            let base = log.base;
            log.groups.entry(group.clone()).or_insert(base);
        }
        Ok(Box::new(MemorySubscription { topic: t, group }))
    }
}

struct MemorySubscription {
    topic: Arc<Topic>,
    group: String,
}

impl MemorySubscription {
    /// Up to `max` messages of the group's next ones, taken.
    fn take(&self, max: usize) -> Vec<Delivered> {
        let mut log = self.topic.log.lock().unwrap_or_else(|e| e.into_inner());
        let base = log.base;
        let next = log.groups.get(&self.group).copied().unwrap_or(base);
        let index = usize::try_from(next.saturating_sub(base)).unwrap_or(usize::MAX);
        let taken: Vec<Delivered> = log
            .messages
            .iter()
            .skip(index)
            .take(max)
            .map(|m| Delivered::new(m.clone(), None))
            .collect();
        if !taken.is_empty() {
            log.groups
                .insert(self.group.clone(), next + taken.len() as u64);
            log.trim();
        }
        taken
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Result<Polled> {
        let published = self.topic.published.notified();
        tokio::pin!(published);
        published.as_mut().enable();
        if let Some(m) = self.take(1).pop() {
            return Ok(Polled::Message(m));
        }
        // Nothing is taken before the message is handed out: a timeout loses nothing.
        let _ = tokio::time::timeout(IDLE, published).await;
        Ok(Polled::Idle)
    }

    fn ready(&mut self, max: usize) -> Vec<Delivered> {
        self.take(max)
    }

    async fn ended(&mut self) -> Result<Vec<String>> {
        Ok(self
            .topic
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    /// Read to the end (delivery is acknowledgement here).
    async fn drained(&mut self) -> Result<bool> {
        let log = self.topic.log.lock().unwrap_or_else(|e| e.into_inner());
        let end = log.base + log.messages.len() as u64;
        Ok(log.groups.get(&self.group).is_none_or(|&next| next >= end))
    }
}
