"""The renderable teacher: what evaluation, data generation and benchmarks use of a trained teacher.

:class:`teacher.model.Teacher` and :class:`teacher.xl.model.PartitionedTeacher` (every NeRF-XL region in
one process) both satisfy :class:`RenderableTeacher`; :func:`teacher.checkpoint.load_teacher` returns
either, and callers type against the protocol, never ``Any``. :class:`RayRenderer` is the part that
evaluation needs, which a NeRF-XL rank's :class:`teacher.xl.distributed.RegionWorker` (one region,
rendering whole rays together with the other ranks) satisfies too.
"""

from __future__ import annotations

from typing import Protocol, Self

from torch import Tensor

from core.ndc import NDCSpace


class RayRenderer(Protocol):
    """Renders world rays onto a background."""

    @property
    def aabb(self) -> Tensor:
        """``[6]`` scene box (its device is the renderer's)."""
        ...

    # Teacher.render_rays and PartitionedTeacher.render_rays restate this signature: a Protocol is
    # satisfied structurally, so the shared lines are the contract, not a copy to factor out
    def render_rays(
        self,
        rays_o: Tensor,  # [N, 3]
        rays_d: Tensor,  # [N, 3]
        background: Tensor,  # [3] or [N, 3]
        chunk: int | None = None,
    ) -> dict[str, Tensor]:
        """``rgb [N, 3]``, ``depth [N]``, ``opacity [N]`` (and more) of world rays, ``chunk`` at a time."""
        ...

    def eval(self) -> Self:
        """Switch to inference (no training-time randomness); returns itself."""
        ...


class RenderableTeacher(RayRenderer, Protocol):
    """A trained teacher: a :class:`RayRenderer` that also reports its ray range and occupied space."""

    @property
    def near(self) -> float:
        """Ray start distance."""
        ...

    @property
    def far(self) -> float:
        """Ray end distance."""
        ...

    @property
    def ndc(self) -> NDCSpace | None:
        """NDC frame of a forward-facing scene (``None``: boxes, near and far are in the world frame)."""
        ...

    @property
    def backend(self) -> str:
        """The hash-grid backend in use."""
        ...

    def content_aabb(self) -> Tensor:
        """``[6]`` box around the occupied cells: rays that miss it render as pure background."""
        ...

    def occupied_cells(self) -> list[tuple[Tensor, Tensor]]:
        """``(binary [R^3], aabb [6])`` of each occupancy grid: samples outside its cells are dropped."""
        ...
