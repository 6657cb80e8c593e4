"""References across the language line: Rust makes, Python resolves, and the reverse."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
from typing import Any

import numpy as np
import pytest

import proxystore_rs as ps


def interop(bin_path: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [bin_path, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def pattern(size: int) -> bytes:
    """The same bytes as `proxystore_tests::pattern`."""
    return bytes((i * 31) % 251 for i in range(size))


def rust_config(connector: ps.RustConnector) -> tuple[str, str]:
    return connector.native.config()


def test_rust_bytes_resolve_in_python(
    shared_connector: ps.RustConnector,
    interop_bin: str,
) -> None:
    kind, options = rust_config(shared_connector)
    ref = bytes.fromhex(
        interop(interop_bin, 'put-bytes', kind, options, f'rust-{kind}', '100000')['reference'],
    )
    info = ps.info(ref)
    assert (info['kind'], info['codec'], info['size']) == (kind, 'raw', 100000)
    assert info['digest'] == 'xxh3'
    data = ps.resolve(ref)
    assert isinstance(data, memoryview) and data.readonly
    assert data == pattern(100000)


def test_rust_array_resolves_as_numpy(
    shared_connector: ps.RustConnector,
    interop_bin: str,
) -> None:
    kind, options = rust_config(shared_connector)
    ref = bytes.fromhex(
        interop(interop_bin, 'put-array', kind, options, f'rust-arr-{kind}', '300', '7')[
            'reference'
        ],
    )
    assert ps.info(ref)['codec'] == 'npy'
    array = ps.resolve(ref)
    assert isinstance(array, np.ndarray)
    assert array.dtype == np.float64 and array.shape == (300, 7)
    np.testing.assert_array_equal(array, np.arange(2100, dtype='<f8').reshape(300, 7) / 2)
    assert not array.flags.writeable


def test_python_bytes_and_arrays_resolve_in_rust(
    shared_connector: ps.RustConnector,
    interop_bin: str,
) -> None:
    data = pattern(54321)
    ref = ps.put_bytes(shared_connector, data)
    out = interop(interop_bin, 'resolve', ref.hex())
    assert out == {'codec': 'raw', 'len': len(data), 'checksum': sum(data)}

    array = np.linspace(0, 1, 1000).reshape(20, 50)
    ref = ps.put_array(shared_connector, array)
    out = interop(interop_bin, 'resolve', ref.hex())
    assert out['codec'] == 'npy' and out['dtype'] == '<f8' and out['shape'] == [20, 50]
    assert out['sum'] == pytest.approx(array.sum())


@pytest.mark.parametrize(
    'array',
    [
        np.arange(12, dtype=np.int32).reshape(3, 4),
        np.arange(24, dtype='>i8').reshape(2, 3, 4),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([True, False, True]),
        np.array([1 + 2j, 3 - 4j], dtype=np.complex64),
        np.array(3.5),
        np.zeros((0, 5), dtype=np.uint8),
        np.arange(10, dtype=np.float32)[::2],
    ],
)
def test_numpy_round_trip(array: np.ndarray, servers: dict[str, Any], tmp_path: pathlib.Path) -> None:
    connector = ps.RustFileConnector(str(tmp_path / 'arrays'))
    back = ps.resolve(ps.put_array(connector, array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_arrays_that_cannot_cross(tmp_path: pathlib.Path) -> None:
    connector = ps.RustMemoryConnector()
    for bad in [np.array(['a', 'b']), np.array([object()]), np.zeros(2, dtype='i4,f8')]:
        with pytest.raises(ps.CodecError):
            ps.put_array(connector, bad)


def test_postcard_values_do_not_cross(
    shared_connector: ps.RustConnector,
    interop_bin: str,
) -> None:
    kind, options = rust_config(shared_connector)
    ref = bytes.fromhex(
        interop(interop_bin, 'put-postcard', kind, options, f'rust-pc-{kind}')['reference'],
    )
    with pytest.raises(ps.CodecError) as e:
        ps.resolve(ref)
    assert e.value.kind == 'decode'
    assert 'postcard' in str(e.value)
    assert e.value.key == ps.info(ref)['key']


def test_not_found_and_digest_mismatch(tmp_path: pathlib.Path) -> None:
    connector = ps.RustFileConnector(str(tmp_path / 'objects'))
    ref = ps.put_bytes(connector, b'original', store='tamper-test')
    key = ps.info(ref)['key']
    path = pathlib.Path(connector.store_dir) / key
    assert path.read_bytes() == b'original'
    path.write_bytes(b'tampered')
    with pytest.raises(ps.DigestMismatchError) as e:
        ps.resolve(ref)
    assert (e.value.kind, e.value.store, e.value.key) == ('digest_mismatch', 'tamper-test', key)
    connector.evict(ps.RustKey(key))
    with pytest.raises(ps.NotFoundError) as nf:
        ps.resolve(ref)
    assert (nf.value.store, nf.value.key) == ('tamper-test', key)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (payloads under 128 bytes)."""
    assert len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def _reference(kind: str, options: str, key: str = 'k', codec: str = 'raw') -> bytes:
    connector = _field(1, kind.encode()) + _field(2, options.encode())
    return (
        bytes([1 << 3, 1])
        + _field(2, b'hostile')
        + _field(3, connector)
        + _field(4, key.encode())
        + _field(7, codec.encode())
    )


def test_resolve_policy_refuses_foreign_places() -> None:
    outside = '/var/lib/proxystore-should-never-exist'
    with pytest.raises(ps.RefusedError) as e:
        ps.resolve(_reference('file', json.dumps({'directory': outside})))
    assert e.value.kind == 'refused' and e.value.connector == 'file'
    assert not os.path.exists(outside)
    with pytest.raises(ps.RefusedError):
        ps.resolve(_reference('redis', json.dumps({'url': 'redis://10.1.2.3:6379'})))
    with pytest.raises(ps.ProxyStoreError):
        ps.resolve(_reference('no-such-kind', '{}'))
    with pytest.raises(ps.InvalidReferenceError):
        ps.resolve(_reference('memory', '{}', codec='pickle'))


def test_hostile_reference_bytes(tmp_path: pathlib.Path) -> None:
    connector = ps.RustFileConnector(str(tmp_path / 'objects'))
    good = ps.put_bytes(connector, b'payload')
    assert ps.resolve(good) == b'payload'
    rng = random.Random(19)
    cases = [b'', b'\x00', b'\xff' * 64, b'garbage', good[:-1], good[: len(good) // 2]]
    for _ in range(300):
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(bytes(b))
    for _ in range(100):
        cases.append(rng.randbytes(rng.randint(1, 300)))
    outcomes = set()
    for case in cases:
        try:
            ps.resolve(case)
            outcomes.add('ok')
        except ps.ProxyStoreError as e:
            outcomes.add(type(e).__name__)
        with pytest.raises(ps.ProxyStoreError):
            ps.info(b'\xff' + case)
    assert 'InvalidReferenceError' in outcomes
    with pytest.raises(ps.InvalidReferenceError):
        ps.info(_reference('memory', '{}')[2:])
