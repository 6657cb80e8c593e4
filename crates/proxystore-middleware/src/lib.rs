//! # Automatic argument proxying for task executors
//!
//! Large task arguments leave the broker without any change to the code that consumes them.
//! Before a task is enqueued, [`TaskCodec::encode`] walks its arguments with serde and puts every
//! argument above the [`ArgumentPolicy`] (an encoded-size threshold, glob patterns over
//! `task/path`, a store per rule) into a ProxyStore store, leaving a small reference in the task
//! document. In the worker, [`TaskCodec::decode`] rebuilds the arguments: a field typed `Proxy<T>`
//! receives the reference and stays lazy; a field of a plain type is fetched and decoded in place,
//! so the handler sees its usual types. [`ResolveLayer`] packages the worker side as an async
//! tower layer that also evicts a task's objects when the task is finished for good; an
//! [`Executor`] adapts it to an executor's own request types.
//!
//! It works at the serde level for any task type: no annotation is needed. A type opts fields
//! out with [`Inline`], or opts in explicitly with `proxystore::Proxy` (always a reference, never
//! resolved before use).
//!
//! Executor plugins (such as `proxystore-apalis`) build on these pieces: its workers run
//! [`ResolveService`] with an [`Executor`] for apalis tasks.
//!
//! ## Trusting references
//!
//! A task document comes from the broker, and each reference in it carries the connector config
//! of its store. A worker rebuilds a store from that config only when the process's
//! [`proxystore::ResolvePolicy`] accepts it (by default: temporary directories and loopback
//! hosts); stores registered in the worker with `proxystore::register_store` are used whatever
//! the reference says. Widen the policy for your deployment with
//! [`TaskCodec::with_resolve_policy`] or the `PROXYSTORE_RESOLVE_POLICY` environment variable; a
//! refused argument fails its task with a non-retryable [`MiddlewareError::Store`].

mod codec;
mod decode;
mod encode;
mod error;
mod inline;
mod layer;
mod policy;
mod result;
mod stores;

pub use codec::{CodecStats, Decoded, Encoded, InnerCodec, TaskCodec, TaskInfo};
pub use error::MiddlewareError;
pub use inline::{INLINE_NEWTYPE_NAME, Inline};
pub use layer::{
    BoxError, Eviction, Executor, ResolveFuture, ResolveLayer, ResolveService, TaskPayload,
    TaskPayloads,
};
pub use policy::{ArgumentPolicy, ArgumentPolicyConfig, DEFAULT_THRESHOLD, Decision, Rule};
pub use result::{RESULT_PATH, ResultCleanup};

#[doc(hidden)]
pub use codec::CodecMetrics;
