#!/usr/bin/env python3
"""Plots of a `proxystore bench --json` report (run by `proxystore bench --plots DIR`).

For each connector, bench_<connector>.png: latency and throughput against object size of
put and (cold) get, ours (solid, p10..p90 band), Python ProxyStore's (dashed, when the report
has a Python run) and the raw backend's (dotted). bench_small_ops.png: 100 B put+get pairs
per second.

Usage: python3 scripts/bench_plots.py REPORT.json OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

BASELINE = {
    'memory': ('memcpy', 'memcpy'),
    'file': ('fs_write', 'fs_read'),
    'redis': ('redis_set', 'redis_get'),
    's3': ('s3_put_object', 's3_get_object'),
    'grpc': ('redis_set', 'redis_get'),
}
BASELINE_LABEL = {
    'memory': 'memcpy',
    'file': 'std::fs',
    'redis': 'redis crate',
    's3': 'aws-sdk-s3',
    'grpc': 'redis crate (Redis)',
}
PYTHON = {'memory': 'local', 'file': 'file', 'redis': 'redis'}
PY_RAW = {'memory': ('bytearray_copy', 'bytearray_copy'), 'file': ('file_write', 'file_read'),
          'redis': ('redis_set', 'redis_get')}
COLORS = {'put': '#1f77b4', 'get': '#d62728'}


def fmt_size(n: float) -> str:
    for unit, mult in (('GiB', 1 << 30), ('MiB', 1 << 20), ('KiB', 1 << 10)):
        if n >= mult:
            v = n / mult
            return f'{v:.0f}{unit}' if v == int(v) else f'{v:.1f}{unit}'
    return f'{n:.0f}B'


def series(rows: list[dict], connector: str, op: str) -> tuple[list, list, list, list]:
    pts = sorted(
        (r['size_bytes'], r['median_s'], r.get('p10_s'), r.get('p90_s'))
        for r in rows
        if r['connector'] == connector and r['op'] == op
    )
    return ([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts], [p[3] for p in pts])


def plot_connector(report: dict, conn: str, out: str) -> None:
    rows = report['results']
    py = (report.get('python') or {}).get('results') or []
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(12, 4.6))
    for op, label in (('put', 'put'), ('get_cold', 'get')):
        color = COLORS[label]
        x, y, lo, hi = series(rows, conn, op)
        if x:
            lat.plot(x, y, '-o', color=color, label=f'ours {label}')
            if all(v is not None for v in lo + hi):
                lat.fill_between(x, lo, hi, color=color, alpha=0.15)
            thr.plot(x, [s / t for s, t in zip(x, y)], '-o', color=color, label=f'ours {label}')
        if conn in PYTHON:
            x, y, _, _ = series(py, PYTHON[conn], op)
            if x:
                lat.plot(x, y, '--s', color=color, alpha=0.8, label=f'Python ProxyStore {label}')
                thr.plot(x, [s / t for s, t in zip(x, y)], '--s', color=color, alpha=0.8,
                         label=f'Python ProxyStore {label}')
        raw_op = BASELINE[conn][0 if label == 'put' else 1]
        if conn == 'memory' and label == 'get':
            continue  # one memcpy line is enough
        x, y, _, _ = series(rows, 'raw', raw_op)
        if x:
            name = f'raw {BASELINE_LABEL[conn]}' + ('' if conn == 'memory' else f' {label}')
            lat.plot(x, y, ':', color=color if conn != 'memory' else 'black', linewidth=2, label=name)
            thr.plot(x, [s / t for s, t in zip(x, y)], ':',
                     color=color if conn != 'memory' else 'black', linewidth=2, label=name)
    for ax in (lat, thr):
        ax.set_xscale('log')
        ax.set_yscale('log')
        ax.set_xlabel('object size')
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_size(v)))
        ax.grid(True, which='both', alpha=0.3)
    lat.set_ylabel('median latency (s)')
    thr.set_ylabel('throughput (bytes/s, size / median)')
    lat.set_title(f'{conn}: latency')
    thr.set_title(f'{conn}: throughput')
    thr.legend(fontsize=8, loc='best')
    env = report.get('environment', {})
    fig.suptitle(
        f"proxystore bench, {conn} connector vs {BASELINE_LABEL[conn]}"
        + (' and Python ProxyStore' if conn in PYTHON and py else '')
        + f" ({env.get('cpu_model', '?')} x{env.get('cpu_count', '?')}, shared machine)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_small(report: dict, out: str) -> None:
    small = report.get('small_ops') or []
    if not small:
        return
    py = (report.get('python') or {}).get('small_ops') or {}
    names = []
    for r in small:
        if r['connector'] not in names:
            names.append(r['connector'])
    clients = sorted({r['clients'] for r in small})
    fig, ax = plt.subplots(figsize=(12, 4.6))
    width = 0.8 / (len(clients) + 1)
    for i, c in enumerate(clients):
        vals = [next((r['put_get_pairs_per_s'] for r in small
                      if r['connector'] == n and r['clients'] == c), 0) for n in names]
        ax.bar([k + i * width for k in range(len(names))], vals, width, label=f'ours, {c} client(s)')
    py_map = {'memory': 'local', 'file': 'file', 'redis': 'redis', 'raw_fs': 'raw_file',
              'raw_redis': 'raw_redis'}
    py_vals = [(py.get(py_map.get(n, ''), {}) or {}).get('put_get_pairs_per_s', 0) for n in names]
    if any(py_vals):
        ax.bar([k + len(clients) * width for k in range(len(names))], py_vals, width,
               label='Python ProxyStore, 1 client', color='grey')
    ax.set_xticks([k + width * len(clients) / 2 for k in range(len(names))])
    ax.set_xticklabels(names)
    ax.set_yscale('log')
    ax.set_ylabel('100 B put+get pairs per second')
    ax.set_title('small objects: put+get pairs per second (stores without cache; raw_* = raw clients)')
    ax.grid(True, axis='y', which='both', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        report = json.load(f)
    out_dir = sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    conns = []
    for r in report['results']:
        if r['connector'] != 'raw' and r['connector'] not in conns:
            conns.append(r['connector'])
    for conn in conns:
        plot_connector(report, conn, os.path.join(out_dir, f'bench_{conn}.png'))
    plot_small(report, os.path.join(out_dir, 'bench_small_ops.png'))
    return 0


if __name__ == '__main__':
    sys.exit(main())
