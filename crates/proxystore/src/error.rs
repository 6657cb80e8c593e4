//! The one error type of the library.

use std::time::Duration;

use crate::key::Key;

/// A boxed error from a lower layer (a backend client, a codec, the OS).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ProxyStore, as data.
///
/// Variants carry the store and key they concern where those are known, so that a message in a
/// log says which object failed. Match on the variant, not on the message; new variants may be
/// added in minor releases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is not in the store (never put, evicted, or expired).
    #[error("object {key}{} not found in store '{store}'", origin_note(origin.as_deref()))]
    NotFound {
        /// Store name (or connector kind when no store is involved).
        store: String,
        /// The missing key.
        key: Key,
        /// What made the object, when the reference that was resolved says
        /// ([`crate::Reference::origin`]): `map/return` for the result of task `map`.
        origin: Option<String>,
    },

    /// The backend failed: I/O error, lost connection, server error.
    ///
    /// `temporary` tells whether the same operation may succeed if tried again later (a lost
    /// connection, a server that is restarting, throttling) or will fail the same way (a disk
    /// error, a file that is not a regular file, a malformed answer). Retries, the store
    /// service's status codes and executors go by it (see [`Error::is_retryable`]).
    #[error("{connector} connector: {message}")]
    Backend {
        /// Connector kind, e.g. `file` or `redis`.
        connector: String,
        /// What was being done.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
        /// Whether trying again later may succeed.
        temporary: bool,
    },

    /// An object could not be encoded by the store's codec.
    #[error("cannot encode {type_name} with {codec}: {source}")]
    Encode {
        /// Rust type that was being encoded.
        type_name: String,
        /// Codec identifier.
        codec: String,
        /// Codec error.
        #[source]
        source: BoxError,
    },

    /// Stored bytes could not be decoded into the requested type.
    #[error("cannot decode object {key} of store '{store}' as {type_name} with {codec}: {source}")]
    Decode {
        /// Store name.
        store: String,
        /// The key of the object.
        key: Key,
        /// Requested Rust type.
        type_name: String,
        /// Codec identifier.
        codec: String,
        /// Codec error.
        #[source]
        source: BoxError,
    },

    /// The bytes read do not match the digest recorded when the object was put.
    #[error(
        "digest mismatch for {}: expected {expected}, got {actual}",
        object_of_store(key, store)
    )]
    DigestMismatch {
        /// Store name.
        store: String,
        /// The key of the object; empty while an upload has no key yet.
        key: Key,
        /// Digest recorded in the reference.
        expected: String,
        /// Digest of the bytes read.
        actual: String,
    },

    /// A digest (algorithm name and value) is malformed: an unknown algorithm, or a value
    /// whose length does not fit its algorithm.
    #[error("invalid digest: {reason}")]
    InvalidDigest {
        /// What is wrong with it.
        reason: String,
    },

    /// Serialized reference bytes are corrupt, truncated or not a reference.
    #[error("invalid proxy reference: {reason}")]
    InvalidReference {
        /// What is wrong with it.
        reason: String,
    },

    /// A reference written by a newer, incompatible format version.
    #[error(
        "proxy reference format version {found} is not supported (this build reads up to {supported})"
    )]
    UnsupportedVersion {
        /// Version found in the reference.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },

    /// No connector kind of that name is registered in this process.
    #[error(
        "unknown connector kind '{kind}' (registered: {registered}); enable its cargo feature or call proxystore::kinds::register_connector_kind"
    )]
    UnknownConnectorKind {
        /// The kind asked for.
        kind: String,
        /// Kinds registered in this process, comma separated.
        registered: String,
    },

    /// A configuration is invalid.
    #[error("invalid configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },

    /// A key is not acceptable to this connector (for example it would escape a directory).
    #[error("invalid key {key:?} for {connector} connector: {reason}")]
    InvalidKey {
        /// Connector kind.
        connector: String,
        /// The rejected key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },

    /// Missing or wrong credentials.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// Details from the backend.
        message: String,
    },

    /// A size, count or quota limit was exceeded.
    #[error("limit exceeded: {message}")]
    LimitExceeded {
        /// Which limit.
        message: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: String,
        /// The configured timeout.
        after: Duration,
    },

    /// The connector does not support this operation.
    #[error("{connector} connector does not support {operation}")]
    Unsupported {
        /// Connector kind.
        connector: String,
        /// Operation name.
        operation: String,
    },

    /// A reference names a connector that this process's [`crate::ResolvePolicy`] does not
    /// accept: a connector kind, directory, host or bucket outside it. Nothing was read,
    /// created or contacted. Not retryable: the same reference is refused until the policy is
    /// widened.
    #[error(
        "refused to rebuild store '{store}' ({kind} connector) from a reference: {reason} (see proxystore::ResolvePolicy, or set PROXYSTORE_RESOLVE_POLICY)"
    )]
    Refused {
        /// Store name in the reference.
        store: String,
        /// Connector kind in the reference.
        kind: String,
        /// What is not allowed, and how to allow it.
        reason: String,
    },

    /// An ownership rule was broken (see [`crate::lifetime`]): an owned proxy used or sent
    /// after it moved away, an owner evicted, moved or mutably borrowed while borrowed.
    #[error("object {key}{} of store '{store}': {problem}", origin_note(origin.as_deref()))]
    Ownership {
        /// Store name.
        store: String,
        /// The object's key.
        key: Key,
        /// What made the object ([`crate::Reference::origin`]), when known: `train/weights`
        /// for the argument `weights` of task `train`.
        origin: Option<String>,
        /// Which rule.
        problem: OwnershipProblem,
    },

    /// A distributed future ([`crate::future`]) completed with an error, or cannot complete:
    /// its producer failed, dropped it, or is gone; or it was set twice.
    #[error("future {key}{} of store '{store}': {problem}", origin_note(origin.as_deref()))]
    Future {
        /// Store name.
        store: String,
        /// The future's key.
        key: Key,
        /// What made it ([`crate::Reference::origin`]), when known.
        origin: Option<String>,
        /// What happened.
        problem: FutureProblem,
    },

    /// A store of this name is already registered with a different configuration.
    #[error("a different store named '{name}' is already registered")]
    StoreExists {
        /// Store name.
        name: String,
    },
}

/// Which ownership rule an [`Error::Ownership`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OwnershipProblem {
    /// The owned proxy was moved away (serialized: sent to a task or another process) or given
    /// up, and this handle no longer owns the object.
    Moved,
    /// The object is borrowed: `shared` counted borrows ([`crate::lifetime::RefProxy`]) are
    /// alive, so its owner cannot `action` it now.
    Borrowed {
        /// Borrows alive.
        shared: usize,
        /// What the owner tried (`evict it`, `move it`, `borrow it mutably`).
        action: &'static str,
    },
}

/// What went wrong with a distributed future (see [`Error::Future`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FutureProblem {
    /// The producer completed it with an error ([`crate::future::Promise::set_error`]).
    Failed {
        /// The producer's message.
        message: String,
    },
    /// The producer dropped its promise without setting it (it failed or returned early).
    Dropped,
    /// The producer stopped proving it is alive (killed, or cut off) before setting it.
    ProducerGone {
        /// How long its heartbeat had been silent, or gone.
        silent: Duration,
    },
    /// It was already completed: a promise sets it once.
    AlreadySet,
    /// This promise handle was moved away (serialized, to complete it elsewhere).
    Moved,
    /// What is stored under its key is not a future record.
    BadRecord {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for FutureProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FutureProblem::Failed { message } => write!(f, "the producer failed: {message}"),
            FutureProblem::Dropped => {
                f.write_str("the producer dropped its promise without setting it")
            }
            FutureProblem::ProducerGone { silent } => write!(
                f,
                "the producer is gone (no heartbeat for {:.1} s) and never set it",
                silent.as_secs_f64()
            ),
            FutureProblem::AlreadySet => f.write_str("it was already set (a future is set once)"),
            FutureProblem::Moved => {
                f.write_str("this promise was moved away (sent to complete it elsewhere)")
            }
            FutureProblem::BadRecord { reason } => write!(f, "not a future record: {reason}"),
        }
    }
}

impl std::fmt::Display for OwnershipProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnershipProblem::Moved => f.write_str(
                "its owned proxy was already moved away (sent to a task or another process) or \
                 given up",
            ),
            OwnershipProblem::Borrowed { shared, action } => write!(
                f,
                "cannot {action} while {shared} borrow{} of it {} alive",
                if *shared == 1 { "" } else { "s" },
                if *shared == 1 { "is" } else { "are" }
            ),
        }
    }
}

/// `object KEY of store 'STORE'`, or `the object being stored in store 'STORE'` while an
/// upload has no key yet.
fn object_of_store(key: &Key, store: &str) -> String {
    if key.as_str().is_empty() {
        format!("the object being stored in store '{store}'")
    } else {
        format!("object {key} of store '{store}'")
    }
}

impl Error {
    /// A permanent backend error with a source: trying again will fail the same way.
    ///
    /// ```
    /// let e = proxystore::Error::backend("file", "read", std::io::Error::other("bad sector"));
    /// assert!(!e.is_retryable());
    /// ```
    pub fn backend(
        connector: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::backend_from(connector.into(), message.into(), source.into(), false)
    }

    /// A temporary backend error with a source: trying again later may succeed (a lost
    /// connection, a server restarting, throttling).
    ///
    /// ```
    /// let e = proxystore::Error::temporary("redis", "GET", std::io::Error::other("reset"));
    /// assert!(e.is_retryable());
    /// ```
    pub fn temporary(
        connector: impl Into<String>,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::backend_from(connector.into(), message.into(), source.into(), true)
    }

    fn backend_from(connector: String, message: String, source: BoxError, temporary: bool) -> Self {
        Error::Backend {
            connector,
            message,
            source: Some(source),
            temporary,
        }
    }

    /// A backend error without a source; `temporary` as for [`Error::Backend`].
    pub fn backend_message(
        connector: impl Into<String>,
        message: impl Into<String>,
        temporary: bool,
    ) -> Self {
        Error::Backend {
            connector: connector.into(),
            message: message.into(),
            source: None,
            temporary,
        }
    }

    /// A backend error from an I/O error, temporary when its kind says the operation may
    /// succeed later (interrupted, would block, a connection refused, reset, aborted or timed
    /// out) and permanent otherwise (a disk error, permissions, a missing directory). A full
    /// disk or quota is not a backend failure but [`Error::LimitExceeded`].
    ///
    /// ```
    /// use std::io::{Error as IoError, ErrorKind};
    /// use proxystore::Error;
    /// assert!(Error::io("file", "read", IoError::from(ErrorKind::Interrupted)).is_retryable());
    /// assert!(!Error::io("file", "read", IoError::from(ErrorKind::PermissionDenied)).is_retryable());
    /// assert!(matches!(
    ///     Error::io("file", "write", IoError::from(ErrorKind::StorageFull)),
    ///     Error::LimitExceeded { .. }
    /// ));
    /// ```
    pub fn io(connector: impl Into<String>, message: impl Into<String>, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let connector = connector.into();
        let message = message.into();
        match e.kind() {
            K::StorageFull | K::QuotaExceeded | K::FileTooLarge | K::OutOfMemory => {
                Error::LimitExceeded {
                    message: format!("{connector} connector {message}: {e}"),
                }
            }
            K::Interrupted
            | K::WouldBlock
            | K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::ResourceBusy => Error::temporary(connector, message, e),
            _ => Error::backend(connector, message, e),
        }
    }

    /// A configuration error.
    pub fn config(message: impl Into<String>) -> Self {
        Error::Config {
            message: message.into(),
        }
    }

    /// Whether the failure is temporary: retrying the same operation later may succeed
    /// (a [`Error::Backend`] marked temporary, a [`Error::Timeout`]), as opposed to errors that
    /// will repeat (bad input, missing objects, bad credentials, permanent backend failures).
    /// The retry layer, the store service's status codes (`UNAVAILABLE` only for these) and
    /// executor plugins all go by this one mark.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                temporary: true,
                ..
            } | Error::Timeout { .. }
        )
    }

    /// Whether this is a backend failure marked temporary (a lost connection, throttling):
    /// what [`crate::layer::RetryLayer`] retries. A timeout is retryable for the caller but not
    /// retried by the layer, because the attempt already spent the time it was given.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Backend {
                temporary: true,
                ..
            }
        )
    }

    /// [`Error::NotFound`] for `key` in `store`, origin unknown.
    pub fn not_found(store: impl Into<String>, key: Key) -> Self {
        Error::NotFound {
            store: store.into(),
            key,
            origin: None,
        }
    }

    /// Whether this error means the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

/// ` (made as map/return)`, or nothing when the origin is unknown.
fn origin_note(origin: Option<&str>) -> String {
    origin.map_or_else(String::new, |o| format!(" (made as {o})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_store_and_key() {
        let e = Error::not_found("s", Key::from("k1"));
        assert_eq!(e.to_string(), "object k1 not found in store 's'");
        let e = Error::NotFound {
            store: "s".into(),
            key: Key::from("k1"),
            origin: Some("map/return".into()),
        };
        assert_eq!(
            e.to_string(),
            "object k1 (made as map/return) not found in store 's'"
        );
        assert!(!e.is_retryable());
        assert!(e.is_not_found());
        let e = Error::temporary("redis", "get", std::io::Error::other("reset"));
        assert!(e.is_retryable());
        assert!(std::error::Error::source(&e).is_some());
        let e = Error::backend("file", "read", std::io::Error::other("bad sector"));
        assert!(!e.is_retryable());
        assert!(!Error::backend_message("s3", "no upload id", false).is_retryable());
        assert!(Error::backend_message("redis", "changed", true).is_retryable());
    }

    #[test]
    fn a_digest_mismatch_without_a_key_names_the_object_being_stored() {
        let mismatch = |key: &str| Error::DigestMismatch {
            store: "memory".into(),
            key: Key::from(key),
            expected: "xxh3:00".into(),
            actual: "xxh3:01".into(),
        };
        assert_eq!(
            mismatch("k1").to_string(),
            "digest mismatch for object k1 of store 'memory': expected xxh3:00, got xxh3:01"
        );
        assert_eq!(
            mismatch("").to_string(),
            "digest mismatch for the object being stored in store 'memory': expected xxh3:00, \
             got xxh3:01"
        );
    }
}
