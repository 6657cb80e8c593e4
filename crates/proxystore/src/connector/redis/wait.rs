//! Waiting for a key to be written: [`Connector::set`] announces each write on a channel of
//! the key (`SET` and `PUBLISH` in one round trip), and a waiter subscribes to it before it
//! looks, so a write between its look and its wait still wakes it. No polling, and nothing to
//! configure on the server (keyspace notifications are off by default).

use std::time::Duration;

use futures::StreamExt as _;

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

    /// [`Connector::wait`]: subscribe, look, then wait for an announcement or the timeout.
    pub(super) async fn wait_on_channel(&self, key: &Key, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        let client = self.inner.client()?;
        let connect = self.inner.config.connect_timeout();
        let mut pubsub = match tokio::time::timeout(connect, client.get_async_pubsub()).await {
            Ok(r) => r.map_err(|e| self.inner.error("SUBSCRIBE", e))?,
            Err(_) => {
                return Err(crate::Error::Timeout {
                    operation: "redis connect (SUBSCRIBE)".into(),
                    after: connect,
                });
            }
        };
        pubsub
            .subscribe(channel(&self.redis_key(key)))
            .await
            .map_err(|e| self.inner.error("SUBSCRIBE", e))?;
        if self.exists(key).await? {
            return Ok(true);
        }
        let mut messages = pubsub.on_message();
        match tokio::time::timeout_at(deadline, messages.next()).await {
            Ok(Some(_)) => Ok(true),
            // The subscription ended (connection lost) or the time ran out: one last look.
            Ok(None) | Err(_) => {
                drop(messages);
                self.exists(key).await
            }
        }
    }
}
