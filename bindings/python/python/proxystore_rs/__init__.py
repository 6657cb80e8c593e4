"""ProxyStore for Rust, from Python.

- Rust-backed connectors for Python ProxyStore's ``Store``: ``RustFileConnector``,
  ``RustRedisConnector``, ``GrpcConnector``, ``RustS3Connector``, ``RustMemoryConnector``,
  and ``RustConnector`` for any kind of the Rust core (``multi``, ``globus``).
- References shared with Rust processes: ``put_bytes``, ``put_array``, ``resolve``,
  ``info`` (see ``proxystore_rs.references`` for what crosses the line), and
  ``set_resolve_policy`` (which connectors a reference may make this process rebuild).
- Exceptions: ``ProxyStoreError`` and its subclasses, each with ``kind``, ``store``,
  ``key``, ``connector`` and ``retryable`` attributes.
"""

from __future__ import annotations

from proxystore_rs._native import BackendError
from proxystore_rs._native import CodecError
from proxystore_rs._native import ConfigError
from proxystore_rs._native import DigestMismatchError
from proxystore_rs._native import InvalidReferenceError
from proxystore_rs._native import NotFoundError
from proxystore_rs._native import ProxyStoreError
from proxystore_rs._native import RefusedError
from proxystore_rs._native import TimeoutError
from proxystore_rs._native import UnauthorizedError
from proxystore_rs._native import UnsupportedError
from proxystore_rs._native import set_resolve_policy
from proxystore_rs.connectors import GrpcConnector
from proxystore_rs.connectors import RustConnector
from proxystore_rs.connectors import RustFileConnector
from proxystore_rs.connectors import RustKey
from proxystore_rs.connectors import RustMemoryConnector
from proxystore_rs.connectors import RustRedisConnector
from proxystore_rs.connectors import RustS3Connector
from proxystore_rs.references import info
from proxystore_rs.references import put_array
from proxystore_rs.references import put_bytes
from proxystore_rs.references import resolve

__all__ = [
    'BackendError',
    'CodecError',
    'ConfigError',
    'DigestMismatchError',
    'GrpcConnector',
    'InvalidReferenceError',
    'NotFoundError',
    'ProxyStoreError',
    'RefusedError',
    'RustConnector',
    'RustFileConnector',
    'RustKey',
    'RustMemoryConnector',
    'RustRedisConnector',
    'RustS3Connector',
    'TimeoutError',
    'UnauthorizedError',
    'UnsupportedError',
    'info',
    'put_array',
    'put_bytes',
    'resolve',
    'set_resolve_policy',
]
