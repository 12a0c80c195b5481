"""The shard format on its own (no teacher): deterministic writer, plain-webdataset reader, validation."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from core.io import sha256_file, write_json
from core.scene_facts import SceneFacts
from core.shards import (
    FORMAT,
    FORMAT_VERSION,
    PseudoMeta,
    ShardFormatError,
    ShardInfo,
    decode_optional,
    decode_sample,
    read_meta,
    shard_name,
)
from data_gen.shards import check_shard, read_shard, write_shard
from tests.pose_cases import ROTATED


def _random_K(rng: np.random.Generator) -> np.ndarray:
    """Random intrinsics with positive focal lengths (what the shard reader accepts)."""
    K = rng.normal(size=(3, 3))
    K[0, 0], K[1, 1] = rng.uniform(0.5, 50.0, size=2)
    return K


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    """A rigid camera-to-world pose at a random place (what the shard reader accepts)."""
    c2w = np.array(ROTATED)
    c2w[:3, 3] = rng.normal(size=3)
    return c2w


def _views(first: int, n: int, hw: tuple[int, int] = (6, 5), seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed + first)
    return [{"view_index": first + i, "rgb": rng.random((*hw, 3)), "c2w": _random_pose(rng),
             "K": torch.tensor(_random_K(rng)), "depth": rng.random(hw).astype(np.float32)}
            for i in range(n)]


def _write_folder(folder: Path, n_shards: int = 2, per: int = 3) -> PseudoMeta:
    shards = []
    for s in range(n_shards):
        sha = write_shard(folder / shard_name(s), _views(s * per, per))
        shards.append(ShardInfo(shard_name(s), s * per, per, sha))
    facts = SceneFacts(aabb=[-1.0, -1, -1, 1, 1, 1], content_aabb=[-0.5, -0.5, -0.5, 0.5, 0.5, 0.5], near=0.5,
                       far=4.0, image_size=[6, 5], K=[[5.0, 0, 2.5], [0, 5.0, 3], [0, 0, 1]], scene_name="t",
                       background=[1.0, 1, 1])
    meta = PseudoMeta(scene=facts, image_size=[6, 5], n_views=n_shards * per, views_per_shard=per,
                      fields=["rgb", "c2w", "K", "depth"], shards=shards,
                      sampler={"name": "hemisphere", "seed": 0},
                      teacher={"checkpoint_sha256": "0" * 64, "test_psnr": None}, scene_path=".")
    write_json(folder / "meta.json", meta.to_dict())
    return meta


def test_same_views_give_the_same_bytes(tmp_path: Path) -> None:
    a = write_shard(tmp_path / "a.tar", _views(0, 4))
    b = write_shard(tmp_path / "b.tar", _views(0, 4))
    c = write_shard(tmp_path / "c.tar", _views(0, 4, seed=1))
    assert a == b == sha256_file(tmp_path / "b.tar") and a != c
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, 0, "", "", 0o444)}
    assert [m.name for m in members[:4]] == ["00000000.K.npy", "00000000.c2w.npy", "00000000.depth.npy",
                                            "00000000.rgb.png"]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("rgb_format", ["png", "npy16"])
def test_round_trip_through_plain_webdataset(tmp_path: Path, rgb_format: str) -> None:
    views = _views(10, 3)
    path = tmp_path / "shard-000000.tar"
    write_shard(path, views, rgb_format=rgb_format)
    samples = list(wds.WebDataset(str(path), shardshuffle=False, empty_check=False))
    assert [s["__key__"] for s in samples] == ["00000010", "00000011", "00000012"]
    for view, sample in zip(views, samples):
        rgb, c2w, K = decode_sample(sample)
        assert rgb.dtype == c2w.dtype == K.dtype == np.float32
        if rgb_format == "png":
            np.testing.assert_array_equal(rgb, np.rint(view["rgb"] * 255).astype(np.uint8) / np.float32(255))
        else:
            np.testing.assert_array_equal(rgb, view["rgb"].astype(np.float16).astype(np.float32))
        np.testing.assert_array_equal(c2w, view["c2w"].astype(np.float32))
        np.testing.assert_array_equal(K, view["K"].numpy().astype(np.float32))
        np.testing.assert_array_equal(decode_optional(sample, "depth"), view["depth"])
        assert decode_optional(sample, "alpha") is None


def test_read_meta_accepts_a_sound_folder(tmp_path: Path) -> None:
    meta = _write_folder(tmp_path)
    got = read_meta(tmp_path, verify_hashes=True)
    assert got.to_dict() == meta.to_dict()
    assert got.shard_paths() == [tmp_path / "shard-000000.tar", tmp_path / "shard-000001.tar"]
    assert got.n_rays == 6 * 6 * 5


def _edit_meta(folder: Path, **changes: object) -> None:
    """Change top-level keys of ``meta.json``, or keys of its scene facts (``scene__<key>``)."""
    d = json.loads((folder / "meta.json").read_text())
    for key, value in changes.items():
        where, _, name = key.rpartition("__")
        (d[where] if where else d)[name] = value
    (folder / "meta.json").write_text(json.dumps(d))


@pytest.mark.parametrize(("change", "message"), [
    ({"format": "other"}, "unknown format"),
    ({"format_version": FORMAT_VERSION + 1}, "format version"),
    ({"format_version": 1}, "written by an older version .*run data_gen.render again"),
    ({"scene__camera_convention": "opengl"}, "camera convention"),
    ({"shards": []}, "no shards"),
    ({"n_views": 7}, "n_views"),
    ({"rgb_format": "jpg"}, "rgb_format"),
    ({"scene__content_aabb": [0, 0, 0, 1, 1]}, "content_aabb"),
    ({"scene__content_aabb": [0, 0, 0, 1, -1, 1]}, "content_aabb"),
    ({"scene__near": 5.0}, "near"),
    ({"scene": {"aabb": [-1, -1, -1, 1, 1, 1]}}, r"scene facts missing \['K'"),
    ({"camera_convention": "opencv"}, r"unknown entries \['camera_convention'\]"),  # a key of format 1
])
def test_read_meta_rejects_bad_meta_naming_the_file(tmp_path: Path, change: dict, message: str) -> None:
    _write_folder(tmp_path)
    _edit_meta(tmp_path, **change)
    with pytest.raises(ShardFormatError, match=message) as info:
        read_meta(tmp_path)
    assert str(tmp_path / "meta.json") in str(info.value) and "\n" not in str(info.value)
    assert FORMAT == "lightfield-distill/pseudo"


def test_read_meta_rejects_files_not_matching_disk(tmp_path: Path) -> None:
    with pytest.raises(ShardFormatError, match="not found"):
        read_meta(tmp_path / "nowhere")
    with pytest.raises(ShardFormatError, match="meta.json: not found"):
        read_meta(tmp_path)
    _write_folder(tmp_path)
    (tmp_path / "shard-000007.tar").write_bytes(b"x")
    with pytest.raises(ShardFormatError, match="shard-000007.tar: shard on disk is not listed"):
        read_meta(tmp_path)
    (tmp_path / "shard-000007.tar").unlink()
    (tmp_path / "shard-000001.tar").unlink()
    with pytest.raises(ShardFormatError, match="shard-000001.tar: listed in .* but missing"):
        read_meta(tmp_path)


@pytest.mark.parametrize("name", ["../x.tar", "<abs>", "pipe:rm -rf x", "shard-000001.tar", "shard-1.tar"])
def test_read_meta_accepts_only_shard_file_names_of_the_folder(tmp_path: Path, name: str) -> None:
    """No path, URL or ``pipe:`` command from ``meta.json`` reaches webdataset (nor a shard listed twice)."""
    folder = tmp_path / "pseudo"
    meta = _write_folder(folder)
    for other in ("x.tar", "abs.tar"):  # files there to be read, were such names followed
        shutil.copy(folder / meta.shards[0].name, tmp_path / other)
    name = str(tmp_path / "abs.tar") if name == "<abs>" else name
    _edit_meta(folder, shards=[{**asdict(meta.shards[0]), "name": name}, asdict(meta.shards[1])])
    with pytest.raises(ShardFormatError) as info:
        read_meta(folder)
    assert str(info.value) == (f"{folder / 'meta.json'}: shard name {name!r} is not a distinct "
                               "shard-NNNNNN.tar file of this folder")


def test_shard_paths_are_absolute_local_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_folder(tmp_path / "pseudo")
    monkeypatch.chdir(tmp_path)
    paths = read_meta("pseudo").shard_paths()
    assert paths == [tmp_path / "pseudo" / "shard-000000.tar", tmp_path / "pseudo" / "shard-000001.tar"]
    assert all(p.is_absolute() for p in paths)


def test_shard_hashes_are_read_once_until_a_shard_changes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import core.shards

    meta = _write_folder(tmp_path)
    hashed: list[Path] = []

    def counting_sha256(path: Path) -> str:
        hashed.append(Path(path))
        return sha256_file(path)

    monkeypatch.setattr(core.shards, "sha256_file", counting_sha256)
    read_meta(tmp_path, verify_hashes=True)
    read_meta(tmp_path, verify_hashes=True)
    assert len(hashed) == 4  # just written: a rewrite within the same mtime tick could go unseen
    past = time.time() - 60
    for s in meta.shards:
        os.utime(tmp_path / s.name, (past, past))
    read_meta(tmp_path, verify_hashes=True)
    assert set(json.loads((tmp_path / ".verified.json").read_text())) == {s.name for s in meta.shards}
    hashed.clear()
    read_meta(tmp_path, verify_hashes=True)
    assert hashed == []  # unchanged since they matched
    bad = tmp_path / meta.shards[1].name
    bad.write_bytes(bad.read_bytes()[:-1024])  # without its end-of-archive blocks: still a readable tar
    os.utime(bad, (past, past))
    with pytest.raises(ShardFormatError) as info:
        read_meta(tmp_path, verify_hashes=True)
    assert str(info.value).startswith(f"{bad}: sha256 does not match {tmp_path / 'meta.json'}")
    assert hashed == [bad]


def test_truncated_and_flipped_shards_are_detected_by_name(tmp_path: Path) -> None:
    meta = _write_folder(tmp_path)
    good, bad = meta.shards
    path = tmp_path / bad.name
    data = path.read_bytes()
    # A flipped byte inside the PNG payload: caught by the hash, and by decoding when no hash is known.
    offset = data.index(b"IDAT") + 8
    path.write_bytes(data[:offset] + bytes([data[offset] ^ 0xFF]) + data[offset + 1:])
    with pytest.raises(ShardFormatError, match=bad.name):
        read_meta(tmp_path, verify_hashes=True)
    assert bad.name in check_shard(path, bad.sha256, bad.first_view, bad.n_views, [6, 5], meta.fields)
    assert check_shard(tmp_path / good.name, good.sha256, good.first_view, good.n_views, [6, 5],
                       meta.fields) is None
    # Truncated: unreadable as a tar (or missing samples) even without a hash.
    path.write_bytes(data[: len(data) // 2])
    problem = check_shard(path, None, bad.first_view, bad.n_views, [6, 5], meta.fields)
    assert problem is not None and bad.name in problem
    with pytest.raises(ShardFormatError, match=bad.name):
        list(read_shard(path))


def test_decode_sample_names_missing_fields() -> None:
    with pytest.raises(ShardFormatError, match="s.tar sample 00000003: sample has no 'c2w.npy'"):
        decode_sample({"__key__": "00000003", "__url__": "s.tar", "rgb.npy": _npy(np.zeros((2, 2, 3)))})


def test_decode_sample_refuses_a_pose_that_is_not_rigid() -> None:
    """The one pose check (core.cameras.check_c2w): a scaled rotation is no camera pose."""
    sample = {"__key__": "00000003", "__url__": "s.tar", "rgb.npy": _npy(np.zeros((2, 2, 3))),
              "c2w.npy": _npy(np.diag([2.0, 2.0, 2.0, 1.0])), "K.npy": _npy(np.diag([8.0, 8.0, 1.0]))}
    with pytest.raises(ShardFormatError, match="s.tar sample 00000003: c2w.npy is not rigid"):
        decode_sample(sample)


def _npy(arr: np.ndarray) -> bytes:
    from data_gen.shards import npy_bytes

    return npy_bytes(arr)


def test_decode_sample_turns_fuzzed_fields_into_shard_errors() -> None:
    """Random, cut and byte-flipped rgb.png / .npy fields: numpy and Pillow raise many exception types
    on junk (ValueError, EOFError, tokenize.TokenError, ...); each must become a ShardFormatError."""
    rng = np.random.default_rng(7)
    buf = io.BytesIO()
    Image.fromarray((rng.random((6, 5, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    good = {"rgb.png": buf.getvalue(), "c2w.npy": _npy(_random_pose(rng)),
            "K.npy": _npy(_random_K(rng))}
    decode_sample({"__key__": "0", **good})  # the undamaged sample decodes
    survived = 0
    for trial in range(1500):
        field = ("rgb.png", "c2w.npy", "K.npy")[trial % 3]
        data = bytearray(good[field])
        if trial % 4 == 0:
            data = bytearray(rng.bytes(int(rng.integers(1, 300))))
        elif trial % 4 == 1:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for i in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
                data[i] = int(rng.integers(0, 256))
        try:
            decode_sample({"__key__": f"{trial:08d}", "__url__": "s.tar", **good, field: bytes(data)})
            survived += 1  # a flip inside pixel or array data leaves a valid sample
        except ShardFormatError as err:
            assert f"s.tar sample {trial:08d}" in str(err), str(err)
    assert survived < 1500 // 2
