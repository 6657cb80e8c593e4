"""The `multi` and `globus` kinds of the Rust core under Python ProxyStore's `Store`.

`multi` routes small objects to a file connector and large ones to Redis by a size policy;
`globus` runs against the fake Globus Transfer API that `test-servers` serves, with two
collections on this machine standing for two hosts.
"""

from __future__ import annotations

import os
import pathlib
import pickle
import subprocess
import sys
import textwrap
import time
import uuid
from typing import Any

import pytest
from proxystore.store import Store

import proxystore_rs as ps

# Objects of at most this many serialized bytes go to the file route, larger ones to Redis.
SMALL_MAX = 4096

CONSUMER = textwrap.dedent(
    """
    import pickle, sys
    proxy = pickle.loads(sys.stdin.buffer.read())
    print(len(proxy), bytes(proxy[:4]).hex())
    """,
)


def resolve_elsewhere(proxy: Any, env: dict[str, str] | None = None) -> list[str]:
    """Unpickle and resolve `proxy` in a new Python process; its length and first bytes."""
    out = subprocess.run(
        [sys.executable, '-c', CONSUMER],
        input=pickle.dumps(proxy),
        capture_output=True,
        check=False,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().split()


def route_of(key: ps.RustKey) -> tuple[str, str]:
    """The route label and inner key of a multi connector's key."""
    label, inner = key.key.split(':', 1)
    return label, inner


def test_multi_routes_by_size(servers: dict[str, Any], tmp_path: pathlib.Path) -> None:
    redis = servers['redis']
    directory = tmp_path / 'small-objects'
    prefix = f'pytest-multi-{uuid.uuid4().hex[:12]}/'
    connector = ps.RustConnector(
        'multi',
        routes=[
            {
                'label': 'small',
                'connector': {'kind': 'file', 'options': {'directory': str(directory)}},
                'policy': {'max_size': SMALL_MAX},
            },
            {
                'label': 'large',
                'connector': {'kind': 'redis', 'options': {'url': redis['url'], 'prefix': prefix}},
                'policy': {'min_size': SMALL_MAX + 1},
            },
        ],
    )
    in_redis = ps.RustRedisConnector(redis['host'], redis['port'], prefix=prefix)
    small, large = b's' * 100, os.urandom(100_000)
    name = f'multi-{uuid.uuid4().hex[:8]}'
    with Store(name, connector, cache_size=0, register=True) as store:
        ks, kl = store.put(small), store.put(large)
        assert route_of(ks)[0] == 'small' and route_of(kl)[0] == 'large'
        assert (directory / route_of(ks)[1]).is_file()
        assert in_redis.exists(ps.RustKey(route_of(kl)[1]))
        assert store.get(ks) == small and store.get(kl) == large
        assert store.exists(ks) and store.exists(kl)
        store.evict(ks)
        store.evict(kl)
        assert not store.exists(ks) and not store.exists(kl)
        assert store.get(kl) is None
        assert not (directory / route_of(ks)[1]).exists()
        assert not in_redis.exists(ps.RustKey(route_of(kl)[1]))

        # One batch over both routes; the connector's own batch get keeps the order.
        keys = store.put_batch([small, large, b'tiny'])
        assert [route_of(k)[0] for k in keys] == ['small', 'large', 'small']
        assert [store.get(k) for k in keys] == [small, large, b'tiny']
        assert all(v is not None for v in connector.get_batch(keys))
        for k in keys:
            store.evict(k)

        # A proxy, resolved here and in another process (which rebuilds both routes).
        proxy = store.proxy(large)
        assert bytes(proxy) == large
        assert resolve_elsewhere(store.proxy(large)) == [str(len(large)), large[:4].hex()]
    in_redis.close()


def globus_options(servers: dict[str, Any]) -> tuple[dict[str, Any], list[pathlib.Path]]:
    """Options of a Globus connector over the two fake collections (a fresh directory on
    each), in which collection A is this host (by host pattern) and B "another host"; and
    the two directories as this machine sees them."""
    g = servers['globus']
    a, b = g['collections']
    sub = f'proxystore-{uuid.uuid4().hex[:8]}'
    dirs = [pathlib.Path(a['root']) / sub, pathlib.Path(b['root']) / 'projects' / sub]
    options = {
        'endpoints': [
            {
                'uuid': a['uuid'],
                'endpoint_path': f'/~/{sub}',
                'local_path': str(dirs[0]),
                'host_patterns': ['*'],
            },
            {
                'uuid': b['uuid'],
                'endpoint_path': f'/projects/{sub}/',
                'local_path': str(dirs[1]),
                'host_patterns': ['globus-test-host-b.invalid'],
            },
        ],
        'api_url': g['api_url'],
        # The token comes from the file only, whatever the environment holds.
        'token_env': 'PROXYSTORE_GLOBUS_TEST_TOKEN_NEVER_SET',
        'token_file': g['token_file'],
        'timeout_ms': 30_000,
        'poll_min_ms': 5,
        'poll_max_ms': 100,
        'request_timeout_ms': 5_000,
    }
    return options, dirs


def eventually(what: str, check: Any) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, f'timed out: {what}'
        time.sleep(0.01)


def test_globus_under_store(servers: dict[str, Any]) -> None:
    options, (dir_a, dir_b) = globus_options(servers)
    b_uuid = options['endpoints'][1]['uuid']
    on_a = ps.RustConnector('globus', **options)
    on_b = ps.RustConnector('globus', local_endpoint=b_uuid, **options)
    name = f'globus-{uuid.uuid4().hex[:8]}'
    with Store(name, on_a, cache_size=0, register=True) as store, Store(
        f'{name}-b', on_b, cache_size=0, register=False,
    ) as store_b:
        key = store.put([1, 2, 3])
        file_name = key.key.split(':', 1)[0]
        assert (dir_a / file_name).is_file()
        assert store.get(key) == [1, 2, 3] and store.exists(key)
        # "Another host" waits for the transfer, then reads its own copy.
        assert store_b.get(key) == [1, 2, 3] and store_b.exists(key)
        assert (dir_b / file_name).is_file()
        store.evict(key)
        assert not store.exists(key) and store.get(key) is None
        eventually('the delete task removes the copy on B', lambda: not (dir_b / file_name).exists())

        keys = store.put_batch(['x', 'y'])
        assert [store_b.get(k) for k in keys] == ['x', 'y']

        data = os.urandom(50_000)
        proxy = store.proxy(data)
        assert bytes(proxy) == data
        # A process on "B" (the endpoint named by its environment) resolves the pickled proxy.
        out = resolve_elsewhere(store.proxy(data), {'PROXYSTORE_GLOBUS_ENDPOINT': b_uuid})
        assert out == [str(len(data)), data[:4].hex()]

        # Globus keys carry their transfer tasks, so there are no deferred puts.
        with pytest.raises(ps.UnsupportedError):
            on_a.new_key()


def test_globus_wrong_token_is_unauthorized(servers: dict[str, Any], tmp_path: pathlib.Path) -> None:
    options, _ = globus_options(servers)
    bad = tmp_path / 'bad-token'
    bad.write_text('not-the-token\n')
    connector = ps.RustConnector('globus', **{**options, 'token_file': str(bad)})
    with pytest.raises(ps.UnauthorizedError) as e:
        Store(f'globus-bad-{uuid.uuid4().hex[:8]}', connector, register=False).put(b'x')
    assert e.value.kind == 'unauthorized' and not e.value.retryable
