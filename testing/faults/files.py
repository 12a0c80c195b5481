"""Fault cases of the files between stages: exported models, the kernel build lock, pseudo-data shards.

* an export whose fp32 graph fails the parity gate publishes nothing;
* an export killed (SIGKILL) between two variants leaves the previous files and ``export.json`` as they
  were;
* a build lock left by a killed kernel compile: a bounded wait, then the reference backend with one
  warning naming the lock;
* shard names in ``meta.json`` that leave the folder (``../x.tar``, an absolute path) or are webdataset
  commands (``pipe:...``): one line naming ``meta.json`` and the name, nothing run;
* a truncated shard: the student exits with one line naming the shard, before training.

Every case uses the tiny procedural scene (:func:`testing.scenes.objects.make_procedural_scene`) and tiny
settings: a few seconds each.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.handlers
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testing.cli import REPO
from testing.faults.harness import FaultCase, Outcome
from testing.runs import make_photo_pseudo_run, make_tiny_student_ckpt
from testing.scenes.objects import make_procedural_scene

# export.onnx.run in a process that SIGKILLs itself when it is about to write its second file
_KILLED_EXPORT = """
import os, signal, sys
import export.onnx as export_onnx
from testing.faults.files import export_config

save, saved = export_onnx.save_checked, []
def save_then_die(proto, path):
    if saved:
        os.kill(os.getpid(), signal.SIGKILL)
    saved.append(save(proto, path))
    return saved[-1]
export_onnx.save_checked = save_then_die
export_onnx.run(export_config(sys.argv[1], sys.argv[2]))
"""


def export_config(scene: str | Path, run_dir: str | Path) -> Any:
    """A quick export: fp32 and fp16 with a dynamic batch, a few parity rays, one test view."""
    from export.onnx import ExportConfig, ParityConfig
    from scenes.load import SceneConfig

    return ExportConfig(scene=SceneConfig(path=str(scene)), run_dir=str(run_dir), variants=["fp32", "fp16"],
                        static_variants=[], parity=ParityConfig(n_rays=256, max_test_views=1))


def _student_run(tmp: Path, n_freqs: int = 10) -> tuple[Path, Path]:
    scene = make_procedural_scene(tmp / "scene")
    run_dir = tmp / "run"
    make_tiny_student_ckpt(run_dir / "student" / "student.ckpt", scene, n_freqs=n_freqs)
    return scene, run_dir


def _files(folder: Path) -> dict[str, bytes]:
    """The published files of ``folder`` (not hidden ones: the run lock, a staging folder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name[0] != "."}


def _parity_failure(tmp: Path) -> Outcome:
    import export.onnx as export_onnx

    scene, run_dir = _student_run(tmp)
    trace = export_onnx.trace_student

    def trace_other_weights(module: Any, example: Any, static: bool, opset: int) -> Any:
        import torch

        other = copy.deepcopy(module)
        with torch.no_grad():
            for param in other.parameters():
                param.add_(0.1 * torch.randn_like(param))
        return trace(other, example, static=static, opset=opset)

    export_onnx.trace_student = trace_other_weights  # type: ignore[assignment]
    try:
        export_onnx.run(export_config(scene, run_dir))
        return Outcome("published", False, "the gate let a graph of other weights through")
    except RuntimeError as exc:
        message = str(exc)
    finally:
        export_onnx.trace_student = trace
    left = sorted(_files(run_dir / "export"))
    ok = left == ["export_failed.json"] and "nothing published" in message
    return Outcome("error, nothing published", ok, f"{message}; export/ holds {left}")


def _killed_export(tmp: Path) -> Outcome:
    from export.onnx import run

    scene, run_dir = _student_run(tmp)
    run(export_config(scene, run_dir))
    out = run_dir / "export"
    old = _files(out)
    _student_run(tmp, n_freqs=6)  # another student: every new file differs from the old one
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _KILLED_EXPORT, str(scene), str(run_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != -9:
        return Outcome("not killed", False, f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}")
    ok = _files(out) == old
    return Outcome("old set intact" if ok else "mixed set", ok,
                   f"killed before its second file; export/ holds {sorted(_files(out))}")


def _stale_build_lock(tmp: Path) -> Outcome:
    from cuda import build
    from cuda.backend import HashGrid, HashGridConfig

    lock = tmp / f"lfd_hashgrid_cpu_{build._machine_tag()}" / "lock"
    lock.parent.mkdir()
    lock.touch()  # what a SIGKILL during the first compile leaves
    state = (build._modules, build._failures, build._warned, build.compiler_available)
    env = {k: os.environ.get(k) for k in ("TORCH_EXTENSIONS_DIR", build.LOCK_WAIT_ENV)}
    records = logging.handlers.BufferingHandler(capacity=100)
    records.setLevel(logging.WARNING)
    logging.getLogger(build.__name__).addHandler(records)
    build._modules, build._failures, build._warned = {}, {}, set()
    build.compiler_available = lambda: True  # the lock, not a missing compiler, must decide
    os.environ.update({"TORCH_EXTENSIONS_DIR": str(tmp), build.LOCK_WAIT_ENV: "5"})
    grids: list[HashGrid] = []
    start = time.monotonic()
    spec = HashGridConfig(n_levels=2).spec()
    thread = threading.Thread(target=lambda: grids.append(HashGrid(spec)), daemon=True)
    try:
        thread.start()
        thread.join(30)
    finally:
        build._modules, build._failures, build._warned, build.compiler_available = state
        logging.getLogger(build.__name__).removeHandler(records)
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if thread.is_alive():
        return Outcome("hang", False, f"still waiting on {lock} after 30 s")
    seconds = time.monotonic() - start
    warnings = [r.getMessage() for r in records.buffer]
    ok = grids[0].backend == "torch" and len(warnings) == 1 and str(lock) in warnings[0]
    return Outcome("warning, reference backend", ok, f"{seconds:.1f} s; {' / '.join(warnings)}")


def _bad_shard_name(name: Callable[[Path], str]) -> Callable[[Path], Outcome]:
    def case(tmp: Path) -> Outcome:
        from core.errors import UserError
        from core.io import write_json
        from pipeline.config import to_dataclass
        from student.config import StudentConfig
        from student.train import run
        from testing.stages import compose

        scene = make_procedural_scene(tmp / "scene")
        run_dir = make_photo_pseudo_run(tmp / "run", scene)
        meta_path = run_dir / "pseudo" / "meta.json"
        (tmp / "x.tar").write_bytes((run_dir / "pseudo" / "shard-000000.tar").read_bytes())
        bad = name(tmp)
        meta = json.loads(meta_path.read_text())
        meta["shards"][0]["name"] = bad
        write_json(meta_path, meta)
        try:
            cfg = compose("student", [f"scene.path={scene}", f"run_dir={run_dir}"])
            run(to_dataclass(cfg, StudentConfig))
            return Outcome("trained", False, f"{bad!r} was accepted")
        except UserError as exc:
            message = str(exc)
        ok = ("\n" not in message and message.startswith(f"{meta_path}:") and repr(bad) in message
              and not (tmp / "ran").exists())
        return Outcome("one-line error", ok, message)

    return case


def _truncated_shard(tmp: Path) -> Outcome:
    scene = make_procedural_scene(tmp / "scene")
    run_dir = make_photo_pseudo_run(tmp / "run", scene)
    shard = run_dir / "pseudo" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "student.train", f"scene.path={scene}", f"run_dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip()
    ok = (proc.returncode == 1 and err.startswith(f"error: {shard}:") and "\n" not in err
          and "Traceback" not in err)
    return Outcome("one-line error", ok, f"exit {proc.returncode}: {err[-300:]}")


CASES: list[FaultCase] = [
    FaultCase("export", "corrupt file", "fp32 graph of other weights than the checkpoint (parity gate fails)",
              _parity_failure),
    FaultCase("export", "kill", "SIGKILL between two variants of a re-export", _killed_export),
    FaultCase("kernels", "stale file", "build lock left by a killed first compile", _stale_build_lock),
    FaultCase("student", "bad value", "shard name ../x.tar in meta.json",
              _bad_shard_name(lambda t: "../x.tar")),
    FaultCase("student", "bad value", "absolute shard path in meta.json",
              _bad_shard_name(lambda t: str(t / "x.tar"))),
    FaultCase("student", "bad value", "shard name pipe:<command> in meta.json",
              _bad_shard_name(lambda t: f"pipe:touch {t / 'ran'}; cat {t / 'x.tar'}")),
    FaultCase("student", "corrupt file", "truncated shard", _truncated_shard),
]
