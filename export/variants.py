"""Tracing the student to ONNX and deriving the fp16 and int8 variants from the fp32 graph."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from core.io import write_bytes
from export.runtime import INPUT_NAMES, OUTPUT_NAME, ModelMeta

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
INT8_MODES = ("dynamic", "qdq")
MATMUL_OPS = ("Gemm", "MatMul")
# The checker and ONNX Runtime 1.31 accept IR <= 13; the dynamo exporter writes 10.
MAX_IR_VERSION = 10


def variant_filename(precision: str, static: bool, size: Sequence[int] | None = None) -> str:
    """``student.onnx`` (fp32, dynamic batch), ``student_int8.onnx``, ``student_static_fp16.onnx``, ...;
    an image model's extra output size ``[H, W]``: ``student_<H>x<W>.onnx``, ``student_<H>x<W>_fp16.onnx``."""
    parts = ["student"] + (["static"] if static else []) + ([f"{size[0]}x{size[1]}"] if size else [])
    return "_".join(parts + ([] if precision == "fp32" else [precision])) + ".onnx"


def is_variant_file(name: str) -> bool:
    """Whether ``name`` is one that :func:`variant_filename` writes (an export replaces them all)."""
    return re.fullmatch(r"student(_static)?(_\d+x\d+)?(_fp16|_int8)?\.onnx", name) is not None


def trace_student(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], static: bool,
                  opset: int) -> onnx.ModelProto:
    """Export ``model(rays_o, rays_d) -> rgb`` with the dynamo exporter (``torch.export``).

    The dynamo exporter folds the ray encoding's constants (bin centres, frequencies, box) into
    initializers, leaving 13 elementwise nodes before the first Gemm (the TorchScript exporter leaves
    Shape/Slice/Concat chains for the reshapes); both give the same dynamic batch axis.

    Args:
        model: the student in eval mode.
        example: ``rays_o, rays_d [N, 3]`` example inputs; ``N`` is the fixed batch when ``static``.
        static: fixed batch ``N`` instead of a dynamic axis.
        opset: ONNX opset.

    Returns:
        The cleaned model proto (no per-node torch metadata, no stale value_info).
    """
    dynamic_shapes = None
    if not static:
        n = torch.export.Dim("N")
        dynamic_shapes = {"rays_o": {0: n}, "rays_d": {0: n}}
    with tempfile.TemporaryDirectory() as tmp, quiet_exporter():
        path = Path(tmp) / "student.onnx"
        torch.onnx.export(model, example, str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
                          input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=opset,
                          external_data=False, verbose=False)
        proto = onnx.load(str(path))
    return clean_graph(proto)


def clean_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Drop exporter debris: per-node torch metadata and value_info (stale shapes upset the quantizer)."""
    del proto.graph.value_info[:]
    for node in proto.graph.node:
        del node.metadata_props[:]
    del proto.metadata_props[:]
    proto.producer_name = "lightfield-distill"
    proto.ir_version = min(proto.ir_version, MAX_IR_VERSION)
    return proto


def set_metadata(proto: onnx.ModelProto, meta: ModelMeta) -> onnx.ModelProto:
    """Replace the model's ``metadata_props`` by ``meta`` (one JSON value per key)."""
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    return proto


def save_checked(proto: onnx.ModelProto, path: Path) -> Path:
    """Run ``onnx.checker`` (full check, with shape inference) and write one self-contained file."""
    onnx.checker.check_model(proto, full_check=True)
    return write_bytes(path, proto.SerializeToString())


def _table_reads(graph: onnx.GraphProto) -> Callable[[onnx.NodeProto], onnx.TensorProto | None]:
    """A function giving the learned feature table a lookup node reads (a float initializer of at least
    :data:`TABLE_MIN_ELEMENTS` elements, directly or through a Reshape), or ``None``; the graph's
    initializers and reshapes are indexed once."""
    inits = {i.name: i for i in graph.initializer}
    reshaped = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Reshape"}

    def table_of(node: onnx.NodeProto) -> onnx.TensorProto | None:
        if node.op_type not in TABLE_OPS:
            return None
        init = inits.get(node.input[0], inits.get(reshaped.get(node.input[0], "")))
        if init is None or init.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16) \
                or int(np.prod(init.dims)) < TABLE_MIN_ELEMENTS:
            return None
        return init

    return table_of


def encoding_nodes(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes that must stay fp32: the ray encoding.

    That is every ancestor of a Sin/Cos node (the sine arguments reach ``2^(F-1)`` times the
    coordinates: fp16 or int8 there would scramble the high frequencies), every node between a Sin/Cos
    and the first matrix product it feeds (the fused graph's double-angle steps), every ancestor of a Where
    condition (the content-box hit test), and every matrix product fed by those ray-linear values
    rather than by sines (the folded raw-coordinate term of :class:`export.fused.FusedEncodingStudent`).
    In a graph with a table lookup (the ``hash`` encoding's Gather) the whole encoding is kept: every
    ancestor of the inputs of the first matrix products the lookups feed, the NDC rotation of a
    forward-facing student included (grid positions in fp16 are off by up to 1/16 of a cell at 128 cells
    per axis and 1/4 at 512, and int8 would alias them).
    """
    nodes = list(proto.graph.node)
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"node_{i}"
    producer = {out: node for node in nodes for out in node.output}
    keep: set[str] = set()

    def keep_ancestors(stack: list[onnx.NodeProto], stop: tuple[str, ...] = ()) -> None:
        """Add ``stack`` and everything upstream of it to ``keep``, not crossing ``stop`` op types."""
        while stack:
            node = stack.pop()
            if node.name not in keep and node.op_type not in stop:
                keep.add(node.name)
                stack += [producer[i] for i in node.input if i in producer]

    stack = [n for n in nodes if n.op_type in ("Sin", "Cos")]
    stack += [producer[n.input[0]] for n in nodes if n.op_type == "Where" and n.input[0] in producer]
    keep_ancestors(stack)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    if any(n.op_type == "Gather" for n in nodes):
        # the MLP's input layer: the first matrix products downstream of the table lookups (a forward-facing
        # student's NDC rotation is a matrix product too, upstream of them: part of the encoding)
        firsts: dict[str, onnx.NodeProto] = {}
        seen: set[str] = set()
        lookups = [n for n in nodes if n.op_type == "Gather"]
        # the table lookups; with a table too small to tell from a constant, every Gather
        table_of = _table_reads(proto.graph)
        front = [n for n in lookups if table_of(n) is not None] or lookups
        while front:
            for out in front.pop().output:
                for nxt in consumers.get(out, []):
                    if nxt.op_type in MATMUL_OPS:
                        firsts[nxt.name] = nxt
                    elif nxt.name not in seen:
                        seen.add(nxt.name)
                        front.append(nxt)
        keep_ancestors([producer[n.input[0]] for n in firsts.values() if n.input[0] in producer])
    ray_linear = {i.name for i in proto.graph.input}
    ray_linear |= {o for n in nodes if n.name in keep and n.op_type not in ("Sin", "Cos") for o in n.output}
    keep |= {n.name for n in nodes if n.op_type in MATMUL_OPS and n.input[0] in ray_linear}
    # and what the sines feed before the first matrix product (the fused graph's double-angle steps:
    # they double the error per octave, so they too must stay fp32)
    front = [n for n in nodes if n.op_type in ("Sin", "Cos")]
    while front:
        node = front.pop()
        for out in node.output:
            for nxt in consumers.get(out, []):
                if nxt.op_type not in MATMUL_OPS and nxt.op_type != "Where" and nxt.name not in keep:
                    keep.add(nxt.name)
                    front.append(nxt)
    return [n.name for n in nodes if n.name in keep]


def to_fp16(proto: onnx.ModelProto, keep: Collection[str] | None = None) -> onnx.ModelProto:
    """fp16 weights and MLP; inputs, outputs and the ray encoding stay fp32.

    The encoding must stay fp32: ``sin(2^9 x)`` of an fp16 ``x`` near 1 is off by up to 0.25 rad.
    (onnxruntime.transformers.float16 with a node block list emits duplicate Cast outputs for this
    graph, hence this direct rewrite: the MLP after the encoding is Gemm/Relu/Add/Sigmoid and the final
    Where that shows the background where a ray misses the content box.)

    Args:
        proto: the fp32 model (float constants as initializers, no stale ``value_info``).
        keep: names of the nodes that stay fp32 (default: :func:`encoding_nodes`, a ray model's). A kept
            node may read an fp16 node's output (a lookup at positions computed from the network's
            features): it reads it through a Cast back to fp32.
    """
    graph = proto.graph
    keep = set(encoding_nodes(proto) if keep is None else keep)
    enc = [n for n in graph.node if n.name in keep]
    mlp = [n for n in graph.node if n.name not in keep]
    fp32_tensors = {i.name for i in graph.input} | {o for n in enc for o in n.output}
    consumed = {i for n in mlp for i in n.input}
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*inferred.input, *inferred.value_info]}
    fp32_tensors = {t for t in fp32_tensors if dtype.get(t) == onnx.TensorProto.FLOAT}  # not the hit mask
    kept_reads = {i for n in enc for i in n.input}
    for init in list(graph.initializer):
        if init.name in consumed and init.data_type == onnx.TensorProto.FLOAT:
            half = onnx.numpy_helper.to_array(init).astype(np.float16)
            if init.name not in kept_reads:
                init.CopyFrom(onnx.numpy_helper.from_array(half, init.name))
                continue
            # read by both sides (a constant the exporter shared): the fp32 side keeps it, the MLP a copy
            graph.initializer.append(onnx.numpy_helper.from_array(half, f"{init.name}_fp16"))
            for node in mlp:
                node.input[:] = [f"{init.name}_fp16" if i == init.name else i for i in node.input]
    casts = []
    for name in sorted(consumed & fp32_tensors):
        casts.append(onnx.helper.make_node("Cast", [name], [f"{name}_fp16"], to=onnx.TensorProto.FLOAT16,
                                           name=f"cast_{name}_fp16"))
        for node in mlp:
            node.input[:] = [f"{name}_fp16" if i == name else i for i in node.input]
    mlp_out = {o for n in mlp for o in n.output if dtype.get(o) == onnx.TensorProto.FLOAT}
    for name in sorted({i for n in enc for i in n.input if i in mlp_out}):  # kept nodes read fp16: cast back
        casts.append(onnx.helper.make_node("Cast", [name], [f"{name}_fp32"], to=onnx.TensorProto.FLOAT,
                                           name=f"cast_{name}_fp32"))
        for node in enc:
            node.input[:] = [f"{name}_fp32" if i == name else i for i in node.input]
    for out in graph.output:
        for node in mlp:
            node.output[:] = [f"{out.name}_fp16" if o == out.name else o for o in node.output]
        mlp.append(onnx.helper.make_node("Cast", [f"{out.name}_fp16"], [out.name], to=onnx.TensorProto.FLOAT,
                                         name=f"cast_{out.name}_fp32"))
    enc = _fp16_tables(graph, enc)
    nodes = topological(enc + casts + mlp, {i.name for i in [*graph.input, *graph.initializer]})
    del graph.node[:]
    graph.node.extend(nodes)
    return proto


def topological(nodes: Sequence[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    """``nodes`` in an order where each comes after the producers of its inputs (``available``: the
    graph's inputs and initializers); a list already in such an order stays as it is.

    Raises:
        ValueError: a node whose input nothing produces (or a cycle).
    """
    out: list[onnx.NodeProto] = []
    ready, pending = set(available) | {""}, list(nodes)
    while pending:
        waiting = []
        for node in pending:
            if all(i in ready for i in node.input):
                out.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"node {waiting[0].name!r} reads a tensor nothing produces")
        pending = waiting
    return out


def tables_to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Store the learned tables that the graph's lookups read (hash-grid rows, feature planes) in fp16, read
    back in fp32 (:func:`_fp16_tables`), leaving every other node as it is (in place; returns ``proto``)."""
    nodes = _fp16_tables(proto.graph, list(proto.graph.node))
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    return proto


TABLE_MIN_ELEMENTS = 4096
TABLE_OPS = ("Gather", "GridSample")  # lookups whose first input is a learned table (hash grid, planes)


def _fp16_tables(graph: onnx.GraphProto, enc: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Store the float tables that encoding lookups read (a learned encoding's features) as fp16.

    Each such Gather (reading the table directly or through a Reshape) then reads fp16 rows and a Cast
    back to fp32 follows it; a GridSample reads the table through a Cast to fp32 (ONNX Runtime's CPU
    GridSample takes float only). Either way the file shrinks by half of the table while the lookup
    arithmetic stays fp32. Small constants are left alone; a table read by several lookups is converted
    once.
    """
    table_of = _table_reads(graph)
    out: list[onnx.NodeProto] = []
    for node in enc:
        init = table_of(node)
        if init is None:
            out.append(node)
            continue
        src = node.input[0]
        if init.data_type == onnx.TensorProto.FLOAT:
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init).astype(np.float16),
                                                       init.name))
        if node.op_type == "GridSample":  # ONNX Runtime's CPU GridSample is float-only: cast the texels
            node.input[0] = f"{src}_fp32"
            out += [onnx.helper.make_node("Cast", [src], [f"{src}_fp32"], to=onnx.TensorProto.FLOAT,
                                          name=f"cast_{src}_fp32"), node]
            continue
        rows = node.output[0]
        node.output[0] = f"{rows}_fp16"
        out += [node, onnx.helper.make_node("Cast", [f"{rows}_fp16"], [rows], to=onnx.TensorProto.FLOAT,
                                            name=f"cast_{rows}_fp32")]
    return out


class FeedReader:
    """An ONNX Runtime ``CalibrationDataReader`` over ready input feeds (``{input name: array}`` each)."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def to_int8(proto: onnx.ModelProto, mode: str, calib: list[tuple[np.ndarray, np.ndarray]] | None = None,
            per_channel: bool = True) -> onnx.ModelProto:
    """int8 matrix products with ONNX Runtime's quantization tools (the encoding stays fp32).

    Args:
        proto: the fp32 model.
        mode: ``dynamic`` (int8 weights, activations quantized per call: MatMulInteger) or ``qdq``
            (static QuantizeLinear/DequantizeLinear pairs with ranges calibrated on ``calib`` rays,
            which ONNX Runtime fuses into integer Gemms).
        calib: calibration batches ``(rays_o [N, 3], rays_d [N, 3])`` float32, for ``qdq``.
        per_channel: per-output-channel weight scales (``qdq``).

    Returns:
        The quantized model.
    """
    if mode not in INT8_MODES:
        raise ValueError(f"int8 mode must be one of {INT8_MODES}, got {mode!r}")
    exclude = encoding_nodes(proto)  # names unnamed nodes: before quantize saves the graph
    feeds = [{"rays_o": o, "rays_d": d} for o, d in calib or []]
    return quantize(proto, mode, feeds, per_channel, MATMUL_OPS, exclude)


def quantize(proto: onnx.ModelProto, mode: str, feeds: Sequence[dict[str, np.ndarray]], per_channel: bool,
             op_types: Sequence[str], exclude: Sequence[str] = ()) -> onnx.ModelProto:
    """``proto`` with its ``op_types`` nodes quantized by ONNX Runtime's tools (the others stay float).

    Args:
        proto: the fp32 model.
        mode: ``dynamic`` or ``qdq`` (calibrated on ``feeds``, MinMax ranges).
        feeds: calibration inputs, one ``{input name: array}`` per batch (``qdq``).
        per_channel: per-output-channel weight scales.
        op_types: the op types to quantize.
        exclude: names of nodes to leave in float.
    """
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        with quiet_root_logger():  # the quantizer logs "please run pre-processing" on the root logger
            _quantize(src, dst, mode, feeds, per_channel, list(op_types), list(exclude))
        out = onnx.load(str(dst))
    out.ir_version = min(out.ir_version, MAX_IR_VERSION)
    return out


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the ONNX exporter's named, harmless messages while exporting."""
    with warnings.catch_warnings():
        # both inputs share the one dynamic axis; a pytree deprecation
        warnings.filterwarnings("ignore", message=r".*axis name: N will not be used.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        # "torchvision not installed" warnings, and the optimizer's pass-by-pass INFO lines
        for name, level in (("torch.onnx._internal.exporter._registration", logging.ERROR),
                            ("onnxscript", logging.WARNING), ("onnx_ir", logging.WARNING)):
            logging.getLogger(name).setLevel(level)
        yield


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _quantize(src: Path, dst: Path, mode: str, feeds: Sequence[dict[str, np.ndarray]], per_channel: bool,
              op_types: list[str], exclude: list[str]) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    if mode == "dynamic":
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=op_types,
                         per_channel=per_channel, nodes_to_exclude=exclude)
    else:
        if not feeds:
            raise ValueError("qdq quantization needs calibration data")
        quantize_static(str(src), str(dst), FeedReader(feeds), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=per_channel, op_types_to_quantize=op_types, nodes_to_exclude=exclude,
                        calibrate_method=CalibrationMethod.MinMax)
