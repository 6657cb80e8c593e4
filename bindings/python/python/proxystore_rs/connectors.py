"""Connectors backed by the Rust core, for Python ProxyStore's ``Store``.

Each class implements Python ProxyStore's ``Connector`` protocol (``put``, ``get``,
``exists``, ``evict``, ``put_batch``, ``get_batch``, ``config``, ``from_config``,
``close``) and its ``DeferrableConnector`` extension (``new_key``, ``set``), so it drops
into unchanged Python ProxyStore code::

    from proxystore.store import Store
    from proxystore_rs import RustFileConnector

    store = Store('s', RustFileConnector('/tmp/objects'))

Every call releases the GIL while the Rust core does its I/O on its own runtime. ``get``
returns ``bytes``, as Python ProxyStore's own connectors do: a ``bytes`` object of the
object's size that the read itself fills (the file connector reads the file into it, the
Redis connector its reply off the socket; other backends copy the fetched bytes in once).
Python ProxyStore's deserializer takes a ``bytes`` as it is and copies anything else, so this
spares the ``Store`` a copy of the whole object. ``get_batch`` returns ``bytes`` too. For a
read-only ``memoryview`` over the bytes the Rust core fetched (no copy, e.g. for
``numpy.frombuffer``), use ``connector.native.get(key)``.

``config()`` returns the keyword arguments of the constructor, so ``type(c)(**c.config())``
and ``type(c).from_config(c.config())`` rebuild the connector in any process (that is what
Python ProxyStore's ``StoreConfig`` does when a proxy travels).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

from proxystore_rs import _native


class RustKey(NamedTuple):
    """Key of an object in a Rust-backed connector (picklable, valid in any process).

    Attributes:
        key: The Rust core's key (a UUID for memory and file, an object name elsewhere).
    """

    key: str


def _key_str(key: Any) -> str:
    if isinstance(key, RustKey):
        return key.key
    if isinstance(key, tuple) and len(key) == 1 and isinstance(key[0], str):
        return key[0]
    if isinstance(key, str):
        return key
    raise TypeError(f'expected a RustKey, not {type(key).__name__}')


def _rebuild(cls: type[RustConnector], config: dict[str, Any]) -> RustConnector:
    return cls.from_config(config)


class RustConnector:
    """A connector of any kind the Rust core has, from its Rust options.

    The subclasses (``RustFileConnector``, ``RustRedisConnector``, ``GrpcConnector``,
    ``RustS3Connector``, ``RustMemoryConnector``) take Python-friendly arguments; this class
    takes the kind and the options of the Rust ``ConnectorConfig`` as they are, which also
    reaches the ``multi`` and ``globus`` kinds::

        RustConnector('grpc', address='http://127.0.0.1:50051', token='...')

    Args:
        kind: Connector kind of the Rust core (``_native.CONNECTOR_KINDS``).
        options: That kind's options (see the Rust docs of its config struct).

    Raises:
        proxystore_rs.ConfigError: Unknown kind or invalid options.
    """

    def __init__(self, kind: str, **options: Any) -> None:
        self._config = {'kind': kind, **options}
        self._init_native(kind, options)

    def _init_native(self, kind: str, rust_options: dict[str, Any]) -> None:
        options = {k: v for k, v in rust_options.items() if v is not None}
        self._native = _native.NativeConnector(kind, json.dumps(options))

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self._native!r})'

    def __enter__(self) -> RustConnector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.config()))

    @property
    def kind(self) -> str:
        """Connector kind of the Rust core."""
        return self._native.kind

    @property
    def native(self) -> _native.NativeConnector:
        """The Rust connector (byte-level API with string keys, and references)."""
        return self._native

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this connector (``type(self)(**config)``)."""
        return dict(self._config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RustConnector:
        """Rebuild a connector from what ``config()`` returned."""
        return cls(**config)

    def close(self) -> None:
        """Close the connector's connections (idempotent)."""
        self._native.close()

    def put(self, obj: Any) -> RustKey:
        """Store a bytes-like object; returns its key."""
        return RustKey(self._native.put(obj))

    def put_batch(self, objs: Sequence[Any]) -> list[RustKey]:
        """Store many objects (one round trip where the backend allows); keys in order."""
        return [RustKey(k) for k in self._native.put_batch(list(objs))]

    def get(self, key: RustKey) -> bytes | None:
        """The object's bytes (filled by the read itself), or ``None`` when absent."""
        return self._native.get_bytes(_key_str(key))

    def get_batch(self, keys: Sequence[RustKey]) -> list[bytes | None]:
        """Many objects in order (one round trip where the backend allows), as ``bytes``;
        ``None`` for each absent key."""
        return [
            None if v is None else bytes(v)
            for v in self._native.get_batch([_key_str(k) for k in keys])
        ]

    def exists(self, key: RustKey) -> bool:
        """Whether an object is stored under ``key``."""
        return self._native.exists(_key_str(key))

    def evict(self, key: RustKey) -> None:
        """Remove the object; an absent key is not an error."""
        self._native.evict(_key_str(key))

    def new_key(self, obj: Any = None) -> RustKey:
        """A key for a later ``set`` (``obj`` is ignored).

        Raises:
            proxystore_rs.UnsupportedError: The backend has no deferred puts.
        """
        return RustKey(self._native.new_key())

    def set(self, key: RustKey, obj: Any) -> None:
        """Store ``obj`` under a key from ``new_key``."""
        self._native.set(_key_str(key), obj)


class RustFileConnector(RustConnector):
    """Objects as files in a directory, by the Rust core (like ProxyStore's FileConnector).

    Args:
        store_dir: Directory of the objects; created if missing.
        clear: Remove ``store_dir`` on ``close()`` (the default, as in ProxyStore's
            ``FileConnector``).
        fsync: ``fsync`` each object before it becomes visible.
    """

    def __init__(self, store_dir: str, *, clear: bool = True, fsync: bool = False) -> None:
        self.store_dir = os.path.abspath(store_dir)
        self.clear = clear
        self._config = {'store_dir': self.store_dir, 'clear': clear, 'fsync': fsync}
        self._init_native('file', {'directory': self.store_dir, 'fsync': fsync})

    def close(self, clear: bool | None = None) -> None:
        """Close; remove the directory if ``clear`` (default: the constructor's)."""
        self._native.close()
        if (self.clear if clear is None else clear) and os.path.isdir(self.store_dir):
            shutil.rmtree(self.store_dir, ignore_errors=True)


class RustRedisConnector(RustConnector):
    """Objects in a Redis server, by the Rust core (like ProxyStore's RedisConnector).

    Args:
        hostname: Redis host.
        port: Redis port.
        clear: On ``close()``, evict every object this connector wrote (and did not evict
            already). Unlike ProxyStore's ``RedisConnector(clear=True)``, which runs
            ``FLUSHDB``, other keys of the database stay, and so do the objects of other
            connectors rebuilt from this one's config (in a process that resolves its
            proxies, say). The keys are remembered in this object until then.
        options: More options of the Rust Redis connector (``db``, ``password``,
            ``prefix``, ``ttl_ms``, ``response_timeout_ms``, ``cluster``, ...).
    """

    def __init__(
        self,
        hostname: str = 'localhost',
        port: int = 6379,
        *,
        clear: bool = False,
        **options: Any,
    ) -> None:
        self.hostname = hostname
        self.port = port
        self.clear = clear
        self._written: set[str] = set()
        self._config = {'hostname': hostname, 'port': port, 'clear': clear, **options}
        self._init_native('redis', {'url': f'redis://{hostname}:{port}', **options})

    def put(self, obj: Any) -> RustKey:
        """Store a bytes-like object; returns its key."""
        key = super().put(obj)
        if self.clear:
            self._written.add(key.key)
        return key

    def put_batch(self, objs: Sequence[Any]) -> list[RustKey]:
        """Store many objects in one round trip; keys in order."""
        keys = super().put_batch(objs)
        if self.clear:
            self._written.update(k.key for k in keys)
        return keys

    def set(self, key: RustKey, obj: Any) -> None:
        """Store ``obj`` under a key from ``new_key``."""
        super().set(key, obj)
        if self.clear:
            self._written.add(_key_str(key))

    def evict(self, key: RustKey) -> None:
        """Remove the object; an absent key is not an error."""
        super().evict(key)
        self._written.discard(_key_str(key))

    def close(self, clear: bool | None = None) -> None:
        """Close; first evict the objects this connector wrote if ``clear``.

        Args:
            clear: Override the constructor's ``clear`` (``False`` keeps the objects). Only
                objects written while the constructor's ``clear`` was on are known.
        """
        if (self.clear if clear is None else clear) and self._written:
            self._native.evict_batch(sorted(self._written))
            self._written.clear()
        self._native.close()


class GrpcConnector(RustConnector):
    """Objects in a ProxyStore for Rust store service (``proxystore serve``), over gRPC.

    Args:
        address: Server address, e.g. ``http://127.0.0.1:50051``.
        options: More options of the Rust gRPC connector (``token``, ``token_env``,
            ``timeout_ms``, ``chunk_size``, ``tls_ca_file``, ...).

    Raises:
        proxystore_rs.UnauthorizedError: On use, when the server wants a token and the
            given one is missing or wrong.
    """

    def __init__(self, address: str, **options: Any) -> None:
        self.address = address
        self._config = {'address': address, **options}
        self._init_native('grpc', {'address': address, **options})


class RustS3Connector(RustConnector):
    """Objects in an S3 bucket, by the Rust core.

    Args:
        bucket: Bucket name.
        options: More options of the Rust S3 connector (``prefix``, ``region``,
            ``endpoint_url``, ``force_path_style``, ``access_key_id``,
            ``secret_access_key``, ...).
    """

    def __init__(self, bucket: str, **options: Any) -> None:
        self.bucket = bucket
        self._config = {'bucket': bucket, **options}
        self._init_native('s3', {'bucket': bucket, **options})


class RustMemoryConnector(RustConnector):
    """Objects in this process's memory, by the Rust core.

    Connectors with the same ``segment`` in one process share their objects, so a store
    rebuilt from ``config()`` in this process sees them; other processes do not.

    Args:
        segment: Name of the memory segment (a new one when omitted).
    """

    def __init__(self, segment: str | None = None) -> None:
        self.segment = segment or f'py-{uuid.uuid4().hex}'
        self._config = {'segment': self.segment}
        self._init_native('memory', {'segment': self.segment})
