"""Export an image student as one ONNX graph: the camera in, the image out, portable ops only.

The graph's contract (written into the metadata by the caller): inputs ``c2w`` ``[4, 4]`` float32
(camera-to-world, OpenCV convention of :mod:`core.cameras`) and ``K`` ``[3, 3]`` float32 (intrinsics in
pixels of the output image), output ``rgb`` ``[H, W, 3]`` float32 in ``[0, 1]``; rays are built inside
the graph. Shapes are static: one file per output size (ONNX Runtime plans static graphs best, and
mobile providers need them).

:data:`PORTABLE_OPS` is the op set every ONNX Runtime provider (CPU, CUDA, mobile NNAPI/CoreML/XNNPACK,
WebGPU/wasm) runs: float convolutions and matrix products, float elementwise math, 4-D ``GridSample``,
``DepthToSpace``/``Resize`` and reshapes. :func:`portability_problems` lists what a graph uses outside it
(and any integer arithmetic); ``export.onnx`` refuses a file with any, and a test runs it on every
exported variant.

The reduced-precision files keep the geometry in fp32 (:func:`geometry_nodes`: rays, box points and the
plane lookups: a point's position in fp16 is off by 1/2048 of the box, a texel at 256 planes) and convert
the decoder: :func:`image_to_fp16` (fp16 convolutions, the planes stored in fp16),
:func:`image_to_int8` (QDQ int8 convolutions calibrated on training cameras, :func:`camera_feeds`).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx
import torch
from onnx import TensorProto, numpy_helper, shape_inference
from torch import Tensor, nn

from export.config import ExportConfig
from export.runtime import ModelMeta, scaled_intrinsics
from export.variants import (
    clean_graph,
    quantize,
    save_checked,
    set_metadata,
    tables_to_fp16,
    to_fp16,
    variant_filename,
)
from scenes.load import SceneSplit
from student.image_model import ImageStudent
from student.ray_map import block_centers

log = logging.getLogger(__name__)

INPUT_NAMES = ("c2w", "K")
OUTPUT_NAME = "rgb"
# float math the CPU, GPU, mobile and web providers all run; shape ops whose int64 inputs are constants
PORTABLE_OPS = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul",
    "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp", "Log", "Erf", "Tanh",
    "Max", "Min", "Clip", "Relu", "LeakyRelu", "Sigmoid", "Gelu", "Sin", "Cos",
    "GridSample", "DepthToSpace", "Resize",
    "Reshape", "Transpose", "Concat", "Slice", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Constant",
    # int8 variants: the quantize/dequantize pairs around the float ops; fp16 variants: float casts (a cast
    # to an integer type is integer arithmetic: refused)
    "QuantizeLinear", "DequantizeLinear", "Cast",
})
INT_TYPES = {TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8}
# ops whose integer outputs are not arithmetic: constants and shapes, and int8 quantisation
INT_OUTPUT_OK = {"Reshape", "Slice", "Squeeze", "Unsqueeze", "Constant", "Identity", "Resize",
             "QuantizeLinear", "DequantizeLinear", "Concat"}
DECODER_OPS = ("Conv",)  # where the decoder starts (its first op) and what int8 quantizes


class CameraToImage(nn.Module):
    """An image student for one output size: ``c2w [4, 4]``, ``K [3, 3]`` -> ``rgb [H, W, 3]``."""

    def __init__(self, student: ImageStudent, H: int, W: int):
        super().__init__()
        if H < 1 or W < 1:
            raise ValueError(f"image size {H}x{W}: must be at least 1x1")
        student = copy.deepcopy(student).eval()
        student.decoder.fuse_last_stages()  # the same colors with fewer DepthToSpace copies
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
    graph = CameraToImage(student, H, W).eval()  # the exporter restores this mode: the student stays in eval
    c2w = torch.eye(4)
    c2w[2, 3] = -4.0
    K = torch.tensor([[float(W), 0.0, W / 2], [0.0, float(W), H / 2], [0.0, 0.0, 1.0]])
    buf = io.BytesIO()  # torch's stubs name paths only; the exporter writes to a file object too
    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter (its graph keeps to the portable set) announces its own retirement
        for message in (r".*legacy TorchScript-based ONNX export.*", r"The feature will be removed.*"):
            warnings.filterwarnings("ignore", message=message, category=DeprecationWarning)
        torch.onnx.export(graph, (c2w, K), buf,  # type: ignore[arg-type]
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamo=False)
    model = shape_inference.infer_shapes(clean_graph(onnx.load_from_string(buf.getvalue())))
    problems = portability_problems(model)
    if problems:
        raise ValueError(f"the image student's graph is not portable: {problems}")
    return model


def portability_problems(model: onnx.ModelProto) -> list[str]:
    """Ops outside :data:`PORTABLE_OPS`, and integer arithmetic (an op other than a shape op with an
    integer output), as ``"<op> (<node name>)"`` strings; ``[]`` for a portable graph (the types come
    from ONNX shape inference, run here)."""
    model = shape_inference.infer_shapes(model)
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


def geometry_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes that the reduced-precision files keep in fp32: every node that no
    :data:`DECODER_OPS` node feeds (the rays, the box points and the plane lookups), and every lookup
    after the decoder's start with the nodes that compute its positions back to the nearest convolution
    (a lookup at a depth the network predicts: positions in fp16 would be off by a texel)."""
    nodes = list(proto.graph.node)
    producer = {out: node for node in nodes for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    decoder: set[int] = set()
    front = [n for n in nodes if n.op_type in DECODER_OPS]
    while front:
        node = front.pop()
        if id(node) not in decoder:
            decoder.add(id(node))
            front += [c for out in node.output for c in consumers.get(out, [])]
    keep = {id(n) for n in nodes if id(n) not in decoder}
    stack = [n for n in nodes if n.op_type == "GridSample" and id(n) in decoder]
    while stack:
        node = stack.pop()
        if id(node) not in keep:
            keep.add(id(node))
            grid = node.input[1:2] if node.op_type == "GridSample" else node.input
            stack += [producer[i] for i in grid if i in producer and producer[i].op_type not in DECODER_OPS]
    return [n.name for n in nodes if id(n) in keep]


def constants_to_initializers(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Move the tensors of ``Constant`` nodes into initializers (in place; returns ``proto``), so that the
    fp16 rewrite converts the decoder's float constants with its weights."""
    nodes = []
    for node in proto.graph.node:
        if node.op_type == "Constant" and [a.name for a in node.attribute] == ["value"]:
            proto.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t),
                                                                   node.output[0]))
        else:
            nodes.append(node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


def _fresh_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``proto`` without ``value_info`` (the rewrites change types; checks infer them again)."""
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    del out.graph.value_info[:]
    return out


def image_to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """The fp16 file of an image graph: the decoder in fp16, the planes stored in fp16 and read in fp32,
    the geometry and the inputs and output in fp32 (:func:`export.variants.to_fp16`)."""
    proto = constants_to_initializers(_fresh_copy(fp32))
    return to_fp16(proto, keep=geometry_nodes(proto))


def image_to_int8(fp32: onnx.ModelProto, feeds: Sequence[dict[str, np.ndarray]], per_channel: bool = True
                  ) -> onnx.ModelProto:
    """The int8 file of an image graph: QDQ (QuantizeLinear/DequantizeLinear) pairs around the decoder's
    convolutions, activation ranges calibrated on ``feeds`` (:func:`camera_feeds`), int8 weights (per
    output channel when ``per_channel``); the planes stored in fp16 as in the fp16 file (they are most of
    the bytes), the geometry in fp32 (no other op is quantized)."""
    return clean_graph(quantize(tables_to_fp16(_fresh_copy(fp32)), "qdq", feeds, per_channel, DECODER_OPS))


def camera_feeds(
    c2w: np.ndarray,  # [C, 4, 4]
    K: np.ndarray,  # [C, 3, 3]
    hw: Sequence[int],
    size: Sequence[int],
) -> list[dict[str, np.ndarray]]:
    """Graph inputs of cameras for an output ``size``: one ``{"c2w": [4, 4], "K": [3, 3]}`` float32 feed
    per camera, ``K`` (pixels of ``hw`` images) scaled to ``size`` (same field of view)."""
    return [{INPUT_NAMES[0]: np.asarray(c, np.float32),
             INPUT_NAMES[1]: scaled_intrinsics(np.asarray(k, np.float32), hw, size)} for c, k in zip(c2w, K)]


class ImageFile(NamedTuple):
    """One written file of an image model."""

    path: Path
    precision: str
    size: tuple[int, int]  # (H, W) it draws


def output_sizes(cfg: ExportConfig, meta: ModelMeta) -> list[tuple[int, int]]:
    """An image model's output sizes ``(H, W)``: the training image size, then ``image_sizes`` (each once)."""
    sizes = [(int(meta.image_size[0]), int(meta.image_size[1]))]
    for H, W in cfg.image_sizes:
        if (H, W) not in sizes:
            sizes.append((H, W))
    return sizes


def image_variant(fp32: onnx.ModelProto, precision: str, feeds: Sequence[dict[str, np.ndarray]],
                  per_channel: bool = True) -> onnx.ModelProto:
    """The ``precision`` (``fp32``, ``fp16`` or ``int8``) file of an image graph, a new proto (``feeds``:
    the int8 calibration, :func:`camera_feeds`)."""
    if precision == "fp16":
        return image_to_fp16(fp32)
    if precision == "int8":
        return image_to_int8(fp32, feeds, per_channel)
    return _fresh_copy(fp32)


def write_image_variants(cfg: ExportConfig, model: ImageStudent, meta: ModelMeta, train: SceneSplit,
                         out_dir: Path) -> list[ImageFile]:
    """Trace each output size, convert to every precision of ``cfg.variants`` (fp32 first), check the op
    set, attach metadata, check and write (int8: calibrated on ``int8.calib_batches`` of the ``train``
    cameras).

    Raises:
        RuntimeError: a file with an op outside :data:`PORTABLE_OPS` (a bug: the student's modules and
            these conversions keep to it).
    """
    calib = np.linspace(0, train.n_views - 1, min(cfg.int8.calib_batches, train.n_views)).round().astype(int)
    precisions = sorted(dict.fromkeys(cfg.variants), key=lambda p: p != "fp32")
    sizes = output_sizes(cfg, meta)
    files = []
    for size in sizes:
        fp32 = export_image_student(model, *size, opset=cfg.opset)
        feeds = camera_feeds(train.c2w[calib].numpy(), train.K[calib].numpy(), train.hw, size)
        for precision in precisions:
            proto = image_variant(fp32, precision, feeds, cfg.int8.per_channel)
            name = variant_filename(precision, False, None if size == sizes[0] else size)
            problems = portability_problems(proto)
            if problems:
                raise RuntimeError(f"{name}: ops outside the portable set of export/image.py: {problems}")
            file_meta = dataclasses.replace(meta, precision=precision, output_size=list(size))
            path = save_checked(set_metadata(proto, file_meta), out_dir / name)
            files.append(ImageFile(path, precision, size))
            log.info("wrote %s (%d bytes)", path, path.stat().st_size)
    return files
