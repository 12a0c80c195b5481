"""Export an image student as one ONNX graph: the camera in, the image out, portable ops only.

The graph's contract (written into the metadata by the caller): inputs ``c2w`` ``[4, 4]`` float32
(camera-to-world, OpenCV convention of :mod:`core.cameras`) and ``K`` ``[3, 3]`` float32 (intrinsics in
pixels of the output image), output ``rgb`` ``[H, W, 3]`` float32 in ``[0, 1]``; rays are built inside
the graph. Shapes are static: one file per output size (ONNX Runtime plans static graphs best, and
mobile providers need them).

:data:`PORTABLE_OPS` is the op set every ONNX Runtime provider (CPU, CUDA, mobile NNAPI/CoreML/XNNPACK,
WebGPU/wasm) runs: float convolutions and matrix products, float elementwise math, 4-D ``GridSample``,
``DepthToSpace``/``Resize`` and reshapes. :func:`portability_problems` lists what a graph uses outside it
(and any integer arithmetic); a test runs it on every exported variant.
"""

from __future__ import annotations

import io

import onnx
import torch
from onnx import TensorProto, shape_inference
from torch import Tensor, nn

from student.image_model import ImageStudent
from student.ray_map import block_centers

INPUT_NAMES = ("c2w", "K")
OUTPUT_NAME = "rgb"
# float math the CPU, GPU, mobile and web providers all run; shape ops whose int64 inputs are constants
PORTABLE_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp", "Log", "Erf", "Tanh",
    "Max", "Min", "Clip", "Relu", "LeakyRelu", "Sigmoid", "Gelu", "Sin", "Cos",
    "GridSample", "DepthToSpace", "Resize",
    "Reshape", "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Constant",
    # int8 variants: the quantize/dequantize pairs around the float ops
    "QuantizeLinear", "DequantizeLinear",
})
INT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8}
# ops whose integer outputs are not arithmetic: constants and shapes, and int8 quantisation
INT_OUTPUT_OK = {"Reshape", "Slice", "Squeeze", "Unsqueeze", "Constant", "Identity", "Resize",
             "QuantizeLinear", "DequantizeLinear", "Concat"}


class CameraToImage(nn.Module):
    """An image student for one output size: ``c2w [4, 4]``, ``K [3, 3]`` -> ``rgb [H, W, 3]``."""

    def __init__(self, student: ImageStudent, H: int, W: int):
        super().__init__()
        if H < 1 or W < 1:
            raise ValueError(f"image size {H}x{W}: must be at least 1x1")
        self.student, self.H, self.W = student, H, W
        h, w = student.blocks(H, W)
        self.register_buffer("centers", block_centers(h, w, student.cfg.scale))

    def forward(self, c2w: Tensor, K: Tensor) -> Tensor:  # [4, 4], [3, 3] -> [H, W, 3]
        """The image of one camera."""
        image = self.student(c2w[None], K[None], self.centers)[:, :self.H, :self.W]  # slices: no Gather
        return image.reshape(self.H, self.W, 3)


def export_image_student(student: ImageStudent, H: int, W: int, opset: int = 17) -> onnx.ModelProto:
    """Trace ``student`` for ``H x W`` outputs into an ONNX model (fp32, static shapes, shapes inferred).

    Raises:
        ValueError: the traced graph uses an op outside :data:`PORTABLE_OPS` (a bug: the student's
            modules are written in that set).
    """
    graph = CameraToImage(student.eval(), H, W)
    c2w = torch.eye(4)
    c2w[2, 3] = -4.0
    K = torch.tensor([[float(W), 0.0, W / 2], [0.0, float(W), H / 2], [0.0, 0.0, 1.0]])
    buf = io.BytesIO()  # torch's stubs name paths only; the exporter writes to a file object too
    with torch.no_grad():
        torch.onnx.export(graph, (c2w, K), buf,  # type: ignore[arg-type]
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamo=False)
    model = shape_inference.infer_shapes(onnx.load_from_string(buf.getvalue()))
    problems = portability_problems(model)
    if problems:
        raise ValueError(f"the image student's graph is not portable: {problems}")
    return model


def portability_problems(model: onnx.ModelProto) -> list[str]:
    """Ops outside :data:`PORTABLE_OPS`, and integer arithmetic (an op other than a shape op with an
    integer output), as ``"<op> (<node name>)"`` strings; ``[]`` for a portable graph."""
    types = {v.name: v.type.tensor_type.elem_type for v in
             [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    out = []
    for node in model.graph.node:
        if node.op_type not in PORTABLE_OPS or node.domain not in ("", "ai.onnx"):
            out.append(f"{node.op_type} ({node.name})")
        elif node.op_type not in INT_OUTPUT_OK and any(types.get(o) in INT_TYPES for o in node.output):
            out.append(f"integer {node.op_type} ({node.name})")
    return out
