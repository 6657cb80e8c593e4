//! The consumer's side: wait for a future's record, watching its producer's heartbeat.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

use super::{future_error, record};
use crate::error::{Error, FutureProblem, Result};
use crate::reference::{FutureInfo, Reference};
use crate::store::Store;
use crate::trace::{self, op_span};

/// How many heartbeat periods of silence mean the producer is gone.
const SILENT_PERIODS: u32 = 3;

/// How long one wait on the connector lasts when nothing else bounds it.
const LONGEST_STEP: Duration = Duration::from_secs(60);

/// The value bytes of the future `r` (what its codec decodes), once it is set: waits on the
/// store's connector, in a `proxystore.future.wait` span linked to the span that set it.
///
/// # Errors
/// [`Error::Future`] when it failed or its producer is gone, [`Error::Timeout`], the
/// connector's error.
pub(crate) async fn fetch(store: &Store, r: &Reference, info: &FutureInfo) -> Result<Bytes> {
    let span = op_span!("proxystore.future.wait", store, key = r.key.as_str());
    let result = wait(store, r, info, &span).instrument(span.clone()).await;
    trace::record_result(&span, &result);
    result
}

async fn wait(
    store: &Store,
    r: &Reference,
    info: &FutureInfo,
    span: &tracing::Span,
) -> Result<Bytes> {
    let connector = store.connector();
    let started = Instant::now();
    let timeout = (info.timeout_ms > 0).then(|| Duration::from_millis(info.timeout_ms));
    let deadline = timeout.map(|t| started + t);
    let beat = info
        .heartbeat_key
        .as_ref()
        .filter(|_| info.heartbeat_ms > 0)
        .map(|k| (Duration::from_millis(info.heartbeat_ms), k));
    // The last heartbeat seen, and when it was first seen.
    let mut last: Option<(Bytes, Instant)> = None;
    loop {
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left == Some(Duration::ZERO) {
            return Err(Error::Timeout {
                operation: format!("waiting for future {} of store '{}'", r.key, r.store),
                after: timeout.unwrap_or_default(),
            });
        }
        let step = beat.map_or(LONGEST_STEP, |(every, _)| every);
        let step = left.map_or(step, |l| l.min(step));
        if connector.wait(&r.key, step).await? {
            let data = connector
                .get(&r.key)
                .await?
                .ok_or_else(|| Error::NotFound {
                    store: store.name().to_owned(),
                    key: r.key.clone(),
                    origin: (!r.origin.is_empty()).then(|| r.origin.clone()),
                })?;
            return outcome(r, data, span);
        }
        let Some((every, beat_key)) = beat else {
            continue;
        };
        let now = Instant::now();
        // The heartbeat only advises: a read that fails for now (the key rewritten under the
        // read, a lost connection) tells nothing, and the silence clock runs on from the last
        // beat seen.
        let beat = match connector.get(beat_key).await {
            Ok(b) => b,
            Err(e) if e.is_retryable() => {
                tracing::debug!(key = %beat_key, error = %e, "a future's heartbeat could not be read");
                if let Some((_, since)) = &last
                    && now - *since > every * SILENT_PERIODS
                {
                    return gone(connector.as_ref(), r, now - *since).await;
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        match beat {
            // In transit: the process that takes the promise over beats again.
            Some(b) if b[..] == record::PARKED => last = None,
            Some(b) => match &last {
                Some((seen, since)) if *seen == b => {
                    let silent = now - *since;
                    if silent > every * SILENT_PERIODS {
                        return gone(connector.as_ref(), r, silent).await;
                    }
                }
                _ => last = Some((b, now)),
            },
            // Retired: the producer completed it (look again) or died cleaning up.
            None => {
                if !connector.exists(&r.key).await? {
                    return gone(connector.as_ref(), r, now - started).await;
                }
            }
        }
    }
}

/// [`FutureProblem::ProducerGone`], unless the value arrived meanwhile.
async fn gone(
    connector: &dyn crate::connector::Connector,
    r: &Reference,
    silent: Duration,
) -> Result<Bytes> {
    match connector.get(&r.key).await? {
        Some(data) => outcome(r, data, &tracing::Span::current()),
        None => Err(future_error(r, FutureProblem::ProducerGone { silent })),
    }
}

/// The value of a record, or the error it carries; the wait span links to the set.
fn outcome(r: &Reference, data: Bytes, span: &tracing::Span) -> Result<Bytes> {
    let (outcome, set_by) = record::decode(data)
        .map_err(|reason| future_error(r, FutureProblem::BadRecord { reason }))?;
    if let Some(t) = &set_by {
        trace::add_link(span, &t.traceparent, &t.tracestate);
    }
    match outcome {
        record::Outcome::Value(bytes) => Ok(bytes),
        record::Outcome::Failed(message) => Err(future_error(r, FutureProblem::Failed { message })),
        record::Outcome::Dropped => Err(future_error(r, FutureProblem::Dropped)),
    }
}
