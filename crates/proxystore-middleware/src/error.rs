//! Errors of the middleware.

use std::fmt::Display;

pub(crate) type Result<T, E = MiddlewareError> = std::result::Result<T, E>;

/// What can go wrong while proxying or resolving task arguments.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MiddlewareError {
    /// The policy is malformed (a bad glob, an unreadable file).
    #[error("proxy policy: {0}")]
    Policy(String),
    /// The store failed (down, missing object, digest mismatch, ...): the task should fail and
    /// be retried, not the worker.
    #[error("store: {0}")]
    Store(#[from] proxystore::Error),
    /// The task could not be encoded.
    #[error("cannot encode task: {0}")]
    Encode(String),
    /// The task document or a proxied argument could not be decoded.
    #[error("cannot decode task: {0}")]
    Decode(String),
    /// A policy rule names a store that is not registered in this process.
    #[error("store '{0}' is not registered in this process (proxystore::register_store)")]
    UnknownStore(String),
}

impl MiddlewareError {
    /// Whether retrying the task later may succeed (the store was unreachable or slow).
    pub fn is_retryable(&self) -> bool {
        matches!(self, MiddlewareError::Store(e) if e.is_retryable())
    }
}

impl serde::ser::Error for MiddlewareError {
    fn custom<T: Display>(msg: T) -> Self {
        MiddlewareError::Encode(msg.to_string())
    }
}

impl serde::de::Error for MiddlewareError {
    fn custom<T: Display>(msg: T) -> Self {
        MiddlewareError::Decode(msg.to_string())
    }
}
