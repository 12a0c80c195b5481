"""The run section every stage's config starts with, and the one place a device name becomes a device.

Each stage's config (``teacher.config.TeacherConfig``, ``student.config.StudentConfig``, ...) derives
from :class:`RunConfig`, so ``scene.*``, ``run_dir``, ``seed``, ``device`` and ``threads`` are the same
top-level keys, with the same defaults, in every stage. ``device`` is resolved here only: into a torch
device (:func:`resolve_device`), a Lightning accelerator (:func:`lightning_accelerator`) and a collective
backend (:func:`collective_backend`). (ONNX Runtime providers: the torch-free runtime maps ``device`` itself,
``export.runtime.render.providers_for``.)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import torch

from core.checks import at_least, torch_device
from core.errors import UserError
from scenes.load import SceneConfig

# the scene's folder name (the demo scene: mic_100) unless scene.name is set (resolver: pipeline.config)
RUN_DIR_DEFAULT = "runs/${scene_name:${scene.path},${scene.name}}"


@dataclass
class RunConfig:
    """The run section shared by every stage.

    Attributes:
        scene: the scene (:class:`scenes.load.SceneConfig`).
        run_dir: the run's folder; each stage reads its inputs and writes its outputs below it.
        seed: random seed of everything a stage draws (poses, batches, initial weights, parity rays).
        device: ``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; stages that
            run ONNX Runtime map it to execution providers.
        threads: intra-op threads of torch or ONNX Runtime (``None``: the library's default).

    Only ``seed`` counts for provenance (:func:`pipeline.provenance.provenance_fields`): the scene counts by
    its content, the others do not change what a stage makes.
    """

    # the loaded scene counts for provenance by its content (pipeline.provenance.scene_fingerprint)
    scene: SceneConfig = field(default_factory=SceneConfig, metadata={"provenance": False})
    run_dir: str = field(default=RUN_DIR_DEFAULT, metadata={"provenance": False})
    seed: int = 0
    device: str = field(default="auto", metadata={"provenance": False})
    threads: int | None = field(default=None, metadata={"provenance": False})

    def validate(self) -> None:
        """Raise :class:`core.checks.ConfigValueError` for an unknown device or a thread count below 1."""
        torch_device(self, "device")
        at_least(self, 1, "threads")


def local_rank() -> int:
    """This process's GPU index on its node (``LOCAL_RANK`` of torchrun / Lightning; 0 without one)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def free_port() -> int:
    """A TCP port free on the loopback interface now: the rendezvous of a process group this process
    spawns itself (``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_device(name: str) -> torch.device:
    """The torch device of a validated ``device`` value (``auto``: ``cuda:LOCAL_RANK`` when CUDA is here,
    else the CPU).

    Raises:
        UserError: ``cuda`` or ``cuda:N`` where torch sees no CUDA GPU.
    """
    if name == "auto":
        return torch.device("cuda", local_rank()) if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        # profile=gpu asks for CUDA: stop here, before any training, rather than train GPU-sized on the CPU
        raise UserError(f"device={name}: no CUDA GPU is visible here (torch.cuda.is_available() is False); "
                        "use device=cpu or profile=cpu")
    return torch.device(name)


def lightning_accelerator(name: str) -> str:
    """Lightning's ``accelerator`` for a ``device`` value: ``"gpu"`` or ``"cpu"``."""
    return "gpu" if resolve_device(name).type == "cuda" else "cpu"


def collective_backend(requested: str = "auto") -> str:
    """``torch.distributed`` backend: ``requested`` unless ``auto`` (NCCL with CUDA, else gloo)."""
    if requested != "auto":
        return requested
    return "nccl" if torch.cuda.is_available() else "gloo"


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads when ``threads`` is given (``None`` leaves torch's default)."""
    if threads:
        torch.set_num_threads(threads)
