"""``student.train`` with ``model.decoder=image``: crops, both stages, outputs, resume, refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from core.cameras import look_at
from core.errors import CheckpointError
from report.build import student_line
from student.checkpoint import load_student
from student.config import CropConfig
from student.image_data import CropGrid, Views, crop_batch, pseudo_views
from student.image_model import ImageStudent, ImageStudentConfig
from student.train import run
from testing.cli import REPO, one_line_error, run_cli
from tests.test_student_train import _copy_run, _curve, tiny_cfg

TINY_IMAGE: dict[str, Any] = dict(n_points=2, channels=4, resolutions=[8], width=8, depth=1, tail=4)
IMAGE = ["model.decoder=image", "model.encoding=planes", "model.image.scale=2", "model.image.n_points=2",
         "model.image.channels=4", "model.image.resolutions=[8]", "model.image.width=8",
         "model.image.depth=1", "model.image.tail=4", "train.crops.blocks=4", "train.crops.per_step=2",
         "train.crops.context=1", "train.distill.lr=1e-2", "train.distill.encoding_lr=3e-2"]


def _views(n: int, hw: tuple[int, int], seed: int = 0) -> Views:
    g = torch.Generator().manual_seed(seed)
    eyes = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 3
    c2w = look_at(eyes, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))
    K = torch.tensor([[20.0, 0, hw[1] / 2 + 0.3], [0, 21.0, hw[0] / 2 - 0.2], [0, 0, 1]]).expand(n, 3, 3)
    rgb = torch.randint(0, 256, (n, *hw, 3), generator=g, dtype=torch.uint8)
    return Views(rgb, c2w, K.clone())


@pytest.mark.parametrize("scale, hw", [(2, (17, 14)), (4, (18, 22))], ids=["1x1-tail", "3x3-tail"])
def test_crops_train_the_views_pixels_with_the_whole_renders_colors(scale: int, hw: tuple[int, int]) -> None:
    """Targets are the view's pixels; the model's output at the trained pixels is the whole-view render's
    (scale 4 has a 3x3 tail stage: without the context the crop's border pixels would differ); together
    the crops train every pixel of the view, edges and the partial last blocks included."""
    views = _views(3, hw)
    model = ImageStudent(ImageStudentConfig(scale=scale, **TINY_IMAGE), [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    grid = CropGrid.of(hw, scale, CropConfig(blocks=3, per_step=1, context=1))
    assert (grid.rows, grid.cols) == (3, 3) and grid.blocks == (-(-hw[0] // scale), -(-hw[1] // scale))
    with torch.no_grad():
        full = model.render(views.c2w, views.K, *hw)  # [3, H, W, 3]
    gh, gw = grid.blocks
    places = [(i, t, lf) for i in range(3) for t in range(gh - 2) for lf in range(gw - 2)]  # every crop
    index, top, left = torch.tensor(places).T
    batch = crop_batch(views, grid, index, top * scale, left * scale)
    with torch.no_grad():
        out = model(batch["c2w"], batch["K"], batch["centers"])
    trained = torch.zeros(3, *hw, dtype=torch.bool)
    s = scale
    for b, (i, t, lf) in enumerate(zip(index.tolist(), top.tolist(), left.tolist())):
        mask = batch["mask"][b]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        Y, X = ys + t * s, xs + lf * s
        assert (Y < hw[0]).all() and (X < hw[1]).all()
        assert torch.equal(batch["rgb"][b][mask], views.rgb[i, Y, X].float() / 255)
        torch.testing.assert_close(out[b][mask], full[i, Y, X], rtol=0, atol=1e-5)
        trained[i, Y, X] = True
    assert trained.all()


@pytest.mark.parametrize("blocks", [3, 8], ids=["inner-crops", "whole-views"])
def test_a_jittered_crop_is_the_whole_render_of_its_moved_camera(blocks: int) -> None:
    """A crop at any pixel offset (a block offset plus a sub-block jitter) trains the view's pixels under it
    with the colors of a whole-view render of the camera whose principal point moved by that offset (at
    least the crop's size: the context keeps what lies past an inner side out of the loss); whole-view
    crops (a view of fewer blocks than the crop) are trained to the view's edges."""
    hw, s = (18, 22), 4
    views = _views(2, hw, seed=1)
    model = ImageStudent(ImageStudentConfig(scale=s, **TINY_IMAGE), [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    grid = CropGrid.of(hw, s, CropConfig(blocks=blocks, per_step=1, context=1, jitter=True))
    index = torch.tensor([0, 1] * 12)
    top, left = grid.draw(len(index), torch.Generator().manual_seed(3))
    assert set((top % s).tolist()) == set(range(s)) and set((left % s).tolist()) == set(range(s))
    batch = crop_batch(views, grid, index, top, left)
    with torch.no_grad():
        out = model(batch["c2w"], batch["K"], batch["centers"])
    for b, (i, t, lf) in enumerate(zip(index.tolist(), top.tolist(), left.tolist())):
        K = views.K[i].clone()
        K[0, 2] -= lf
        K[1, 2] -= t
        with torch.no_grad():
            size = max(hw[0] - t, grid.rows * s), max(hw[1] - lf, grid.cols * s)
            moved = model.render(views.c2w[i:i + 1], K[None], *size)[0]
        mask = batch["mask"][b]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert len(ys) > 0
        assert torch.equal(batch["rgb"][b][mask], views.rgb[i, ys + t, xs + lf].float() / 255)
        torch.testing.assert_close(out[b][mask], moved[ys, xs], rtol=0, atol=1e-5)
        if blocks == 8:
            assert mask[:hw[0] - t, :hw[1] - lf].all()


def test_crop_offsets_stay_in_the_grid_and_often_reach_its_edges() -> None:
    grid = CropGrid.of((400, 300), 8, CropConfig(blocks=16, per_step=1, context=2))
    top, left = (offsets // 8 for offsets in grid.draw(10000, torch.Generator().manual_seed(0)))
    gh, gw = grid.blocks
    assert (gh, gw) == (50, 38) and (grid.rows, grid.cols) == (16, 16)
    assert int(top.min()) == 0 and int(top.max()) == gh - 16 and int(left.max()) == gw - 16
    for offsets, span in ((top, gh - 16), (left, gw - 16)):
        edge = ((offsets == 0) | (offsets == span)).float().mean()
        assert 0.3 < edge < 0.7  # uniform offsets would put 2 / (span + 1) of the crops there
    assert not grid.mask(40, 40)[:16].any() and grid.mask(0, 40)[0, 16:-16].all()


def test_pseudo_views_hold_the_decoded_shards_exactly(tiny_pseudo_run: Path) -> None:
    from core.shards import read_meta
    from student.data import shard_views

    meta = read_meta(tiny_pseudo_run / "pseudo")
    views = pseudo_views(meta)
    decoded = list(shard_views(meta))
    assert views.rgb.dtype == torch.uint8 and views.n_views == len(decoded) == 8 and views.hw == (16, 16)
    for i, (rgb, c2w, K) in enumerate(decoded):
        assert torch.equal(views.colors(i, slice(None), slice(None)), rgb)
        assert torch.equal(views.c2w[i], c2w) and torch.equal(views.K[i], K)


def test_image_student_trains_both_stages_and_reports(tiny_scene: Path, tiny_pseudo_run: Path,
                                                      tmp_path: Path) -> None:
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    metrics = run(tiny_cfg(tiny_scene, run_dir, *IMAGE))
    out = run_dir / "student"
    loss = _curve(run_dir, "distill")
    assert loss[-1] < 0.7 * loss[0], loss
    assert set(metrics["stages"]) == {"distill", "finetune"}
    distill = metrics["stages"]["distill"]
    assert distill["steps"] == 60 and distill["pixels_per_second"] > 0 and "rays_per_second" not in distill
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test"]["psnr"] == pytest.approx(metrics["test"]["psnr"]) and saved["test"]["n_views"] == 2
    assert saved["frame_size"] == [16, 16] and saved["rays_per_frame"] == 64 and saved["flops_per_frame"] > 0
    assert saved["n_params"] > 0 and "flops_per_ray" not in saved and saved["model"]["decoder"] == "image"
    line = student_line(saved)  # the report's sentence on the student
    assert line.startswith("Student: image decoder") and "a ray map at 1/2 of the output" in line
    assert f"{saved['flops_per_frame'] / 1e9:.2f} GFLOPs per [16, 16] frame" in line
    model, facts = load_student(out / "student.ckpt")
    assert isinstance(model, ImageStudent) and model.cfg.scale == 2
    meta = json.loads((run_dir / "pseudo" / "meta.json").read_text())
    assert facts.content_aabb == meta["scene"]["content_aabb"] and facts.occupancy is None
    assert facts.image_size == [16, 16] and facts.rig is not None and facts.rig["kind"] == "object"
    assert len(list((out / "renders").glob("test_*.png"))) == 2
    again = run(tiny_cfg(tiny_scene, run_dir, *IMAGE))  # both stages done: reused, evaluated again
    assert again["test"]["psnr"] == pytest.approx(metrics["test"]["psnr"], abs=1e-4)


def test_an_interrupted_image_stage_resumes_from_its_last_checkpoint(tiny_scene: Path, tiny_pseudo_run: Path,
                                                                      tmp_path: Path) -> None:
    """A stage stopped after its ``last.ckpt`` (step 20) and before its ``stage_distill.ckpt`` goes on
    from step 20 to its 40 steps, with the distill crops, and appends to its loss curve."""
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    one_stage = [*IMAGE, "train.finetune.enabled=false", "train.ckpt_every_steps=10"]
    first = run(tiny_cfg(tiny_scene, run_dir, *one_stage, "train.distill.max_steps=20"))["stages"]["distill"]
    assert not first["resumed"] and first["steps"] == 20
    (run_dir / "student" / "stage_distill.ckpt").unlink()  # as if killed after the last save
    assert torch.load(run_dir / "student/ckpt/distill/last.ckpt", weights_only=True)["global_step"] == 20
    again = run(tiny_cfg(tiny_scene, run_dir, *one_stage, "train.distill.max_steps=40"))["stages"]["distill"]
    assert again["resumed"] and again["steps"] == 40
    from report.build import read_curves

    steps = [s for s, _ in read_curves(run_dir / "student" / "logs" / "csv" / "distill")["train/loss"]]
    assert min(steps) < 20 and max(steps) >= 30


def test_the_other_decoders_checkpoints_are_refused_in_one_line(tiny_scene: Path, tiny_pseudo_run: Path,
                                                                tmp_path: Path) -> None:
    """A ray student's finished stage, then its ``last.ckpt`` alone, asked for as an image student (and the
    reverse): one line naming ``model.decoder``; from the command line, exit 1."""
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    ray = ["train.finetune.enabled=false", "train.distill.max_steps=4", "train.ckpt_every_steps=2"]
    run(tiny_cfg(tiny_scene, run_dir, *ray))
    image = [*ray, *IMAGE]
    refused = r"stage_distill.ckpt: saved by a student with model.decoder=ray, but the config asks for " \
              r"model.decoder=image"
    with pytest.raises(CheckpointError, match=refused) as info:
        run(tiny_cfg(tiny_scene, run_dir, *image))
    assert "\n" not in str(info.value)
    (run_dir / "student" / "stage_distill.ckpt").unlink()
    with pytest.raises(CheckpointError, match=r"last.ckpt: saved by a student with model.decoder=ray"):
        run(tiny_cfg(tiny_scene, run_dir, *image))
    other = _copy_run(tiny_pseudo_run, tmp_path / "other")
    run(tiny_cfg(tiny_scene, other, *image))
    (other / "student" / "stage_distill.ckpt").unlink()
    line = one_line_error(run_cli("student.train", REPO, [f"scene.path={tiny_scene}", f"run_dir={other}",
                                                          "train.progress_bar=false", *ray]))
    assert "last.ckpt: saved by a student with model.decoder=image" in line and "model.decoder=ray" in line


def test_a_decoder_with_another_encoding_is_refused_in_one_line(tmp_path: Path) -> None:
    line = one_line_error(run_cli("student.train", REPO, [f"run_dir={tmp_path}", "model.decoder=image"]))
    assert "model.encoding=hash" in line and "model.decoder=image" in line


def test_an_image_student_of_a_forward_facing_scene_trains_exports_and_renders(tiny_forward_scene: Path,
                                                                                tmp_path: Path) -> None:
    """On a forward-facing scene (LLFF layout, rays in NDC) the CPU profile's decoder (``auto``) is the
    image student: it trains on the photos, keeps the scene's NDC frame and box, exports one portable
    graph, and the runtime draws what PyTorch draws."""
    from export.onnx import ExportConfig, ParityConfig
    from export.onnx import run as export
    from export.runtime import LightField
    from scenes.load import SceneConfig, load_scene

    shape = [o for o in IMAGE if not o.startswith(("model.decoder=", "model.encoding="))]
    metrics = run(tiny_cfg(tiny_forward_scene, tmp_path, *shape, "forward.image_resolutions=[8]",
                           "train.distill.enabled=false"))
    assert set(metrics["stages"]) == {"finetune"} and metrics["test"]["psnr"] > 5
    model, facts = load_student(tmp_path / "student" / "student.ckpt")
    assert model.cfg.resolutions == [8] and metrics["model"]["decoder"] == "image"
    scene = load_scene(SceneConfig(path=str(tiny_forward_scene)), splits=("train", "test"))
    assert isinstance(model, ImageStudent) and model.ndc is not None and facts.ndc == scene.ndc.to_dict()
    assert facts.content_aabb == pytest.approx(scene.aabb.tolist()) and facts.rig["kind"] != "object"
    report = export(ExportConfig(scene=SceneConfig(path=str(tiny_forward_scene)), run_dir=str(tmp_path),
                                 variants=["fp32"], parity=ParityConfig(n_poses=2)))
    assert report["decoder"] == "image"
    field = LightField(tmp_path / "export" / "student.onnx")
    test = scene.split("test")
    for c2w, K in zip(test.c2w, test.K):
        with torch.no_grad():
            want = model.render(c2w[None], K[None], *test.hw)[0].numpy()
        got = field.render(c2w.numpy(), K.numpy())
        assert want.std() > 1e-3 and abs(got - want).max() <= 1e-4


def test_a_detail_head_for_a_forward_facing_scene_is_refused_in_one_line(tiny_forward_scene: Path,
                                                                         tmp_path: Path) -> None:
    line = one_line_error(run_cli("student.train", REPO, [
        f"scene.path={tiny_forward_scene}", f"run_dir={tmp_path}", "train.distill.enabled=false", *IMAGE,
        "model.image.detail_channels=2"]))
    assert "model.image.detail_channels" in line and "forward-facing" in line
    assert not (tmp_path / "student" / "ckpt").exists()


DETAIL = ["model.image.detail_channels=2", "model.image.detail_resolution=8", "model.image.head=4",
          "train.crops.depth_weight=1.0"]


@pytest.fixture(scope="module")
def geometry_pseudo(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pseudo-data of the tiny scene's photos with a ``depth`` and ``alpha`` per view."""
    from testing.runs import write_photo_pseudo

    run_dir = tmp_path_factory.mktemp("geometry_run")
    write_photo_pseudo(run_dir / "pseudo", tiny_scene, geometry=True)
    return run_dir


def test_the_teachers_depth_and_alpha_travel_with_the_crops(geometry_pseudo: Path) -> None:
    from core.shards import read_meta
    from student.data import shard_views_with

    meta = read_meta(geometry_pseudo / "pseudo")
    views = pseudo_views(meta)
    assert views.depth is not None and views.alpha is not None
    decoded = list(shard_views_with(meta, ("depth", "alpha")))
    for i, (_, _, _, extra) in enumerate(decoded):
        torch.testing.assert_close(views.depth[i].float(), extra["depth"], rtol=1e-3, atol=0)
        torch.testing.assert_close(views.alpha[i].float() / 255, extra["alpha"], rtol=0, atol=0.5 / 255)
    assert 0 < float((views.alpha > 127).float().mean()) < 1  # the photos' alpha: some pixels opaque
    grid = CropGrid.of(views.hw, 2, CropConfig(blocks=4, per_step=3, context=1))
    index, top, left = torch.tensor([0, 5, 7]), torch.tensor([0, 2, 4]), torch.tensor([4, 0, 1])
    batch = crop_batch(views, grid, index, top * 2, left * 2)
    for b, (i, t, lf) in enumerate(zip(index.tolist(), top.tolist(), left.tolist())):
        mask = batch["mask"][b]
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert torch.equal(batch["depth"][b][mask], views.depth[i, ys + 2 * t, xs + 2 * lf].float())
        assert torch.equal(batch["alpha"][b][mask], views.alpha[i, ys + 2 * t, xs + 2 * lf].float() / 255)
    plain = pseudo_views(read_meta(_copy_run(geometry_pseudo, geometry_pseudo.parent / "plain") / "pseudo"))
    assert plain.depth is not None  # a copy keeps its fields


def test_depth_l1_counts_the_opaque_trained_pixels_only() -> None:
    from student.image_lit import depth_l1

    g = torch.Generator().manual_seed(0)
    depth, target = torch.rand(2, 5, 6, generator=g) * 4, torch.rand(2, 5, 6, generator=g) * 4
    alpha = torch.rand(2, 5, 6, generator=g)
    mask = torch.rand(2, 5, 6, generator=g) > 0.3
    keep = mask & (alpha > 0.5)
    want = (depth - target).abs()[keep].mean()
    torch.testing.assert_close(depth_l1(depth, target, alpha, mask), want, rtol=1e-6, atol=0)
    assert depth_l1(depth, target, torch.zeros_like(alpha), mask) == 0


def test_a_detail_student_learns_the_teachers_depth(tiny_scene: Path, geometry_pseudo: Path,
                                                     tmp_path: Path) -> None:
    from core.shards import read_meta
    from student.image_lit import depth_l1
    from student.ray_map import block_centers

    run_dir = _copy_run(geometry_pseudo, tmp_path / "run")
    run(tiny_cfg(tiny_scene, run_dir, *IMAGE, *DETAIL, "train.finetune.enabled=false",
                 "train.distill.max_steps=120"))
    assert _curve(run_dir, "distill", "train/depth_l1")  # the depth loss was on
    trained, _ = load_student(run_dir / "student" / "student.ckpt")
    assert isinstance(trained, ImageStudent) and trained.detail is not None
    fresh = ImageStudent(trained.cfg, trained.aabb.tolist())  # its depths: the middle of each segment
    views = pseudo_views(read_meta(run_dir / "pseudo"))
    assert views.depth is not None and views.alpha is not None
    H, W = views.hw
    centers = block_centers(*trained.blocks(H, W), trained.cfg.scale)
    errors = []
    for model in (fresh, trained):
        with torch.no_grad():
            depth = model.eval().forward_with_depth(views.c2w, views.K, centers)[1]
        assert depth is not None
        errors.append(float(depth_l1(depth[:, :H, :W], views.depth.float(), views.alpha.float() / 255,
                                     torch.ones(views.n_views, H, W, dtype=torch.bool))))
    assert errors[1] < 0.7 * errors[0], errors


def test_a_detail_head_without_the_teachers_depth_is_refused_in_one_line(tiny_scene: Path,
                                                                          tiny_pseudo_run: Path,
                                                                          tmp_path: Path) -> None:
    run_dir = _copy_run(tiny_pseudo_run, tmp_path / "run")
    args = [f"scene.path={tiny_scene}", f"run_dir={run_dir}", *IMAGE, *DETAIL]
    line = one_line_error(run_cli("student.train", REPO, args))
    assert "meta.json" in line and "model.image.detail_channels=2" in line and "depth=true alpha=true" in line
    assert not (run_dir / "student" / "logs").exists()  # refused before any training


def test_pseudo_views_coarser_than_the_photos_are_warned_of(tiny_scene: Path, tiny_pseudo_run: Path) -> None:
    """An image student distilled on pseudo-views much smaller than its photos gets one line naming the
    pseudo-data and the size to render; views of the photos' size, and a ray student, get none."""
    import dataclasses

    from core.shards import read_meta
    from scenes.load import SceneConfig, load_scene
    from student.build import ray_spacing_note

    scene = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",))
    meta = read_meta(tiny_pseudo_run / "pseudo")
    image = tiny_cfg(tiny_scene, tiny_pseudo_run, *IMAGE)
    assert tuple(meta.image_size) == scene.split("train").hw == (16, 16)
    assert ray_spacing_note(image, meta, scene) is None
    small = dataclasses.replace(meta, image_size=[8, 9])
    note = ray_spacing_note(image, small, scene)
    assert note is not None and "\n" not in note
    assert "meta.json" in note and "(8x9) are 2.0x coarser than the 16x16 photos" in note
    assert "image_size=[16,16]" in note
    assert ray_spacing_note(tiny_cfg(tiny_scene, tiny_pseudo_run), small, scene) is None

