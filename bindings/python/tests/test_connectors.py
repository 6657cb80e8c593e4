"""Rust-backed connectors held to Python ProxyStore's expectations of a connector.

The first tests mirror Python ProxyStore's own `tests/connectors/connector_test.py`; the rest
run its `Store` over each connector, including proxies pickled to another Python process.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
from proxystore.connectors.protocols import Connector
from proxystore.connectors.protocols import DeferrableConnector
from proxystore.store import Store
from proxystore.store.config import StoreConfig

import proxystore_rs as ps


def test_connector_repr(connector: ps.RustConnector) -> None:
    assert connector.kind in repr(connector)


def test_is_a_proxystore_connector(connector: ps.RustConnector) -> None:
    assert isinstance(connector, Connector)
    assert isinstance(connector, DeferrableConnector)


def test_connector_basic_ops(connector: ps.RustConnector) -> None:
    value = b'test_value'
    key = connector.put(value)
    assert isinstance(key, ps.RustKey)
    assert connector.get(key) == value
    assert connector.exists(key)
    connector.evict(key)
    assert not connector.exists(key)
    assert connector.get(key) is None
    # Evicting a missing key is not an error.
    connector.evict(key)


def test_connector_batch_ops(connector: ps.RustConnector) -> None:
    values = [b'value1', b'value2', b'value3']
    keys = connector.put_batch(values)
    assert connector.get_batch(keys) == values
    assert all(connector.exists(key) for key in keys)
    for key in keys:
        connector.evict(key)
    assert all(not connector.exists(key) for key in keys)
    assert connector.get_batch(keys) == [None, None, None]


def test_connector_config(connector: ps.RustConnector) -> None:
    key = connector.put(b'shared')
    config = connector.config()
    again = type(connector).from_config(config)
    assert type(again) is type(connector)
    assert isinstance(again, Connector)
    assert again.get(key) == b'shared'
    assert type(connector)(**config).exists(key)


def test_deferrable_connector_ops(connector: ps.RustConnector) -> None:
    obj = b'test_value'
    key = connector.new_key(obj)
    assert not connector.exists(key)
    connector.set(key, obj)
    connector.set(key, obj)
    assert connector.get(key) == obj


def test_inputs_of_every_buffer_type(connector: ps.RustConnector) -> None:
    for value in [b'', bytearray(b'abc'), memoryview(b'xyz'), np.arange(4, dtype='<u2')]:
        key = connector.put(value)
        assert bytes(connector.get(key)) == bytes(memoryview(value).cast('B'))
    with pytest.raises(TypeError):
        connector.put(12)


@pytest.mark.parametrize('size', [0, 1, 1000, 5 * 1024 * 1024 + 3])
def test_get_returns_exact_bytes_filled_by_the_read(
    connector: ps.RustConnector,
    size: int,
) -> None:
    # An exact `bytes` (not a subclass, not a view) is what Python ProxyStore's deserializer
    # takes without a copy. 5 MiB + 3 crosses the size from which the bytes ask for huge pages
    # and is not a whole number of pages.
    data = np.random.default_rng(size).bytes(size)
    key = connector.put(data)
    got = connector.get(key)
    assert type(got) is bytes
    assert got == data
    again = connector.get(key)
    assert again == data
    if size:
        assert again is not got, 'each get makes its own object'
    assert [type(v) for v in connector.get_batch([key, key])] == [bytes, bytes]
    connector.evict(key)
    assert connector.get(key) is None
    assert connector.get_batch([key]) == [None]


def test_get_of_a_key_never_written_is_none(connector: ps.RustConnector) -> None:
    key = connector.new_key()
    assert connector.get(key) is None
    assert connector.native.get_bytes(key.key) is None
    assert connector.native.get(key.key) is None


def test_hostile_keys_raise_the_same_error_on_every_get(tmp_path: Any) -> None:
    c = ps.RustFileConnector(str(tmp_path / 'objects'))
    (tmp_path / 'secret').write_bytes(b'secret')
    for get in (c.get, lambda k: c.native.get(k.key), lambda k: c.get_batch([k])):
        with pytest.raises(ps.ConfigError) as e:
            get(ps.RustKey('../secret'))
        assert e.value.kind == 'invalid_key'
    c.close()


def test_native_get_is_a_read_only_view_that_outlives_the_connector(
    connector: ps.RustConnector,
) -> None:
    key = connector.put(b'x' * 1000)
    view = connector.native.get(key.key)
    assert isinstance(view, memoryview) and view.readonly and len(view) == 1000
    with pytest.raises(TypeError):
        view[0] = 0
    del connector
    assert bytes(view[:3]) == b'xxx'


@pytest.mark.parametrize('size', [0, 1024 * 1024, 6 * 1024 * 1024 + 5])
def test_store_round_trip_of_bytes(connector: ps.RustConnector, size: int) -> None:
    data = np.random.default_rng(7).bytes(size)
    with Store(f'bytes-{connector.kind}-{size}', connector, cache_size=0, register=False) as s:
        key = s.put(data)
        assert type(connector.get(key)) is bytes
        got = s.get(key)
        assert type(got) is bytes and got == data
        s.evict(key)
        assert s.get(key) is None


def test_redis_get_of_a_large_object_written_in_pieces(servers: dict[str, Any]) -> None:
    # Written in 1 MiB pieces (SETRANGE into a temporary key, renamed); read back by one GET
    # straight into the bytes.
    r = servers['redis']
    c = ps.RustRedisConnector(
        r['host'], r['port'], prefix='pytest-pieces/', chunked_above_bytes=1 << 20,
        chunk_bytes=1 << 20,
    )
    data = np.random.default_rng(3).bytes((3 << 20) + 17)
    key = c.put(data)
    got = c.get(key)
    assert type(got) is bytes and got == data
    c.evict(key)
    c.close()


def test_redis_get_of_a_value_of_another_type_is_a_backend_error(
    servers: dict[str, Any],
) -> None:
    import redis

    r = servers['redis']
    client = redis.Redis(r['host'], r['port'])
    client.rpush('pytest-types/a-list', b'x')
    c = ps.RustRedisConnector(r['host'], r['port'], prefix='pytest-types/')
    try:
        for get in (c.get, lambda k: c.native.get(k.key)):
            with pytest.raises(ps.BackendError) as e:
                get(ps.RustKey('a-list'))
            assert e.value.connector == 'redis' and not e.value.retryable
        # The connection that carried the error reply still serves the next get.
        key = c.put(b'after the error')
        assert c.get(key) == b'after the error'
    finally:
        client.delete('pytest-types/a-list')
        client.close()
        c.close()


def test_keys_pickle(connector: ps.RustConnector) -> None:
    key = connector.put(b'abc')
    assert pickle.loads(pickle.dumps(key)) == key
    assert connector.get(pickle.loads(pickle.dumps(key))) == b'abc'
    again = pickle.loads(pickle.dumps(connector))
    assert type(again) is type(connector) and again.config() == connector.config()


def test_large_object(connector: ps.RustConnector) -> None:
    data = np.random.default_rng(1).bytes(8 * 1024 * 1024 + 3)
    key = connector.put(data)
    assert connector.get(key) == data


def test_store_over_connector(connector: ps.RustConnector) -> None:
    with Store(f'store-{connector.kind}', connector, register=False) as store:
        key = store.put([1, 2, 3])
        assert store.get(key) == [1, 2, 3]
        assert store.exists(key)
        store.evict(key)
        assert not store.exists(key)
        assert store.get(key) is None

        proxy = store.proxy({'a': np.arange(10)})
        assert proxy['a'].sum() == 45

        keys = store.put_batch(['x', 'y'])
        assert [store.get(k) for k in keys] == ['x', 'y']
        proxies = store.proxy_batch([b'p', b'q'])
        assert [bytes(p) for p in proxies] == [b'p', b'q']

        config = store.config()
        assert config.connector.kind.endswith(type(connector).__name__)
        rebuilt = Store.from_config(StoreConfig(**config.model_dump()))
        key = store.put('travels')
        assert rebuilt.get(key) == 'travels'


CONSUMER = textwrap.dedent(
    """
    import pickle, sys
    proxy = pickle.loads(sys.stdin.buffer.read())
    print(len(proxy), proxy[0], proxy[-1])
    """,
)


def test_pickled_proxy_resolves_in_another_process(
    shared_connector: ps.RustConnector,
) -> None:
    with Store(f'xproc-{shared_connector.kind}', shared_connector, register=True) as store:
        proxy = store.proxy(list(range(1000)))
        wire = pickle.dumps(proxy)
        assert len(wire) < 2000
        out = subprocess.run(
            [sys.executable, '-c', CONSUMER],
            input=wire,
            capture_output=True,
            check=False,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr.decode()
        assert out.stdout.decode().split() == ['1000', '0', '999']


def test_errors_are_typed(servers: dict[str, Any]) -> None:
    with pytest.raises(ps.ConfigError) as e:
        ps.RustConnector('no-such-kind')
    assert e.value.kind == 'unknown_connector_kind'
    assert e.value.connector == 'no-such-kind'
    with pytest.raises(ps.ConfigError):
        ps.RustConnector('redis', url='not a url at all')
    with pytest.raises(ps.ProxyStoreError):
        ps.RustConnector('grpc', address='http://127.0.0.1:1', connect_timeout_ms=200,
                         retries=0).put(b'x')


def test_grpc_token(servers: dict[str, Any]) -> None:
    auth = servers['grpc_auth']
    for token in [None, 'wrong-token']:
        c = ps.GrpcConnector(auth['address'], token=token)
        with pytest.raises(ps.UnauthorizedError) as e:
            c.put(b'secret')
        assert e.value.kind == 'unauthorized' and not e.value.retryable
        assert isinstance(e.value, ps.ProxyStoreError)
    good = ps.GrpcConnector(auth['address'], token=auth['token'])
    key = good.put(b'secret')
    assert good.get(key) == b'secret'
    with pytest.raises(ps.UnauthorizedError):
        ps.GrpcConnector(auth['address'], token='wrong-token').get(key)


def test_redis_clear_evicts_what_the_connector_wrote(servers: dict[str, Any]) -> None:
    host, port = servers['redis']['host'], servers['redis']['port']
    other = ps.RustRedisConnector(host, port)
    not_ours = other.put(b'not ours')
    c = ps.RustRedisConnector(host, port, clear=True)
    written = [c.put(b'a'), *c.put_batch([b'b', b'c'])]
    deferred = c.new_key()
    c.set(deferred, b'd')
    written.append(deferred)
    evicted = c.put(b'e')
    c.evict(evicted)

    # A connector rebuilt from the config (as where a proxy resolves) clears its own writes.
    rebuilt = ps.RustRedisConnector.from_config(c.config())
    assert rebuilt.clear
    theirs = rebuilt.put(b'rebuilt')
    rebuilt.close()
    assert not other.exists(theirs)
    assert all(other.exists(k) for k in written)

    with Store('redis-clear', c, register=False) as store:
        written.append(store.put('through the store'))
    assert not any(other.exists(k) for k in written)
    assert other.exists(not_ours)

    kept = ps.RustRedisConnector(host, port)
    key = kept.put(b'kept by default')
    kept.close()
    overridden = ps.RustRedisConnector(host, port, clear=True)
    key2 = overridden.put(b'kept by close(clear=False)')
    overridden.close(clear=False)
    assert other.exists(key) and other.exists(key2)
    other.evict(key)
    other.evict(key2)
    other.evict(not_ours)
