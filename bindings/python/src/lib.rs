//! `proxystore_rs._native`: the Rust core of ProxyStore for Rust, driven from Python.
//!
//! This is the compiled half of the `proxystore_rs` Python package (`bindings/python/python`
//! holds the other half: the connector classes that Python ProxyStore's `Store` takes, and the
//! NumPy glue). It offers:
//!
//! - [`NativeConnector`]: any connector kind of the core (`memory`, `file`, `redis`, `s3`,
//!   `grpc`, `multi`, `globus`) built from its kind and JSON options, with byte-level `put`,
//!   `get`, `exists`, `evict`, batches and deferred puts. Every call releases the GIL and runs
//!   its I/O on the core's own tokio runtime ([`proxystore::runtime`]). `get` returns a
//!   `memoryview` over the Rust-owned bytes, without a copy (for code that takes any buffer,
//!   such as NumPy); `get_bytes` returns a `bytes` object that the read itself filled
//!   ([`proxystore::Connector::get_into`]), which is what the connector classes of Python
//!   ProxyStore's protocol return.
//! - References that cross the language line: `NativeConnector.put_reference` and
//!   `NativeConnector.put_npy` store bytes or an array and return the protobuf bytes of a
//!   `proxystore_rs.v1.ProxyReference` that a Rust process resolves; `resolve_reference`
//!   resolves one made by Rust. Raw bytes and NPY arrays cross; postcard, JSON and MessagePack
//!   encoded Rust values do not (a `CodecError` says so), and neither do pickled Python objects
//!   (those are Python ProxyStore's own proxies, not references of this format).
//! - Exceptions ([`errors`]) that carry the error's kind, store, key and connector.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use proxystore::codec::npy::NpyArray;
use proxystore::connector::ObjectSink;
use proxystore::{Codec, Connector, ConnectorConfig, Key, PutOptions, Reference, Store};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyMemoryView};

mod buffer;
pub mod errors;

use buffer::{Buffer, PyBytesMemory};

/// Run `fut` on the core's I/O runtime with the GIL released, and turn its error into the
/// matching Python exception.
fn run<T, F>(py: Python<'_>, fut: F) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = proxystore::Result<T>> + Send + 'static,
{
    match py.detach(move || proxystore::runtime::block_on(fut)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) | Err(e) => Err(errors::to_py(py, e)),
    }
}

/// The bytes of a Python object: a `bytes` object is shared without a copy (the `Bytes` keeps
/// it alive); any other buffer (`bytearray`, `memoryview`, an array) is copied once.
/// Anything without the buffer protocol raises `TypeError` (`bytes(12)` would be 12 zeros).
fn bytes_of(obj: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    let py = obj.py();
    let b = match obj.cast::<PyBytes>() {
        Ok(b) => b.clone(),
        Err(_) => py
            .get_type::<PyBytes>()
            .call1((PyMemoryView::from(obj)?,))?
            .cast_into::<PyBytes>()?,
    };
    Ok(Bytes::from_owner(PyBackedBytes::from(b)))
}

/// A connector of the Rust core, built from its kind and options.
///
/// `NativeConnector(kind, options_json)` builds the same connector a Rust process builds from a
/// reference carrying that config (see `proxystore::kinds`), inside the layers its config asks
/// for (I/O runtime, timeout, retries). Keys are strings.
#[pyclass(frozen, module = "proxystore_rs._native")]
pub struct NativeConnector {
    inner: Arc<dyn Connector>,
    config: ConnectorConfig,
    stores: Mutex<HashMap<String, Store>>,
}

impl NativeConnector {
    /// The store named `name` over this connector (made once per name), for references.
    fn store(&self, name: &str) -> Store {
        let mut stores = self.stores.lock().unwrap_or_else(|e| e.into_inner());
        stores
            .entry(name.to_owned())
            .or_insert_with(|| Store::new(name, self.inner.clone()))
            .clone()
    }
}

#[pymethods]
impl NativeConnector {
    /// Build a connector of `kind` (`memory`, `file`, `redis`, `s3`, `grpc`, `multi`,
    /// `globus`) from `options_json`, a JSON object of that kind's options (as in a Rust
    /// `ConnectorConfig`; empty for none).
    ///
    /// Raises `ConfigError` for an unknown kind or invalid options.
    #[new]
    fn new(py: Python<'_>, kind: &str, options_json: &str) -> PyResult<Self> {
        let config = ConnectorConfig::from_json_options(kind, options_json)
            .map_err(|e| errors::to_py(py, e))?;
        let built = {
            let config = config.clone();
            py.detach(move || proxystore::kinds::from_config(&config))
        };
        let inner = built.map_err(|e| errors::to_py(py, e))?;
        Ok(NativeConnector {
            inner: proxystore::layer::stack(inner),
            config,
            stores: Mutex::new(HashMap::new()),
        })
    }

    /// The connector kind.
    #[getter]
    fn kind(&self) -> &str {
        self.config.kind()
    }

    /// The config that rebuilds this connector, as `(kind, options_json)`.
    fn config(&self) -> (String, String) {
        let c = self.inner.config();
        (c.kind().to_owned(), c.options_json().to_owned())
    }

    /// Store `data` (any bytes-like object) under a new key; returns the key.
    fn put(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
        let data = bytes_of(data)?;
        let c = self.inner.clone();
        run(py, async move { c.put(data).await }).map(|k| k.to_string())
    }

    /// Store many objects in one call where the backend can; keys in input order.
    fn put_batch(&self, py: Python<'_>, data: Vec<Bound<'_, PyAny>>) -> PyResult<Vec<String>> {
        let data = data.iter().map(bytes_of).collect::<PyResult<Vec<_>>>()?;
        let c = self.inner.clone();
        let keys = run(py, async move {
            c.put_batch(data, &PutOptions::default()).await
        })?;
        Ok(keys.iter().map(Key::to_string).collect())
    }

    /// The object's bytes as a `bytes` object that the read itself filled (the file read
    /// into it, the Redis reply read off the socket into it; other backends fetch the object
    /// and copy it in once), or `None` when absent. What the Python ProxyStore connector
    /// classes return: its deserializer takes a `bytes` without a copy.
    fn get_bytes<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let c = self.inner.clone();
        let key = Key::from(key);
        let got = run(py, async move {
            let mut memory = PyBytesMemory::default();
            let mut sink = ObjectSink::new(&mut memory);
            if !c.get_into(&key, &mut sink).await? {
                return Ok(None);
            }
            let written = sink.complete()?;
            drop(sink);
            Ok(Some((memory, written)))
        })?;
        got.map(|(memory, written)| memory.finish(py, written))
            .transpose()
    }

    /// The object's bytes as a read-only `memoryview` over the Rust-owned bytes (no copy),
    /// or `None` when absent.
    fn get<'py>(&self, py: Python<'py>, key: &str) -> PyResult<Option<Bound<'py, PyMemoryView>>> {
        let c = self.inner.clone();
        let key = Key::from(key);
        match run(py, async move { c.get(&key).await })? {
            Some(data) => Buffer::view(py, data).map(Some),
            None => Ok(None),
        }
    }

    /// Many objects in one call where the backend can; `None` for each absent key.
    fn get_batch<'py>(
        &self,
        py: Python<'py>,
        keys: Vec<String>,
    ) -> PyResult<Vec<Option<Bound<'py, PyMemoryView>>>> {
        let c = self.inner.clone();
        let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
        let found = run(py, async move { c.get_batch(&keys).await })?;
        found
            .into_iter()
            .map(|d| d.map(|d| Buffer::view(py, d)).transpose())
            .collect()
    }

    /// Whether the key is present.
    fn exists(&self, py: Python<'_>, key: &str) -> PyResult<bool> {
        let c = self.inner.clone();
        let key = Key::from(key);
        run(py, async move { c.exists(&key).await })
    }

    /// Remove the object; evicting an absent key is not an error.
    fn evict(&self, py: Python<'_>, key: &str) -> PyResult<()> {
        let c = self.inner.clone();
        let key = Key::from(key);
        run(py, async move { c.evict(&key).await })
    }

    /// Remove many objects.
    fn evict_batch(&self, py: Python<'_>, keys: Vec<String>) -> PyResult<()> {
        let c = self.inner.clone();
        let keys: Vec<Key> = keys.into_iter().map(Key::from).collect();
        run(py, async move { c.evict_batch(&keys).await })
    }

    /// Reserve a key for a later `set` (raises `UnsupportedError` where the backend has no
    /// deferred puts).
    fn new_key(&self, py: Python<'_>) -> PyResult<String> {
        let c = self.inner.clone();
        run(py, async move { c.new_key(&PutOptions::default()).await }).map(|k| k.to_string())
    }

    /// Store `data` under a key from `new_key`.
    fn set(&self, py: Python<'_>, key: &str, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let data = bytes_of(data)?;
        let c = self.inner.clone();
        let key = Key::from(key);
        run(py, async move { c.set(&key, data).await })
    }

    /// Release the connector's resources (connections); further calls may fail.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.inner.clone();
        run(py, async move { c.close().await })
    }

    /// Store `data` as raw bytes in the store named `store` over this connector; returns the
    /// protobuf bytes of its reference (size and digest included), which a Rust process
    /// resolves as `Bytes` or `Vec<u8>`.
    #[pyo3(signature = (data, store, type_name = "bytes"))]
    fn put_reference<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        store: &str,
        type_name: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = bytes_of(data)?;
        let store = self.store(store);
        let type_name = type_name.to_owned();
        let r = run(py, async move {
            store
                .put_encoded(data, Codec::Raw, &type_name, &PutOptions::default())
                .await
        })?;
        Ok(PyBytes::new(py, &r.to_bytes()))
    }

    /// Store an array (element type `dtype` as a NumPy `descr` such as `<f8`, `shape`, and
    /// its elements' bytes in C order) as an NPY file in the store named `store`; returns the
    /// protobuf bytes of its reference, which a Rust process resolves as
    /// `proxystore::codec::npy::NpyArray`.
    fn put_npy<'py>(
        &self,
        py: Python<'py>,
        dtype: &str,
        shape: Vec<u64>,
        data: &Bound<'py, PyAny>,
        store: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let data = bytes_of(data)?;
        let array = NpyArray::new(dtype, shape, data).map_err(|e| errors::to_py(py, e))?;
        let store = self.store(store);
        let r = run(py, async move {
            let file = array.encode();
            store
                .put_encoded(file, Codec::Npy, &array.type_name(), &PutOptions::default())
                .await
        })?;
        Ok(PyBytes::new(py, &r.to_bytes()))
    }

    fn __repr__(&self) -> String {
        format!("NativeConnector({:?})", self.inner.config())
    }
}

/// The fields of a reference (protobuf bytes of `proxystore_rs.v1.ProxyReference`) as a dict:
/// `version`, `store`, `kind`, `options_json`, `key`, `size`, `codec`, `type_name`,
/// `digest` (algorithm name or `None`), `evict_on_resolve`, `origin`.
///
/// Raises `InvalidReferenceError` for bytes that are not a valid reference.
#[pyfunction]
fn reference_info<'py>(py: Python<'py>, reference: &[u8]) -> PyResult<Bound<'py, PyDict>> {
    let r = Reference::from_bytes(reference).map_err(|e| errors::to_py(py, e))?;
    let d = PyDict::new(py);
    d.set_item("version", r.version)?;
    d.set_item("store", &r.store)?;
    d.set_item("kind", r.connector.kind())?;
    d.set_item("options_json", r.connector.options_json())?;
    d.set_item("key", r.key.as_str())?;
    d.set_item("size", r.size)?;
    d.set_item("codec", r.codec.as_str())?;
    d.set_item("type_name", &r.type_name)?;
    d.set_item("digest", r.digest.map(|d| d.algorithm().as_str()))?;
    d.set_item("evict_on_resolve", r.evict_on_resolve)?;
    d.set_item("origin", &r.origin)?;
    Ok(d)
}

/// The layout of a resolved NPY array: element type, shape, Fortran order, data offset.
type NpyLayout = (String, Vec<u64>, bool, usize);

/// Resolve a reference made by a Rust (or Python) process: decode it, check that this
/// process's resolve policy accepts its connector (`PROXYSTORE_RESOLVE_POLICY`; by default
/// loopback hosts and temporary directories), fetch the bytes and check them against the
/// reference's digest.
///
/// Returns `(codec, type_name, view, layout)`: `view` is a read-only `memoryview` over the
/// stored bytes (no copy); `layout` is `None` for raw bytes, and for an NPY array
/// `(dtype, shape, fortran_order, data_offset)` so that `numpy.frombuffer(view, dtype,
/// offset=data_offset)` is the array without a copy.
///
/// Raises `InvalidReferenceError` for corrupt bytes, `CodecError` (before fetching anything)
/// when the object is encoded with a Rust serde codec (postcard, JSON, MessagePack),
/// `RefusedError`, `NotFoundError`, `DigestMismatchError`, or the connector's error.
#[pyfunction]
fn resolve_reference<'py>(
    py: Python<'py>,
    reference: &[u8],
) -> PyResult<(String, String, Bound<'py, PyMemoryView>, Option<NpyLayout>)> {
    let r = Reference::from_bytes(reference).map_err(|e| errors::to_py(py, e))?;
    if !matches!(r.codec, Codec::Raw | Codec::Npy) {
        return Err(errors::to_py(
            py,
            proxystore::Error::Decode {
                store: r.store.clone(),
                key: r.key.clone(),
                type_name: r.type_name.clone(),
                codec: r.codec.as_str().to_owned(),
                source: format!(
                    "the object is encoded with {}, a Rust serde codec; only raw bytes and npy \
                     arrays cross into Python",
                    r.codec
                )
                .into(),
            },
        ));
    }
    let codec = r.codec;
    let type_name = r.type_name.clone();
    let data = run(py, async move {
        let store = proxystore::store_for_reference(&r, &proxystore::resolve_policy()?)?;
        let data = store.get_verified_bytes(&r).await?;
        if r.codec == Codec::Npy {
            let layout = NpyArray::layout(&data).map_err(|e| proxystore::Error::Decode {
                store: r.store.clone(),
                key: r.key.clone(),
                type_name: r.type_name.clone(),
                codec: "npy".into(),
                source: e.into(),
            })?;
            return Ok((data, Some(layout)));
        }
        Ok((data, None))
    })?;
    let (data, layout) = data;
    Ok((
        codec.as_str().to_owned(),
        type_name,
        Buffer::view(py, data)?,
        layout,
    ))
}

/// Set this process's resolve policy (which connectors a reference may make it rebuild) from
/// its JSON form, as `PROXYSTORE_RESOLVE_POLICY` takes it, e.g.
/// `{"hosts": ["redis.internal:6379"], "buckets": ["my-bucket"]}`.
///
/// Raises `ConfigError` for an invalid policy.
#[pyfunction]
fn set_resolve_policy(py: Python<'_>, policy_json: &str) -> PyResult<()> {
    let policy =
        proxystore::ResolvePolicy::from_json(policy_json).map_err(|e| errors::to_py(py, e))?;
    proxystore::set_resolve_policy(policy);
    Ok(())
}

/// The Rust core under Python: connectors, references and exceptions.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeConnector>()?;
    m.add_class::<Buffer>()?;
    m.add_function(wrap_pyfunction!(reference_info, m)?)?;
    m.add_function(wrap_pyfunction!(resolve_reference, m)?)?;
    m.add_function(wrap_pyfunction!(set_resolve_policy, m)?)?;
    m.add(
        "CONNECTOR_KINDS",
        proxystore::kinds::registered_connector_kinds(),
    )?;
    errors::register(m)?;
    Ok(())
}
