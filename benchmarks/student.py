"""Student training speed and quality: Lightning + shard pipeline vs a bare PyTorch loop.

    python -m benchmarks.student [--seconds 60] [--steps 30]

1. Training rays/s, fp32 and bf16 autocast, of (a) a bare loop (model, MSE, fused Adam) over batches
   already in memory and (b) the real stage (``StudentLitModule`` + ``ShardDataModule``: the shards'
   rays read once into memory, the default when they fit in ``train.ray_cache_gb``, or streamed by
   webdataset workers through the shuffle buffer); the ratio is the pipeline + Lightning overhead.
   Both for the CPU profile's network and R2L's (88 layers, W=256, 4096-ray batches).
2. Test PSNR against wall-clock for the CPU profile's distill stage: fp32 vs bf16, and bf16 with
   hard-ray mining.

Shards: ``runs/mic_100/pseudo`` when present, else shards made from the demo scene's training photos
(the benchmark then says so).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from benchmarks.results import markdown_table, write_section
from core.io import write_json
from core.scene_facts import SceneFacts
from core.shards import PseudoMeta, ShardInfo, read_meta, shard_name
from pipeline.config import to_dataclass
from scenes.load import SceneConfig, load_scene
from student.config import StudentConfig, for_scene
from student.data import shard_loader
from student.model import R2LStudent, StudentModelConfig, flops_per_ray, layer_shapes
from student.train import load_inputs, run_stage, validation_batches
from testing.stages import compose

QUALITY_MARKS = (0.25, 0.5, 0.75, 1.0)
PAPER = StudentModelConfig(n_points=16, n_freqs=10, width=256, depth=88)


class StepClock(L.Callback):
    """Times steps after a warm-up, and records (seconds, validation PSNR) pairs."""

    def __init__(self, warmup: int = 5):
        self.warmup, self.t0, self.t_warm, self.t_end, self.steps = warmup, 0.0, 0.0, 0.0, 0
        self.curve: list[tuple[float, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # type: ignore[no-untyped-def]
        self.steps += 1
        if self.steps == self.warmup:
            self.t_warm = time.perf_counter()
        self.t_end = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        psnr = trainer.callback_metrics.get("val/psnr")
        if psnr is not None:
            self.curve.append((time.perf_counter() - self.t0, float(psnr)))

    def rays_per_second(self, batch_size: int) -> float:
        return (self.steps - self.warmup) * batch_size / max(self.t_end - self.t_warm, 1e-9)


def proxy_shards(folder: Path) -> Path:
    """Shards of the demo scene's training photos (10 views each), for runs without a teacher."""
    scene = load_scene(SceneConfig(), splits=("train",))
    train = scene.split("train")
    rgb = train.rgb([1.0, 1.0, 1.0])
    from data_gen.shards import write_shard

    shards = []
    for index, first in enumerate(range(0, train.n_views, 10)):
        views = [{"view_index": i, "rgb": rgb[i], "c2w": train.c2w[i], "K": train.K[i]}
                 for i in range(first, min(first + 10, train.n_views))]
        sha = write_shard(folder / shard_name(index), views)
        shards.append(ShardInfo(shard_name(index), first, len(views), sha))
    facts = SceneFacts(aabb=scene.aabb.tolist(), content_aabb=scene.aabb.tolist(), near=scene.near,
                       far=scene.far, image_size=list(train.hw), K=train.K[0].tolist(), scene_name=scene.name,
                       background=[1.0, 1.0, 1.0])
    meta = PseudoMeta(scene=facts, image_size=list(train.hw), n_views=train.n_views, views_per_shard=10,
                      shards=shards, sampler={"name": "training_photos", "seed": 0}, teacher={})
    write_json(folder / "meta.json", meta.to_dict())
    return folder


def bare_loop(model_cfg: StudentModelConfig, meta: PseudoMeta, bf16: bool, steps: int, batch: int) -> float:
    """Rays/s of a plain loop over in-memory batches (same model, loss and optimizer as the stage)."""
    facts = meta.scene
    box = torch.tensor(facts.content_aabb)
    model = R2LStudent(model_cfg, box, facts.near, facts.far, facts.background).train()
    it = iter(shard_loader(meta, batch, 65536, 0, seed=1))
    batches = [next(it) for _ in range(8)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    warm = 3
    for i in range(steps + warm):
        if i == warm:
            start = time.perf_counter()
        b = batches[i % len(batches)]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = model(b["rays_o"], b["rays_d"])
        loss = ((pred.float() - b["rgb"]) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


def gemm_ceiling(model_cfg: StudentModelConfig, batch: int, bf16: bool, repeats: int = 3) -> float:
    """Rays/s of a step that does nothing but the network's matrix products (a roofline for training).

    Forward, input-gradient and weight-gradient products of every Linear layer, each layer on its own
    activation and gradient buffers (as in a real step, where they come from memory, not from cache),
    best of ``repeats``. No activation functions, residual adds, bias terms or optimizer.
    """
    dtype = torch.bfloat16 if bf16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    layers = [(torch.randn(batch, i, generator=gen).to(dtype), torch.randn(o, i, generator=gen).to(dtype),
               torch.randn(batch, o, generator=gen).to(dtype)) for i, o in layer_shapes(model_cfg)]
    best = float("inf")
    for _ in range(repeats + 1):
        start = time.perf_counter()
        for x, w, _g in layers:
            x @ w.t()
        for k, (x, w, g) in enumerate(reversed(layers)):
            g.t() @ x
            if k < len(layers) - 1:  # no gradient for the encoded rays
                g @ w
        best = min(best, time.perf_counter() - start)
    return batch / best


def stage_run(cfg: StudentConfig, out: Path) -> StepClock:
    """Run the distill stage of ``cfg`` (real data module + Lightning) and time it."""
    meta, scene, background = load_inputs(cfg)
    facts = meta.scene  # type: ignore[union-attr]
    model = R2LStudent(cfg.model, torch.tensor(facts.content_aabb), facts.near, facts.far, background)
    val = validation_batches(scene, background, cfg.eval.val_views, cfg.eval.chunk)
    import student.train as st

    dm = st._stage_datamodule(cfg, "distill", model, meta, scene, background, val, out)
    clock = StepClock()

    build = st.build_trainer

    def with_clock(*a: Any, **k: Any) -> L.Trainer:
        trainer = build(*a, **k)
        trainer.callbacks.append(clock)  # type: ignore[attr-defined]
        return trainer

    st.build_trainer = with_clock  # type: ignore[assignment]
    try:
        run_stage(cfg, "distill", model, dm, out)
    finally:
        st.build_trainer = build  # type: ignore[assignment]
    return clock


def config(pseudo: Path, out: Path, *overrides: str) -> StudentConfig:
    """The demo's (an object's) student config with ``overrides``, its decoder resolved."""
    return for_scene(to_dataclass(compose("student", [
        f"run_dir={out}", f"pseudo_dir={pseudo}", "train.progress_bar=false", "train.resume=false",
        "train.finetune.enabled=false", "train.ckpt_every_steps=100000", "eval.val_views=8", *overrides,
    ]), StudentConfig), forward_facing=False)


def throughput(pseudo: Path, tmp: Path, steps: int) -> list[list[Any]]:
    meta = read_meta(pseudo)
    cpu_model = config(pseudo, tmp).model
    rows: list[list[Any]] = []
    variants = [(label, mcfg, precision, data) for label, mcfg in (("cpu profile", cpu_model),
                                                                   ("paper (88x256)", PAPER))
                for precision in ("fp32", "bf16") for data in ("in memory", "streamed")
                if data == "in memory" or (mcfg is cpu_model and precision == "bf16")]
    for i, (label, mcfg, precision, data) in enumerate(variants):
        arch = [f"model.depth={mcfg.depth}", f"model.width={mcfg.width}", f"model.n_points={mcfg.n_points}",
                f"model.n_freqs={mcfg.n_freqs}"]
        n = steps if mcfg is cpu_model else max(5, steps // 3)  # the paper network is 12x slower
        ceiling = gemm_ceiling(mcfg, 4096, precision == "bf16")
        bare = bare_loop(mcfg, meta, precision == "bf16", n, 4096)
        cfg = config(pseudo, tmp / f"v{i}", *arch, f"train.precision={precision}",
                     f"train.distill.max_steps={n + 5}", "train.distill.max_seconds=null",
                     "train.distill.batch_size=4096", "train.distill.val_every_steps=100000",
                     f"train.ray_cache_gb={2.0 if data == 'in memory' else 0}",
                     "train.hard_mining.enabled=false")  # the bare loop does the same work
        lit = stage_run(cfg, tmp / f"t{i}").rays_per_second(4096)
        rows.append([label, f"{flops_per_ray(mcfg) / 1e6:.2f}", precision, data, round(ceiling), round(bare),
                     round(lit), f"{100 * (bare / lit - 1):+.1f}%"])
        print(rows[-1], flush=True)
    return rows


def quality(pseudo: Path, tmp: Path, seconds: float) -> tuple[list[list[Any]], dict[str, Any]]:
    off = "train.hard_mining.enabled=false"
    variants = {"fp32": ["train.precision=fp32", off], "bf16": ["train.precision=bf16", off],
                "bf16 + hard-ray mining": ["train.precision=bf16", "train.hard_mining.enabled=true"]}
    curves = {}
    for name, overrides in variants.items():
        cfg = config(pseudo, tmp / name.replace(" ", "_"), *overrides, f"train.distill.max_seconds={seconds}",
                     "train.distill.val_every_steps=150")
        curves[name] = stage_run(cfg, tmp / f"q_{name.replace(' ', '_')}").curve
        print(name, curves[name], flush=True)
    rows: list[list[Any]] = []
    for name, curve in curves.items():
        cells = []
        for mark in QUALITY_MARKS:  # the latest validation at or before each share of the budget
            seen = [(t, p) for t, p in curve if t <= mark * seconds + 1.0]
            cells.append(f"{seen[-1][1]:.2f} ({seen[-1][0]:.0f} s)" if seen else "-")
        rows.append([name, *cells])
    return rows, {"curves": curves}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per throughput variant")
    parser.add_argument("--seconds", type=float, default=60.0, help="distill seconds per quality variant")
    parser.add_argument("--pseudo", type=Path, default=Path("runs/mic_100/pseudo"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pseudo, source = args.pseudo, f"teacher pseudo-data `{args.pseudo}`"
        if not (pseudo / "meta.json").is_file():
            pseudo, source = proxy_shards(tmp / "pseudo"), "shards of the demo scene's 100 training photos"
        rows = throughput(pseudo, tmp, args.steps)
        qrows, _ = quality(pseudo, tmp, args.seconds)
    table = markdown_table(["model", "MFLOP/ray", "precision", "stage data", "matmuls only rays/s",
                            "bare loop rays/s", "Lightning + shards rays/s", "overhead"], rows)
    paper_bf16 = next(r for r in rows if r[0].startswith("paper") and r[2] == "bf16")
    marks = [f"val PSNR at {m:.0%} of the budget" for m in QUALITY_MARKS]
    qtable = markdown_table(["variant", *marks], qrows)
    load = os.getloadavg()[0]
    body = (
        f"Data: {source}; batches of 4096 rays; {args.steps} timed steps after a warm-up "
        f"(fewer for the paper network). Load average at the end: {load:.1f} on 2 cores"
        f"{' (a busy machine: the timings are not meaningful)' if load > 2.5 else ''}.\n\n{table}\n\n"
        "\"matmuls only\": a step of nothing but the network's matrix products (forward, input and weight "
        "gradients of every layer, each on its own buffers as in training), the ceiling of any training "
        "loop on this machine before activations, residual adds, biases and the optimizer.\n\n"
        f"Paper architecture with bf16: {paper_bf16[5]} rays/s bare, {paper_bf16[6]} rays/s in the stage, "
        f"against a matmuls-only ceiling of {paper_bf16[4]} (target >= 16000; R2L's own code: about 5200 in "
        "fp32 on this machine).\n\n"
        f"Validation PSNR (dB, 8 test views) against wall-clock, CPU profile distill stage, "
        f"{args.seconds:.0f} s each:\n\n{qtable}\n"
    )
    print(table)
    print(qtable)
    write_section("student", body)


if __name__ == "__main__":
    main()
