"""What each change to the image student's shape costs or saves in its exported frame.

``python -m benchmarks.image_graph [--size 400] [--repeats 15] [--no-write]``

The CPU profile's image student (``conf/``) and variants of it, each with random weights (a frame's time
does not depend on them), exported as the pipeline exports it (``export.image``: the folded tail, static
shapes) and run by ONNX Runtime's CPU provider on 2 threads with the runtime's default session options
(threads spin between the ops of a call; 50 ms of sleep before each timed call, so that no other row's
threads spin beside it), rounds interleaved over the rows. One variant is not a config option: the first
tail stage as MobileR2L's ``ConvTranspose`` (kernel 4, stride 2) in place of the 3x3 convolution and
``DepthToSpace(2)`` (its last stage cannot be folded). Prints one table and writes the ``image_graph``
section of ``benchmarks/RESULTS.md``. What the changes cost in quality is measured by training them
(``benchmarks/RESULTS.md``, sections ``image_student_*``).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import Tensor, nn

from benchmarks.device_student import camera, graph_stats
from benchmarks.image_inference import PAUSE_S
from benchmarks.image_train_step import image_profile
from benchmarks.inference import time_rounds
from benchmarks.results import markdown_table, write_section
from export.image import export_image_student
from student.image_model import ImageDecoder, ImageStudent, ImageStudentConfig

BOX = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
CONV_TRANSPOSE = "convtranspose"  # the variant key of the ConvTranspose first stage
VARIANTS: dict[str, dict[str, Any]] = {  # row name -> changes to the profile's shape
    "the CPU profile's shape": {},
    "ReLU instead of GELU": {"activation": "relu"},
    "tail 16 channels": {"tail": 16},
    "body 64 wide": {"width": 64},
    "8 channels a plane": {"channels": 8},
    "12 points a ray": {"n_points": 12},
    "8 points a ray": {"n_points": 8},
    "ReLU, tail 16, 12 points": {"activation": "relu", "tail": 16, "n_points": 12},
    "first tail stage ConvTranspose k4 s2": {CONV_TRANSPOSE: True},
}


class ConvTransposeDecoder(ImageDecoder):
    """:class:`ImageDecoder` whose first tail stage is a ``ConvTranspose`` (kernel 4, stride 2, padding
    1: each output pixel reads 2x2 inputs, 4/9 of a 3x3 stage's products) followed by the activation;
    the other stages as the profile's. Not folded (:meth:`fuse_last_stages` returns ``False``)."""

    def __init__(self, in_dim: int, cfg: ImageStudentConfig):
        super().__init__(in_dim, cfg)
        if len(self.ups) < 2:
            raise ValueError("a ConvTranspose first stage needs a tail of at least two stages (scale >= 4)")
        self.ups[0] = nn.ConvTranspose2d(cfg.width, cfg.tail, 4, stride=2, padding=1)

    def fuse_last_stages(self) -> bool:
        return False

    def upsample(self, x: Tensor) -> Tensor:
        x = self.act(self.ups[0](x))
        for i, up in enumerate(self.ups[1:], start=1):
            x = nn.functional.pixel_shuffle(up(x), 2)
            x = self.act(x) if i < len(self.ups) - 1 else x
        return x


def build(base: ImageStudentConfig, changes: dict[str, Any]) -> ImageStudent:
    """The student of ``base`` with ``changes`` (random weights, seeded)."""
    changes = dict(changes)
    convt = changes.pop(CONV_TRANSPOSE, False)
    torch.manual_seed(0)
    model = ImageStudent(dataclasses.replace(base, **changes), BOX)
    if convt:
        model.decoder = ConvTransposeDecoder(model.decoder.inp.in_channels, model.cfg)
    return model.eval()


def session(proto_bytes: bytes) -> ort.InferenceSession:
    """A CPU session with the runtime's default options and 2 intra-op threads."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(proto_bytes, so, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=400, help="frame side in pixels")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--variants", nargs="*", help="row names to time (default: all)")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = p.parse_args(argv)
    names = args.variants or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variants {unknown}; choose from {list(VARIANTS)}")
    base = image_profile().model.image
    feeds = camera(args.size, 0)
    stats: dict[str, dict[str, Any]] = {}
    runners: dict[str, Callable[[], Any]] = {}
    for name in names:
        model = build(base, VARIANTS[name])
        proto = export_image_student(model, args.size, args.size)
        sess = session(proto.SerializeToString())
        gflop, _, ops, _ = graph_stats(proto)
        with torch.no_grad():
            want = model.render(torch.from_numpy(feeds["c2w"])[None], torch.from_numpy(feeds["K"])[None],
                                args.size, args.size)[0].numpy()
        got = sess.run(None, feeds)[0]
        stats[name] = {"gflop": gflop, "params": sum(t.numel() for t in model.parameters()),
                       "max_abs_diff": float(np.abs(got - want).max()), "ops": ops}
        runners[name] = partial(sess.run, None, feeds)
    times = time_rounds(runners, args.repeats, PAUSE_S)
    base_ms = min(times[names[0]])
    rows, record = [], []
    for name in names:
        best, median = min(times[name]), statistics.median(times[name])
        st = stats[name]
        rows.append([name, round(best, 1), round(median, 1), f"{best / base_ms:.2f}x", round(st["gflop"], 2),
                     f"{st['params'] / 1e6:.3g} M", f"{st['max_abs_diff']:.1e}"])
        record.append({"variant": name, "best_ms": best, "median_ms": median, **st})
    table = markdown_table(["variant", "ms (best)", "ms (median)", "vs the profile's", "GFLOP",
                            "parameters", "max abs diff vs PyTorch"], rows)
    body = (
        f"The CPU profile's image student and variants of it, random weights, one {args.size}x{args.size} "
        f"frame, ONNX Runtime {ort.__version__} CPU provider, 2 intra-op threads, the runtime's default "
        f"session options, {args.repeats} interleaved rounds after a warm-up, {PAUSE_S * 1e3:g} ms of sleep "
        f"before each timed call. The graph is the pipeline's export (folded tail) except the ConvTranspose "
        f"row (`benchmarks/image_graph.py`: its last stage is not folded). GFLOP: convolutions and "
        f"GridSample corner reads (`benchmarks.device_student.graph_stats`).\n\n{table}\n"
    )
    print(table)
    if not args.no_write:
        write_section("image_graph", body)
    return {"size": args.size, "rows": record}


if __name__ == "__main__":
    main()
