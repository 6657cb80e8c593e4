//! The Rust core's [`proxystore::Error`] as Python exceptions.
//!
//! Every exception is a subclass of `ProxyStoreError` and carries the attributes `kind` (the
//! error's variant in snake case, e.g. `not_found`), `store`, `key` and `connector` (each `None`
//! when the error does not concern one) and `retryable`.

use proxystore::Error;
use pyo3::PyTypeInfo;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyType;

create_exception!(
    proxystore_rs,
    ProxyStoreError,
    PyException,
    "Base of every error of the Rust core; has `kind`, `store`, `key`, `connector`, `retryable`."
);

/// The subclasses of `ProxyStoreError`, each with its docstring, and [`register`] adding them
/// all (and the base) to the module.
macro_rules! exceptions {
    ($($name:ident => $doc:literal,)*) => {
        $(create_exception!(proxystore_rs, $name, ProxyStoreError, $doc);)*

        /// Add the exception classes to the module.
        pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = m.py();
            m.add("ProxyStoreError", py.get_type::<ProxyStoreError>())?;
            $(m.add(stringify!($name), py.get_type::<$name>())?;)*
            Ok(())
        }
    };
}

exceptions! {
    NotFoundError => "The object is not in the store (never put, evicted, or expired).",
    DigestMismatchError => "The bytes read do not match the digest recorded in the reference.",
    TimeoutError => "An operation did not finish in time.",
    UnauthorizedError => "Missing or wrong credentials (e.g. a gRPC store's token).",
    InvalidReferenceError =>
        "Reference bytes are corrupt, truncated, of a newer version, or not a reference.",
    CodecError =>
        "An object cannot be encoded or decoded: e.g. a postcard-encoded Rust value read from Python.",
    ConfigError => "A connector configuration (or a key) is invalid, or its kind is unknown.",
    RefusedError =>
        "This process's resolve policy does not accept the connector a reference names.",
    BackendError => "The backend failed: I/O error, lost connection, server error, limit exceeded.",
    UnsupportedError => "The connector does not support this operation.",
}

/// What a Python exception says of one error: its class, `kind`, store, key and connector.
struct Parts<'py> {
    class: Bound<'py, PyType>,
    kind: &'static str,
    store: Option<String>,
    key: Option<String>,
    connector: Option<String>,
}

impl<'py> Parts<'py> {
    /// An exception of class `T` and `kind`, concerning no store, key or connector.
    fn of<T: PyTypeInfo>(py: Python<'py>, kind: &'static str) -> Self {
        Parts {
            class: py.get_type::<T>(),
            kind,
            store: None,
            key: None,
            connector: None,
        }
    }

    fn store(self, store: &str) -> Self {
        Parts {
            store: Some(store.to_owned()),
            ..self
        }
    }

    fn key(self, key: impl ToString) -> Self {
        Parts {
            key: Some(key.to_string()),
            ..self
        }
    }

    fn connector(self, connector: &str) -> Self {
        Parts {
            connector: Some(connector.to_owned()),
            ..self
        }
    }
}

fn parts<'py>(py: Python<'py>, e: &Error) -> Parts<'py> {
    match e {
        Error::NotFound { store, key, .. } => Parts::of::<NotFoundError>(py, "not_found")
            .store(store)
            .key(key),
        Error::DigestMismatch { store, key, .. } => {
            Parts::of::<DigestMismatchError>(py, "digest_mismatch")
                .store(store)
                .key(key)
        }
        Error::Timeout { .. } => Parts::of::<TimeoutError>(py, "timeout"),
        Error::Unauthorized { .. } => Parts::of::<UnauthorizedError>(py, "unauthorized"),
        Error::InvalidReference { .. } => {
            Parts::of::<InvalidReferenceError>(py, "invalid_reference")
        }
        Error::UnsupportedVersion { .. } => {
            Parts::of::<InvalidReferenceError>(py, "unsupported_version")
        }
        Error::InvalidDigest { .. } => Parts::of::<InvalidReferenceError>(py, "invalid_digest"),
        Error::Encode { .. } => Parts::of::<CodecError>(py, "encode"),
        Error::Decode { store, key, .. } => {
            Parts::of::<CodecError>(py, "decode").store(store).key(key)
        }
        Error::Config { .. } => Parts::of::<ConfigError>(py, "config"),
        Error::UnknownConnectorKind { kind, .. } => {
            Parts::of::<ConfigError>(py, "unknown_connector_kind").connector(kind)
        }
        Error::InvalidKey { connector, key, .. } => Parts::of::<ConfigError>(py, "invalid_key")
            .connector(connector)
            .key(key),
        Error::Refused { store, kind, .. } => Parts::of::<RefusedError>(py, "refused")
            .store(store)
            .connector(kind),
        Error::Backend { connector, .. } => {
            Parts::of::<BackendError>(py, "backend").connector(connector)
        }
        Error::LimitExceeded { .. } => Parts::of::<BackendError>(py, "limit_exceeded"),
        Error::Unsupported { connector, .. } => {
            Parts::of::<UnsupportedError>(py, "unsupported").connector(connector)
        }
        _ => Parts::of::<ProxyStoreError>(py, "other"),
    }
}

/// `e` as an instance of its Python exception class, with its attributes set.
pub(crate) fn to_py(py: Python<'_>, e: Error) -> PyErr {
    let Parts {
        class,
        kind,
        store,
        key,
        connector,
    } = parts(py, &e);
    let err = PyErr::from_type(class, e.to_string());
    let value = err.value(py);
    // Setting attributes on a fresh exception instance cannot fail short of memory exhaustion;
    // the exception is still raised without them then.
    let _ = value.setattr("kind", kind);
    let _ = value.setattr("store", store);
    let _ = value.setattr("key", key);
    let _ = value.setattr("connector", connector);
    let _ = value.setattr("retryable", e.is_retryable());
    err
}
