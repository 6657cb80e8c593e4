//! # ProxyStore for Rust
//!
//! Move large objects between the tasks of a distributed workflow by reference instead of by
//! value. Put an object into a [`Store`] and get back a [`Proxy<T>`]: a reference of a couple of
//! hundred bytes that carries everything needed to fetch the object again (store name, connector
//! config, key, size, digest, codec). Send the proxy through any queue, broker or RPC; the first
//! time a consumer *uses* it, it fetches, checks and decodes the object, then behaves as the
//! object. A proxy that is never used is never fetched, and repeated uses hit a process-local
//! cache.
//!
//! ```
//! # proxystore::runtime::block_on(async {
//! use proxystore::{Proxy, Store, register_store, connector::file::FileConnector};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::new("example", FileConnector::new(dir.path())?);
//! register_store(&store)?;
//!
//! let weights: Vec<f32> = vec![0.5; 1_000_000];
//! let proxy: Proxy<Vec<f32>> = store.proxy(&weights).await?;
//!
//! // What travels: a small reference, not 4 MB.
//! let wire = postcard::to_stdvec(&proxy).unwrap();
//! assert!(wire.len() < 256);
//!
//! // In any process: decode and use. The store is rebuilt from the reference if needed (and
//! // if the process's ResolvePolicy accepts it: by default temporary directories and loopback).
//! let received: Proxy<Vec<f32>> = postcard::from_bytes(&wire).unwrap();
//! assert_eq!(received.len(), 1_000_000); // first use fetches
//! # Ok::<_, proxystore::Error>(()) })??;
//! # Ok::<_, proxystore::Error>(())
//! ```
//!
//! ## Map of the crate
//!
//! - [`connector`]: the byte-level [`Connector`] trait and the built-in connectors
//!   ([`connector::memory`], [`connector::file`], [`connector::multi`]);
//! - [`layer`]: the I/O runtime hop, timeouts and retries ([`retry`]) as layers a store stacks
//!   around its connector;
//! - [`kinds`]: building a connector from its config, the kinds a process knows;
//! - [`Store`]: codec, cache, metrics, and the put/get/proxy API; [`StoreConfig`] rebuilds it;
//! - [`Proxy`] and [`Factory`]: lazy references; [`Reference`]: their wire format;
//! - [`register_store`] / [`get_store`]: the process-wide registry;
//! - [`ResolvePolicy`]: which references this process rebuilds a store from (see [`policy`]);
//! - [`lifetime`]: scopes, leases and owned proxies that evict what they own;
//! - [`future`]: distributed futures, a proxy handed out before its value exists
//!   ([`Store::future`], [`future::Promise`]);
//! - [`runtime`]: how synchronous code resolves proxies without deadlocks;
//! - [`trace`]: the spans of every operation, and trace context carried across processes;
//! - [`Error`]: one typed error for everything.

pub mod codec;
pub mod connector;
pub mod digest;
pub mod error;
pub mod future;
pub mod kinds;
pub mod layer;
pub mod lifetime;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod reference;
pub mod retry;
pub mod runtime;
pub mod trace;

mod buffer;
mod cache;
mod key;
mod registry;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use bytes::Bytes;
pub use codec::Codec;
pub use connector::{Connector, ConnectorConfig, PutOptions};
pub use digest::{Digest, DigestAlgorithm};
pub use error::{Error, FutureProblem, OwnershipProblem, Result};
pub use future::{FutureOptions, Promise};
pub use key::Key;
pub use lifetime::{Lease, Lifetime, OwnedProxy, RefMutProxy, RefProxy, Scope};
pub use metrics::{KeyMetrics, OpStats, StoreMetrics};
pub use policy::{RESOLVE_POLICY_ENV, ResolvePolicy, resolve_policy, set_resolve_policy};
pub use proxy::{Factory, Proxy, ProxyOptions};
pub use reference::{FORMAT_VERSION, FutureInfo, MAX_ORIGIN_BYTES, Reference};
pub use registry::{get_store, register_store, store_for_reference, unregister_store};
pub use store::{DEFAULT_CACHE_BYTES, IntoConnector, Store, StoreBuilder, StoreConfig};
