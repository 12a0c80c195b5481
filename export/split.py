"""The hash-grid student split for the web viewer: the encoding in the page's JS, the MLP in ONNX.

Exported whole, the hash lookup runs in ONNX Runtime as one elementwise op after another over
``[N, levels, 8 corners, 3]`` int64 tensors (``cuda/hashgrid_graph.py``), about 20x slower than a
loop over the points; onnxruntime-web is slower still. The viewer therefore also ships the student in
two parts: the feature table (``student_grid.bin``, float32 little-endian, the layout of
:class:`cuda.hashgrid_ref.HashGridSpec`) with the encoder's facts (``encoder_facts``), which
``export/viewer/web/encoder.js`` turns into features in one loop per point, and the MLP alone
(``features [N, in_dim] -> rgb [N, 3]``) as ONNX. A forward-facing student's facts carry its NDC frame
(``ndc``): the page turns world rays into NDC rays before the lookup, as the graph does. The page's
frames are checked against :meth:`export.runtime.LightField.render` of the whole graph in the browser
tests.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from cuda.hashgrid_ref import PRIMES
from export.variants import MATMUL_OPS, MAX_IR_VERSION, clean_graph, quiet_exporter, quiet_root_logger
from student.encoding import HashRayEncoder
from student.model import R2LStudent

FEATURES = "features"


class _Mlp(nn.Module):
    def __init__(self, student: R2LStudent):
        super().__init__()
        self.student = student

    def forward(self, features: Tensor) -> Tensor:
        return self.student.forward_encoded(features)


def encoder_facts(model: R2LStudent) -> dict[str, Any]:
    """What the page needs to compute the student's input vector (a JSON-able dict).

    Raises:
        ValueError: the student's encoding is not ``hash``.
    """
    enc = model.encoder
    if not isinstance(enc, HashRayEncoder):
        raise ValueError(f"only a hash-grid student can be split, this one is {model.cfg.encoding!r}")
    spec = enc.grid.spec
    return {
        "kind": "hash", "box": enc.box.tolist(), "center": enc.center.tolist(),
        "half_extent": enc.half_extent.tolist(), "near": enc.near, "far": enc.far, "n_points": enc.n_points,
        "ray_range": enc.ray_range, "point_freqs": enc.grid_cfg.point_freqs, "in_dim": enc.out_dim,
        "grid": {"n_levels": spec.n_levels, "n_features": spec.n_features,
                 "log2_hashmap_size": spec.log2_hashmap_size, "scales": list(spec.scales),
                 "resolutions": list(spec.resolutions), "sizes": list(spec.sizes),
                 "offsets": list(spec.offsets), "primes": list(PRIMES)},
        "background": model.background.tolist(),
        "ndc": enc.ndc.to_dict() if enc.ndc is not None else None,  # forward-facing: rays into NDC first
        "occupancy": enc.occupancy_record(),  # rays crossing no set cell: the background, not encoded
    }


def table_bytes(model: R2LStudent) -> bytes:
    """The feature table as float32 little-endian bytes."""
    enc = model.encoder
    assert isinstance(enc, HashRayEncoder)
    return enc.grid.params.detach().cpu().numpy().astype("<f4").tobytes()


def mlp_onnx(model: R2LStudent, opset: int = 18) -> onnx.ModelProto:
    """The student's MLP as ONNX: ``features [N, in_dim]`` (dynamic ``N``) -> ``rgb [N, 3]``."""
    in_dim = model.encoder.out_dim
    example = torch.rand(64, in_dim)
    with tempfile.TemporaryDirectory() as tmp, quiet_exporter():
        path = Path(tmp) / "mlp.onnx"
        torch.onnx.export(_Mlp(model).eval(), (example,), str(path), dynamo=True,
                          dynamic_shapes={"features": {0: torch.export.Dim("N")}}, input_names=[FEATURES],
                          output_names=["rgb"], opset_version=opset, external_data=False, verbose=False)
        proto = onnx.load(str(path))
    return clean_graph(proto)


def mlp_int8(proto: onnx.ModelProto) -> onnx.ModelProto:
    """int8 weights, activations quantized per call (ONNX Runtime's dynamic quantization, MatMulInteger)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(proto, str(src))
        with quiet_root_logger():
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(MATMUL_OPS), per_channel=True)
        out = onnx.load(str(dst))
    out.ir_version = min(out.ir_version, MAX_IR_VERSION)
    return out


def run_mlp(proto: onnx.ModelProto, features: np.ndarray) -> np.ndarray:
    """``rgb [N, 3]`` of the MLP graph on ``features [N, in_dim]`` in ONNX Runtime (for checks)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["rgb"], {FEATURES: features.astype(np.float32)})[0])
