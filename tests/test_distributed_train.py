"""Partitioned training through ``teacher.train.run``: 2 gloo ranks (torchrun's environment) against one
process holding both regions, resume after a real kill and across launch modes, unusable resume files,
and the merged checkpoint in ``load_teacher``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from pipeline.config import to_dataclass
from pipeline.run import free_port
from teacher.checkpoint import load_teacher
from teacher.config import TeacherConfig
from teacher.train import run
from teacher.xl.model import PartitionedTeacher
from testing.runs import run_ranks, teacher_cfg
from testing.stages import compose

# smaller still than TINY_TEACHER: K regions of it train in one process
SMALLER = [
    "model.field.grid.log2_hashmap_size=10", "model.field.grid.base_resolution=4",
    "model.field.grid.max_resolution=32", "model.field.hidden_dim=16", "model.field.geo_dim=8",
    "model.field.grid.backend=torch", "model.occupancy.resolution=8", "model.occupancy.update_every=2",
    "model.occupancy.warmup_steps=2", "model.render.steps_per_diagonal=64", "train.batch_rays=128",
    "train.max_seconds=null", "eval.n_renders=1", "optim.decay_start=1.0",
]


def make_cfg(scene: Path, run_dir: Path, steps: int, k: int = 2) -> TeacherConfig:
    return teacher_cfg(scene, run_dir, *SMALLER, f"train.max_steps={steps}", f"distributed.partitions={k}")


@pytest.fixture
def one_thread():  # noqa: ANN201
    """Multi-threaded CPU reductions (scatter-adds) vary in the last bit between runs; compare with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "teacher" / "teacher.ckpt", weights_only=True)["state_dict"]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        scale = float(a[key].double().abs().max()) + 1e-12
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6 * scale, msg=key)


@pytest.mark.multiprocess
@pytest.mark.slow
def test_two_ranks_train_the_same_parameters_as_one_process(tiny_scene: Path, tmp_path: Path,
                                                            one_thread: None) -> None:
    single = run(make_cfg(tiny_scene, tmp_path / "single", steps=4))
    run_ranks(make_cfg(tiny_scene, tmp_path / "ranks", steps=4))  # torchrun's environment, 2 processes
    a, b = _state(tmp_path / "single"), _state(tmp_path / "ranks")
    initial = PartitionedTeacher(make_cfg(tiny_scene, tmp_path, 1).model, a["boxes"], a["aabb"], 1.0, 2.0)
    trained = a["regions.1.field.grid.params"] - initial.regions[1].field.grid.params
    assert trained.abs().max() > 1e-4
    _assert_same_state(a, b)
    multi = json.loads((tmp_path / "ranks" / "teacher" / "metrics.json").read_text())
    assert multi["processes"] == 2 and single["processes"] == 1 and multi["steps"] == single["steps"] == 4
    assert abs(multi["test"]["psnr"] - single["test"]["psnr"]) < 1e-3


@pytest.mark.multiprocess
@pytest.mark.slow
def test_resume_after_a_real_kill_equals_uninterrupted(tiny_scene: Path, tmp_path: Path, one_thread: None,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL ``torchrun`` and its 2 gloo ranks at once (as a node dies) once the resume files exist,
    during a save; rerun in one process to the end: the steps and weights equal an uninterrupted run's
    exactly (batches, jitter and occupancy draws are seeded by step and region, each region's optimizer
    state is restored, and torchrun gives each rank one thread as ``one_thread`` gives this process)."""
    from testing.faults.checkpoints import partitioned_cmd, teacher_cfg
    from testing.faults.kills import kill_job_when, partitioned_saving

    steps, two = 8, "distributed.partitions=2"
    straight = run(teacher_cfg(tiny_scene, tmp_path / "straight", steps, two))
    out = tmp_path / "killed" / "teacher"
    assert kill_job_when(partitioned_cmd(tiny_scene, tmp_path / "killed", steps), partitioned_saving(out))
    saved = torch.load(out / "teacher.ckpt", weights_only=True)
    assert 0 < saved["step"] < steps and not saved["finished"] and not (out / "metrics.json").exists()
    with caplog.at_level(logging.INFO, logger="teacher.xl.train"):
        resumed = run(teacher_cfg(tiny_scene, tmp_path / "killed", steps, two))
    assert f"resumed partitioned training at step {saved['step']}" in caplog.text
    assert resumed["steps"] == straight["steps"] == steps and resumed["processes"] == 1
    a, b = _state(tmp_path / "straight"), _state(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    rows = (out / "logs" / "partitioned.csv").read_text().splitlines()[1:]
    logged = [int(row.split(",")[0]) for row in rows]  # the killed run's rows, then the rerun's
    assert logged.count(0) == 1 and logged[-(steps - saved["step"]):] == list(range(saved["step"], steps))
    names = sorted(p.name for p in (out / "partitions").iterdir())  # no temporaries, no older steps
    assert names == [f"region-{k:03d}-step-{steps:09d}.ckpt" for k in range(2)]


@pytest.mark.slow
def test_unusable_region_file_warns_and_starts_fresh(tiny_scene: Path, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The policy of Lightning's ``last.ckpt`` (``training.checkpoints``): a truncated region file of the
    merged step is named in one warning, moved aside, and training starts fresh; a missing one likewise."""
    from teacher.xl.checkpoint import region_file, resume_point
    from testing.faults.checkpoints import teacher_cfg

    out, two = tmp_path / "teacher", "distributed.partitions=2"
    run(teacher_cfg(tiny_scene, tmp_path, 2, two))
    (out / "metrics.json").unlink()  # as if killed before the evaluation
    broken = region_file(out, 1, 2)
    broken.write_bytes(broken.read_bytes()[:1000])
    leftover = broken.with_name(f".{broken.name}.x1y2.tmp")  # a save killed midway
    leftover.write_bytes(b"junk")
    with caplog.at_level(logging.INFO, logger="teacher"):
        metrics = run(teacher_cfg(tiny_scene, tmp_path, 3, two))
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(broken) in warned[0] and "starting this stage fresh" in warned[0]
    assert "resumed partitioned training" not in caplog.text and not leftover.exists()
    assert metrics["steps"] == 3 and broken.with_name(f"{broken.name}.unreadable").is_file()
    rows = (out / "logs" / "partitioned.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1, 0, 1, 2]  # trained from step 0 again
    region_file(out, 0, 3).unlink()
    caplog.clear()
    assert resume_point(out, 2) is None
    assert len(caplog.records) == 1 and "missing" in caplog.records[0].getMessage()
    assert not list((out / "partitions").glob("*.ckpt"))  # the rest of the set is useless without it


@pytest.mark.multiprocess
@pytest.mark.slow
def test_resume_across_launch_modes_equals_uninterrupted(tiny_scene: Path, tmp_path: Path,
                                                         one_thread: None) -> None:
    """Stopped in one process and resumed by 2 ranks, and the other way round: the optimizer state is saved
    per region, so either resumes exactly."""
    run(make_cfg(tiny_scene, tmp_path / "straight", steps=4))
    run(make_cfg(tiny_scene, tmp_path / "to_ranks", steps=2))
    run_ranks(make_cfg(tiny_scene, tmp_path / "to_ranks", steps=4))
    run_ranks(make_cfg(tiny_scene, tmp_path / "to_one", steps=2))
    assert run(make_cfg(tiny_scene, tmp_path / "to_one", steps=4))["processes"] == 1
    for name in ("to_ranks", "to_one"):
        _assert_same_state(_state(tmp_path / "straight"), _state(tmp_path / name))


@pytest.mark.slow
def test_merged_checkpoint_renders_in_one_process_and_feeds_data_generation(tiny_scene: Path,
                                                                           tmp_path: Path) -> None:
    cfg = make_cfg(tiny_scene, tmp_path, steps=2, k=3)
    run(cfg)
    teacher = load_teacher(tmp_path / "teacher" / "teacher.ckpt", backend="torch")
    assert isinstance(teacher, PartitionedTeacher) and teacher.n_regions == 3
    rays_o = torch.tensor([[0.0, -4.0, 0.3], [4.0, 0.0, 0.0]])
    rays_d = torch.nn.functional.normalize(-rays_o, dim=-1)
    with torch.inference_mode():
        out = teacher.render_rays(rays_o, rays_d, torch.ones(3), chunk=1)
    assert out["rgb"].shape == (2, 3) and torch.isfinite(out["rgb"]).all()
    from data_gen.render import DataGenConfig
    from data_gen.render import run as render_pseudo_views

    overrides = [f"scene.path={tiny_scene}", f"run_dir={tmp_path}", "n_views=2", "views_per_shard=1",
                 "backend=torch", "progress=false"]
    gen_cfg = to_dataclass(compose("data_gen", overrides), DataGenConfig)
    assert render_pseudo_views(gen_cfg)["complete"]  # data generation reads the partitioned teacher unchanged
    with pytest.raises(Exception, match="partitions"):
        run(make_cfg(tiny_scene, tmp_path, steps=4, k=2))  # resuming with another K is refused


def test_process_count_must_match_partitions(tiny_scene: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.distributed as dist

    from core.errors import UserError

    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(key, value)
    try:
        with pytest.raises(UserError, match="torchrun started 1 processes but distributed.partitions=2"):
            run(make_cfg(tiny_scene, tmp_path, steps=1, k=2))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
