"""Hash-grid encoding: our CPU kernel vs the PyTorch reference, and both against memory bandwidth.

``python -m benchmarks.hashgrid [--threads 2] [--repeats 3]``

Times forward (no grad) and forward+backward (gradient into the table) at 2^16 and 2^18 random points
with the default grid (16 levels x 2 features, 2^19 entries per hashed level: 48 MB). The kernel is
also timed on Morton-sorted points (the sort itself not timed) to show what locality is worth. In the
same run it measures this machine's memory bandwidth with a large tensor copy and prints, per row, the
bytes a pass must move per point (model below) and how far the measured rate is from that limit.

Bytes per point (a lower bound): forward reads the point (12 B), writes L*F floats, and for every
level too big for the L2 cache reads 4 cache lines (the x-neighbour corners share a line, since the x
prime is 1). The backward pass reads the point and L*F gradients, reads and writes the same lines, and
clears the 48 MB table gradient (amortised over the batch).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch

from benchmarks.results import markdown_table, write_section
from cuda.backend import HashGridConfig
from cuda.hashgrid import hash_encode
from cuda.hashgrid_ref import HashGridSpec, hash_encode_ref

LINE = 64
L2_BYTES = 2 * 2**20


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (and first-use build of the kernel)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_bandwidth(n_bytes: int = 512 * 2**20, repeats: int = 5) -> float:
    """Bytes/s of a large tensor copy (read + write counted)."""
    src = torch.ones(n_bytes // 4)
    dst = torch.empty_like(src)
    return 2 * n_bytes / _time(lambda: dst.copy_(src), repeats)


def bytes_per_point(spec: HashGridSpec, n: int, backward: bool) -> float:
    """The traffic model of the module docstring."""
    big = sum(1 for size in spec.sizes if size * spec.n_features * 4 > L2_BYTES)
    row = spec.n_output_dims * 4
    fwd = 12 + row + big * 4 * LINE
    if not backward:
        return fwd
    return fwd + 12 + row + big * 4 * LINE * 2 + spec.n_params * 4 / n


def morton_sort(x: torch.Tensor, bits: int = 10) -> torch.Tensor:
    """Points reordered along a Morton (Z-order) curve."""
    q = (x.clamp(0, 1) * (2**bits - 1)).long()
    code = torch.zeros(x.shape[0], dtype=torch.long)
    for b in range(bits):
        for d in range(3):
            code |= ((q[:, d] >> b) & 1) << (3 * b + d)
    return x[torch.argsort(code)]


def bench_rows(spec: HashGridSpec, sizes: list[int], repeats: int, bandwidth: float) -> list[list[object]]:
    params = torch.empty(spec.n_params).uniform_(-1, 1).requires_grad_()
    impls: list[tuple[str, Callable, bool]] = [
        ("reference", hash_encode_ref, False),
        ("kernel", hash_encode, False),
        ("kernel, sorted", hash_encode, True),
    ]
    rows = []
    for n in sizes:
        x_random = torch.rand(n, 3)
        x_sorted = morton_sort(x_random)
        base: dict[str, float] = {}
        for name, fn, sort in impls:
            x = x_sorted if sort else x_random
            reps = max(1, repeats // 2) if fn is hash_encode_ref else repeats

            def forward(fn: Callable = fn, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    fn(x, params, spec)

            def forward_backward(fn: Callable = fn, x: torch.Tensor = x) -> None:
                out = fn(x, params, spec)
                torch.autograd.grad(out, [params], torch.ones_like(out))

            rates = {"fwd": n / _time(forward, reps), "fwd+bwd": n / _time(forward_backward, reps)}
            if name == "reference":
                base = rates
            limit_fb = bandwidth / bytes_per_point(spec, n, True)
            rows.append([name, f"2^{n.bit_length() - 1}", rates["fwd"] / 1e6, rates["fwd+bwd"] / 1e6,
                         f"{rates['fwd'] / base['fwd']:.1f}x", f"{rates['fwd+bwd'] / base['fwd+bwd']:.1f}x",
                         int(bytes_per_point(spec, n, True)), f"{100 * rates['fwd+bwd'] / limit_fb:.0f}%"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2**16, 2**18])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    spec = HashGridConfig().spec()
    bandwidth = memory_bandwidth()
    rows = bench_rows(spec, args.sizes, args.repeats, bandwidth)
    headers = ["impl", "points", "fwd Mpt/s", "fwd+bwd Mpt/s", "fwd vs ref", "fwd+bwd vs ref",
               "fwd+bwd bytes/pt", "fwd+bwd % of BW limit"]
    table = markdown_table(headers, rows)
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE", "0")
    body = (f"Default grid ({spec.n_levels} levels x {spec.n_features} features, 2^{spec.log2_hashmap_size} "
            f"entries, {spec.n_params * 4 / 2**20:.0f} MB), {args.threads} threads, "
            f"THP_MEM_ALLOC_ENABLE={thp}, random points in [0,1]^3 (\"sorted\": Morton order, sort not "
            f"timed). Memory bandwidth (tensor copy, read+write): {bandwidth / 1e9:.1f} GB/s. "
            f"\"% of BW limit\" = measured rate / (bandwidth / bytes per point).\n\n{table}\n")
    print(table)
    print(f"memory bandwidth {bandwidth / 1e9:.1f} GB/s")
    prefix = f"THP_MEM_ALLOC_ENABLE={thp} " if thp != "0" else ""
    command = f"{prefix}python -m benchmarks.hashgrid {' '.join(sys.argv[1:])}".strip()
    write_section("hashgrid", body, command=command)


if __name__ == "__main__":
    main()
