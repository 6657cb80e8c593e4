"""Fixtures: the real servers (started here, on loopback) and a connector of each kind.

The servers come from the `test-servers` binary of the workspace's `tests` crate (Redis as
`redis-server`, S3 and two gRPC stores in-process), spawned once per session; it stops them
when its standard input closes. Cross-language tests call the `py-interop` binary of the
same crate. Both are taken from `$PROXYSTORE_TEST_SERVERS_BIN` / `$PY_INTEROP_BIN` when set
(`scripts/test` builds them), else built here with cargo. A missing binary or server is a
failure, never a skip.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import uuid
from collections.abc import Generator
from typing import Any

import pytest

import proxystore_rs as ps

REPO = pathlib.Path(__file__).resolve().parents[3]

# References name the S3 test bucket; the default resolve policy lists no bucket. Set before
# the first resolve (the policy is read once) and inherited by the Rust processes spawned.
os.environ['PROXYSTORE_RESOLVE_POLICY'] = json.dumps({'buckets': ['proxystore-test']})


def _binary(name: str, env: str) -> str:
    path = os.environ.get(env)
    if path:
        return path
    subprocess.run(
        ['cargo', 'build', '-p', 'proxystore-tests', '--bin', name],
        cwd=REPO,
        check=True,
    )
    meta = subprocess.run(
        ['cargo', 'metadata', '--format-version', '1', '--no-deps'],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return str(pathlib.Path(json.loads(meta.stdout)['target_directory']) / 'debug' / name)


@pytest.fixture(scope='session')
def servers() -> Generator[dict[str, Any], None, None]:
    """Addresses and credentials of the running servers."""
    proc = subprocess.Popen(
        [_binary('test-servers', 'PROXYSTORE_TEST_SERVERS_BIN')],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=30)
        pytest.fail(f'test-servers exited with {proc.returncode} before printing addresses')
    yield json.loads(line)
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture(scope='session')
def interop_bin() -> str:
    """Path of the Rust side of the cross-language tests."""
    return _binary('py-interop', 'PY_INTEROP_BIN')


def make_connector(kind: str, servers: dict[str, Any], tmp: pathlib.Path) -> ps.RustConnector:
    """A fresh connector of `kind` (with its own directory, prefix or segment)."""
    prefix = f'pytest-{uuid.uuid4().hex[:12]}/'
    if kind == 'memory':
        return ps.RustMemoryConnector()
    if kind == 'file':
        return ps.RustFileConnector(str(tmp / f'objects-{uuid.uuid4().hex[:8]}'))
    if kind == 'redis':
        r = servers['redis']
        return ps.RustRedisConnector(r['host'], r['port'], prefix=prefix)
    if kind == 'grpc':
        return ps.GrpcConnector(servers['grpc']['address'])
    if kind == 's3':
        s = servers['s3']
        return ps.RustS3Connector(
            s['bucket'],
            prefix=prefix,
            region=s['region'],
            endpoint_url=s['endpoint_url'],
            force_path_style=True,
            access_key_id=s['access_key_id'],
            secret_access_key=s['secret_access_key'],
        )
    raise ValueError(kind)


KINDS = ['memory', 'file', 'redis', 'grpc', 's3']
# Kinds whose objects another process can reach.
SHARED_KINDS = ['file', 'redis', 'grpc', 's3']


def _connector_fixture(name: str, kinds: list[str], doc: str) -> Any:
    """A fixture named `name`, parametrized over `kinds`: a fresh connector, closed after."""

    def fixture(
        request: pytest.FixtureRequest,
        servers: dict[str, Any],
        tmp_path: pathlib.Path,
    ) -> Generator[ps.RustConnector, None, None]:
        c = make_connector(request.param, servers, tmp_path)
        yield c
        c.close()

    fixture.__doc__ = doc
    return pytest.fixture(name=name, params=kinds)(fixture)


connector = _connector_fixture('connector', KINDS, 'A connector of each kind.')
shared_connector = _connector_fixture(
    'shared_connector',
    SHARED_KINDS,
    'A connector of each kind whose objects other processes reach.',
)
