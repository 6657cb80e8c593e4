//! Connecting to Redis and polling it the way large tasks need.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use apalis_redis::ConnectionManager;
use redis::aio::ConnectionManagerConfig;

/// How long a Redis command may take before [`connect`]'s connection gives up on it.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);

/// A connection for apalis-redis storages that survives large jobs.
///
/// `apalis_redis::connect` keeps the redis crate's default 500 ms response timeout, which a
/// worker fetching a batch of 10 MiB jobs exceeds (the fetch fails and the worker stops). This
/// one waits [`RESPONSE_TIMEOUT`]. With the plugin the jobs are small, but the baselines and any
/// task below the policy's threshold still travel whole.
///
/// # Errors
/// When the URL is invalid or the server cannot be reached.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(Duration::from_secs(10)));
    client.get_connection_manager_with_config(config).await
}

/// A poll strategy that wakes the worker every `interval`, for
/// `BackendExt::poll_with_strategy`.
///
/// A bare `RedisStorage` worker that found its queue empty fetches again only on its heartbeat
/// (30 s by default), and apalis-redis publishes no wake-up for ordinary pushes; apalis's
/// `IntervalStrategy` re-arms its timer without polling it, so every other wake-up is lost and
/// the worker sleeps until the heartbeat. This strategy re-arms and polls, so the worker looks
/// at the queue at least every `interval` while idle.
#[derive(Debug)]
pub struct PollEvery {
    interval: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl PollEvery {
    /// Wake every `interval`.
    pub fn new(interval: Duration) -> Self {
        PollEvery {
            interval,
            sleep: None,
        }
    }

    /// Wake every `ms` milliseconds.
    pub fn millis(ms: u64) -> Self {
        PollEvery::new(Duration::from_millis(ms))
    }
}

impl Clone for PollEvery {
    fn clone(&self) -> Self {
        PollEvery::new(self.interval)
    }
}

impl PollStrategy for PollEvery {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        let interval = self.interval;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        let mut fired = false;
        // Poll until pending, so that the waker is registered for the next deadline.
        while sleep.as_mut().poll(cx).is_ready() {
            sleep.as_mut().reset(tokio::time::Instant::now() + interval);
            fired = true;
        }
        if fired {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}
