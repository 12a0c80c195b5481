"""``HashGrid``: the multiresolution hash encoding behind one backend seam (teacher and student use it).

Backends (all hold the same flat float32 ``params`` in the tiny-cuda-nn layout, so a checkpoint
trained with one loads into any other):

* ``tcnn``  - tiny-cuda-nn's fused CUDA encoding (needs ``tinycudann`` and a GPU);
* ``cuda``  - our CUDA kernel (:func:`cuda.hashgrid.hash_encode` on a GPU; needs torch with CUDA and nvcc);
* ``cpu``   - our C++/OpenMP kernel (:func:`cuda.hashgrid.hash_encode` on the CPU; needs a C++ compiler);
* ``torch`` - :func:`cuda.hashgrid_ref.hash_encode_ref`, pure PyTorch, runs everywhere;
* ``graph`` - :func:`cuda.hashgrid_graph.hash_encode_graph`, pure PyTorch in ops ONNX has (what an
  exported student's graph computes); never picked by ``auto``.

Our kernels are compiled on first use (when a ``HashGrid`` asking for them is built, never at import)
and cached; if they cannot be built, ``auto`` falls back to the next backend with one warning.

``auto`` picks the first that works for the device, in the order of :data:`AUTO_ORDER`, once at
construction, and logs the choice. Callers never branch on the backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from core.checks import ConfigValueError, at_least, one_of
from cuda.build import try_load_hashgrid_extension
from cuda.hashgrid import hash_encode, kernel_supports
from cuda.hashgrid_graph import hash_encode_graph
from cuda.hashgrid_ref import HashGridSpec, hash_encode_ref

log = logging.getLogger(__name__)

EncodeFn = Callable[[Tensor, Tensor], Tensor]  # (x [N, 3], params [P]) -> [N, L*F]
Factory = Callable[[HashGridSpec, torch.device], EncodeFn | None]  # None: not available here

AUTO_ORDER = ["tcnn", "torch"]
_FACTORIES: dict[str, Factory] = {}


def register_backend(name: str, factory: Factory, before: str | None = None, auto: bool = True) -> None:
    """Add a backend; ``before`` places it ahead of another in the ``auto`` order (``auto=False``: only
    by name)."""
    _FACTORIES[name] = factory
    if auto and name not in AUTO_ORDER:
        AUTO_ORDER.insert(AUTO_ORDER.index(before) if before in AUTO_ORDER else len(AUTO_ORDER), name)


def _torch_factory(spec: HashGridSpec, device: torch.device) -> EncodeFn:
    return lambda x, params: hash_encode_ref(x, params, spec)


def _tcnn_factory(spec: HashGridSpec, device: torch.device) -> EncodeFn | None:
    if device.type != "cuda":
        return None
    try:
        import tinycudann as tcnn
    except (ImportError, OSError):  # tiny-cuda-nn raises OSError when CUDA is missing
        return None
    with torch.cuda.device(device):
        module = tcnn.Encoding(3, spec.tcnn_config(), dtype=torch.float32)
    if module.n_params != spec.n_params:
        log.warning("tiny-cuda-nn hash grid has %d params, expected %d: not used", module.n_params,
                    spec.n_params)
        return None
    native = module.native_tcnn_module
    granularity = int(tcnn._C.batch_size_granularity())

    def encode(x: Tensor, params: Tensor) -> Tensor:
        n = x.shape[0]
        padded = (n + granularity - 1) // granularity * granularity
        xp = torch.nn.functional.pad(x, [0, 0, 0, padded - n]) if padded != n else x
        out = tcnn.modules._module_function.apply(native, xp.float().contiguous(), params.contiguous(),
                                                  module.loss_scale)
        return out[:n, : spec.n_output_dims].float()

    return encode


def _kernel_factory(device_type: str) -> Factory:
    def factory(spec: HashGridSpec, device: torch.device) -> EncodeFn | None:
        if device.type != device_type or not kernel_supports(spec):
            return None
        if device_type == "cuda" and torch.version.cuda is None:
            return None
        if try_load_hashgrid_extension(with_cuda=device_type == "cuda") is None:
            return None
        return lambda x, params: hash_encode(x, params, spec)

    return factory


register_backend("torch", _torch_factory)
register_backend("graph", lambda spec, device: (lambda x, params: hash_encode_graph(x, params, spec)),
                 auto=False)
register_backend("cpu", _kernel_factory("cpu"), before="torch")
register_backend("cuda", _kernel_factory("cuda"), before="cpu")
register_backend("tcnn", _tcnn_factory, before="cuda")


def resolve_backend(name: str, spec: HashGridSpec, device: torch.device) -> tuple[str, EncodeFn]:
    """Pick a backend by name (``auto`` = first available in :data:`AUTO_ORDER`)."""
    names = AUTO_ORDER if name == "auto" else [name]
    for candidate in names:
        if candidate not in _FACTORIES:
            choices = ", ".join(["auto", *_FACTORIES])
            raise ValueError(f"unknown hash grid backend {candidate!r}; choose from {choices}")
        fn = _FACTORIES[candidate](spec, device)
        if fn is not None:
            return candidate, fn
    raise ValueError(f"hash grid backend {name!r} is not available on {device}")


@dataclass
class HashGridConfig:
    """A hash grid as a config names it: its shape (the fields of :class:`HashGridSpec`, which derives the
    level layout from them) and the backend that runs it. Defaults: Instant-NGP's.

    Attributes:
        n_levels: resolution levels ``L``.
        n_features: features per level ``F``.
        log2_hashmap_size: ``log2 T``, entries per level at most (coarse levels that fit are dense).
        base_resolution: ``N_min``, the coarsest level's cells per axis.
        max_resolution: ``N_max``, the finest level's (the paper: 2048 x scene scale).
        backend: ``auto`` (our kernel when it builds, else PyTorch), ``torch``, ``tcnn`` or any
            registered backend.
    """

    n_levels: int = 16
    n_features: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    backend: str = field(default="auto", metadata={"provenance": False})  # checkpoints move between backends

    def spec(self) -> HashGridSpec:
        """The level layout of this shape."""
        return HashGridSpec(n_levels=self.n_levels, n_features=self.n_features,
                            log2_hashmap_size=self.log2_hashmap_size, base_resolution=self.base_resolution,
                            max_resolution=self.max_resolution)

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for an unusable shape or an unknown backend."""
        at_least(self, 1, "n_levels", "n_features", "base_resolution")
        at_least(self, self.base_resolution, "max_resolution")
        if not 4 <= self.log2_hashmap_size <= 30:
            raise ConfigValueError("log2_hashmap_size", "invalid hash grid shape: must be in 4..30",
                                   self.log2_hashmap_size)
        one_of(self, "backend", backend_names())


def backend_names() -> list[str]:
    """What a ``backend`` setting may name: ``auto`` and every registered backend."""
    return ["auto", *_FACTORIES]


class HashGrid(nn.Module):
    """Multiresolution hash encoding of points in ``[0, 1]^3``.

    Args:
        spec: grid shape.
        backend: ``auto`` or a registered backend name.
        device: where the table lives (decides which backends can run).
    """

    def __init__(self, spec: HashGridSpec, backend: str = "auto", device: torch.device | str = "cpu"):
        super().__init__()
        self.spec = spec
        device = torch.device(device)
        self.params = nn.Parameter(torch.empty(spec.n_params, device=device).uniform_(-1e-4, 1e-4))
        self.backend, self._encode = resolve_backend(backend, spec, device)
        log.info("hash grid backend: %s (%d levels, %.2fM params)", self.backend, spec.n_levels,
                 spec.n_params / 1e6)

    @property
    def n_output_dims(self) -> int:
        return self.spec.n_output_dims

    def set_backend(self, backend: str) -> None:
        """Switch backend (e.g. after moving to another device); ``params`` are untouched."""
        self.backend, self._encode = resolve_backend(backend, self.spec, self.params.device)

    def forward(self, x: Tensor) -> Tensor:
        """``x [N, 3]`` in ``[0, 1]^3`` -> features ``[N, L * F]``."""
        return self._encode(x, self.params)
