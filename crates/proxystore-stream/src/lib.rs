//! # Streams of proxies
//!
//! A producer emits a stream of large objects: the bytes go to a store, and only small events
//! (a proxy reference plus metadata) go through a message broker. Consumers iterate and get
//! lazy [`proxystore::Proxy`]s, resolving only what they use. Brokers are poor at large
//! payloads (size limits, memory, copies through the broker); this keeps them doing what they
//! are good at.
//!
//! - [`StreamProducer`]: `send(topic, value, metadata)`, batches of events by count and time
//!   ([`BatchPolicy`]), `close(topic)` ends the stream for its consumers, a store per topic,
//!   evict-after-consume for single-consumer topics.
//! - [`StreamConsumer`]: an async iteration of [`StreamItem`]s (or `into_stream()`), metadata
//!   filters that skip events without resolving them, resolved objects on request
//!   (`next_object`, which fetches a message's small objects with one call), acknowledgement of each broker message once its events are consumed.
//! - [`broker::Broker`]: the message broker, a trait open to third parties;
//!   [`broker::memory::MemoryBroker`] in-process.
//!
//! The messages on the broker are `StreamMessage`s of `proto/proxystore_rs/v1/stream.proto`,
//! language-neutral like the proxy reference they carry. Each object's reference carries the
//! trace context of the producer's `proxystore.stream.send` span (of its put, which runs
//! inside it, or of the send itself when a small object is stored with its batch): a
//! consumer's resolve span links to it.
//!
//! | concern | module |
//! |---|---|
//! | brokers: the trait, what they promise, the in-process one | `broker` |
//! | the producer | `producer` |
//! | the consumer | `consumer` |
//! | the messages on the wire | `event` |
//! | riding out a broker that is away for a while | `outage` |
//! | errors | `error` |

pub mod broker;
mod consumer;
mod error;
mod event;
mod outage;
mod producer;

pub use consumer::{StreamConsumer, StreamItem};
pub use error::{Result, StreamError};
pub use producer::{BATCHED_PUT_BYTES, BatchPolicy, StreamProducer};

/// Metadata sent with each object, which consumers can filter on without resolving it.
pub type Metadata = std::collections::BTreeMap<String, String>;

/// [`Metadata`] from pairs.
///
/// ```
/// let m = proxystore_stream::metadata([("camera", "3"), ("frame", "17")]);
/// assert_eq!(m["camera"], "3");
/// ```
pub fn metadata<K: Into<String>, V: Into<String>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Metadata {
    pairs
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}
