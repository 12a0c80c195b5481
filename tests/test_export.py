"""ONNX export: graph shape, parity with PyTorch, variants, metadata, bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from core.errors import CheckpointError, UserError
from core.rays import generate_rays, ray_aabb_intersect
from export.fused import FusedEncodingStudent
from export.onnx import ExportConfig, Int8Config, ParityConfig, calibration_rays, run
from export.parity import random_scene_rays, torch_rgb
from export.runtime import FORMAT_VERSION, LightField, ModelError
from export.runtime.meta import SceneFacts as RuntimeSceneFacts
from export.variants import encoding_nodes, to_fp16, trace_student
from scenes.load import SceneConfig, load_scene
from student.checkpoint import load_student
from testing.runs import make_tiny_student_ckpt

REPO = Path(__file__).resolve().parents[1]


def _rays(tiny_scene: Path, n: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    scene = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",))
    return random_scene_rays(scene.split("train").c2w, scene.aabb, n, torch.Generator().manual_seed(1))


def test_files_checked_and_shaped(exported_student: tuple[Path, dict]) -> None:
    run_dir, report = exported_student
    out = run_dir / "export"
    expected = {"student", "student_fp16", "student_int8", "student_static", "student_static_int8"}
    assert set(report["variants"]) == expected
    for stem in expected:
        proto = onnx.load(str(out / f"{stem}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        assert [i.name for i in proto.graph.input] == ["rays_o", "rays_d"]
        assert [o.name for o in proto.graph.output] == ["rgb"]
        dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
        assert dims == ([[256, 3]] * 2 if "static" in stem else [["N", 3]] * 2)
        types = [t.type.tensor_type.elem_type for t in list(proto.graph.input) + list(proto.graph.output)]
        assert types == [onnx.TensorProto.FLOAT] * 3
        assert not list(out.glob(f"{stem}.onnx.data")), "weights must be inside the .onnx file"
        assert report["variants"][stem]["bytes"] == (out / f"{stem}.onnx").stat().st_size
    saved = json.loads((out / "export.json").read_text())
    assert saved["parity"]["ok"] and saved["opset"] == 18
    assert report["variants"]["student_int8"]["bytes"] < 0.7 * report["variants"]["student"]["bytes"]


def test_fp32_parity_with_pytorch(exported_student: tuple[Path, dict], tiny_scene: Path) -> None:
    run_dir, report = exported_student
    model, _ = load_student(run_dir / "student" / "student.ckpt")
    rays_o, rays_d = _rays(tiny_scene)
    ref = torch_rgb(model, rays_o, rays_d).numpy()
    assert ref.std() > 1e-3, "degenerate reference: the comparison would prove nothing"
    for stem in ("student", "student_static"):
        got = LightField(run_dir / "export" / f"{stem}.onnx")(rays_o.numpy(), rays_d.numpy())
        assert np.abs(got - ref).max() <= 1e-4
    assert report["parity"]["fp32_max_abs_err"] <= 1e-4
    assert report["parity"]["static_vs_dynamic_max_abs_err_fp32"] <= 1e-5
    assert report["parity"]["static_vs_dynamic_max_abs_err_int8"] <= 1e-2


def _small_export(scene: Path, run_dir: Path, variants: tuple[str, ...] = ("fp32", "fp16")) -> ExportConfig:
    """A quick export of ``run_dir``'s student: dynamic-batch variants only, a few parity rays."""
    return ExportConfig(scene=SceneConfig(path=str(scene)), run_dir=str(run_dir), variants=list(variants),
                        static_variants=[], parity=ParityConfig(n_rays=256, max_test_views=1))


def test_parity_gate_rejects_a_different_model_and_publishes_nothing(
        tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate of ``export.onnx.run`` fails when the ONNX graph holds other weights than the checkpoint;
    no file appears under a final name, the failing report goes to ``export_failed.json``."""
    import export.onnx as export_onnx

    make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    trace = export_onnx.trace_student

    def trace_other_weights(module: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], static: bool,
                            opset: int) -> onnx.ModelProto:
        other = copy.deepcopy(module)
        with torch.no_grad():
            for param in other.parameters():
                param.add_(0.1 * torch.randn_like(param))
        return trace(other, example, static=static, opset=opset)

    monkeypatch.setattr(export_onnx, "trace_student", trace_other_weights)
    with pytest.raises(RuntimeError, match="disagrees with PyTorch.*nothing published"):
        run(_small_export(tiny_scene, tmp_path))
    out = tmp_path / "export"
    assert [p.name for p in out.iterdir()] == ["export_failed.json"]
    failed = json.loads((out / "export_failed.json").read_text())
    assert not failed["parity"]["ok"] and failed["parity"]["fp32_max_abs_err"] > 1e-3


@pytest.mark.slow
def test_killed_export_leaves_the_old_set_and_a_rerun_replaces_it(
        tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between two variants, an export leaves the previous files and ``export.json`` untouched; the
    next export cleans up after it and removes variants its report no longer lists."""
    import export.onnx as export_onnx

    ckpt = make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    run(_small_export(tiny_scene, tmp_path))
    out = tmp_path / "export"
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(old) == {"export.json", "student.onnx", "student_fp16.onnx"}
    make_tiny_student_ckpt(ckpt, tiny_scene, n_freqs=6)  # a new student: other files
    save = export_onnx.save_checked
    saved: list[Path] = []

    def save_then_die(proto: onnx.ModelProto, path: Path) -> Path:
        if saved:
            raise KeyboardInterrupt  # stands for a SIGKILL between two files (no clean-up runs either way)
        saved.append(save(proto, path))
        return saved[-1]

    monkeypatch.setattr(export_onnx, "save_checked", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run(_small_export(tiny_scene, tmp_path))
    assert len(saved) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")} == old
    monkeypatch.undo()
    report = run(_small_export(tiny_scene, tmp_path, variants=("fp32",)))
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "student.onnx"]
    assert list(json.loads((out / "export.json").read_text())["variants"]) == list(report["variants"])
    assert list(report["variants"]) == ["student"]
    assert (out / "student.onnx").read_bytes() != old["student.onnx"]


def test_reduced_precision_variants_are_close(exported_student: tuple[Path, dict]) -> None:
    _, report = exported_student
    v = report["variants"]
    assert v["student_fp16"]["psnr_vs_torch"] > 50  # fp16 MLP, fp32 encoding
    assert v["student_int8"]["psnr_vs_torch"] > 35
    assert abs(v["student_fp16"]["psnr_change_db"]) < 0.05
    assert np.isfinite(v["student_int8"]["psnr_change_db"])


def test_fp16_keeps_the_encoding_in_fp32(tiny_scene: Path, tmp_path: Path) -> None:
    """sin(2^9 x) in fp16 would be off by up to 0.25 rad; the MLP alone in fp16 stays within ~1e-3."""
    model, _ = load_student(make_tiny_student_ckpt(tmp_path / "s.ckpt", tiny_scene))
    rays_o, rays_d = _rays(tiny_scene, 256)
    proto = to_fp16(trace_student(model, (rays_o, rays_d), static=False, opset=18))
    onnx.checker.check_model(proto, full_check=True)
    first_gemm = next(i for i, n in enumerate(proto.graph.node) if n.op_type == "Gemm")
    assert all(n.op_type != "Cast" or n.attribute[0].i != onnx.TensorProto.FLOAT16
               for n in proto.graph.node if n.op_type in ("Sin", "Cos"))
    assert first_gemm > 0
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"rays_o": rays_o.numpy(), "rays_d": rays_d.numpy()})[0]
    err = np.abs(got - torch_rgb(model, rays_o, rays_d).numpy()).max()
    assert 0 < err < 5e-3


def test_fp16_gives_a_constant_shared_by_the_encoding_and_the_mlp_a_copy_each() -> None:
    """The exporter may share one initializer between the fp32 encoding and the fp16 MLP (a forward-facing
    student's NDC arithmetic and its network both read a scalar 1.0): the encoding keeps its fp32 copy."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Sub", ["one", "x"], ["s"], name="enc_sub"),
             helper.make_node("Sin", ["s"], ["e"], name="enc_sin"),
             helper.make_node("MatMul", ["e", "w"], ["h"], name="mlp_mm"),
             helper.make_node("Sub", ["one", "h"], ["y"], name="mlp_sub")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], [one, w])
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    fp16 = to_fp16(copy.deepcopy(fp32))
    onnx.checker.check_model(fp16, full_check=True)
    inits = {i.name: i.data_type for i in fp16.graph.initializer}
    assert inits["one"] == TensorProto.FLOAT and inits["one_fp16"] == TensorProto.FLOAT16
    x = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0] for m in (fp32, fp16)]
    assert runs[0].std() > 0.1 and 0 < np.abs(runs[0] - runs[1]).max() < 1e-2


def test_metadata_round_trip(exported_student: tuple[Path, dict]) -> None:
    run_dir, _ = exported_student
    _, facts = load_student(run_dir / "student" / "student.ckpt")
    for stem, precision, batch in (("student", "fp32", 0), ("student_int8", "int8", 0),
                                   ("student_static", "fp32", 256)):
        meta = LightField(run_dir / "export" / f"{stem}.onnx").meta
        assert (meta.precision, meta.batch, meta.format_version) == (precision, batch, FORMAT_VERSION)
        assert meta.near == pytest.approx(facts.near) and meta.far == pytest.approx(facts.far)
        assert np.allclose(meta.aabb, facts.aabb) and np.allclose(meta.K, facts.K)
        assert meta.image_size == list(facts.image_size) and meta.camera_convention == "opencv"
        shape = {k: v for k, v in meta.student.items() if k != "grid"}
        assert shape == {"encoding": "pe", "n_points": 4, "n_freqs": 10, "width": 32, "depth": 6,
                         "ray_range": "box", "skip_empty": True}
        assert np.allclose(meta.content_aabb, facts.content_aabb)  # type: ignore[arg-type]
        assert meta.occupancy == facts.occupancy and meta.occupancy["resolution"] == 9
        assert meta.opset == 18 and meta.flops_per_ray > 0
        assert meta.rig["radius"] == pytest.approx(4.0, rel=1e-3) and meta.rig["kind"] == "object"
        assert meta.ray_space == "world" and meta.ndc is None
        assert meta.scene == RuntimeSceneFacts(**facts.to_dict())  # the scene facts, under one key


def test_forward_metadata_has_the_ndc_frame_and_a_forward_rig(exported_forward: Path) -> None:
    _, facts = load_student(exported_forward / "student" / "student.ckpt")
    meta = LightField(exported_forward / "export" / "student.onnx").meta
    assert meta.ray_space == "ndc" and meta.ndc == facts.ndc
    rig = meta.rig
    assert rig["kind"] == "forward" and np.asarray(rig["c2w"]).shape == (4, 4)
    assert rig["focus_depth"] > meta.ndc["near"] and 0 < rig["path_radius"] < rig["focus_depth"]


def test_fp16_keeps_a_forward_students_whole_lookup_in_fp32(exported_forward: Path, tiny_forward_scene: Path
                                                              ) -> None:
    """A forward-facing student's graph rotates its rays into NDC with a matrix product before the hash
    lookup: that product is encoding, not the MLP's input layer, and everything from it to the lookup's
    trilinear products stays fp32 (in fp16 a grid position is off by up to 1/4 cell at 512 cells: -1.7 dB
    on a real capture)."""
    import onnxruntime as ort

    fp32 = onnx.load(str(exported_forward / "export" / "student.onnx"))
    kept = set(encoding_nodes(fp32))
    ops = [(n.op_type, n.name in kept) for n in fp32.graph.node]
    lookup = [k for op, k in ops if op in ("Floor", "BitwiseXor", "Mod")]
    assert lookup and all(lookup)
    matmuls = [k for op, k in ops if op == "MatMul"]
    assert matmuls and all(matmuls)  # the NDC rotation
    gemms = [k for op, k in ops if op == "Gemm"]
    assert len(gemms) >= 3 and not any(gemms[1:])  # the MLP after its input layer is fp16
    fp16 = to_fp16(copy.deepcopy(fp32))
    onnx.checker.check_model(fp16, full_check=True)
    gen = torch.Generator().manual_seed(0)
    scene = load_scene(SceneConfig(path=str(tiny_forward_scene)), splits=("test",))
    test = scene.split("test")
    rays_o, rays_d = generate_rays(test.c2w[0], test.K[0], *test.hw)
    pick = torch.randperm(rays_o.shape[0], generator=gen)[:512]
    feed = {"rays_o": rays_o[pick].numpy(), "rays_d": rays_d[pick].numpy()}
    got = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)[0]
           for m in (fp32, fp16)]
    assert got[0].std() > 1e-3 and 0 < np.abs(got[0] - got[1]).max() < 5e-3


def _with_props(src: Path, dst: Path, **changes: str | None) -> Path:
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    for key, value in changes.items():
        if value is None:
            props.pop(f"lightfield.{key}", None)
        else:
            props[f"lightfield.{key}"] = value
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(dst))
    return dst


def test_bad_models_give_one_line_errors(exported_student: tuple[Path, dict], tmp_path: Path) -> None:
    src = exported_student[0] / "export" / "student.onnx"
    scene = json.loads({p.key: p.value for p in onnx.load(str(src)).metadata_props}["lightfield.scene"])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(src.read_bytes()[:1000])
    cases = {
        tmp_path / "missing.onnx": "not found",
        corrupt: "not a loadable ONNX model",
        _with_props(src, tmp_path / "nometa.onnx", format=None): "no lightfield-distill/onnx metadata",
        _with_props(src, tmp_path / "v99.onnx", format_version="99"): "version 99 is not supported",
        _with_props(src, tmp_path / "v1.onnx", format_version="1"): "exported by an older version.*again",
        _with_props(src, tmp_path / "noscene.onnx", scene=None): "incomplete metadata",
        _with_props(src, tmp_path / "nok.onnx", scene=json.dumps({**scene, "K": None})): "metadata K must be",
        _with_props(src, tmp_path / "flat.onnx", scene=json.dumps({**scene, "near": 9.0})): "metadata near",
    }
    for path, message in cases.items():
        with pytest.raises(ModelError, match=message) as info:
            LightField(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_export_bad_checkpoint_and_settings(tiny_scene: Path, tmp_path: Path) -> None:
    cfg = ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(tmp_path))
    with pytest.raises(CheckpointError, match="not found"):
        run(cfg)
    make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    with pytest.raises(UserError, match="int8.mode"):
        run(ExportConfig(scene=cfg.scene, run_dir=str(tmp_path), int8=Int8Config(mode="int4")))
    with pytest.raises(UserError, match="image size"):
        run(ExportConfig(scene=SceneConfig(path=str(tiny_scene), downscale=2), run_dir=str(tmp_path)))


def test_export_cli_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "export.onnx", f"run_dir={tmp_path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: ") and "student.ckpt" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_fused_encoding_matches_the_student(tiny_scene: Path, tmp_path: Path) -> None:
    model, _ = load_student(make_tiny_student_ckpt(tmp_path / "s.ckpt", tiny_scene))
    with torch.no_grad():  # larger first-layer weights than at init, so that errors would show
        model.head_in[0].weight.mul_(4.0)
    fused = FusedEncodingStudent(model).eval()
    rays_o, rays_d = _rays(tiny_scene, 2000)
    with torch.inference_mode():
        enc, hit = model.encoder(rays_o, rays_d)
        ref_h = model.head_in(enc)[hit]
        sv = torch.cat(model.encoder.segment(rays_o, rays_d)[:2], -1)
        h = torch.relu(fused.sines(sv) @ fused.B + sv @ fused.A + fused.b)[hit]
        ref, got = model(rays_o, rays_d), fused(rays_o, rays_d)
    assert 0.1 < hit.float().mean() < 0.9  # rays that meet the content box and rays that miss it
    assert ref_h.abs().max() > 0.5
    assert (h - ref_h).abs().max() <= 1e-4 * ref_h.abs().max()
    assert ref[hit].std() > 1e-3 and (got - ref).abs().max() <= 1e-4  # float32 rounding of 2^9 x arguments
    assert torch.equal(got[~hit], model.background.expand(int((~hit).sum()), 3))
    model.head_in[0].bias.data += 0.1  # the fused copy holds its own weights
    with torch.inference_mode():
        assert torch.equal(fused(rays_o, rays_d), got)


def test_fused_graph_keeps_the_sine_arguments_fp32(tiny_scene: Path, tmp_path: Path) -> None:
    model, _ = load_student(make_tiny_student_ckpt(tmp_path / "s.ckpt", tiny_scene))
    proto = trace_student(FusedEncodingStudent(model).eval(), _rays(tiny_scene, 64), static=False, opset=18)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Sin") == 1 and "Cos" not in ops and "Concat" in ops
    kept = {n.name: n.op_type for n in proto.graph.node if n.name in set(encoding_nodes(proto))}
    assert sum(op in ("MatMul", "Gemm") for op in kept.values()) == 2  # sv @ M, sv @ A; not the MLP
    assert list(kept.values()).count("Sin") == 1 and "Less" in kept.values()  # with the box hit test
    # the double-angle steps from sin/cos of x to those of 2^9 x (10 octaves) stay fp32 too
    assert list(kept.values()).count("Mul") >= 3 * 9 and list(kept.values()).count("Sub") >= 9
    final = [n for n in proto.graph.node if n.output[0] == proto.graph.output[0].name][0]
    assert final.op_type == "Where" and final.name not in kept  # the background select is MLP side
    assert len(encoding_nodes(proto)) < len(ops) - 5


def test_export_psnr_is_the_mean_of_per_view_psnrs() -> None:
    """export.json uses the teacher's and student's convention (mean over views), not pooled MSE."""
    from core.metrics import psnr
    from export.parity import mean_view_psnr, psnr_np

    rng = np.random.default_rng(0)
    gt = rng.random((3, 50, 3)).astype(np.float32)
    pred = gt + rng.normal(0.0, 1.0, (3, 1, 1)).astype(np.float32) * 0.05 * np.arange(1, 4)[:, None, None]
    expected = float(np.mean([psnr(torch.from_numpy(p), torch.from_numpy(t)) for p, t in zip(pred, gt)]))
    assert abs(mean_view_psnr(pred, gt) - expected) < 1e-4
    assert abs(mean_view_psnr(pred, gt) - psnr_np(pred, gt)) > 0.1  # views of unequal error: they differ


def test_calibration_rays_all_meet_the_content_box(tiny_scene: Path, tmp_path: Path) -> None:
    model, _ = load_student(make_tiny_student_ckpt(tmp_path / "s.ckpt", tiny_scene))
    scene = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",))
    enc = model.encoder
    train = scene.split("train")
    all_o, all_d = generate_rays(train.c2w[0], train.K[0], *train.hw)
    assert not bool(ray_aabb_intersect(all_o, all_d, enc.box, enc.near, enc.far)[2].all()), \
        "every pixel meets the box: the test would prove nothing"
    batches = calibration_rays(scene, Int8Config(calib_rays=500, calib_batches=3), model,
                               torch.Generator().manual_seed(0))
    assert len(batches) == 3 and sum(len(o) for o, _ in batches) == 500
    for o, d in batches:
        hit = ray_aabb_intersect(torch.from_numpy(o), torch.from_numpy(d), enc.box, enc.near, enc.far)[2]
        assert bool(hit.all())


# ---- the learned (hash) encoding ------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported_hash_student(tmp_path_factory: pytest.TempPathFactory, tiny_scene: Path) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("export_hash")
    make_tiny_student_ckpt(run_dir / "student" / "student.ckpt", tiny_scene, encoding="hash")
    report = run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(run_dir),
                              static_variants=["fp32"]))
    return run_dir, report


def test_hash_student_exports_with_standard_ops_and_parity(exported_hash_student: tuple[Path, dict],
                                                           tiny_scene: Path) -> None:
    run_dir, report = exported_hash_student
    out = run_dir / "export"
    assert set(report["variants"]) == {"student", "student_fp16", "student_int8", "student_static"}
    proto = onnx.load(str(out / "student.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert {"Gather", "BitwiseXor", "Floor"} <= ops  # the lookup is inside the graph
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node)  # no custom operator
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [18]
    model, _ = load_student(run_dir / "student" / "student.ckpt")
    rays_o, rays_d = _rays(tiny_scene, 2000)
    hit = model.encoder.segment(rays_o, rays_d)[2]
    assert 0 < int(hit.sum()) < 2000  # hits and misses
    ref = torch_rgb(model, rays_o, rays_d).numpy()
    assert ref[hit.numpy()].std() > 1e-3
    for stem in ("student", "student_static"):
        field = LightField(out / f"{stem}.onnx", skip_misses=False)
        assert np.abs(field(rays_o.numpy(), rays_d.numpy()) - ref).max() <= 1e-4, stem
    assert report["parity"]["ok"] and report["parity"]["fp32_max_abs_err"] <= 1e-4
    assert report["size"]["fits_device_limit"] and report["size"]["fp32_bytes"] == report["variants"][
        "student"]["bytes"]
    meta = LightField(out / "student.onnx").meta
    assert meta.encoding == "hash" and meta.student["encoding"] == "hash"
    assert meta.student["grid"]["n_levels"] == 3


def test_hash_fp16_stores_the_table_in_half(exported_hash_student: tuple[Path, dict]) -> None:
    run_dir, report = exported_hash_student
    sizes = {k: v["bytes"] for k, v in report["variants"].items()}
    table_bytes = load_student(run_dir / "student" / "student.ckpt")[0].encoder.grid.params.numel() * 4
    assert sizes["student"] - sizes["student_fp16"] > 0.45 * table_bytes
    assert abs(report["variants"]["student_fp16"]["psnr_change_db"]) < 0.1
    assert abs(report["variants"]["student_int8"]["psnr_change_db"]) < 1.0


def test_hash_int8_quantizes_the_mlp_but_not_the_encoding(exported_hash_student: tuple[Path, dict]) -> None:
    """A table lookup keeps the whole encoding fp32, but only up to the MLP's input layer: the residual
    blocks' weights are int8 (they were all left fp32 when every matrix product counted as a first one)."""
    run_dir, _ = exported_hash_student
    proto = onnx.load(str(run_dir / "export" / "student_int8.onnx"))
    int8 = {i.name for i in proto.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    model, _ = load_student(run_dir / "student" / "student.ckpt")
    blocks = [n for n, _ in model.named_parameters() if n.startswith("blocks.") and n.endswith("weight")]
    assert blocks and all(any(name.startswith(b) for name in int8) for b in blocks), sorted(int8)
    assert not any(name.startswith("encoder.") for name in int8)


def test_hash_student_below_opset_18_is_a_one_line_error(tmp_path: Path, tiny_scene: Path) -> None:
    ckpt = make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene, encoding="hash")
    with pytest.raises(UserError, match=r"student.ckpt: the hash encoding needs opset >= 18 \(BitwiseXor\)"):
        run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(tmp_path), opset=17))
    assert not (tmp_path / "export").exists() or not list((tmp_path / "export").iterdir()), ckpt


@pytest.mark.parametrize(("max_rays", "max_views", "checked"),
                         [(None, None, 2), (1, None, 1), (16 * 16 * 2, 1, 1)])
def test_parity_test_views_capped_by_rays(tmp_path: Path, tiny_scene: Path, max_rays: int | None,
                                          max_views: int | None, checked: int) -> None:
    from export.onnx import ParityConfig

    make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    parity = ParityConfig(max_test_rays=max_rays, max_test_views=max_views)
    report = run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(tmp_path),
                              variants=["fp32"], static_variants=[], parity=parity))
    assert report["n_test_views"] == checked


@pytest.mark.parametrize(("budget", "timing_calls"), [(0.0, 0), (60.0, 2)])
def test_frame_timing_repeats_only_short_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                budget: float, timing_calls: int) -> None:
    """The check's frame time is the best of the first view's render and up to two more renders of it, taken
    only while the samples so far are short: a frame of many seconds is timed once, by its own render."""
    import export.parity as parity

    calls: list[int] = []

    class _Field:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def __call__(self, o: np.ndarray, d: np.ndarray, batch: int) -> np.ndarray:
            calls.append(len(o))
            return np.full((len(o), 3), 0.5, np.float32)

    monkeypatch.setattr(parity, "LightField", _Field)
    monkeypatch.setattr(parity, "TIMING_SECONDS", budget)
    path = tmp_path / "student.onnx"
    path.write_bytes(b"x")
    views = [(torch.zeros(6, 3), torch.ones(6, 3)), (torch.zeros(6, 3), torch.ones(6, 3))]
    gt = np.full((2, 6, 3), 0.4, np.float32)
    random_rays = (torch.zeros(4, 3), torch.ones(4, 3))
    res = parity.evaluate_variant(path, views, gt, gt, random_rays, np.full((4, 3), 0.5, np.float32), 1, 8)
    assert calls == [4, 6, 6] + [6] * timing_calls and res["ms_per_frame"] > 0
