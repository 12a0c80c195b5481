"""Fault cases of values never checked before: config settings, camera paths, scenes, shards, ONNX metadata,
and training that diverges.

* a bad config value (a count or size < 1, a zero learning rate, an odd student depth, an unknown
  backend, no limit on training): the real CLI exits 1 with one line naming the dotted key, in seconds;
* a camera path with ``fov: 0``, a size <= 0, ``fps: 0`` or a non-rigid pose, a scene with a NaN principal
  point, a shard whose ``c2w``/``K`` are not finite or have a zero focal length, ONNX metadata with a
  box of 5 numbers or ``near >= far``: one line naming the file;
* a learning rate of 1e30 (teacher, student) or a non-finite composite (NeRF-XL): one line naming the
  stage and step, and no checkpoint or ``metrics.json`` written.

Every case uses the tiny procedural scene (``tests/scenes.py``) and tiny settings: a few seconds each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.faults import FaultCase, Outcome
from tests.scenes import TINY_STUDENT as STUDENT_TINY
from tests.scenes import TINY_TEACHER as TINY
from tests.scenes import make_procedural_scene, run_cli

GOOD_POSE = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]


def _cli_error(module: str, *overrides: str, needle: str = "", scene: bool = False,
               last_line: bool = False) -> Callable[[Path], Outcome]:
    """A case running ``python -m module`` that must exit 1 with one ``error:`` line starting with
    ``error: <needle>`` (the last stderr line when ``last_line``: Lightning has printed before training)."""

    def case(tmp: Path) -> Outcome:
        args = [f"run_dir={tmp / 'run'}", *overrides]
        if scene:
            args.insert(0, f"scene.path={make_procedural_scene(tmp / 'scene')}")
        proc = run_cli(module, tmp, args, timeout=180)
        lines = proc.stderr.strip().splitlines()
        errors = [line for line in lines if line.startswith("error:")]
        shown = lines[-1:] if last_line else lines
        ok = (proc.returncode == 1 and errors == shown and len(errors) == 1
              and errors[0].startswith(f"error: {needle}") and "Traceback" not in proc.stderr)
        if last_line:  # a diverged run keeps no weights and no metrics
            stage = tmp / "run" / module.split(".")[0]
            ok = ok and not list(stage.rglob("*.ckpt")) and not (stage / "metrics.json").exists()
        return Outcome("one-line error", ok, f"exit {proc.returncode}: {(errors or lines or [''])[-1][:200]}")

    return case


def _user_error(call: Callable[[Path], Any], *needles: str) -> Callable[[Path], Outcome]:
    """A case whose ``call(tmp)`` must raise a one-line :class:`core.errors.UserError` holding ``needles``
    (``{tmp}`` in a needle stands for the folder)."""

    def case(tmp: Path) -> Outcome:
        from core.errors import UserError
        from export.runtime import ModelError

        try:
            call(tmp)
        except (UserError, ModelError) as exc:
            text = str(exc)
            ok = "\n" not in text and all(n.format(tmp=tmp) in text for n in needles)
            return Outcome("one-line error", ok, text[:200])
        return Outcome("accepted", False, "no error")

    return case


def _camera_path(tmp: Path, **changes: Any) -> Path:
    data: dict[str, Any] = {"render_height": 16, "render_width": 16, "fps": 24,
                            "camera_path": [{"camera_to_world": GOOD_POSE, "fov": 50.0}]}
    for key, value in changes.items():
        (data["camera_path"][0] if key in ("fov", "camera_to_world") else data)[key] = value
    path = tmp / "path.json"
    path.write_text(json.dumps(data))
    return path


def _read_path(**changes: Any) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        from export.runtime.paths import read_camera_path

        return read_camera_path(_camera_path(tmp, **changes), (16, 16))

    return call


def _nan_cx(tmp: Path) -> Any:
    from scenes.load import SceneConfig, load_scene

    scene = make_procedural_scene(tmp / "scene")
    path = scene / "transforms_train.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "cx": float("nan")}))
    return load_scene(SceneConfig(path=str(scene)), splits=("train",))


def _bad_shard(c2w: np.ndarray, K: np.ndarray) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        from core.shards import decode_sample
        from data_gen.shards import read_shard, write_shard

        rgb = np.zeros((4, 4, 3), dtype=np.float32)
        write_shard(tmp / "shard-000000.tar", [{"view_index": 0, "rgb": rgb, "c2w": c2w, "K": K}])
        return [decode_sample(sample) for sample in read_shard(tmp / "shard-000000.tar")]

    return call


def _onnx_meta(**changes: Any) -> Callable[[Path], Any]:
    def call(tmp: Path) -> Any:
        from export.runtime import ModelMeta

        meta = ModelMeta(scene_name="s", near=1.0, far=5.0, aabb=[-1.0, -1, -1, 1, 1, 1], image_size=[16, 16],
                         K=[[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]])
        props = {**meta.to_props(), **{f"lightfield.{k}": json.dumps(v) for k, v in changes.items()}}
        return ModelMeta.from_props(props, tmp / "student.onnx")

    return call


def _nerf_xl_nan(tmp: Path) -> Outcome:
    import torch

    from core.errors import TrainingDiverged
    from teacher.xl.train import PartitionedSetup, train_step

    weight = torch.nn.Parameter(torch.ones(3))

    class NaNRenderer:  # a region renderer whose composite went non-finite
        def render_chunk(self, rays_o: Any, rays_d: Any, background: Any, seed: int | None = None) -> Any:
            return {"rgb": weight * rays_o * float("nan"), "n_samples": torch.tensor(4)}

    setup = PartitionedSetup(regions={}, renderer=NaNRenderer(),
                             optimizers={0: torch.optim.Adam([weight], lr=0.1)}, boxes=torch.zeros(1, 6))
    batch = (torch.ones(8, 3), torch.ones(8, 3), torch.zeros(8, 3), torch.zeros(8, 3))
    try:
        train_step(setup, batch, step=7, seed=0, lr_scale=1.0, base_lr=0.1)
    except TrainingDiverged as exc:
        unchanged = bool((weight == 1).all())
        ok = str(exc).startswith("teacher (NeRF-XL): training diverged at step 7") and unchanged
        return Outcome("one-line error", ok, str(exc)[:200])
    return Outcome("trained on", False, "no error")


_EYE = np.eye(4, dtype=np.float32)
_K = np.diag([8.0, 8.0, 1.0]).astype(np.float32)

CASES: list[FaultCase] = [
    FaultCase("student", "bad value", "max_steps=-1 with max_seconds=null",
              _cli_error("student.train", "train.distill.max_steps=-1", "train.distill.max_seconds=null",
                         needle="train.distill.max_steps=-1: ")),
    FaultCase("student", "bad value", "batch_size=0",
              _cli_error("student.train", "train.distill.batch_size=0",
                         needle="train.distill.batch_size=0: ")),
    FaultCase("student", "bad value", "lr=0", _cli_error("student.train", "train.finetune.lr=0",
                                                         needle="train.finetune.lr=0.0: ")),
    FaultCase("student", "bad value", "odd model.depth", _cli_error("student.train", "model.depth=15",
                                                                    needle="model.depth=15: ")),
    FaultCase("teacher", "bad value", "batch_rays=0", _cli_error("teacher.train", "train.batch_rays=0",
                                                                 needle="train.batch_rays=0: ")),
    FaultCase("teacher", "bad value", "unknown hash-grid backend",
              _cli_error("teacher.train", "model.field.grid.backend=nope",
                  needle="model.field.grid.backend=nope: ")),
    FaultCase("data_gen", "bad value", "unknown backend", _cli_error("data_gen.render", "backend=nope",
                                                                     needle="backend=nope: ")),
    FaultCase("export", "bad value", "render fps=0",
              _cli_error("export.runtime.render", "fps=0", needle="fps=0: ")),
    FaultCase("export", "bad value", "parity.batch_size=-1",
              _cli_error("export.onnx", "parity.batch_size=-1", needle="parity.batch_size=-1: ")),
    FaultCase("export", "bad value", "viewer port=-1",
              _cli_error("export.viewer", "port=-1", needle="port=-1: ")),
    FaultCase("export", "bad value", "camera path fov: 0",
              _user_error(_read_path(fov=0), "{tmp}/path.json", "fov must be in (0, 180)")),
    FaultCase("export", "bad value", "camera path render_height: 0",
              _user_error(_read_path(render_height=0), "{tmp}/path.json", "at least 1x1")),
    FaultCase("export", "bad value", "camera path fps: 0",
              _user_error(_read_path(fps=0), "{tmp}/path.json", "fps must be a number > 0")),
    FaultCase("export", "bad value", "camera path pose scaled by 3 (not rigid)",
              _user_error(_read_path(camera_to_world=[3, *GOOD_POSE[1:]]), "{tmp}/path.json", "not rigid")),
    FaultCase("teacher", "corrupt file", "transforms.json cx: NaN",
              _user_error(_nan_cx, "transforms_train.json", "principal point cx=nan")),
    FaultCase("student", "corrupt file", "shard c2w.npy NaN",
              _user_error(_bad_shard(np.full((4, 4), np.nan, dtype=np.float32), _K), "shard-000000.tar",
                          "c2w.npy is not finite")),
    FaultCase("student", "corrupt file", "shard K.npy with a zero focal length",
              _user_error(_bad_shard(_EYE, np.diag([0.0, 8.0, 1.0]).astype(np.float32)), "shard-000000.tar",
                          "focal lengths > 0")),
    FaultCase("export", "corrupt file", "ONNX metadata content_aabb of 5 numbers",
              _user_error(_onnx_meta(content_aabb=[0, 0, 0, 1, 1]), "student.onnx",
                          "content_aabb must be 6")),
    FaultCase("export", "corrupt file", "ONNX metadata near >= far",
              _user_error(_onnx_meta(near=5.0), "student.onnx", "near (5.0) must be >= 0 and below far")),
    FaultCase("teacher", "bad value", "optim.lr=1e30 (non-finite loss)",
              _cli_error("teacher.train", *TINY, "train.max_steps=20", "optim.lr=1e30", scene=True,
                         last_line=True, needle="teacher: training diverged at step ")),
    FaultCase("student", "bad value", "finetune lr=1e30 (non-finite loss)",
              _cli_error("student.train", *STUDENT_TINY, "train.finetune.lr=1e30", scene=True, last_line=True,
                         needle="student finetune: training diverged at step ")),
    FaultCase("teacher (NeRF-XL)", "bad value", "non-finite composite in a step", _nerf_xl_nan),
]
