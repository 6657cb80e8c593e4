//! Riding out a broker that is away for a while (restarting, a lost connection): calls that
//! fail with a temporary error are tried again, with backoff, for a bounded time.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::StreamError;

/// How long producers and consumers keep retrying a broker call that failed with a temporary
/// error, by default.
pub(crate) const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(30);

/// One outage of the broker, as seen by one call: whether to try again after `e`.
#[derive(Debug)]
pub(crate) struct Outage {
    budget: Duration,
    started: Option<Instant>,
    attempts: u32,
}

impl Outage {
    /// An outage that may last `budget` before its error is returned.
    pub(crate) fn new(budget: Duration) -> Self {
        Outage {
            budget,
            started: None,
            attempts: 0,
        }
    }

    /// After the call failed with `e`: wait and return `true` to try again, or `false` (the
    /// error is not temporary, or the budget is spent) to return it.
    pub(crate) async fn retry(&mut self, op: &str, e: &StreamError) -> bool {
        if !matches!(
            e,
            StreamError::Broker {
                temporary: true,
                ..
            }
        ) {
            return false;
        }
        let started = *self.started.get_or_insert_with(Instant::now);
        let elapsed = started.elapsed();
        if elapsed >= self.budget {
            tracing::warn!(op, error = %e, elapsed_ms = elapsed.as_millis() as u64, "stream: the broker stayed away; giving up");
            return false;
        }
        // 50 ms doubling to 1 s, within what is left of the budget.
        let wait = Duration::from_millis(50 << self.attempts.min(5))
            .min(Duration::from_secs(1))
            .min(self.budget - elapsed);
        if self.attempts == 0 {
            tracing::warn!(op, error = %e, "stream: the broker is away; retrying");
        } else {
            tracing::debug!(op, error = %e, attempt = self.attempts, "stream: retrying");
        }
        self.attempts += 1;
        tokio::time::sleep(wait).await;
        true
    }
}

/// `$call.await`, tried again while it fails with a temporary broker error, for at most
/// `$budget` ([`Outage`]).
macro_rules! retrying {
    ($budget:expr, $op:literal, $call:expr) => {{
        let mut outage = $crate::outage::Outage::new($budget);
        loop {
            match $call.await {
                Err(e) if outage.retry($op, &e).await => {}
                done => break done,
            }
        }
    }};
}
pub(crate) use retrying;
