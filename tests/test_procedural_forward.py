"""The procedural scenes of ``scripts/procedural_scene.py`` (:mod:`testing.scenes`): the forward-facing one
loads as LLFF and its poses reproduce its images; ``--detail`` keeps the cameras and adds fine content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.cameras import rigidity_error
from scenes.llff import LLFF_POSES, load_llff
from scripts.procedural_scene import main
from testing.scenes.forward import FORWARD_FACTOR, SUPERSAMPLE, render_forward
from testing.scenes.objects import write_object_scene
from testing.scenes.rigs import FORWARD_GRID

WIDTH, HEIGHT = 32, 24


@pytest.fixture(scope="module")
def forward_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("forward")
    main([str(root), "--kind", "forward", "--size", str(WIDTH)])
    return root


def test_forward_scene_loads_as_llff(forward_scene: Path) -> None:
    n = FORWARD_GRID[0] * FORWARD_GRID[1]
    assert (forward_scene / f"images_{FORWARD_FACTOR}").is_dir() and not (forward_scene / "images").exists()
    data = load_llff(forward_scene, ("train", "test"), None, None)
    assert data.c2w.shape == (n, 4, 4) and data.bounds.shape == (n, 2)
    assert data.splits["test"].n_views == len(range(0, n, 8))
    assert data.splits["train"].n_views == n - len(range(0, n, 8))
    assert data.factor == FORWARD_FACTOR and not data.has_masks
    assert data.splits["train"].hw == (HEIGHT, WIDTH)
    assert bool((data.splits["train"].images[..., 3] == 1).all())  # RGB: every pixel hits a surface
    hwf = np.load(forward_scene / LLFF_POSES)[0, 4:15:5]
    assert hwf[:2].tolist() == [FORWARD_FACTOR * HEIGHT, FORWARD_FACTOR * WIDTH]
    fov_x = 2 * np.degrees(np.arctan(hwf[1] / 2 / hwf[2]))
    assert 60 < fov_x < 70
    assert max(rigidity_error(c2w) for c2w in data.c2w) < 1e-5
    # a forward-facing rig: every optical axis within a few degrees of the mean one, centres close together
    axes = data.c2w[:, :3, 2]
    mean_axis = torch.nn.functional.normalize(axes.mean(0), dim=0)
    assert float(torch.rad2deg(torch.acos((axes @ mean_axis).clamp(max=1))).max()) < 8
    near = float(data.bounds[:, 0].min())
    spread = float((data.c2w[:, :3, 3] - data.c2w[:, :3, 3].mean(0)).norm(dim=-1).max())
    assert 0.05 * near < spread < 0.3 * near
    assert float((data.bounds[:, 1] / data.bounds[:, 0]).min()) > 5  # depth range of 1:5 or more


def test_forward_bounds_bracket_depths_and_poses_reproduce_images(forward_scene: Path) -> None:
    data = load_llff(forward_scene, ("train", "test"), None, None)
    for split in data.splits.values():
        for i, file in enumerate(split.files):
            row = int(Path(file).stem.removeprefix("image"))
            rgb, depth = render_forward(split.c2w[i], split.K[i], HEIGHT, WIDTH)
            assert depth.shape == (HEIGHT * SUPERSAMPLE, WIDTH * SUPERSAMPLE)
            near, far = data.bounds[row].tolist()
            assert near <= depth.min() and depth.max() <= far, (file, near, far, depth.min(), depth.max())
            # the loaded (world-frame, OpenCV) pose and intrinsics render the image that was written
            diff = np.abs(rgb.astype(float) - split.images[i, ..., :3].numpy() * 255)
            assert np.mean(diff <= 1.0) > 0.99, file


def _edges(images: list[np.ndarray]) -> float:
    """Mean absolute difference of horizontally neighbouring pixels over ``[H, W, 3]`` uint8 images."""
    return float(np.mean([np.abs(np.diff(im.astype(float), axis=1)).mean() for im in images]))


@pytest.mark.parametrize("kind", ["object", "forward"])
def test_detail_scene_has_the_same_cameras_and_finer_content(tmp_path: Path, kind: str) -> None:
    """``--detail``: the same files, poses and bounds (the same geometry), images with more edges (at a
    size where the detail is resolved: 96 px objects, 64 px forward views)."""
    plain, detail = tmp_path / "plain", tmp_path / "detail"
    if kind == "forward":
        for root, extra in ((plain, []), (detail, ["--detail"])):
            main([str(root), "--kind", "forward", "--size", "32", *extra])
        data = load_llff(plain, ("train",), None, None).splits["train"]
        K = data.K[0].clone()
        K[:2] *= 2
        edges = [_edges([render_forward(data.c2w[i], K, 48, 64, detail=flag)[0] for i in (0, 9)])
                 for flag in (False, True)]
    else:  # the command's 310 views take long: 3 of them
        for root, flag in ((plain, False), (detail, True)):
            write_object_scene(root, 96, {"train": 3}, detail=flag)
        edges = [_edges([np.asarray(Image.open(p).convert("RGB")) for p in sorted(root.rglob("*.png"))])
                 for root in (plain, detail)]
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(detail) for p in detail.rglob("*") if p.is_file())
    for name in (f for f in files if f.suffix != ".png"):
        assert (plain / name).read_bytes() == (detail / name).read_bytes(), name
    assert edges[1] > 1.5 * edges[0], edges
