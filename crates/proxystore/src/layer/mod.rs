//! Cross-cutting behaviour as layers around a connector.
//!
//! A [`Connector`] implements only its backend. What every networked backend needs (running on
//! the library's I/O runtime, a time bound per attempt, retries of temporary failures) is a
//! [`Layer`]: a wrapper that takes an `Arc<dyn Connector>` and gives back one, forwarding every
//! method of the trait. A [`crate::Store`] stacks the layers its connector asks for in
//! [`Connector::call_config`] (see [`stack`]); users add their own with
//! [`crate::StoreBuilder::layer`].
//!
//! The stack, outermost first, for a connector that asks for all of it:
//!
//! 1. [`IoRuntimeLayer`]: the call runs on [`crate::runtime::io_handle`] (no hop when it
//!    already runs there, as a synchronous resolve does; for a connector with a client per
//!    runtime, [`crate::connector::CallRuntime::CallerTokio`], only a call from outside any
//!    tokio runtime goes there);
//! 2. [`RetryLayer`]: temporary failures ([`crate::Error::is_temporary`]) are tried again
//!    after a backoff; permanent ones and timeouts return at once;
//! 3. [`TimeoutLayer`]: each attempt is bounded, ending in [`crate::Error::Timeout`];
//! 4. the connector.
//!
//! A store puts one more layer outside all of these (and outside the layers a user adds): the
//! count of its connector calls that [`crate::Store::metrics`] reports.
//!
//! ```
//! # proxystore::runtime::block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use proxystore::connector::{Connector, memory::MemoryConnector};
//! use proxystore::layer::{Layer, TimeoutLayer};
//!
//! let raw: Arc<dyn Connector> = Arc::new(MemoryConnector::new("layer-doc"));
//! let bounded = TimeoutLayer::new(Duration::from_secs(1)).layer(raw);
//! let key = bounded.put(proxystore::Bytes::from_static(b"hi")).await?;
//! assert_eq!(bounded.get(&key).await?.as_deref(), Some(&b"hi"[..]));
//! # Ok::<_, proxystore::Error>(()) })??;
//! # Ok::<_, proxystore::Error>(())
//! ```

use std::sync::Arc;

use crate::connector::{CallConfig, CallRuntime, Connector};

mod io_runtime;
pub(crate) mod metrics;
mod retry;
mod timeout;

pub use io_runtime::{IoRuntime, IoRuntimeLayer};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};

/// Wraps a connector in another that adds one behaviour and forwards the rest.
///
/// Implementations must forward every method of [`Connector`] to the inner connector, the
/// optional ones included, so that a wrapper never hides a faster method (a batch, a ranged
/// read) of what it wraps; the built-in ones are checked by `clippy::missing_trait_methods`.
pub trait Layer: Send + Sync {
    /// `inner` with this layer's behaviour added.
    fn layer(&self, inner: Arc<dyn Connector>) -> Arc<dyn Connector>;
}

/// `connector` inside the layers its [`Connector::call_config`] asks for (see the module
/// docs for the order). A connector that asks for nothing comes back as it is, and so does one
/// that is already stacked (the layers report an empty call config).
pub fn stack(connector: Arc<dyn Connector>) -> Arc<dyn Connector> {
    let CallConfig {
        runtime,
        timeout,
        retry,
    } = connector.call_config();
    let mut c = connector;
    if let Some(t) = timeout {
        c = TimeoutLayer::new(t).layer(c);
    }
    if let Some(r) = retry.filter(|r| r.max_retries > 0) {
        c = RetryLayer::new(r).layer(c);
    }
    match runtime {
        CallRuntime::Caller => {}
        CallRuntime::CallerTokio => c = IoRuntimeLayer::outside_tokio().layer(c),
        CallRuntime::Io => c = IoRuntimeLayer::always().layer(c),
    }
    c
}
