"""The hash-grid encoding on our compiled kernels, with :func:`cuda.hashgrid_ref.hash_encode_ref` as twin.

:func:`hash_encode` validates its inputs (``ValueError`` before anything reaches C++), builds the
extension on first use (:mod:`cuda.build`), and runs the op through one ``torch.autograd.Function``:

* forward: ``x [N, 3]``, ``params [P]`` -> ``[N, L * F]`` (same layout and float32 arithmetic as the
  reference);
* backward into ``params``: on the CPU each thread owns whole levels (no atomics; the result does not
  depend on the number of threads), on the GPU one thread per point and level with ``atomicAdd``;
* backward into ``x``: computed only when ``x`` requires grad (the gradient through the trilinear
  weights, as the reference's autograd gives it; needed by geometry losses).
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from cuda.build import load_hashgrid_extension
from cuda.hashgrid_ref import HashGridSpec

MAX_LEVELS = 32
SUPPORTED_FEATURES = (1, 2, 4, 8)


def kernel_supports(spec: HashGridSpec) -> bool:
    """Whether the compiled kernels handle this grid shape."""
    return spec.n_levels <= MAX_LEVELS and spec.n_features in SUPPORTED_FEATURES


@functools.lru_cache(maxsize=32)
def level_table(spec: HashGridSpec) -> Tensor:
    """``[L, 5]`` float64 rows ``(scale, dense, resolution, size, offset)`` passed to the kernels."""
    rows = [[spec.scales[l], float(spec.is_dense(l)), spec.resolutions[l], spec.sizes[l], spec.offsets[l]]
            for l in range(spec.n_levels)]
    return torch.tensor(rows, dtype=torch.float64)


def _stream(device: torch.device) -> int:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0


def _validate(x: Any, params: Any, spec: HashGridSpec) -> None:
    if not isinstance(x, Tensor) or x.dtype != torch.float32 or x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"hash_encode: x must be a float32 [N, 3] tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)} {list(getattr(x, 'shape', []))}")
    if not isinstance(params, Tensor) or params.dtype != torch.float32 or params.shape != (spec.n_params,):
        got = f"{getattr(params, 'dtype', type(params).__name__)} {list(getattr(params, 'shape', []))}"
        raise ValueError(f"hash_encode: params must be a float32 [{spec.n_params}] tensor, got {got}")
    if x.device != params.device:
        raise ValueError(f"hash_encode: x is on {x.device} but params on {params.device}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"hash_encode: no kernel for device {x.device}")
    if not kernel_supports(spec):
        raise ValueError(f"hash_encode: the kernels support up to {MAX_LEVELS} levels of "
                         f"{SUPPORTED_FEATURES} features, got {spec.n_levels} x {spec.n_features}")


class _HashEncode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, params: Tensor, spec: HashGridSpec, n_threads: int,  # type: ignore[override]
                ext: ModuleType) -> Tensor:
        levels = level_table(spec)
        ctx.save_for_backward(x, params)
        ctx.spec, ctx.n_threads, ctx.ext = spec, n_threads, ext
        return ext.forward(x, params, levels, spec.n_features, n_threads, _stream(x.device))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, params = ctx.saved_tensors
        spec, ext, stream = ctx.spec, ctx.ext, _stream(x.device)
        grad_out = grad_out.contiguous()
        grad_x = grad_params = None
        if ctx.needs_input_grad[1]:
            grad_params = ext.backward_params(x, grad_out, level_table(spec), spec.n_params, spec.n_features,
                                              ctx.n_threads, stream)
        if ctx.needs_input_grad[0]:
            grad_x = ext.backward_input(x, grad_out, params, level_table(spec), spec.n_features,
                                        ctx.n_threads, stream)
        return grad_x, grad_params, None, None, None


def hash_encode(x: Tensor, params: Tensor, spec: HashGridSpec, n_threads: int | None = None) -> Tensor:
    """Encode points with the hash grid on our compiled kernel (CPU or CUDA, after ``x.device``).

    Args:
        x: ``[N, 3]`` float32 points in ``[0, 1]^3`` (points outside are encoded as the reference does).
        params: ``[n_params]`` float32 flat table in the layout of :class:`HashGridSpec`, on ``x``'s device.
        spec: the grid's shape.
        n_threads: OpenMP threads on the CPU (default ``torch.get_num_threads()``).

    Returns:
        ``[N, L * F]`` features, level-major, equal to :func:`cuda.hashgrid_ref.hash_encode_ref` within
        float32 rounding.

    Raises:
        ValueError: wrong dtype, shape or device.
        cuda.build.KernelBuildError: the extension cannot be built here.
    """
    _validate(x, params, spec)
    threads = n_threads if n_threads is not None else torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"hash_encode: n_threads must be >= 1, got {threads}")
    ext = load_hashgrid_extension(with_cuda=x.device.type == "cuda")
    return _HashEncode.apply(x.contiguous(), params.contiguous(), spec, threads, ext)
