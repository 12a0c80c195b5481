"""Scene-fact records, good and bad: the one list both validators of the record are held to.

``core.scene_facts.SceneFacts.from_dict`` (the one definition: pseudo-data, checkpoints, export) and its
torch-free twin ``export.runtime.meta.SceneFacts.from_dict`` (the ONNX runtime's reading of
``lightfield.scene``) must accept :data:`GOOD` records and refuse every :data:`BAD` one with one line that
names the source and the word given with the case (``tests/test_scene_facts.py``). Plain Python, so a
case added here is checked against both.
"""

from __future__ import annotations

import base64
from typing import Any

DROP = object()  # a key to leave out of the record

MINIMAL: dict[str, Any] = {
    "aabb": [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0],
    "content_aabb": [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5],
    "near": 1.0,
    "far": 5.0,
    "image_size": [16, 16],
    "K": [[8.0, 0.0, 8.0], [0.0, 8.0, 8.0], [0.0, 0.0, 1.0]],
    "scene_name": "s",
    "background": [1.0, 1.0, 1.0],
}
FULL: dict[str, Any] = {  # every optional record present
    **MINIMAL,
    "camera_convention": "opencv",
    "scene_kind": "forward",
    "ndc": {"c2w": [[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], "scale": [1.5, 1.5],
            "near": 1.0},
    "occupancy": {"resolution": 2, "bits": base64.b64encode(bytes([0b10100000])).decode()},
    "rig": {"kind": "object", "center": [0.0, 0.0, 0.0], "up": [0.0, 0.0, 1.0], "radius": 4.0,
            "elevation": 0.3},
}
GOOD = {"minimal": MINIMAL, "full": FULL}


def record(**changes: Any) -> dict[str, Any]:
    """:data:`MINIMAL` with ``changes`` (a value of :data:`DROP` leaves its key out)."""
    merged = {**MINIMAL, **changes}
    return {k: v for k, v in merged.items() if v is not DROP}


# id -> (record, a word both one-line errors contain)
BAD: dict[str, tuple[Any, str]] = {
    "not-an-object": (["aabb"], "object"),
    "missing-K": (record(K=DROP), "K"),
    "missing-scene-name": (record(scene_name=DROP), "scene_name"),
    "unknown-key": (record(colour=[1, 0, 0]), "colour"),
    "aabb-5-numbers": (record(aabb=[-1.0, -1, -1, 1, 1]), "aabb"),
    "aabb-inverted": (record(aabb=[1.0, -1, -1, -1, 1, 1]), "aabb"),
    "content-box-5-numbers": (record(content_aabb=[0.0, 0, 0, 1, 1]), "content_aabb"),
    "content-box-flat": (record(content_aabb=[0.0, 0, 0, 1, 0, 1]), "content_aabb"),
    "near-eq-far": (record(near=5.0, far=5.0), "near"),
    "near-gt-far": (record(near=6.0), "near"),
    "near-negative": (record(near=-1.0), "near"),
    "far-infinite": (record(far="inf"), "near"),
    "near-a-word": (record(near="far"), "malformed"),
    "K-2x3": (record(K=[[8.0, 0, 8], [0, 8.0, 8]]), "K"),
    "K-zero-focal": (record(K=[[0.0, 0, 8], [0, 8.0, 8], [0, 0, 1]]), "K"),
    "image-size-zero": (record(image_size=[0, 16]), "image_size"),
    "image-size-3": (record(image_size=[16, 16, 3]), "image_size"),
    "background-2": (record(background=[1.0, 1.0]), "background"),
    "convention-opengl": (record(camera_convention="opengl"), "convention"),
    "scene-kind-indoor": (record(scene_kind="indoor"), "scene_kind"),
    "ndc-3x3": (record(ndc={"c2w": [[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], "scale": [1.0, 1.0],
                            "near": 1.0}), "ndc"),
    "ndc-zero-near": (record(ndc={**FULL["ndc"], "near": 0.0}), "ndc"),
    "occupancy-short": (record(occupancy={"resolution": 4, "bits": "AA=="}), "occupancy"),
    "occupancy-no-bits": (record(occupancy={"resolution": 2}), "occupancy"),
    "rig-kind": (record(rig={"kind": "spiral", "center": [0.0, 0.0, 0.0]}), "rig"),
    "rig-center-2": (record(rig={"kind": "object", "center": [0.0, 0.0]}), "rig"),
}
