"""Config values are checked once, when the config is read: one line naming the dotted key, exit 1.

The validators run inside :func:`pipeline.config.to_dataclass`; these tests compose the real configs of every
stage with one bad override each, and run a representative few through the real CLIs.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from core.checks import ConfigValueError
from pipeline.config import to_dataclass
from testing.cli import run_cli
from testing.runs import TINY_STUDENT, TINY_TEACHER
from testing.scenes.objects import make_procedural_scene
from testing.stages import STAGE_MODULES, compose, stage_schema

# (config, overrides, the start of the message)
BAD = [
    ("teacher", ["train.batch_rays=0"], "train.batch_rays=0: must be >= 1"),
    ("teacher", ["train.max_steps=-1", "train.max_seconds=null"],
     "train.max_steps=-1: with max_seconds=null"),
    ("teacher", ["train.max_steps=0"], "train.max_steps=0: must be >= 1, or -1"),
    ("teacher", ["train.max_seconds=-5"], "train.max_seconds=-5.0: must be a finite number > 0"),
    ("teacher", ["device=gpu"], "device=gpu: must be auto, cpu, cuda"),
    ("teacher",
        ["model.field.grid.backend=nope"], "model.field.grid.backend=nope: must be one of ['auto', 'torch'"),
    ("teacher", ["model.field.grid.log2_hashmap_size=40"],
     "model.field.grid.log2_hashmap_size=40: invalid hash grid"),
    ("teacher", ["model.field.grid.max_resolution=8"], "model.field.grid.max_resolution=8: must be >= 16"),
    ("teacher", ["model.render.chunk=-1"], "model.render.chunk=-1: must be >= 1"),
    ("teacher", ["model.occupancy.decay=1.5"], "model.occupancy.decay=1.5: must be in [0.0, 1.0]"),
    ("teacher", ["model.occupancy.sample_fraction=-0.1"], "model.occupancy.sample_fraction=-0.1: must be in"),
    ("teacher", ["optim.lr=0"], "optim.lr=0.0: must be a finite number > 0"),
    ("teacher", ["optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5]: must be two numbers in [0, 1)"),
    ("teacher", ["optim.decay_start=2"], "optim.decay_start=2.0: must be in [0.0, 1.0]"),
    ("teacher", ["eval.chunk=0"], "eval.chunk=0: must be >= 1"),
    ("teacher", ["distributed.backend=mpi"],
     "distributed.backend=mpi: must be one of ['auto', 'gloo', 'nccl']"),
    ("teacher", ["distributed.partitions=0"], "distributed.partitions=0: must be >= 1"),
    ("teacher", ["scene.near=2", "scene.far=1"], "scene.near=2.0: must be below far (1.0)"),
    ("teacher", ["scene.aabb=[0,0,0,1,1]"], "scene.aabb=[0.0, 0.0, 0.0, 1.0, 1.0]: must be 6 finite numbers"),
    ("teacher", ["scene.far=nan"], "scene.far=nan: must be a finite number > 0"),
    ("teacher", ["scene.max_views=0"], "scene.max_views=0: must be >= 1"),
    ("student", ["train.distill.max_steps=-1", "train.distill.max_seconds=null"],
     "train.distill.max_steps=-1: with max_seconds=null"),
    ("student", ["train.distill.batch_size=0"], "train.distill.batch_size=0: must be >= 1"),
    ("student", ["train.finetune.lr=0"], "train.finetune.lr=0.0: must be a finite number > 0"),
    ("student", ["train.distill.encoding_lr=-1"],
     "train.distill.encoding_lr=-1.0: must be a finite number > 0"),
    ("student", ["train.distill.val_every_steps=0"], "train.distill.val_every_steps=0: must be >= 1"),
    ("student", ["model.depth=15"], "model.depth=15: must be even and >= 4"),
    ("student", ["model.encoding=triplane"],
     "model.encoding=triplane: must be one of ['pe', 'hash', 'planes']"),
    ("student", ["model.ray_range=sphere"], "model.ray_range=sphere: must be one of ['box', 'near_far']"),
    ("student", ["model.grid.backend=nope"], "model.grid.backend=nope: must be one of"),
    ("student", ["forward.width=0"], "forward.width=0: must be >= 1"),
    ("student", ["forward.image_resolutions=[]"], "forward.image_resolutions=[]: must list at least one"),
    ("student", ["forward.grid.backend=nope"], "forward.grid.backend=nope: must be one of"),
    ("student", ["model.grid.point_freqs=-2"], "model.grid.point_freqs=-2: must be >= -1"),
    ("student", ["train.hard_mining.fraction=1.5"], "train.hard_mining.fraction=1.5: must be in [0.0, 1.0]"),
    ("student", ["train.hard_mining.pool_size=0"], "train.hard_mining.pool_size=0: must be >= 1"),
    ("student", ["train.precision=fp8"], "train.precision=fp8: must be one of ['bf16', 'fp32']"),
    ("student", ["threads=0"], "threads=0: must be >= 1"),
    ("student", ["train.num_workers=-1"], "train.num_workers=-1: must be >= 0"),
    ("student", ["eval.chunk=-4096"], "eval.chunk=-4096: must be >= 1"),
    ("data_gen", ["backend=nope"], "backend=nope: must be one of ['auto', 'torch'"),
    ("data_gen", ["device=gpu0"], "device=gpu0: must be auto, cpu, cuda"),
    ("export", ["parity.n_rays=0"], "parity.n_rays=0: must be >= 1"),
    ("export", ["parity.fp32_tol=0"], "parity.fp32_tol=0.0: must be a finite number > 0"),
    ("export", ["int8.calib_batches=0"], "int8.calib_batches=0: must be >= 1"),
    ("export", ["opset=0"], "opset=0: must be >= 1"),
    ("viewer", ["port=70000"], "port=70000: must be in [0, 65535]"),
    ("viewer", ["variants=[]"], "variants=[]: must name at least one exported file"),
]


@pytest.mark.parametrize("name", sorted(STAGE_MODULES))
@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
def test_shipped_configs_are_valid(name: str, profile: str) -> None:
    overrides = [f"profile={profile}"] if name in ("teacher", "student", "data_gen", "export") else []
    to_dataclass(compose(name, overrides), stage_schema(name))


@pytest.mark.parametrize("name, overrides, message", BAD, ids=[" ".join(o) for _, o, _ in BAD])
def test_bad_value_is_named_by_its_dotted_key(name: str, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigValueError) as info:
        to_dataclass(compose(name, overrides), stage_schema(name))
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


# a representative few through the real entry points: one line, exit 1, no traceback, in seconds
CLI = [
    ("student.train", ["train.distill.max_steps=-1", "train.distill.max_seconds=null"],
     "train.distill.max_steps=-1"),
    ("student.train", ["train.distill.batch_size=0"], "train.distill.batch_size=0"),
    ("student.train", ["train.finetune.lr=0"], "train.finetune.lr=0.0"),
    ("student.train", ["model.depth=15"], "model.depth=15"),
    ("teacher.train", ["train.batch_rays=0"], "train.batch_rays=0"),
    ("teacher.train", ["model.field.grid.backend=nope"], "model.field.grid.backend=nope"),
    ("data_gen.render", ["backend=nope"], "backend=nope"),
    ("export.onnx", ["parity.batch_size=-1"], "parity.batch_size=-1"),
    ("export.runtime.render", ["fps=0"], "fps=0"),
    ("export.viewer", ["port=-1"], "port=-1"),
]


@pytest.mark.slow
@pytest.mark.parametrize("module, overrides, key", CLI, ids=[f"{m} {' '.join(o)}" for m, o, _ in CLI])
def test_cli_bad_value_is_one_line(tmp_path: Path, module: str, overrides: list[str], key: str) -> None:
    start = time.perf_counter()
    proc = run_cli(module, tmp_path, [f"run_dir={tmp_path / 'run'}", *overrides], timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {key}: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    written = [p.name for p in (tmp_path / "run").iterdir()] if (tmp_path / "run").exists() else []
    assert written in ([], ["hydra"]), written  # refused before the stage wrote anything
    assert time.perf_counter() - start < 60


# overrides Hydra itself refuses (checked before Hydra runs: one line instead of Hydra's several)
UNCOMPOSABLE = [
    ("teacher.train", "model.field.n_levels=3", "'n_levels' not in 'FieldConfig'"),
    ("student.train", "train.distill.max_steps=many", "could not be converted to Integer"),
    ("data_gen.render", "profile=tpu", "Could not find 'profile/tpu'"),
    ("export.runtime.render", "orbit.frames=3", "'frames' not in 'OrbitConfig'"),
]


@pytest.mark.slow
@pytest.mark.parametrize("module, override, problem", UNCOMPOSABLE,
                         ids=[f"{m} {o}" for m, o, _ in UNCOMPOSABLE])
def test_cli_uncomposable_override_is_one_line(tmp_path: Path, module: str, override: str,
                                               problem: str) -> None:
    proc = run_cli(module, tmp_path, [f"run_dir={tmp_path / 'run'}", override], timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0], proc.stderr[-2000:]
    assert override.split("=")[0].split(".")[-1] in lines[0] or "profile" in lines[0]
    assert not (tmp_path / "run").exists()


def test_non_finite_loss_raises_training_diverged() -> None:
    from core.errors import TrainingDiverged, UserError, raise_if_diverged

    raise_if_diverged(0.5, "teacher", 3)
    for loss in (float("nan"), float("inf")):
        with pytest.raises(TrainingDiverged, match="teacher: training diverged at step 3") as info:
            raise_if_diverged(loss, "teacher", 3)
        assert isinstance(info.value, UserError)


STUDENT_TINY = TINY_STUDENT
DIVERGING = [
    ("teacher.train", [*TINY_TEACHER, "train.max_steps=20", "optim.lr=1e30"], "teacher", "teacher"),
    ("student.train", [*STUDENT_TINY, "train.finetune.lr=1e30"], "student finetune", "student"),
]


@pytest.mark.slow
@pytest.mark.parametrize("module, overrides, stage, folder", DIVERGING, ids=[d[2] for d in DIVERGING])
def test_diverging_training_stops_with_one_line(tmp_path: Path, tiny_scene: Path, module: str,
                                                overrides: list[str], stage: str, folder: str) -> None:
    run_dir = tmp_path / "run"
    proc = run_cli(module, tmp_path, [f"scene.path={tiny_scene}", f"run_dir={run_dir}", *overrides],
                   timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == proc.stderr.strip().splitlines()[-1:], proc.stderr[-3000:]
    assert errors[0].startswith(f"error: {stage}: training diverged at step "), errors
    assert "Traceback" not in proc.stdout + proc.stderr
    # nothing trained was written: no final model, no metrics with NaN, no resume point
    assert not list((run_dir / folder).rglob("*.ckpt")), list((run_dir / folder).rglob("*.ckpt"))
    assert not (run_dir / folder / "metrics.json").exists()


def test_nerf_xl_step_with_a_non_finite_loss_leaves_the_weights_alone() -> None:
    from core.errors import TrainingDiverged
    from teacher.xl.train import PartitionedSetup, train_step

    weight = torch.nn.Parameter(torch.ones(3))

    class NaNRenderer:  # a region renderer whose composite went non-finite
        def render_chunk(self, rays_o: Tensor, rays_d: Tensor, background: Tensor, seed: int | None = None,
                         ) -> dict[str, Tensor]:
            return {"rgb": weight * rays_o * float("nan"), "n_samples": torch.tensor(4)}

    setup = PartitionedSetup(regions={}, renderer=NaNRenderer(),
                             optimizers={0: torch.optim.Adam([weight], lr=0.1)}, boxes=torch.zeros(1, 6))
    batch = (torch.ones(8, 3), torch.ones(8, 3), torch.zeros(8, 3), torch.zeros(8, 3))
    with pytest.raises(TrainingDiverged, match=r"teacher \(NeRF-XL\): training diverged at step 7"):
        train_step(setup, batch, step=7, seed=0, lr_scale=1.0, base_lr=0.1)
    assert torch.equal(weight.detach(), torch.ones(3))


def _nerfstudio(tmp_path: Path, **changes: object) -> Path:
    pose = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]
    data: dict = {"render_height": 16, "render_width": 16, "fps": 24,
                  "camera_path": [{"camera_to_world": pose, "fov": 50.0}]}
    frame = data["camera_path"][0]
    for key, value in changes.items():
        (frame if key in frame else data)[key] = value
    path = tmp_path / "path.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"fov": 0}, r"camera_path\[0\] fov must be in \(0, 180\) degrees"),
    ({"fov": 180}, r"camera_path\[0\] fov must be in \(0, 180\)"),
    ({"render_height": 0}, "image size must be at least 1x1"),
    ({"render_width": -16}, "image size must be at least 1x1"),
    ({"fps": 0}, "fps must be a number > 0"),
    ({"camera_to_world": [3, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]}, "pose 0 is not rigid"),
    ({"camera_to_world": [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 4, 0, 0, 0, 1]}, "pose 0 is not rigid"),  # det -1
    ({"camera_to_world": [float("nan")] + [0] * 15}, "pose 0 is not finite"),
], ids=["fov-0", "fov-180", "height-0", "width-negative", "fps-0", "scaled", "reflection", "nan"])
def test_bad_camera_path_is_one_line_naming_the_file(tmp_path: Path, changes: dict, message: str) -> None:
    from export.runtime import ModelError
    from export.runtime.paths import read_camera_path

    path = _nerfstudio(tmp_path, **changes)
    with pytest.raises(ModelError, match=message) as info:
        read_camera_path(path, (16, 16))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_camera_path_zero_focal_and_zero_image_size(tmp_path: Path) -> None:
    from export.runtime import ModelError
    from export.runtime.paths import read_camera_path

    eye = np.eye(4).tolist()
    path = tmp_path / "poses.json"
    path.write_text(json.dumps({"c2w": [eye], "K": [[0, 0, 8], [0, 0, 8], [0, 0, 1]]}))
    with pytest.raises(ModelError, match="K must be finite with positive focal lengths"):
        read_camera_path(path, (16, 16))
    path.write_text(json.dumps({"c2w": [eye], "image_size": [0, 16]}))
    with pytest.raises(ModelError, match="image size must be at least 1x1"):
        read_camera_path(path, (16, 16))


@pytest.mark.parametrize("key", ["cx", "cy"])
def test_scene_with_a_non_finite_principal_point(tmp_path: Path, key: str) -> None:
    from core.errors import SceneError
    from scenes.load import SceneConfig, load_scene

    scene = make_procedural_scene(tmp_path / "scene")
    path = scene / "transforms_train.json"
    meta = json.loads(path.read_text())
    meta[key] = float("nan")  # json writes NaN, which json (and so load_scene) reads back
    path.write_text(json.dumps(meta))
    with pytest.raises(SceneError, match=f"transforms_train.json: principal point .*{key}=nan"):
        load_scene(SceneConfig(path=str(scene)), splits=("train",))


def _sample(c2w: np.ndarray, K: np.ndarray) -> dict:
    def npy(arr: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.save(buf, arr.astype(np.float32))
        return buf.getvalue()

    return {"__key__": "00000003", "__url__": "shard-000000.tar", "rgb.npy": npy(np.zeros((4, 4, 3))),
            "c2w.npy": npy(c2w), "K.npy": npy(K)}


@pytest.mark.parametrize("c2w, K, message", [
    (np.full((4, 4), np.nan), np.diag([8.0, 8.0, 1.0]), "c2w.npy is not finite"),
    (np.eye(4), np.diag([np.inf, 8.0, 1.0]), "K.npy must be finite with focal lengths > 0"),
    (np.eye(4), np.diag([8.0, 0.0, 1.0]), "K.npy must be finite with focal lengths > 0"),
], ids=["c2w-nan", "K-inf", "zero-focal"])
def test_shard_sample_with_bad_camera(c2w: np.ndarray, K: np.ndarray, message: str) -> None:
    from core.shards import ShardFormatError, decode_sample

    with pytest.raises(ShardFormatError, match=f"shard-000000.tar sample 00000003: {message}"):
        decode_sample(_sample(c2w, K))
    decode_sample(_sample(np.eye(4), np.diag([8.0, 8.0, 1.0])))  # a good one decodes


def _meta(**changes: object) -> dict[str, str]:
    from export.runtime import ModelMeta
    from export.runtime.meta import SceneFacts

    good = {"scene_name": "s", "near": 1.0, "far": 5.0, "aabb": [-1.0, -1, -1, 1, 1, 1],
            "image_size": [16, 16], "K": [[8.0, 0, 8], [0, 8.0, 8], [0, 0, 1]],
            "content_aabb": [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5], "background": [1.0, 1.0, 1.0]}
    return ModelMeta(scene=SceneFacts(**{**good, **changes})).to_props()  # type: ignore[arg-type]


@pytest.mark.parametrize("changes, message", [
    ({"content_aabb": [0.0, 0, 0, 1, 1]}, "metadata content_aabb must be 6 finite numbers with min < max"),
    ({"aabb": [1.0, -1, -1, -1, 1, 1]}, "metadata aabb must be 6 finite numbers with min < max"),
    ({"near": 5.0, "far": 5.0}, r"metadata near \(5.0\) must be >= 0 and below far \(5.0\)"),
    ({"near": 6.0}, r"metadata near \(6.0\) must be >= 0 and below far"),
    ({"K": [[0.0, 0, 8], [0, 8.0, 8], [0, 0, 1]]}, "metadata K must be finite with focal lengths > 0"),
    ({"image_size": [0, 16]}, "metadata image_size must be at least 1x1"),
    ({"near": "far"}, "metadata numbers are malformed"),
], ids=["content-box-5", "aabb-inverted", "near-eq-far", "near-gt-far", "zero-focal", "zero-size", "string"])
def test_onnx_metadata_with_bad_numbers(changes: dict, message: str) -> None:
    from export.runtime import ModelError, ModelMeta

    ModelMeta.from_props(_meta(), "m.onnx")
    with pytest.raises(ModelError, match=f"m.onnx: {message}"):
        ModelMeta.from_props(_meta(**changes), "m.onnx")
