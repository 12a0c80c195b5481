"""Metrics, checkpoints (weights_only), atomic writes, errors, seeding and config plumbing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from core.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from core.errors import CheckpointError, UserError, exit_on_user_error
from core.io import atomic_write, sha256_file, write_bytes, write_json
from core.metrics import mse_to_psnr, psnr, ssim
from pipeline.config import to_dataclass, to_plain
from pipeline.seeding import seed_everything
from scenes.load import SceneConfig

# ------------------------------------------------------------------------------------- metrics


def test_psnr_of_known_mse() -> None:
    assert mse_to_psnr(0.01) == pytest.approx(20.0)
    assert mse_to_psnr(torch.tensor(1e-3)) == pytest.approx(30.0)
    target = torch.rand(8, 9, 3) * 0.8
    assert psnr(target + 0.1, target) == pytest.approx(20.0, abs=1e-4)  # mse = 0.01
    assert psnr(target, target) > 100.0  # identical: finite and huge


def test_ssim_identical_is_one_and_falls_with_noise() -> None:
    img = torch.rand(32, 32, 3)
    img = torch.nn.functional.avg_pool2d(img.permute(2, 0, 1)[None], 3, 1, 1)[0].permute(1, 2, 0)
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-6)
    noisy = [ssim((img + s * torch.randn_like(img)).clamp(0, 1), img) for s in (0.02, 0.1, 0.3)]
    assert 1.0 > noisy[0] > noisy[1] > noisy[2]
    batch = torch.stack([img, img])
    assert ssim(batch, batch) == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------- checkpoints


class _Payload:
    """An arbitrary class: unpickling it would open (create) a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    state = {"w": torch.randn(3, 4), "b": torch.arange(5), "h": torch.randn(2, dtype=torch.float16)}
    config = {"lr": 0.01, "layers": [64, 64], "name": "x", "flag": True, "none": None}
    path = save_checkpoint(tmp_path / "sub" / "m.ckpt", "teacher", state, config, steps=12)
    out = load_checkpoint(path, kind="teacher")
    assert out["kind"] == "teacher" and out["format_version"] == FORMAT_VERSION
    assert out["config"] == config and out["steps"] == 12
    assert state.keys() == out["state_dict"].keys()
    for k, v in state.items():
        assert torch.equal(out["state_dict"][k], v) and out["state_dict"][k].dtype == v.dtype
    assert load_checkpoint(path)["kind"] == "teacher"  # kind=None accepts any
    assert [p.name for p in path.parent.iterdir()] == ["m.ckpt"]  # no temporary left behind


def test_checkpoint_refuses_pickled_objects(tmp_path: Path) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"kind": "teacher", "format_version": 1, "state_dict": {}, "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, kind="teacher")
    assert not marker.exists()
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "zeroed_tail"])
def test_checkpoint_corrupt_file(tmp_path: Path, damage: str) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", "student", {"w": torch.randn(64, 64)}, {})
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[:-200] + b"\0" * 200)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, kind="student")
    message = str(err.value)
    assert str(path) in message and "\n" not in message


def test_checkpoint_fuzzed_bytes_always_give_a_checkpoint_error(tmp_path: Path) -> None:
    """Random bytes and byte-flipped real checkpoints: the unpickler raises many exception types
    (IndexError, KeyError, ValueError, ...) on junk; every one must become a one-line CheckpointError."""
    good = save_checkpoint(tmp_path / "good.ckpt", "student", {"w": torch.randn(8, 8)}, {}).read_bytes()
    rng = np.random.default_rng(1234)
    path = tmp_path / "m.ckpt"
    for trial in range(300):
        if trial % 3 == 0:
            data = rng.bytes(int(rng.integers(1, 8192)))
        elif trial % 3 == 1:  # legacy-pickle opcodes then junk: reaches deep into the unpickler
            data = b"\x80\x02" + rng.bytes(int(rng.integers(1, 512)))
        else:  # a real checkpoint with a few bytes flipped
            buf = bytearray(good)
            for i in rng.integers(0, len(buf), size=int(rng.integers(1, 16))):
                buf[i] = int(rng.integers(0, 256))
            data = bytes(buf)
        path.write_bytes(data)
        try:
            payload = load_checkpoint(path, kind="student")
        except CheckpointError as err:
            assert str(path) in str(err) and "\n" not in str(err), (trial, str(err))
        else:  # a flip may land in tensor data: the file is then still a valid checkpoint
            assert trial % 3 == 2 and set(payload["state_dict"]) == {"w"}, trial


def test_checkpoint_missing_wrong_kind_version_and_foreign(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found") as err:
        load_checkpoint(tmp_path / "none.ckpt")
    assert "none.ckpt" in str(err.value)
    path = save_checkpoint(tmp_path / "s.ckpt", "student", {}, {})
    with pytest.raises(CheckpointError, match="expected a teacher checkpoint, found 'student'"):
        load_checkpoint(path, kind="teacher")
    old = tmp_path / "old.ckpt"
    torch.save({"kind": "student", "format_version": 999, "state_dict": {}}, old)
    with pytest.raises(CheckpointError, match="format version 999"):
        load_checkpoint(old)
    foreign = tmp_path / "foreign.ckpt"
    torch.save(torch.zeros(3), foreign)
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_checkpoint(foreign)


# ------------------------------------------------------------------------------------------- io


def test_atomic_write_leaves_no_partial_file_when_writer_raises(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"

    def failing(p: Path) -> None:
        p.write_bytes(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, failing)
    assert list(tmp_path.iterdir()) == []
    # an existing file is left untouched by a failed rewrite
    write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_write_replaces_and_uses_normal_permissions(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    write_json(target, {"x": [1, 2]})
    write_json(target, {"x": 3})
    assert json.loads(target.read_text()) == {"x": 3}
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's owner-only 0600


def test_sha256_file(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 + 7)
    path = write_bytes(tmp_path / "x", data)
    assert sha256_file(path, chunk=1000) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------ errors / config


def test_exit_on_user_error_prints_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @exit_on_user_error
    def main() -> None:
        raise UserError("bad.json: first line\nsecond line")

    with pytest.raises(SystemExit) as exc:
        main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: bad.json: first line second line\n"

    @exit_on_user_error
    def fine() -> int:
        return 3

    assert fine() == 3

    @exit_on_user_error
    def bug() -> None:
        raise KeyError("a programming error is not hidden")

    with pytest.raises(KeyError):
        bug()


def test_seed_everything_repeats() -> None:
    def draw() -> tuple[float, float, float]:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(123)
    a = draw()
    seed_everything(123)
    assert draw() == a
    seed_everything(124)
    assert draw() != a


@dataclasses.dataclass
class _Cfg:
    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)
    steps: int = 3


def test_to_dataclass_validates() -> None:
    cfg = to_dataclass({"steps": 5, "scene": {"downscale": 2}}, _Cfg)
    assert isinstance(cfg, _Cfg) and isinstance(cfg.scene, SceneConfig)
    assert (cfg.steps, cfg.scene.downscale) == (5, 2)
    assert to_plain(cfg)["scene"]["downscale"] == 2
    with pytest.raises(UserError, match="invalid config"):
        to_dataclass({"stpes": 5}, _Cfg)
    with pytest.raises(UserError, match="invalid config"):
        to_dataclass({"steps": "many"}, _Cfg)


def test_run_dir_is_named_after_the_scene(tmp_path: Path) -> None:
    """The run section's default run_dir is runs/<scene folder> (the demo scene: mic_100), or scene.name."""
    from pipeline.run import RunConfig

    assert to_dataclass({}, RunConfig).run_dir == "runs/mic_100"
    assert to_dataclass({"scene": {"path": str(tmp_path / "lego")}}, RunConfig).run_dir == "runs/lego"
    named = {"scene": {"path": str(tmp_path / "lego"), "name": "custom"}}
    assert to_dataclass(named, RunConfig).run_dir == "runs/custom"
    assert to_dataclass({**named, "run_dir": "elsewhere"}, RunConfig).run_dir == "elsewhere"
