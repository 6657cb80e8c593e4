"""References that cross between Rust and Python.

A reference is the protobuf bytes of ``proxystore_rs.v1.ProxyReference``
(``proto/proxystore_rs/v1/proxy.proto``): store name, connector config, key, size, digest
and codec of one stored object. ``put_bytes`` and ``put_array`` store an object through a
Rust-backed connector and return such a reference, which a Rust process resolves
(``proxystore::Store::get_by_reference`` or a ``Proxy<Bytes>`` / ``Proxy<NpyArray>``);
``resolve`` fetches the object a Rust process made a reference to.

What crosses the line:

- raw bytes (codec ``raw``): ``bytes``/``Vec<u8>`` in Rust, a ``memoryview`` in Python;
- arrays of numbers (codec ``npy``): ``proxystore::codec::npy::NpyArray`` in Rust, a
  ``numpy.ndarray`` in Python (bool, integer, float and complex element types).

What does not: Rust values encoded with a serde codec (``postcard``, ``json``, ``msgpack``)
raise ``CodecError`` before anything is fetched; pickled Python objects are Python
ProxyStore's own proxies, which Rust cannot read.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from proxystore_rs import _native
from proxystore_rs._native import CodecError
from proxystore_rs.connectors import RustConnector


def _native_of(connector: RustConnector | _native.NativeConnector) -> _native.NativeConnector:
    if isinstance(connector, RustConnector):
        return connector.native
    if isinstance(connector, _native.NativeConnector):
        return connector
    raise TypeError(f'expected a Rust-backed connector, not {type(connector).__name__}')


def default_store_name(connector: RustConnector | _native.NativeConnector) -> str:
    """The store name ``put_bytes``/``put_array`` use by default: one per connector config.

    A Rust process keeps one store per name, so two connectors with different configs must
    not share a name; the same config gets the same name in every process.
    """
    kind, options = _native_of(connector).config()
    digest = hashlib.sha256(f'{kind}\n{options}'.encode()).hexdigest()[:16]
    return f'py-{kind}-{digest}'


def put_bytes(
    connector: RustConnector | _native.NativeConnector,
    data: Any,
    store: str | None = None,
) -> bytes:
    """Store bytes through a Rust-backed connector; returns the reference's protobuf bytes.

    Args:
        connector: Where to store them.
        data: A bytes-like object.
        store: Store name written in the reference (default: ``default_store_name``).
    """
    native = _native_of(connector)
    return native.put_reference(data, store or default_store_name(native))


def put_array(
    connector: RustConnector | _native.NativeConnector,
    array: Any,
    store: str | None = None,
) -> bytes:
    """Store a NumPy array as an NPY file; returns the reference's protobuf bytes.

    A Rust process resolves it as ``proxystore::codec::npy::NpyArray`` (element type,
    shape, data).

    Args:
        connector: Where to store it.
        array: A NumPy array (or anything ``numpy.asarray`` takes) of bool, integer, float
            or complex elements.
        store: Store name written in the reference (default: ``default_store_name``).

    Raises:
        proxystore_rs.CodecError: Object, string or structured element types.
    """
    import numpy as np

    a = np.asarray(array)
    if a.dtype.kind not in 'biufc':
        raise CodecError(
            f'arrays of {a.dtype} cannot cross into Rust: only bool, integer, float and '
            'complex elements do',
        )
    if not a.flags.c_contiguous:
        a = a.copy(order='C')
    native = _native_of(connector)
    return native.put_npy(
        a.dtype.str,
        list(a.shape),
        memoryview(a).cast('B') if a.size else b'',
        store or default_store_name(native),
    )


def info(reference: bytes) -> dict[str, Any]:
    """The fields of a reference as a dict (``store``, ``kind``, ``key``, ``codec``, ...).

    Raises:
        proxystore_rs.InvalidReferenceError: Not a valid reference.
    """
    return _native.reference_info(bytes(reference))


def resolve(reference: bytes) -> Any:
    """Fetch the object a reference points to, checked against its digest.

    The connector is rebuilt from the reference when this process's resolve policy accepts
    it (``PROXYSTORE_RESOLVE_POLICY``; by default loopback hosts and temporary directories).

    Returns:
        A read-only ``memoryview`` for raw bytes (no copy), a read-only ``numpy.ndarray``
        over the fetched buffer for an NPY array (no copy; ``.copy()`` it to write).

    Raises:
        proxystore_rs.InvalidReferenceError: Corrupt or foreign bytes.
        proxystore_rs.CodecError: The object is a serde-encoded Rust value.
        proxystore_rs.RefusedError: The resolve policy does not accept the connector.
        proxystore_rs.NotFoundError: The object is gone.
        proxystore_rs.DigestMismatchError: The bytes are not those referenced.
    """
    _codec, _type_name, view, layout = _native.resolve_reference(bytes(reference))
    if layout is None:
        return view
    import numpy as np

    dtype, shape, fortran, offset = layout
    try:
        count = math.prod(shape)
        if count == 0:
            return np.empty(tuple(shape), dtype=np.dtype(dtype), order='F' if fortran else 'C')
        array = np.frombuffer(view, dtype=np.dtype(dtype), count=count, offset=offset)
    except (TypeError, ValueError) as e:
        raise CodecError(f'cannot read the NPY array of the reference: {e}') from e
    return array.reshape(tuple(shape), order='F' if fortran else 'C')
