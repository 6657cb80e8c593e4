#!/usr/bin/env python3
"""Python ProxyStore over its own connectors vs over the Rust-backed ones, in one run.

Measured, per payload size (default 1 MiB and 100 MiB, ``os.urandom`` bytes):

- ``store``: Python ProxyStore 1.1.0's ``Store`` (``cache_size=0``) over its ``FileConnector``
  (a temporary directory) and ``RedisConnector``, against the same ``Store`` over
  ``RustFileConnector`` and ``RustRedisConnector``: ``store.put(payload)`` and a cold
  ``store.get(key)``. The serializer's work is the same code on both sides.
- ``connector``: the same backends without the ``Store``: ``connector.put(payload)`` and
  ``connector.get(key)`` (both return ``bytes``; ours is filled by the read itself).
- ``array``: a 100 MiB ``<f8`` array made by a Rust process (``py-interop put-array``, stored
  by the Rust file connector as NPY) resolved with ``proxystore_rs.resolve`` into a NumPy
  array (digest checked), against reading the same file's elements with ``numpy.fromfile``
  (a fresh array, as the resolve makes) and with ``readinto`` a preallocated buffer.

Each pair (Python's side and ours) is measured in alternating rounds, so that the noise of a
shared machine hits both sides; the order flips every round. Within a round the repetition is
adaptive as in ``python_proxystore_bench.py`` (the shared baseline script): repeat until the
round's share of ``--min-time`` and of ``--min-reps`` is reached, after one untimed warm-up
per side; the garbage collector is off inside timed loops; figures are medians over all rounds.

Without ``--redis-port`` a private ``redis-server`` (``--save '' --appendonly no``) is started
on a free loopback port and stopped at the end.

Usage::

    python bench.py --interop-bin target/debug/py-interop --json out.json --markdown out.md
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

KIB = 1024
MIB = 1024 * KIB

SPEEDUP_TARGET = 1.5
ARRAY_TARGET = 1.2


def parse_size(text: str) -> int:
    """``1MiB``, ``100MiB``, ``512KiB`` or a number of bytes."""
    t = text.strip()
    for suffix, mult in (('GiB', 1024 * MIB), ('MiB', MIB), ('KiB', KIB), ('B', 1)):
        if t.endswith(suffix):
            return int(float(t[: -len(suffix)]) * mult)
    return int(t)


def fmt_size(n: int) -> str:
    """A size as ``100MiB`` when it is a whole number of a unit."""
    for unit, mult in (('GiB', 1024 * MIB), ('MiB', MIB), ('KiB', KIB)):
        if n >= mult and n % mult == 0:
            return f'{n // mult}{unit}'
    return f'{n}B'


def fmt_time(s: float) -> str:
    """Seconds in a readable unit."""
    if s < 1e-3:
        return f'{s * 1e6:.1f} us'
    if s < 1.0:
        return f'{s * 1e3:.2f} ms'
    return f'{s:.3f} s'


def percentile(sorted_vals: list[float], q: float) -> float:
    """Linear-interpolated percentile (NumPy's default), ``q`` in [0, 100]."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = (len(sorted_vals) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def summarize(samples: list[float], size: int) -> dict[str, Any]:
    """Median, p10, p90, min, max and throughput (size / median) of latency samples."""
    s = sorted(samples)
    med = percentile(s, 50)
    return {
        'reps': len(s),
        'median_s': med,
        'p10_s': percentile(s, 10),
        'p90_s': percentile(s, 90),
        'min_s': s[0],
        'max_s': s[-1],
        'throughput_Bps': size / med if med > 0 else None,
    }


@dataclass
class Side:
    """One side of a comparison: the timed call, and what runs around it untimed."""

    name: str
    fn: Callable[[Any], Any]
    setup: Callable[[], Any] | None = None
    teardown: Callable[[Any, Any], None] | None = None


class Runner:
    """Adaptive repetition in interleaved rounds (see the module docs)."""

    def __init__(self, min_time: float, min_reps: int, rounds: int, max_reps: int) -> None:
        self.rounds = rounds
        self.round_time = min_time / rounds
        self.round_reps = max(1, math.ceil(min_reps / rounds))
        self.round_max = max(1, max_reps // rounds)
        self.round_wall = max(3 * min_time, 1.0) / rounds

    def _round(self, side: Side, samples: list[float]) -> None:
        clock = time.perf_counter_ns
        timed = 0.0
        n = 0
        wall0 = time.perf_counter()
        gc.collect()
        gc.disable()
        try:
            while True:
                ctx = side.setup() if side.setup else None
                t0 = clock()
                r = side.fn(ctx)
                t1 = clock()
                if side.teardown:
                    side.teardown(ctx, r)
                del r, ctx
                dt = (t1 - t0) / 1e9
                samples.append(dt)
                timed += dt
                n += 1
                if n >= self.round_max:
                    break
                if n >= self.round_reps and (
                    timed >= self.round_time or time.perf_counter() - wall0 >= self.round_wall
                ):
                    break
        finally:
            gc.enable()

    def compare(self, sides: list[Side]) -> dict[str, list[float]]:
        """Samples of each side, measured in alternating rounds after one warm-up each."""
        for side in sides:
            ctx = side.setup() if side.setup else None
            r = side.fn(ctx)
            if side.teardown:
                side.teardown(ctx, r)
            del r, ctx
        samples: dict[str, list[float]] = {s.name: [] for s in sides}
        for i in range(self.rounds):
            for side in sides if i % 2 == 0 else list(reversed(sides)):
                self._round(side, samples[side.name])
        gc.collect()
        return samples


# --------------------------------------------------------------------------------------------
# environment and servers
# --------------------------------------------------------------------------------------------


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def _fs_type(path: str) -> str | None:
    path = os.path.realpath(path)
    best = ('', None)
    try:
        with open('/proc/mounts') as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mnt, fstype = parts[1], parts[2]
                    inside = path == mnt or path.startswith(mnt.rstrip('/') + '/')
                    if inside and len(mnt) > len(best[0]):
                        best = (mnt, fstype)
    except OSError:
        return None
    return best[1]


def _proc_field(path: str, field: str) -> str | None:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return None


def environment(redis_client: Any, tmpdir: str) -> dict[str, Any]:
    """Versions, CPU, memory, load and file system of this run."""
    try:
        import hiredis  # noqa: F401

        hiredis_available = True
    except ImportError:
        hiredis_available = False
    return {
        'python_version': platform.python_version(),
        'platform': platform.platform(),
        'cpu_model': _proc_field('/proc/cpuinfo', 'model name'),
        'cpu_count': os.cpu_count(),
        'mem_total': _proc_field('/proc/meminfo', 'MemTotal'),
        'loadavg_start': os.getloadavg(),
        'proxystore_version': _version('proxystore'),
        'proxystore_rs_version': _version('proxystore-rs'),
        'numpy_version': _version('numpy'),
        'redis_py_version': _version('redis'),
        'hiredis_available': hiredis_available,
        'redis_server_version': redis_client.info('server').get('redis_version'),
        'tmpdir_fs': _fs_type(tmpdir),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(port: int | None) -> Iterator[int]:
    """The port of a Redis server: ``port`` as given, or a private ``redis-server``."""
    if port is not None:
        yield port
        return
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        ['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '',
         '--appendonly', 'no'],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f'redis-server did not start on port {port}') from None
                time.sleep(0.02)
        client.close()
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --------------------------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------------------------


class RawFile:
    """A plain write of a new file (no fsync) and a plain read, in one directory: the floor
    under a file connector."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)

    def put(self, obj: bytes) -> str:
        path = os.path.join(self.directory, uuid.uuid4().hex)
        with open(path, 'wb') as f:
            f.write(obj)
        return path

    def get(self, path: str) -> bytes:
        with open(path, 'rb') as f:
            return f.read()

    def evict(self, path: str) -> None:
        os.unlink(path)


class RawRedis:
    """redis-py's ``set`` and ``get``: the floor under Python's Redis connector."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def put(self, obj: bytes) -> str:
        key = f'bench-raw-{uuid.uuid4().hex}'
        self.client.set(key, obj)
        return key

    def get(self, key: str) -> bytes:
        return self.client.get(key)

    def evict(self, key: str) -> None:
        self.client.delete(key)


def speed_pairs(
    payload: bytes,
    connectors: dict[str, tuple[Any, Any, Any]],
    runner: Runner,
) -> list[dict[str, Any]]:
    """Put and cold get through ``Store`` and through the connector alone, Python vs ours
    (and, at the connector level, the raw client as a floor)."""
    from proxystore.store import Store

    size = len(payload)
    rows = []
    for backend, (theirs, ours, raw) in connectors.items():
        tag = uuid.uuid4().hex[:8]
        stores = {
            'python': Store(f'bench-py-{backend}-{tag}', theirs, cache_size=0, register=False),
            'rust': Store(f'bench-rs-{backend}-{tag}', ours, cache_size=0, register=False),
        }
        conns = {'python': theirs, 'rust': ours, 'raw': raw}
        for level in ('store', 'connector'):
            targets = stores if level == 'store' else conns

            samples = runner.compare([
                Side(
                    name,
                    lambda _c, t=t: t.put(payload),
                    teardown=lambda _c, key, t=t: t.evict(key),
                )
                for name, t in targets.items()
            ])
            rows.append(_row(backend, level, 'put', size, samples))

            keys = {name: t.put(payload) for name, t in targets.items()}
            for name, t in targets.items():
                got = t.get(keys[name])
                assert got is not None and len(got) == size and got[:64] == payload[:64]
                del got
            samples = runner.compare(
                [Side(n, lambda _c, t=t, k=keys[n]: t.get(k)) for n, t in targets.items()],
            )
            rows.append(_row(backend, level, 'get', size, samples))
            for name, t in targets.items():
                t.evict(keys[name])
        print(f'[bench] {fmt_size(size)} {backend}: done', file=sys.stderr, flush=True)
    return rows


def _row(backend: str, level: str, op: str, size: int, samples: dict[str, list[float]]) -> dict:
    ours = summarize(samples['rust'], size)
    anchor = summarize(samples['python'], size)
    ratio = anchor['median_s'] / ours['median_s']
    floor = summarize(samples['raw'], size) if 'raw' in samples else None
    return {
        'figure': f'{level} {op} {backend} {fmt_size(size)}',
        'level': level,
        'op': op,
        'backend': backend,
        'size_bytes': size,
        'ours': ours,
        'anchor_name': f'Python ProxyStore {"Store over " if level == "store" else ""}'
        f'{"FileConnector" if backend == "file" else "RedisConnector"}',
        'anchor': anchor,
        'ratio': ratio,
        'ratio_meaning': 'speedup (anchor median / our median)',
        'target': f'>= {SPEEDUP_TARGET}x faster',
        'met': ratio >= SPEEDUP_TARGET,
        'floor_name': (
            ('plain file write/read' if backend == 'file' else 'redis-py set/get')
            if floor else None
        ),
        'floor': floor,
    }


def array_rows(
    interop_bin: str,
    tmpdir: str,
    size: int,
    runner: Runner,
) -> list[dict[str, Any]]:
    """A Rust-made array resolved in Python, vs raw reads of the same file."""
    import numpy as np

    import proxystore_rs as ps

    cols = 128
    rows_n = size // (8 * cols)
    directory = os.path.join(tmpdir, 'rust-arrays')
    options = json.dumps({'directory': directory})
    out = subprocess.run(
        [interop_bin, 'put-array', 'file', options, 'bench-array', str(rows_n), str(cols)],
        capture_output=True,
        text=True,
        check=True,
    )
    ref = bytes.fromhex(json.loads(out.stdout)['reference'])
    path = os.path.join(directory, ps.info(ref)['key'])
    mapped = np.load(path, mmap_mode='r')
    shape, dtype, offset = mapped.shape, mapped.dtype, mapped.offset
    del mapped
    n_bytes = os.path.getsize(path) - offset
    assert shape == (rows_n, cols) and dtype == np.dtype('<f8') and n_bytes == rows_n * cols * 8

    first = ps.resolve(ref)
    expected = np.fromfile(path, dtype='<f8', offset=offset).reshape(shape)
    assert first.shape == shape and np.array_equal(first, expected)
    del first, expected

    buf = bytearray(n_bytes)

    def readinto(_c: Any) -> int:
        with open(path, 'rb', buffering=0) as f:
            f.seek(offset)
            view = memoryview(buf)
            done = 0
            while done < n_bytes:
                n = f.readinto(view[done:])
                if not n:
                    break
                done += n
            return done

    sides = [
        Side('resolve', lambda _c: ps.resolve(ref)),
        Side('fromfile', lambda _c: np.fromfile(path, dtype='<f8', offset=offset)),
        Side('readinto', readinto),
    ]
    samples = runner.compare(sides)
    ours = summarize(samples['resolve'], n_bytes)
    out_rows = []
    for anchor_name, label in (
        ('fromfile', 'numpy.fromfile of the same file (a fresh array)'),
        ('readinto', 'readinto a preallocated buffer (no allocation)'),
    ):
        anchor = summarize(samples[anchor_name], n_bytes)
        ratio = ours['median_s'] / anchor['median_s']
        out_rows.append({
            'figure': f'array resolve {fmt_size(n_bytes)} (Rust-made, file)',
            'level': 'array',
            'op': 'resolve',
            'backend': 'file',
            'size_bytes': n_bytes,
            'ours': ours,
            'anchor_name': label,
            'anchor': anchor,
            'ratio': ratio,
            'ratio_meaning': 'slowdown (our median / anchor median)',
            'target': f'<= {ARRAY_TARGET}x the raw time',
            'met': ratio <= ARRAY_TARGET,
        })
    shutil.rmtree(directory, ignore_errors=True)
    return out_rows


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    """The figures as a Markdown table, with the run's environment."""
    env = report['environment']
    lines = [
        '# Python ProxyStore vs the Rust-backed connectors',
        '',
        f"Run {report['timestamp_utc']}; {report.get('note') or ''}".rstrip('; '),
        '',
        f"CPU: {env['cpu_model']} x{env['cpu_count']}, {env['mem_total']}; load average at "
        f"start {', '.join(f'{x:.2f}' for x in env['loadavg_start'])}; temporary directory on "
        f"{env['tmpdir_fs']}.",
        f"Python {env['python_version']}, proxystore {env['proxystore_version']}, redis-py "
        f"{env['redis_py_version']} (hiredis: {env['hiredis_available']}), redis-server "
        f"{env['redis_server_version']}, NumPy {env['numpy_version']}; the extension built "
        f"{report['config']['build']}.",
        '',
        f"Method: {report['config']['method']}",
        '',
        '| figure | ours (median) | anchor | anchor (median) | ratio | target | met | floor |',
        '|---|---:|---|---:|---:|---|---|---:|',
    ]
    for r in report['rows']:
        lines.append(
            f"| {r['figure']} | {fmt_time(r['ours']['median_s'])} | {r['anchor_name']} | "
            f"{fmt_time(r['anchor']['median_s'])} | {r['ratio']:.2f}x | {r['target']} | "
            f"{'yes' if r['met'] else '**no**'} | "
            f"{fmt_time(r['floor']['median_s']) if r.get('floor') else ''} |",
        )
    lines += [
        '',
        "`store` rows: `Store(..., cache_size=0)`'s `put(payload)` and `get(key)`; "
        '`connector` rows: `connector.put(payload)` and `connector.get(key)` (both return '
        '`bytes`; ours is a `bytes` object that the read itself fills). '
        '`floor`: the raw client in the same rounds (a plain Python write of a new file and '
        'read of it; redis-py `set`/`get`), i.e. what any connector of that backend pays. '
        'Ratio: anchor time / ours for the connector and store rows (higher is better), ours / '
        'anchor for the array rows (lower is better). p10/p90, repetitions and throughput of '
        'every figure are in the JSON.',
        '',
    ]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the comparisons; write the JSON and Markdown reports."""
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--sizes', default='1MiB,100MiB')
    ap.add_argument('--array-size', default='100MiB')
    ap.add_argument('--redis-port', type=int, default=None,
                    help='an existing server on 127.0.0.1 (default: start redis-server)')
    ap.add_argument('--interop-bin', default=os.environ.get('PY_INTEROP_BIN'),
                    help='the py-interop binary that makes the array (default $PY_INTEROP_BIN)')
    ap.add_argument('--tmpdir', default=None, help='parent of the file stores (default: system)')
    ap.add_argument('--min-time', type=float, default=0.5,
                    help='timed seconds per side and figure, over all rounds')
    ap.add_argument('--min-reps', type=int, default=6)
    ap.add_argument('--max-reps', type=int, default=20000)
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--build', default='(not stated)', help='how the extension was built')
    ap.add_argument('--note', default='', help='a line about the machine for the report')
    ap.add_argument('--json', dest='json_out', default=None)
    ap.add_argument('--markdown', default=None)
    args = ap.parse_args(argv)

    import redis
    from proxystore.connectors.file import FileConnector
    from proxystore.connectors.redis import RedisConnector

    import proxystore_rs as ps

    if args.interop_bin is None:
        ap.error('--interop-bin (or $PY_INTEROP_BIN) is needed for the array figure')
    runner = Runner(args.min_time, args.min_reps, args.rounds, args.max_reps)
    tmpdir = tempfile.mkdtemp(prefix='ps-rs-bench-', dir=args.tmpdir)
    wall0 = time.perf_counter()
    try:
        with redis_server(args.redis_port) as port:
            client = redis.Redis(port=port)
            report: dict[str, Any] = {
                'schema': 'proxystore_rs_python_bench/v1',
                'timestamp_utc': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                'note': args.note,
                'environment': environment(client, tmpdir),
                'config': {
                    'sizes_bytes': [parse_size(s) for s in args.sizes.split(',')],
                    'array_size_bytes': parse_size(args.array_size),
                    'min_time_s': args.min_time,
                    'min_reps': args.min_reps,
                    'rounds': args.rounds,
                    'build': args.build,
                    'method': (
                        f'medians over {args.rounds} alternating rounds per figure (sides '
                        f'interleaved, order flipped each round), >= {args.min_reps} reps and '
                        f'>= {args.min_time} s timed per side, one untimed warm-up each, gc '
                        'off while timing, payload os.urandom, cache_size=0, a fresh key per '
                        'put (evicted untimed).'
                    ),
                },
                'rows': [],
            }
            connectors = {
                'file': (
                    FileConnector(os.path.join(tmpdir, 'py-file'), clear=True),
                    ps.RustFileConnector(os.path.join(tmpdir, 'rs-file'), clear=True),
                    RawFile(os.path.join(tmpdir, 'raw-file')),
                ),
                'redis': (
                    RedisConnector('127.0.0.1', port, clear=False),
                    ps.RustRedisConnector('127.0.0.1', port),
                    RawRedis(client),
                ),
            }
            try:
                for size in report['config']['sizes_bytes']:
                    payload = os.urandom(size)
                    report['rows'] += speed_pairs(payload, connectors, runner)
                    del payload
                    gc.collect()
                report['rows'] += array_rows(
                    args.interop_bin, tmpdir, report['config']['array_size_bytes'], runner,
                )
            finally:
                for theirs, ours, _raw in connectors.values():
                    theirs.close()
                    ours.close()
                client.close()
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    report['total_wall_s'] = time.perf_counter() - wall0
    report['environment']['loadavg_end'] = os.getloadavg()
    table = markdown(report)
    print(table)
    if args.json_out:
        with open(args.json_out, 'w') as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(table)
    return 0


if __name__ == '__main__':
    sys.exit(main())
