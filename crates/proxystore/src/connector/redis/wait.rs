//! Waiting for a key to be written: [`Connector::set`] announces each write on a channel of
//! the key (`SET` and `PUBLISH` in one round trip), and a waiter subscribes to it before it
//! looks, so a write between its look and its wait still wakes it. No polling, and nothing to
//! configure on the server (keyspace notifications are off by default). Waiters share one
//! pub/sub connection per connector: a channel is subscribed while someone waits on it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use tokio::sync::Notify;

use super::RedisConnector;
use crate::connector::Connector;
use crate::error::Result;
use crate::key::Key;

/// The channel on which writes of the Redis key `k` (prefix included) are announced.
pub(super) fn channel(k: &[u8]) -> Vec<u8> {
    let mut c = b"proxystore:set:".to_vec();
    c.extend_from_slice(k);
    c
}

impl RedisConnector {
    /// Announce a write of the Redis key `k` (after a write that was not a plain `SET`).
    pub(super) async fn announce(&self, k: &[u8]) -> Result<()> {
        let ch = channel(k);
        self.run("PUBLISH", move |mut con| async move {
            redis::cmd("PUBLISH")
                .arg(ch)
                .arg(1)
                .query_async::<()>(&mut con)
                .await
        })
        .await
    }

    /// [`Connector::wait`]: subscribe (on the connector's shared subscriber connection), look,
    /// then wait for an announcement or the timeout.
    pub(super) async fn wait_on_channel(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        let subscriber = self.subscriber().await?;
        let ch = channel(&self.redis_key(key));
        let subscription = subscriber
            .subscribe(ch)
            .await
            .map_err(|e| self.inner.error("SUBSCRIBE", e))?;
        let announced = subscription.notify.notified();
        tokio::pin!(announced);
        // Registered before the look: an announcement between the look and the wait wakes it.
        announced.as_mut().enable();
        if self.exists(key).await? {
            return Ok(true);
        }
        let ended = subscriber.ended.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if subscriber.is_ended() {
            return self.exists(key).await;
        }
        tokio::select! {
            () = &mut announced => Ok(true),
            // The connection was lost, or the time ran out: one last look.
            () = &mut ended => self.exists(key).await,
            () = tokio::time::sleep_until(deadline) => self.exists(key).await,
        }
    }

    /// The connector's subscriber, made (again, after its connection was lost) when needed.
    async fn subscriber(&self) -> Result<Arc<Subscriber>> {
        let mut slot = self.inner.subscriber.lock().await;
        if let Some(s) = slot.as_ref()
            && !s.is_ended()
        {
            return Ok(s.clone());
        }
        // In a cluster, a PUBLISH reaches the subscribers of every node: any seed that answers
        // will do.
        let connect = self.inner.config.connect_timeout();
        let mut last = None;
        let mut pubsub = None;
        for client in self.inner.seed_clients()? {
            match tokio::time::timeout(connect, client.get_async_pubsub()).await {
                Ok(Ok(p)) => {
                    pubsub = Some(p);
                    break;
                }
                Ok(Err(e)) => last = Some(self.inner.error("SUBSCRIBE", e)),
                Err(_) => {
                    last = Some(crate::Error::Timeout {
                        operation: "redis connect (SUBSCRIBE)".into(),
                        after: connect,
                    });
                }
            }
        }
        let Some(pubsub) = pubsub else {
            return Err(last.unwrap_or_else(|| {
                crate::Error::backend_message(super::KIND, "no seed node to subscribe on", true)
            }));
        };
        let s = Subscriber::start(pubsub);
        *slot = Some(s.clone());
        Ok(s)
    }
}

/// One pub/sub connection per connector, shared by every waiter: channels are subscribed
/// while someone waits on them (counted), and a task hands each announcement to the waiters
/// of its channel.
pub(super) struct Subscriber {
    /// The sink and the waiter counts, changed together (so that a subscribe and an
    /// unsubscribe of one channel cannot cross).
    state: tokio::sync::Mutex<SubState>,
    /// The waiters of each channel (the map read by the dispatching task).
    channels: std::sync::Mutex<HashMap<Vec<u8>, Arc<Notify>>>,
    /// Notified once, when the connection's stream ends.
    ended: Notify,
    is_ended: AtomicBool,
    /// The dispatching task, stopped with the subscriber (which closes the connection).
    task: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(t) = self.task.get() {
            t.abort();
        }
    }
}

struct SubState {
    sink: redis::aio::PubSubSink,
    waiters: HashMap<Vec<u8>, usize>,
}

/// A waiter's registration: dropped, it gives its channel up (unsubscribed with the last).
pub(super) struct Subscription {
    subscriber: Arc<Subscriber>,
    channel: Vec<u8>,
    notify: Arc<Notify>,
}

impl Subscriber {
    fn start(pubsub: redis::aio::PubSub) -> Arc<Self> {
        let (sink, mut stream) = pubsub.split();
        let s = Arc::new(Subscriber {
            state: tokio::sync::Mutex::new(SubState {
                sink,
                waiters: HashMap::new(),
            }),
            channels: std::sync::Mutex::new(HashMap::new()),
            ended: Notify::new(),
            is_ended: AtomicBool::new(false),
            task: std::sync::OnceLock::new(),
        });
        let weak = Arc::downgrade(&s);
        let task = crate::runtime::io_handle().spawn(async move {
            while let Some(msg) = stream.next().await {
                let Some(s) = weak.upgrade() else { return };
                let Ok(ch) = msg.get_channel::<Vec<u8>>() else {
                    continue;
                };
                let notify = s.channels().get(&ch).cloned();
                if let Some(n) = notify {
                    n.notify_waiters();
                }
            }
            if let Some(s) = weak.upgrade() {
                s.is_ended.store(true, Ordering::SeqCst);
                s.ended.notify_waiters();
            }
        });
        let _ = s.task.set(task.abort_handle());
        s
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Arc<Notify>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_ended(&self) -> bool {
        self.is_ended.load(Ordering::SeqCst)
    }

    /// Count a waiter of `channel`, subscribing when it is the first.
    async fn subscribe(self: &Arc<Self>, channel: Vec<u8>) -> redis::RedisResult<Subscription> {
        let mut state = self.state.lock().await;
        let notify = self
            .channels()
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        let n = state.waiters.entry(channel.clone()).or_insert(0);
        *n += 1;
        if *n == 1
            && let Err(e) = state.sink.subscribe(&channel).await
        {
            state.waiters.remove(&channel);
            self.channels().remove(&channel);
            return Err(e);
        }
        Ok(Subscription {
            subscriber: self.clone(),
            channel,
            notify,
        })
    }

    /// A waiter of `channel` is gone; unsubscribe when it was the last.
    async fn release(&self, channel: Vec<u8>) {
        let mut state = self.state.lock().await;
        let Some(n) = state.waiters.get_mut(&channel) else {
            return;
        };
        *n -= 1;
        if *n > 0 {
            return;
        }
        state.waiters.remove(&channel);
        self.channels().remove(&channel);
        if let Err(e) = state.sink.unsubscribe(&channel).await {
            tracing::debug!(error = %e, "redis: cannot unsubscribe a future's channel");
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let subscriber = self.subscriber.clone();
        let channel = std::mem::take(&mut self.channel);
        crate::runtime::io_handle().spawn(async move { subscriber.release(channel).await });
    }
}
