//! # ProxyStore for apalis
//!
//! Large task arguments leave the broker: with this plugin an apalis-redis job holds a few
//! hundred bytes of references while its megabytes go to a ProxyStore store, and the task
//! function still receives its usual argument type.
//!
//! Two pieces, installed where an apalis user expects them:
//!
//! - on the storage, a codec: `storage.with_codec(ProxyCodec::new(task_codec))`. Pushing a task
//!   runs [`proxystore_middleware::TaskCodec::encode`]: each argument above the policy (size
//!   threshold, globs over `task/path`, store per rule) is put into its store and replaced by a
//!   reference;
//! - on the worker, the task function: `WorkerBuilder::new(..).backend(storage)
//!   .build(resolve(task_fn))`. The task's arguments are resolved inside the task by the
//!   middleware's [`proxystore_middleware::ResolveService`], which reads apalis tasks through
//!   [`ApalisTasks`] (plain fields fetched and decoded on a blocking thread, `Proxy<T>` fields
//!   left lazy), so a store failure is a failed attempt that apalis retries, never a poll error
//!   that stops the worker; and the task's objects are evicted when it succeeds or fails for the
//!   last time ([`CleanupLayer`], added to the storage's own middleware, outside every user
//!   layer).
//!
//! A [`proxystore::Lease`] held by the producer ([`ProxyCodec::with_lease`]) backs cleanup up
//! when every worker that could finish a task crashed; apalis-redis itself re-runs the tasks of
//! a worker that stopped sending heartbeats, so a crash normally ends in a cleanup too.
//!
//! Workers rebuild the stores of unregistered references only within the process's
//! [`proxystore::ResolvePolicy`] (by default temporary directories and loopback hosts): widen
//! it with [`ProxyCodec::with_resolve_policy`] or `PROXYSTORE_RESOLVE_POLICY`. A task whose
//! arguments are refused fails without retries.
//!
//! [`connect`] and [`PollEvery`] work around two apalis-redis 1.0 behaviours that otherwise
//! break or stall large-task workloads (a 500 ms response timeout; idle workers that poll only
//! on their 30 s heartbeat).

mod codec;
mod error;
mod redis;
mod worker;

pub use codec::{ProxyCodec, Unresolved};
pub use error::ResolveError;
pub use redis::{PollEvery, RESPONSE_TIMEOUT, connect};
pub use worker::{
    APALIS_REDIS_ATTEMPT_CAP, ApalisTasks, CleanupLayer, CleanupService, ProxyBackend, Resolve,
    resolve,
};
