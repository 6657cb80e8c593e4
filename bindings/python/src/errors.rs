//! The Rust core's [`proxystore::Error`] as Python exceptions.
//!
//! Every exception is a subclass of `ProxyStoreError` and carries the attributes `kind` (the
//! error's variant in snake case, e.g. `not_found`), `store`, `key` and `connector` (each `None`
//! when the error does not concern one) and `retryable`.

use proxystore::Error;
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
create_exception!(
    proxystore_rs,
    NotFoundError,
    ProxyStoreError,
    "The object is not in the store (never put, evicted, or expired)."
);
create_exception!(
    proxystore_rs,
    DigestMismatchError,
    ProxyStoreError,
    "The bytes read do not match the digest recorded in the reference."
);
create_exception!(
    proxystore_rs,
    TimeoutError,
    ProxyStoreError,
    "An operation did not finish in time."
);
create_exception!(
    proxystore_rs,
    UnauthorizedError,
    ProxyStoreError,
    "Missing or wrong credentials (e.g. a gRPC store's token)."
);
create_exception!(
    proxystore_rs,
    InvalidReferenceError,
    ProxyStoreError,
    "Reference bytes are corrupt, truncated, of a newer version, or not a reference."
);
create_exception!(
    proxystore_rs,
    CodecError,
    ProxyStoreError,
    "An object cannot be encoded or decoded: e.g. a postcard-encoded Rust value read from Python."
);
create_exception!(
    proxystore_rs,
    ConfigError,
    ProxyStoreError,
    "A connector configuration (or a key) is invalid, or its kind is unknown."
);
create_exception!(
    proxystore_rs,
    RefusedError,
    ProxyStoreError,
    "This process's resolve policy does not accept the connector a reference names."
);
create_exception!(
    proxystore_rs,
    BackendError,
    ProxyStoreError,
    "The backend failed: I/O error, lost connection, server error, limit exceeded."
);
create_exception!(
    proxystore_rs,
    UnsupportedError,
    ProxyStoreError,
    "The connector does not support this operation."
);

/// Add the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("ProxyStoreError", py.get_type::<ProxyStoreError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("DigestMismatchError", py.get_type::<DigestMismatchError>())?;
    m.add("TimeoutError", py.get_type::<TimeoutError>())?;
    m.add("UnauthorizedError", py.get_type::<UnauthorizedError>())?;
    m.add(
        "InvalidReferenceError",
        py.get_type::<InvalidReferenceError>(),
    )?;
    m.add("CodecError", py.get_type::<CodecError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("BackendError", py.get_type::<BackendError>())?;
    m.add("UnsupportedError", py.get_type::<UnsupportedError>())?;
    Ok(())
}

/// What a Python exception says of one error: its class, `kind`, store, key and connector.
struct Parts<'py> {
    class: Bound<'py, PyType>,
    kind: &'static str,
    store: Option<String>,
    key: Option<String>,
    connector: Option<String>,
}

fn parts<'py>(py: Python<'py>, e: &Error) -> Parts<'py> {
    let p = |class: Bound<'py, PyType>, kind| Parts {
        class,
        kind,
        store: None,
        key: None,
        connector: None,
    };
    match e {
        Error::NotFound { store, key, .. } => Parts {
            store: Some(store.clone()),
            key: Some(key.to_string()),
            ..p(py.get_type::<NotFoundError>(), "not_found")
        },
        Error::DigestMismatch { store, key, .. } => Parts {
            store: Some(store.clone()),
            key: Some(key.to_string()),
            ..p(py.get_type::<DigestMismatchError>(), "digest_mismatch")
        },
        Error::Timeout { .. } => p(py.get_type::<TimeoutError>(), "timeout"),
        Error::Unauthorized { .. } => p(py.get_type::<UnauthorizedError>(), "unauthorized"),
        Error::InvalidReference { .. } => {
            p(py.get_type::<InvalidReferenceError>(), "invalid_reference")
        }
        Error::UnsupportedVersion { .. } => p(
            py.get_type::<InvalidReferenceError>(),
            "unsupported_version",
        ),
        Error::InvalidDigest { .. } => p(py.get_type::<InvalidReferenceError>(), "invalid_digest"),
        Error::Encode { .. } => p(py.get_type::<CodecError>(), "encode"),
        Error::Decode { store, key, .. } => Parts {
            store: Some(store.clone()),
            key: Some(key.to_string()),
            ..p(py.get_type::<CodecError>(), "decode")
        },
        Error::Config { .. } => p(py.get_type::<ConfigError>(), "config"),
        Error::UnknownConnectorKind { kind, .. } => Parts {
            connector: Some(kind.clone()),
            ..p(py.get_type::<ConfigError>(), "unknown_connector_kind")
        },
        Error::InvalidKey { connector, key, .. } => Parts {
            connector: Some(connector.clone()),
            key: Some(key.clone()),
            ..p(py.get_type::<ConfigError>(), "invalid_key")
        },
        Error::Refused { store, kind, .. } => Parts {
            store: Some(store.clone()),
            connector: Some(kind.clone()),
            ..p(py.get_type::<RefusedError>(), "refused")
        },
        Error::Backend { connector, .. } => Parts {
            connector: Some(connector.clone()),
            ..p(py.get_type::<BackendError>(), "backend")
        },
        Error::LimitExceeded { .. } => p(py.get_type::<BackendError>(), "limit_exceeded"),
        Error::Unsupported { connector, .. } => Parts {
            connector: Some(connector.clone()),
            ..p(py.get_type::<UnsupportedError>(), "unsupported")
        },
        _ => p(py.get_type::<ProxyStoreError>(), "other"),
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
