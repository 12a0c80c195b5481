"""The image student as one ONNX graph (export.image): parity with PyTorch, the portable op set."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from core.cameras import look_at
from export.image import CameraToImage, export_image_student, portability_problems
from student.image_model import ImageStudent, ImageStudentConfig


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


def test_bad_image_size_is_refused() -> None:
    with pytest.raises(ValueError, match="image size 0x16"):
        CameraToImage(_student(), 0, 16)
