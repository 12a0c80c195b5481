"""Our compiled hash-grid kernels against the PyTorch reference (forward, gradients, threads, seam)."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
import torch

from cuda import build
from cuda.backend import AUTO_ORDER, HashGrid, HashGridConfig
from cuda.hashgrid import hash_encode
from cuda.hashgrid_ref import HashGridSpec, hash_encode_ref
from tests.conftest import requires_cuda, requires_cxx, requires_nvcc

pytestmark = requires_cxx

ROOT = Path(__file__).resolve().parents[1]
# Dense levels 0-2 (R^3 <= 2^10) and hashed levels 3-7: every code path, cheap to run.
SMALL = HashGridSpec(n_levels=8, n_features=2, log2_hashmap_size=10, base_resolution=3, max_resolution=96)
DEFAULT = HashGridConfig().spec()
SPECS = {"small": SMALL, "default": DEFAULT, "f4": HashGridSpec(n_levels=4, n_features=4, log2_hashmap_size=8,
                                                                  base_resolution=2, max_resolution=32)}
RTOL = 1e-5


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error of ``a`` against the reference ``b`` (which must not be ~0)."""
    assert b.abs().max() > 1e-3, "reference is ~0: the comparison would be vacuous"
    return ((a - b).norm() / b.norm()).item()


def random_params(spec: HashGridSpec) -> torch.Tensor:
    return torch.empty(spec.n_params).uniform_(-1.0, 1.0)


def boundary_points(spec: HashGridSpec, n: int) -> torch.Tensor:
    """``[n, 3]`` points whose coordinates sit on cell faces of some level, or at 0 and 1."""
    faces = [torch.tensor([0.0, 1.0])]
    for s in spec.scales:
        k = torch.arange(0, int(s) + 2, dtype=torch.float32)
        faces.append(((k - 0.5) / s).clamp(0, 1))  # x * s + 0.5 == k: a cell face of this level
    values = torch.cat(faces)
    x = torch.rand(n, 3)
    pick = torch.rand(n, 3) < 0.7
    x[pick] = values[torch.randint(len(values), (int(pick.sum()),))]
    return x


@pytest.fixture(scope="module", autouse=True)
def _extension() -> None:
    build.load_hashgrid_extension()  # build once up front (about a minute on a clean cache)


# every spec at every size, except the default spec's large batch: test_default_spec_large_batch (slow)
CASES = [(name, n) for name in SPECS for n in (1, 1001, 2**16) if (name, n) != ("default", 2**16)]


@pytest.mark.parametrize("spec_name, n", CASES)
def test_forward_and_gradients_match_reference(spec_name: str, n: int) -> None:
    _check_against_reference(SPECS[spec_name], torch.rand(n, 3))


@pytest.mark.slow
def test_default_spec_large_batch() -> None:
    _check_against_reference(DEFAULT, torch.rand(2**16, 3))


@pytest.mark.parametrize("spec_name", ["small", "default"])
def test_cell_faces_and_domain_edges(spec_name: str) -> None:
    spec = SPECS[spec_name]
    x = boundary_points(spec, 4097)
    p = x * spec.scales[-1] + 0.5
    assert (p == p.floor()).any() and (x == 0).any() and (x == 1).any()  # the test really hits them
    _check_against_reference(spec, x)


def _check_against_reference(spec: HashGridSpec, x: torch.Tensor) -> None:
    params = random_params(spec)
    cotangent = torch.randn(x.shape[0], spec.n_output_dims)
    outs, grads = [], []
    for fn in (hash_encode, hash_encode_ref):
        xg, pg = x.clone().requires_grad_(), params.clone().requires_grad_()
        out = fn(xg, pg, spec)
        outs.append(out.detach())
        grads.append(torch.autograd.grad(out, [xg, pg], cotangent))
    assert rel_err(outs[0], outs[1]) < RTOL
    assert (outs[0] - outs[1]).abs().max() < RTOL * outs[1].abs().max()
    assert rel_err(grads[0][1], grads[1][1]) < RTOL, "d/d params"
    assert rel_err(grads[0][0], grads[1][0]) < RTOL, "d/d x"


def test_one_and_two_threads_agree() -> None:
    x, params = torch.rand(5000, 3), random_params(SMALL).requires_grad_()
    cotangent = torch.randn(5000, SMALL.n_output_dims)
    results = []
    for threads in (1, 2):
        xg = x.clone().requires_grad_()
        out = hash_encode(xg, params, SMALL, n_threads=threads)
        results.append((out, *torch.autograd.grad(out, [xg, params], cotangent)))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # Each thread owns whole levels in the backward pass, so the table gradient is bitwise equal.
    assert torch.equal(results[0][2], results[1][2])


def test_thread_count_follows_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    x, params = torch.rand(3000, 3), random_params(SMALL)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hash_encode(x, params, SMALL)
        torch.set_num_threads(2)
        two = hash_encode(x, params, SMALL)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(one, two)


def test_noncontiguous_and_empty_inputs() -> None:
    params = random_params(SMALL)
    wide = torch.rand(300, 5)
    x = wide[:, 1:4]
    assert not x.is_contiguous()
    assert rel_err(hash_encode(x, params, SMALL), hash_encode_ref(x, params, SMALL)) < RTOL
    empty = hash_encode(torch.zeros(0, 3), params, SMALL)
    assert empty.shape == (0, SMALL.n_output_dims)
    with torch.inference_mode():  # how the teacher renders
        assert rel_err(hash_encode(x, params, SMALL), hash_encode_ref(x, params, SMALL)) < RTOL


@pytest.mark.parametrize(
    "x, params, match",
    [
        (torch.rand(4, 3, dtype=torch.float64), None, "x must be a float32"),
        (torch.rand(4, 2), None, r"x must be a float32 \[N, 3\]"),
        (torch.rand(4, 3), torch.rand(7), "params must be a float32"),
        (torch.rand(4, 3), torch.rand(SMALL.n_params, dtype=torch.float64), "params must be a float32"),
        (torch.rand(4, 3, device="meta"), None, "x is on meta"),
    ],
)
def test_bad_inputs_raise_value_error(x: torch.Tensor, params: torch.Tensor | None, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hash_encode(x, random_params(SMALL) if params is None else params, SMALL)


def test_unsupported_shape_raises_value_error() -> None:
    spec = HashGridSpec(n_levels=2, n_features=3, log2_hashmap_size=8, base_resolution=2, max_resolution=8)
    with pytest.raises(ValueError, match="features"):
        hash_encode(torch.rand(4, 3), random_params(spec), spec)


def test_auto_order_and_choice() -> None:
    assert AUTO_ORDER[:4] == ["tcnn", "cuda", "cpu", "torch"]
    assert HashGrid(SMALL).backend == "cpu"


@pytest.mark.parametrize("src, dst", [("cpu", "torch"), ("torch", "cpu")])
def test_checkpoint_moves_between_backends(src: str, dst: str) -> None:
    a = HashGrid(SMALL, backend=src)
    with torch.no_grad():
        a.params.uniform_(-1, 1)
    b = HashGrid(SMALL, backend=dst)
    b.load_state_dict(a.state_dict())
    x = torch.rand(999, 3)
    assert rel_err(b(x), a(x)) < RTOL


def test_no_compiler_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(build, "_modules", {})
    monkeypatch.setattr(build, "_failures", {})
    monkeypatch.setattr(build, "_warned", set())
    monkeypatch.setattr(build, "compiler_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        grids = [HashGrid(SMALL), HashGrid(SMALL)]
    assert [g.backend for g in grids] == ["torch", "torch"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "hash-grid kernel" in r.message]
    assert len(warnings) == 1 and "no C++ compiler" in warnings[0].message
    with pytest.raises(ValueError, match="not available"):
        HashGrid(SMALL, backend="cpu")


@pytest.mark.timeout(60)  # torch alone waits on such a lock forever
@pytest.mark.parametrize("held", [False, True], ids=["left-by-a-killed-build", "held-open-by-a-process"])
def test_stale_build_lock_falls_back_within_the_bound(held: bool, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A lock nobody holds is reported at once; one a process holds open, after the configured wait."""
    for name, value in (("_modules", {}), ("_failures", {}), ("_warned", set())):
        monkeypatch.setattr(build, name, value)
    monkeypatch.setattr(build, "compiler_available", lambda: True)  # the lock, not the compiler, decides
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setenv(build.LOCK_WAIT_ENV, "2")
    lock = tmp_path / f"lfd_hashgrid_cpu_{build._machine_tag()}" / "lock"
    lock.parent.mkdir()
    lock.touch()
    fd = os.open(lock, os.O_RDONLY) if held else None  # as torch's FileBaton keeps it while it builds
    try:
        start = time.monotonic()
        with caplog.at_level(logging.WARNING):
            grid = HashGrid(SMALL)
        elapsed = time.monotonic() - start
    finally:
        if fd is not None:
            os.close(fd)
    assert grid.backend == "torch"
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"build lock {lock}" in warnings[0], warnings
    assert ("no running process holds it" in warnings[0]) != held
    assert 2.0 <= elapsed < 10.0 if held else elapsed < 2.0
    assert lock.exists()  # never deleted: a build on another machine sharing the cache may own it


@requires_cuda
@pytest.mark.parametrize("spec_name", ["small", "default"])
def test_cuda_kernel_matches_reference(spec_name: str) -> None:
    spec = SPECS[spec_name]
    x = boundary_points(spec, 2**16 + 3).cuda()
    params = random_params(spec).cuda()
    cotangent = torch.randn(x.shape[0], spec.n_output_dims, device="cuda")
    results = []
    for fn in (hash_encode, hash_encode_ref):
        xg, pg = x.clone().requires_grad_(), params.clone().requires_grad_()
        out = fn(xg, pg, spec)
        results.append((out.detach(), *torch.autograd.grad(out, [xg, pg], cotangent)))
    for a, b in zip(*results):
        assert rel_err(a, b) < RTOL


@requires_nvcc
@pytest.mark.slow
def test_cuda_sources_compile_with_nvcc() -> None:
    script = str(ROOT / "scripts" / "check_cuda.sh")
    proc = subprocess.run([script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hashgrid_cuda.cu ok" in proc.stdout


@pytest.mark.slow
def test_teacher_trains_alike_with_each_backend(tiny_scene: Path, tmp_path: Path) -> None:
    from teacher.train import run
    from testing.runs import teacher_cfg

    psnr = {}
    for backend in ("cpu", "torch"):  # a finer grid than TINY_TEACHER's: 8 levels up to 128 cells
        metrics = run(teacher_cfg(
            tiny_scene, tmp_path / backend, f"model.field.grid.backend={backend}", "train.max_steps=200",
            "train.max_seconds=null", "train.batch_rays=64", "eval.n_renders=0",
            "model.field.grid.n_levels=8", "model.field.grid.max_resolution=128", "model.field.hidden_dim=32",
            "model.render.steps_per_diagonal=32", "model.occupancy.warmup_steps=64"))
        assert metrics["backend"] == backend and metrics["steps"] == 200
        psnr[backend] = metrics["test"]["psnr"]
    assert psnr["cpu"] > 15, psnr  # it learned something, so the comparison means something
    assert abs(psnr["cpu"] - psnr["torch"]) < 0.2, psnr
    logging.getLogger(__name__).info("teacher test PSNR by backend: %s", psnr)
