"""``data_gen.render``: teacher -> shards round trip, resume, verify, shard ranges, bad input."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds

from core.errors import CheckpointError, UserError
from core.io import sha256_file
from core.rays import generate_rays
from core.scene_facts import SceneFacts
from core.shards import decode_optional, decode_sample, read_meta
from core.skipgrid import unpack_grid
from data_gen.job import JobMismatchError
from data_gen.poses import SamplerConfig, build_rig, sample_view
from data_gen.render import DataGenConfig, parse_shard_range, run
from pipeline.config import to_dataclass
from scenes.load import SceneConfig, load_scene
from teacher.checkpoint import load_teacher
from testing.cli import REPO
from testing.runs import data_gen_cfg, shard_hashes
from testing.stages import compose


def test_round_trip_matches_the_teacher(tiny_scene: Path, run_dir: Path) -> None:
    cfg = data_gen_cfg(tiny_scene, run_dir, "depth=true", "alpha=true",
                       "sampler_params.focal_scale=[1.0,1.5]",
                       "batch_rays=130")  # 2 views per teacher call: batches cross no shard boundary
    metrics = run(cfg)
    assert metrics["complete"] and metrics["written"] == 7 and metrics["n_shards"] == 3
    meta = read_meta(run_dir / "pseudo", verify_hashes=True)
    assert meta.image_size == [8, 8] and meta.fields == ["rgb", "c2w", "K", "depth", "alpha"]
    assert meta.teacher["test_psnr"] == 12.5
    assert meta.teacher["checkpoint_sha256"] == sha256_file(run_dir / "teacher" / "teacher.ckpt")
    teacher = load_teacher(run_dir / "teacher" / "teacher.ckpt")
    assert meta.scene.aabb == teacher.aabb.tolist() and meta.scene.near == teacher.near
    assert meta.scene.content_aabb == teacher.content_aabb().tolist()
    assert meta.scene.image_size == [16, 16] and meta.scene.rig is not None  # the scene's training cameras
    train = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",)).split("train")
    rig = build_rig(train.c2w, train.K[0] * torch.tensor([[0.5], [0.5], [1.0]]))
    urls = [str(p) for p in meta.shard_paths()]
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert [int(s["__key__"]) for s in samples] == list(range(7))
    for i, sample in enumerate(samples):
        rgb, c2w, K = decode_sample(sample)
        c2w_ref, K_ref = sample_view("hemisphere", 0, i, rig, SamplerConfig(focal_scale=[1.0, 1.5]))
        np.testing.assert_array_equal(c2w, c2w_ref.numpy())
        np.testing.assert_array_equal(K, K_ref.numpy())
        with torch.inference_mode():  # one view alone: batching must not change the result
            ref = teacher.render_rays(*generate_rays(c2w_ref, K_ref, 8, 8), torch.ones(3))
        rgb_ref = np.rint(ref["rgb"].clamp(0, 1).numpy() * 255).reshape(8, 8, 3) / 255
        np.testing.assert_array_equal(rgb, rgb_ref)
        np.testing.assert_allclose(decode_optional(sample, "depth"), ref["depth"].reshape(8, 8), rtol=1e-5)
        np.testing.assert_allclose(decode_optional(sample, "alpha"), ref["opacity"].reshape(8, 8), rtol=1e-5)
    assert len({s["rgb.png"] for s in samples}) == 7  # views differ (the test would catch a mix-up)


def test_rerun_skips_complete_shards_and_repairs_damaged_ones(tiny_scene: Path, run_dir: Path) -> None:
    cfg = data_gen_cfg(tiny_scene, run_dir)
    run(cfg)
    folder = run_dir / "pseudo"
    before = shard_hashes(folder)
    assert run(cfg)["written"] == 0
    data = (folder / "shard-000001.tar").read_bytes()
    (folder / "shard-000001.tar").write_bytes(data[:-700])
    (folder / "shard-000002.tar").unlink()
    (folder / "meta.json").unlink()
    metrics = run(cfg)
    assert metrics["written"] == 3 + 1 and metrics["skipped"] == 3 and metrics["complete"]
    assert shard_hashes(folder) == before


def test_shard_ranges_split_a_job_and_meta_waits_for_all(tiny_scene: Path, run_dir: Path,
                                                         tmp_path: Path) -> None:
    whole = data_gen_cfg(tiny_scene, run_dir, f"out_dir={tmp_path / 'whole'}")
    run(whole)
    part = data_gen_cfg(tiny_scene, run_dir, "shards=1:")
    metrics = run(part)
    assert metrics["written"] == 4 and not metrics["complete"]
    assert not (run_dir / "pseudo" / "meta.json").exists()
    assert run(data_gen_cfg(tiny_scene, run_dir, "shards=:1"))["complete"]
    assert shard_hashes(run_dir / "pseudo") == shard_hashes(tmp_path / "whole")
    assert read_meta(run_dir / "pseudo").shards == read_meta(tmp_path / "whole").shards


def test_parse_shard_range() -> None:
    assert parse_shard_range(None, 5) == range(5)
    assert parse_shard_range("1:3", 5) == range(1, 3)
    assert parse_shard_range("-2:", 5) == range(3, 5)
    for bad in ("3", "a:b", "4:2", "9:"):
        with pytest.raises(UserError, match="shards="):
            parse_shard_range(bad, 5)


def test_verify_reports_bad_shards_by_name(tiny_scene: Path, run_dir: Path) -> None:
    run(data_gen_cfg(tiny_scene, run_dir))
    verify = data_gen_cfg(tiny_scene, run_dir, "verify=true")
    assert run(verify) == {"verified": 3, "problems": []}
    path = run_dir / "pseudo" / "shard-000002.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match="1 of 3 shards failed verification; first: .*shard-000002.tar"):
        run(verify)


def test_folder_of_another_job_is_not_overwritten(tiny_scene: Path, run_dir: Path) -> None:
    run(data_gen_cfg(tiny_scene, run_dir))
    before = shard_hashes(run_dir / "pseudo")
    with pytest.raises(JobMismatchError, match=r"meta.json: .* different job \(sampler.seed: 0 on disk vs 1"):
        run(data_gen_cfg(tiny_scene, run_dir, "seed=1"))
    (run_dir / "pseudo" / "meta.json").unlink()
    with pytest.raises(JobMismatchError, match=r"job.json: .* different job \(n_views: 7 on disk vs 8"):
        run(data_gen_cfg(tiny_scene, run_dir, "n_views=8"))
    shutil.rmtree(run_dir / "pseudo" / ".progress")
    with pytest.raises(JobMismatchError, match="holds shards of an unknown job"):
        run(data_gen_cfg(tiny_scene, run_dir))
    assert shard_hashes(run_dir / "pseudo") == before


def test_bad_checkpoints_give_one_line_errors(tiny_scene: Path, run_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        run(data_gen_cfg(tiny_scene, tmp_path / "empty_run"))
    ckpt = run_dir / "teacher" / "teacher.ckpt"
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="corrupt.ckpt: not a readable checkpoint"):
        run(data_gen_cfg(tiny_scene, run_dir, f"teacher_ckpt={corrupt}"))
    with pytest.raises(CheckpointError, match="teacher was trained with scene box"):
        run(data_gen_cfg(tiny_scene, run_dir, "scene.aabb=[-1,-1,-1,1,1,1]"))
    assert not (run_dir / "pseudo").exists()


def test_cli_prints_one_line_error_and_exits_1(tiny_scene: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "data_gen.render", f"scene.path={tiny_scene}", f"run_dir={tmp_path / 'r'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "teacher.ckpt: checkpoint not found" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_meta_json_is_plain_json_with_the_documented_keys(tiny_scene: Path, run_dir: Path) -> None:
    run(data_gen_cfg(tiny_scene, run_dir, "rgb_format=npy16"))
    d = json.loads((run_dir / "pseudo" / "meta.json").read_text())
    assert list(d) == ["format", "format_version", "scene", "scene_path", "image_size", "n_views",
                       "views_per_shard", "rgb_format", "fields", "shards", "sampler", "teacher"]
    assert list(d["scene"]) == [f.name for f in dataclasses.fields(SceneFacts)]  # the one scene record
    assert d["rgb_format"] == "npy16" and d["sampler"]["name"] == "hemisphere" and d["sampler"]["seed"] == 0
    facts = d["scene"]
    assert facts["ndc"] is None and facts["scene_kind"] == "object"  # auto: the tiny scene has masks
    assert facts["camera_convention"] == "opencv"
    cells = unpack_grid(d["scene"]["occupancy"], "meta.json")  # the teacher's occupied cells, covered
    assert cells.shape == (63, 63, 63) and cells.any()
    assert set(d["shards"][0]) == {"name", "first_view", "n_views", "sha256"}


@pytest.mark.parametrize(("profile", "n_views", "size"), [("cpu", 1000, 100), ("paper", 10000, 400)])
def test_profiles(profile: str, n_views: int, size: int) -> None:
    cfg = to_dataclass(compose("data_gen", [f"profile={profile}"]), DataGenConfig)
    assert cfg.n_views == n_views and cfg.run_dir == "runs/mic_100" and cfg.sampler == "auto"
    demo_hw = load_scene(cfg.scene, splits=("train",)).split("train").hw
    assert [round(s * cfg.image_scale) for s in demo_hw] == [size, size]


@pytest.mark.parametrize(("profile", "n_views", "max_rays", "per_shard"), [
    ("cpu", 100, 20_000_000, 25), ("gpu", 10000, None, 250), ("paper", 10000, None, 100)])
def test_a_forward_scene_takes_the_forward_group(profile: str, n_views: int, max_rays: int | None,
                                                 per_shard: int) -> None:
    """The CPU profile renders a forward-facing scene's 100 views at the photos' size (504x378 fits the
    cap), 25 a shard; an object keeps n_views, max_rays and views_per_shard."""
    from data_gen.config import for_scene

    cfg = to_dataclass(compose("data_gen", [f"profile={profile}"]), DataGenConfig)
    used = for_scene(cfg, forward_facing=True)
    assert (used.n_views, used.max_rays, used.views_per_shard) == (n_views, max_rays, per_shard)
    assert dataclasses.replace(used, n_views=cfg.n_views, max_rays=cfg.max_rays,
                               views_per_shard=cfg.views_per_shard) == cfg and used.forward == cfg.forward
    assert for_scene(cfg, forward_facing=False) is cfg
    if max_rays is not None:
        assert n_views * 378 * 504 <= max_rays


def test_a_forward_cap_below_its_views_is_refused_in_one_line(tmp_path: Path) -> None:
    from testing.cli import one_line_error, run_cli

    line = one_line_error(run_cli("data_gen.render", REPO, [f"run_dir={tmp_path}", "forward.n_views=50",
                                                           "forward.max_rays=10"]))
    assert "forward.max_rays=10" in line and "at least n_views (50)" in line


def test_max_rays_renders_views_smaller_with_the_same_field_of_view(tiny_scene: Path, run_dir: Path) -> None:
    run(data_gen_cfg(tiny_scene, run_dir, "image_scale=1.0", "out_dir=" + str(run_dir / "a")))
    full = json.loads((run_dir / "a" / "meta.json").read_text())
    H, W = full["image_size"]
    run(data_gen_cfg(tiny_scene, run_dir, "image_scale=1.0", f"max_rays={7 * H * W // 4}",
                 "out_dir=" + str(run_dir / "b")))
    small = json.loads((run_dir / "b" / "meta.json").read_text())
    assert small["image_size"] == [H // 2, W // 2] and small["n_views"] == full["n_views"] == 7
    # intrinsics scale with the image: the same field of view
    K_full, K_small = np.array(full["sampler"]["K"]), np.array(small["sampler"]["K"])
    assert np.allclose(K_small[:2], K_full[:2] / 2, rtol=1e-6)
    with pytest.raises(UserError, match="max_rays"):
        run(data_gen_cfg(tiny_scene, run_dir, "max_rays=3"))
