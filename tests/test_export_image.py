"""The image student as ONNX (export.image, export.onnx): parity with PyTorch, the portable op set on every
file, the fp16 and int8 files, the int8 gate, the ray-only keys refused, the command end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from core.cameras import look_at
from core.checks import ConfigValueError, validate
from core.errors import UserError
from export.config import ExportConfig, Int8Config, for_decoder
from export.image import (
    CameraToImage,
    export_image_student,
    geometry_nodes,
    image_to_fp16,
    image_to_int8,
    portability_problems,
)
from export.onnx import run
from export.parity import int8_gate, random_poses
from export.runtime import ModelMeta, scaled_intrinsics
from scenes.load import SceneConfig, load_scene
from student.checkpoint import load_student
from student.image_model import ImageStudent, ImageStudentConfig
from testing.cli import REPO, run_cli
from testing.runs import (
    export_tiny_image_run,
    make_tiny_image_ckpt,
    make_tiny_student_ckpt,
)


def _student(scale: int = 4) -> ImageStudent:
    torch.manual_seed(0)
    cfg = ImageStudentConfig(scale=scale, n_points=4, channels=4, resolutions=[16, 32], width=16, depth=2,
                             tail=8)
    return ImageStudent(cfg, [-1.0, -0.8, -0.9, 1.1, 1.0, 0.7]).eval()


def _camera(seed: int, H: int, W: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    eye = torch.nn.functional.normalize(torch.randn(1, 3, generator=g), dim=-1) * 3.5
    c2w = look_at(eye, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]))[0]
    f = W * (0.8 + 0.4 * float(torch.rand((), generator=g)))
    K = torch.tensor([[f, 0.0, W / 2 + 0.3], [0.0, f, H / 2 - 0.2], [0.0, 0.0, 1.0]])
    return c2w.numpy(), K.numpy()


@pytest.mark.parametrize("scale, size", [(4, (32, 40)), (8, (37, 50))])
def test_onnx_graph_equals_pytorch_on_random_poses(scale: int, size: tuple[int, int]) -> None:
    import onnxruntime as ort

    student = _student(scale)
    model = export_image_student(student, *size)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    graph = CameraToImage(student, *size)
    for seed in range(3):
        c2w, K = _camera(seed, *size)
        (got,) = sess.run(None, {"c2w": c2w, "K": K})
        with torch.no_grad():
            want = graph(torch.from_numpy(c2w), torch.from_numpy(K)).numpy()
        assert got.shape == (*size, 3) and want.std() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_a_forward_facing_graph_equals_pytorch_on_cameras_that_look_back() -> None:
    """A forward-facing (NDC) student's graph draws what PyTorch draws, also for cameras that look back at
    the rig (the parity check's random poses of a real LLFF capture: these two, its NDC frame and box,
    rounded). Their rays run almost parallel to the near plane with NDC origins of ~1e4, and their box
    entries, on the box's boundary, moved across it differently in float32 in ONNX Runtime and PyTorch
    (1.2e-3 apart here, 0.036 with a trained student) until a ray that misses reads nothing."""
    import onnxruntime as ort

    from core.ndc import NDCSpace

    torch.manual_seed(0)
    cfg = ImageStudentConfig(scale=4, n_points=4, channels=4, resolutions=[16], width=16, depth=2, tail=8)
    rig = [[0.99989, -0.00277, 0.01445, 0.3094], [0.00292, 0.99994, -0.01044, 0.1206],
           [-0.01442, 0.01049, 0.99984, -0.0148], [0, 0, 0, 1]]
    space = NDCSpace(c2w=rig, scale=[1.773, 2.364], near=16.93)
    student = ImageStudent(cfg, [-2.27, -1.77, -1.0, 2.23, 1.99, 1.0], space).eval()
    with torch.no_grad():
        for plane in student.encoding.planes:
            plane.normal_()  # features that differ texel to texel, so a moved point shows
    H, W = 378, 504
    sess = ort.InferenceSession(export_image_student(student, H, W).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    K = torch.tensor([[446.9, 0.0, 252.0], [0.0, 446.9, 189.0], [0.0, 0.0, 1.0]])
    poses = ([[-0.98723, -0.00316, 0.15930, -2.0153], [0.00676, 0.99807, 0.06167, -13.303],
              [-0.15919, 0.06196, -0.98530, -29.661], [0, 0, 0, 1]],
             [[-0.99998, -0.00062, 0.00684, 1.7219], [-0.00174, 0.98629, -0.16502, 11.890],
              [-0.00664, -0.16503, -0.98627, -1.9827], [0, 0, 0, 1]])
    for pose in poses:
        c2w = torch.tensor(pose)
        (got,) = sess.run(None, {"c2w": c2w.numpy(), "K": K.numpy()})
        with torch.no_grad():
            want = CameraToImage(student, H, W)(c2w, K).numpy()
        assert want.std() > 1e-3
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_exported_graph_is_portable_and_the_check_can_fail() -> None:
    model = export_image_student(_student(), 16, 16)
    assert portability_problems(model) == []
    ops = {n.op_type for n in model.graph.node}
    assert {"GridSample", "DepthToSpace", "Conv"} <= ops and "Gather" not in ops
    # a table lookup and int64 arithmetic: both named
    table = helper.make_tensor("table", TensorProto.FLOAT, [4, 2], [0.0] * 8)
    nodes = [helper.make_node("Add", ["i", "i"], ["j"], name="int_add"),
             helper.make_node("Gather", ["table", "j"], ["y"], name="lookup")]
    bad = helper.make_model(helper.make_graph(
        nodes, "bad", [helper.make_tensor_value_info("i", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [table]))
    bad = onnx.shape_inference.infer_shapes(bad)
    assert portability_problems(bad) == ["integer Add (int_add)", "Gather (lookup)"]


def test_export_draws_an_eval_copy_and_leaves_the_student_as_it_was() -> None:
    """The graph is an eval-mode copy of the student (clipped colors, fused tail) even when the student
    is in training mode; the student itself is not changed."""
    student = _student().train()
    proto = export_image_student(student, 8, 8)
    assert "Clip" in {n.op_type for n in proto.graph.node}
    assert all(m.training for m in student.modules()) and student.decoder.fused_last is None


def test_bad_image_size_is_refused() -> None:
    with pytest.raises(ValueError, match="image size 0x16"):
        CameraToImage(_student(), 0, 16)


# --- python -m export.onnx on an image checkpoint -------------------------------------------------------

IMAGE_FILES = {"student", "student_fp16", "student_int8", "student_12x20", "student_12x20_fp16",
               "student_12x20_int8"}


@pytest.fixture(scope="module")
def image_export(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny image student of ``tiny_scene`` (16x16) exported by ``export.onnx.run``, plus 12x20 files."""
    run_dir = tmp_path_factory.mktemp("image_export")
    return run_dir, export_tiny_image_run(run_dir, tiny_scene, image_sizes=[[12, 20]])


def test_every_exported_image_file_is_portable_and_static(image_export: tuple[Path, dict]) -> None:
    run_dir, report = image_export
    out = run_dir / "export"
    assert {p.stem for p in out.glob("*.onnx")} == IMAGE_FILES == set(report["variants"])
    student_cfg = load_student(run_dir / "student" / "student.ckpt")[0].cfg
    for stem in IMAGE_FILES:
        proto = onnx.load(str(out / f"{stem}.onnx"))
        onnx.checker.check_model(proto, full_check=True)
        assert portability_problems(proto) == [], stem
        H, W = (12, 20) if "12x20" in stem else (16, 16)
        shapes = [(v.name, v.type.tensor_type.elem_type, [d.dim_value for d in v.type.tensor_type.shape.dim])
                  for v in [*proto.graph.input, *proto.graph.output]]
        assert shapes == [("c2w", TensorProto.FLOAT, [4, 4]), ("K", TensorProto.FLOAT, [3, 3]),
                          ("rgb", TensorProto.FLOAT, [H, W, 3])], stem
        meta = ModelMeta.from_props({p.key: p.value for p in proto.metadata_props}, stem)
        assert (meta.decoder, meta.output_size, meta.image_size, meta.batch) == ("image", [H, W], [16, 16], 0)
        assert meta.precision == report["variants"][stem]["precision"] and meta.encoding == "planes"
        assert meta.student == dataclasses.asdict(student_cfg) and meta.student["width"] == 8
        assert meta.checkpoint_sha256 == report["checkpoint_sha256"]
    assert report["decoder"] == "image" and report["output_sizes"] == [[16, 16], [12, 20]]
    assert not list(out.glob(".staging-*")) and (out / "export.json").is_file()


def test_image_report_parity_and_reduced_precisions(image_export: tuple[Path, dict]) -> None:
    report = image_export[1]
    assert report["parity"]["ok"] and report["parity"]["fp32_max_abs_err"] <= 1e-4
    assert report["parity"]["n_poses"] == 4  # 2 random, 2 training
    variants = report["variants"]
    for stem in ("student", "student_12x20"):
        assert variants[stem]["max_abs_err_random"] <= 1e-4 and variants[stem]["max_abs_err_view"] <= 1e-4
        assert variants[stem]["psnr_vs_fp32"] is None
    for stem in IMAGE_FILES - {"student", "student_12x20"}:  # reduced precisions: close to fp32, not equal
        assert 30.0 < variants[stem]["psnr_vs_fp32"] < 120.0, stem
    assert variants["student"]["test_psnr"] == pytest.approx(report["torch"]["test_psnr"], abs=1e-4)
    assert variants["student_12x20"]["test_psnr"] is None  # no ground truth at that size
    gate = report["int8_gate"]
    assert gate["published"] and gate["psnr_drop_db"] <= gate["max_psnr_drop_db"] == 0.3
    assert gate["files"] == ["student_int8.onnx", "student_12x20_int8.onnx"]


def test_fp32_file_equals_pytorch_render_on_random_poses(image_export: tuple[Path, dict],
                                                          tiny_scene: Path) -> None:
    import onnxruntime as ort

    run_dir = image_export[0]
    model, facts = load_student(run_dir / "student" / "student.ckpt")
    assert isinstance(model, ImageStudent)
    train = load_scene(SceneConfig(path=str(tiny_scene)), splits=("train",)).split("train")
    poses = random_poses(train.c2w, 3, torch.Generator().manual_seed(5))
    for stem, (H, W) in (("student", (16, 16)), ("student_12x20", (12, 20))):
        path = run_dir / "export" / f"{stem}.onnx"
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        K = scaled_intrinsics(np.asarray(facts.K, np.float32), (16, 16), (H, W))
        for c2w in poses:
            (got,) = sess.run(None, {"c2w": c2w.numpy(), "K": K})
            with torch.no_grad():
                want = model.render(c2w[None], torch.from_numpy(K)[None], H, W)[0].numpy()
            assert want.std() > 1e-3, "degenerate reference: the comparison would prove nothing"
            assert np.abs(got - want).max() <= 1e-4


def _planes_read_in_fp32_from_half(proto: onnx.ModelProto) -> bool:
    """Whether every GridSample reads its texels through a Cast of an fp16 initializer, and its positions
    straight from the (fp32) geometry."""
    inits = {i.name: i.data_type for i in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}
    lookups = [n for n in proto.graph.node if n.op_type == "GridSample"]
    casts = [producer.get(n.input[0]) for n in lookups]
    return bool(lookups) and all(
        cast is not None and cast.op_type == "Cast" and inits.get(cast.input[0]) == TensorProto.FLOAT16
        and producer[n.input[1]].op_type == "Concat" for n, cast in zip(lookups, casts))


@pytest.mark.parametrize("detail", [0, 4])
def test_reduced_precisions_keep_the_geometry_fp32_and_store_the_planes_in_half(detail: int) -> None:
    """fp16 and int8 files of a student without and with the detail head (whose lookup reads the planes at
    a depth the body predicts): planes stored in fp16, lookups and their positions in fp32, close to fp32
    (and the fp32 graph equal to PyTorch)."""
    import onnxruntime as ort

    torch.manual_seed(0)
    cfg = ImageStudentConfig(scale=4, n_points=2, channels=4, resolutions=[40], width=8, depth=1, tail=4,
                             detail_channels=detail, detail_resolution=40, head=4)
    student = ImageStudent(cfg, [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]).eval()
    with torch.no_grad():
        for planes in student.parameters():
            if planes.dim() == 4 and planes.shape[-1] == 40:
                planes.normal_(0.0, 1.0)
    fp32 = export_image_student(student, 16, 16)
    c2w, K = _camera(1, 16, 16)
    fp16, int8 = image_to_fp16(fp32), image_to_int8(fp32, [{"c2w": c2w, "K": K}, _feed(2)])
    assert not _planes_read_in_fp32_from_half(fp32)
    for proto, most in ((fp16, 0.6), (int8, 0.8)):  # of the fp32 file's bytes (int8: QDQ pairs cost some)
        assert portability_problems(proto) == [] and _planes_read_in_fp32_from_half(proto)
        assert len(proto.SerializeToString()) < most * len(fp32.SerializeToString())
    inits = {i.name: i.data_type for i in fp16.graph.initializer}
    assert all(inits[n.input[1]] == TensorProto.FLOAT16 for n in fp16.graph.node if n.op_type == "Conv")
    geometry = set(geometry_nodes(fp32))
    decoder_ops = {n.op_type for n in fp32.graph.node if n.name not in geometry}
    assert decoder_ops >= {"Conv", "DepthToSpace"} and "GridSample" not in decoder_ops
    lookups = [n for n in fp32.graph.node if n.op_type == "GridSample"]
    assert len(lookups) == 3 * (1 + (detail > 0)) and all(n.name in geometry for n in lookups)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"c2w": c2w, "K": K})[0] for m in (fp32, fp16, int8)]
    with torch.no_grad():
        want = student.render(torch.from_numpy(c2w)[None], torch.from_numpy(K)[None], 16, 16)[0].numpy()
    assert want.std() > 1e-2 and np.abs(runs[0] - want).max() <= 1e-4
    assert 0 < np.abs(runs[0] - runs[1]).max() <= 1e-2 and 0 < np.abs(runs[0] - runs[2]).max() <= 1e-1


def test_fp16_reads_a_lookup_at_network_positions_in_fp32() -> None:
    """A lookup whose positions the network computes (Conv -> Tanh -> grid, a detail head's depth) stays
    fp32 with its position arithmetic, reading the convolution's fp16 output through a Cast back."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in
             (("w1", [2, 2, 1, 1]), ("planes", [1, 3, 48, 48]), ("w2", [3, 3, 1, 1]))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["d"], name="conv1"),
             helper.make_node("Tanh", ["d"], ["t"], name="tanh"),
             helper.make_node("Transpose", ["t"], ["grid"], perm=[0, 2, 3, 1], name="to_grid"),
             helper.make_node("GridSample", ["planes", "grid"], ["f"], name="lookup"),
             helper.make_node("Conv", ["f", "w2"], ["y"], name="conv2")]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph(nodes, "g", [x_info], [y_info], inits)
    fp32 = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert set(geometry_nodes(fp32)) == {"tanh", "to_grid", "lookup"}
    fp16 = image_to_fp16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    producer = {o: n for n in fp16.graph.node for o in n.output}
    assert producer[producer["t"].input[0]].op_type == "Cast"  # conv1's fp16 output, cast back to fp32
    lookup = next(n for n in fp16.graph.node if n.op_type == "GridSample")
    assert producer[lookup.input[0]].op_type == "Cast" and lookup.input[1] == "grid"
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    runs = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0] for m in (fp32, fp16)]
    assert runs[0].std() > 1e-2 and 0 < np.abs(runs[0] - runs[1]).max() <= 2e-2


def _feed(seed: int) -> dict[str, np.ndarray]:
    c2w, K = _camera(seed, 16, 16)
    return {"c2w": c2w, "K": K}


def test_int8_is_per_channel_qdq_around_the_convolutions(image_export: tuple[Path, dict]) -> None:
    proto = onnx.load(str(image_export[0] / "export" / "student_int8.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "GridSample"} <= ops
    assert not ops & {"ConvInteger", "MatMulInteger", "QLinearConv"}
    inits = {i.name: i for i in proto.graph.initializer}
    weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
               and inits[n.input[0]].data_type == TensorProto.INT8]
    assert len(weights) == 3  # inp, body.0, ups.0
    for node in weights:  # one scale per output channel
        assert list(inits[node.input[1]].dims) == [inits[node.input[0]].dims[0]]
    grid_inputs = {n.input[1] for n in proto.graph.node if n.op_type == "GridSample"}
    producer = {o: n.op_type for n in proto.graph.node for o in n.output}
    assert {producer[i] for i in grid_inputs} == {"Concat"}  # the lookups' positions are not quantized


def test_int8_gate_drops_every_int8_file_beyond_the_allowed_drop() -> None:
    def variants(int8_psnr: float) -> dict[str, dict]:
        return {"student": {"precision": "fp32", "test_psnr": 30.0},
                "student_int8": {"precision": "int8", "test_psnr": int8_psnr},
                "student_8x8_int8": {"precision": "int8", "test_psnr": None}}

    kept, dropped = variants(29.8), variants(29.6)
    passed = int8_gate(Int8Config(), kept)
    assert passed is not None and passed["published"]
    assert set(kept) == {"student", "student_int8", "student_8x8_int8"}
    gate = int8_gate(Int8Config(), dropped)
    assert gate is not None and not gate["published"] and gate["psnr_drop_db"] == pytest.approx(0.4)
    assert set(dropped) == {"student"}
    assert gate["files"] == ["student_int8.onnx", "student_8x8_int8.onnx"]
    assert int8_gate(Int8Config(), {"student": {"precision": "fp32", "test_psnr": 30.0}}) is None


@pytest.mark.parametrize("keys, named", [
    ({"static_variants": ["fp32"]}, "static_variants=['fp32']: "),
    ({"fused_encoding": ["fp16"]}, "fused_encoding=['fp16']: "),
    ({"int8": Int8Config(mode="dynamic")}, "int8.mode=dynamic: "),
])
def test_ray_only_keys_asked_of_an_image_model_are_one_line_errors(
        image_export: tuple[Path, dict], tmp_path: Path, tiny_scene: Path, keys: dict, named: str) -> None:
    ckpt = image_export[0] / "student" / "student.ckpt"
    cfg = ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(tmp_path), checkpoint=str(ckpt),
                       **keys)
    with pytest.raises(UserError) as info:
        run(cfg)
    message = str(info.value)
    assert message.startswith(named) and "image model" in message and "\n" not in message
    assert not (tmp_path / "export").exists()


def test_image_sizes_of_a_ray_model_and_bad_sizes_are_one_line_errors(tiny_scene: Path,
                                                                      tmp_path: Path) -> None:
    make_tiny_student_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    with pytest.raises(UserError, match=r"^image_sizes=\[\[8, 8\]\]: .* is a ray model"):
        run(ExportConfig(scene=SceneConfig(path=str(tiny_scene)), run_dir=str(tmp_path),
                         image_sizes=[[8, 8]]))
    with pytest.raises(ConfigValueError, match=r"^image_sizes=\[\[0, 8\]\]: must be \[H, W\] pairs"):
        validate(ExportConfig(image_sizes=[[0, 8]]))
    assert for_decoder(ExportConfig(), "ray", "x").static_variants == ["fp32"]  # the ray defaults, as before
    assert for_decoder(ExportConfig(), "image", "x").int8.mode == "qdq"


def test_export_command_end_to_end_on_an_image_run(tiny_scene: Path, tmp_path: Path) -> None:
    """``python -m export.onnx`` on a run folder whose checkpoint is an image student: the files, the
    table, and the old ray files of the folder replaced (other files left alone)."""
    make_tiny_image_ckpt(tmp_path / "student" / "student.ckpt", tiny_scene)
    out = tmp_path / "export"
    out.mkdir()
    for stale in ("student_static.onnx", "student_static_int8.onnx", "student_30x30_fp16.onnx", "notes.onnx"):
        (out / stale).write_bytes(b"old")
    proc = run_cli("export.onnx", REPO, [f"run_dir={tmp_path}", f"scene.path={tiny_scene}",
                                         "variants=[fp32,fp16]", "image_sizes=[[8,12]]", "parity.n_poses=1"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.onnx")) == ["notes.onnx", "student.onnx", "student_8x12.onnx",
                                                          "student_8x12_fp16.onnx", "student_fp16.onnx"]
    assert "student_8x12_fp16.onnx" in proc.stdout and "ok=True" in proc.stdout
    assert "no static-batch, fused-encoding or split (page) files" in proc.stdout + proc.stderr
    report = json.loads((out / "export.json").read_text())
    assert report["decoder"] == "image" and report["int8_gate"] is None


def test_image_parity_gate_rejects_other_weights_and_publishes_nothing(
        tiny_scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An extra size's fp32 graph traced from other weights than the checkpoint's fails the gate: no file
    appears under a final name, the report goes to ``export_failed.json``."""
    import export.image as export_image

    trace = export_image.export_image_student

    def trace_other_weights(student: ImageStudent, H: int, W: int, opset: int = 17) -> onnx.ModelProto:
        other = copy.deepcopy(student)
        if (H, W) == (8, 8):
            with torch.no_grad():
                for param in other.parameters():
                    param.add_(0.1 * torch.randn_like(param))
        return trace(other, H, W, opset=opset)

    monkeypatch.setattr(export_image, "export_image_student", trace_other_weights)
    with pytest.raises(RuntimeError, match="disagrees with PyTorch.*nothing published"):
        export_tiny_image_run(tmp_path, tiny_scene, variants=["fp32"], image_sizes=[[8, 8]])
    out = tmp_path / "export"
    assert [p.name for p in out.iterdir()] == ["export_failed.json"]
    failed = json.loads((out / "export_failed.json").read_text())
    assert not failed["parity"]["ok"] and failed["variants"]["student"]["max_abs_err_random"] <= 1e-4
    assert failed["variants"]["student_8x8"]["max_abs_err_random"] > 1e-3
