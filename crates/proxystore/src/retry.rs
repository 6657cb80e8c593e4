//! One retry policy for every networked connector: how many times, and how long to wait.
//!
//! [`RetryConfig`] is what [`crate::layer::RetryLayer`] applies around a connector's calls; the
//! connectors whose protocol retries inside one call (the S3 SDK's requests, Globus's HTTP calls
//! while a transfer is awaited) take their attempts and backoff from the same type, so that
//! there is one notion of "retry" in the library.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// How a failed call is retried: only failures marked temporary
/// ([`crate::Error::is_temporary`]), at most `max_retries` times, waiting a backoff that
/// doubles from `initial_backoff` up to `max_backoff`, with jitter.
///
/// ```
/// use std::time::Duration;
/// use proxystore::retry::RetryConfig;
/// let r = RetryConfig::default().max_retries(5);
/// assert_eq!(r.max_retries, 5);
/// assert!(r.backoff(10) <= r.max_backoff);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Retries after the first attempt (0 turns retrying off).
    pub max_retries: u32,
    /// Wait before the first retry (before jitter).
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Whether puts are retried too. Safe for connectors whose failed put leaves nothing
    /// readable (every built-in one); a put that failed after the backend committed it may
    /// leave an unreferenced object, which eviction by lifetime or TTL reclaims.
    pub retry_puts: bool,
}

impl Default for RetryConfig {
    /// Three retries, 50 ms doubling to at most 5 s, puts not retried.
    fn default() -> Self {
        RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            retry_puts: false,
        }
    }
}

impl RetryConfig {
    /// No retries.
    pub fn none() -> Self {
        RetryConfig {
            max_retries: 0,
            ..RetryConfig::default()
        }
    }

    /// Set the number of retries.
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Set the first backoff.
    #[must_use]
    pub fn initial_backoff(mut self, d: Duration) -> Self {
        self.initial_backoff = d;
        self
    }

    /// Set the longest backoff.
    #[must_use]
    pub fn max_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Set whether puts are retried.
    #[must_use]
    pub fn retry_puts(mut self, yes: bool) -> Self {
        self.retry_puts = yes;
        self
    }

    /// The wait before retry number `attempt` (0 for the first retry): the doubled backoff,
    /// capped, with "equal jitter" (between half of it and all of it) so that clients that
    /// failed together do not retry together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.min(20))
            .min(self.max_backoff);
        let half = base / 2;
        let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return base;
        }
        let random = RandomState::new().hash_one(attempt);
        half + Duration::from_nanos(random % nanos)
    }
}

impl RetryConfig {
    /// Run `attempt` until it succeeds, fails with an error that is not temporary
    /// ([`crate::Error::is_temporary`]), or the retries are spent (then the last error),
    /// sleeping [`RetryConfig::backoff`] between attempts. `op` names the operation in the
    /// debug events of each retry.
    ///
    /// # Errors
    /// The error of the last attempt.
    pub async fn run<T, F, Fut>(&self, op: &str, mut attempt: F) -> crate::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = crate::Result<T>>,
    {
        let mut retries = 0;
        loop {
            match attempt().await {
                Err(e) if self.again(op, &e, &mut retries).await => {}
                other => return other,
            }
        }
    }

    /// After a failed attempt (the `retries`-th retry so far): whether to try again, having
    /// slept the backoff and counted the retry. For callers whose attempts cannot be made by
    /// a closure (each borrows what the last one did), as [`RetryConfig::run`] does.
    pub async fn again(&self, op: &str, error: &crate::Error, retries: &mut u32) -> bool {
        if !error.is_temporary() || *retries >= self.max_retries {
            return false;
        }
        let wait = self.backoff(*retries);
        tracing::debug!(
            op,
            error = %error,
            retry = *retries + 1,
            wait_ms = wait.as_millis() as u64,
            "temporary failure; retrying"
        );
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        *retries += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_jitters_and_caps() {
        let r = RetryConfig::default();
        for attempt in 0..30 {
            let b = r.backoff(attempt);
            let base = (Duration::from_millis(50) * (1u32 << attempt.min(20))).min(r.max_backoff);
            assert!(b >= base / 2 && b <= base, "{attempt}: {b:?} vs {base:?}");
        }
        let zero = RetryConfig::default().initial_backoff(Duration::ZERO);
        assert_eq!(zero.backoff(3), Duration::ZERO);
    }
}
