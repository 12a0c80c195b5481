"""Bad camera poses that every pose validator must refuse, with a fragment of its one-line message.

Shared by the tests of :func:`core.cameras.check_c2w` and of any other copy of the same check (the
torch-free runtime's): plain data, no imports of ours, so that a test of a torch-free module can use it.
Each case is ``(name, value, fragment)``; the message is ``"<source> <problem>"`` and holds ``fragment``.
"""

from __future__ import annotations

import math


def _eye() -> list[list[float]]:
    return [[1.0 if r == c else 0.0 for c in range(4)] for r in range(4)]


def _with(row: int, col: int, value: float) -> list[list[float]]:
    m = _eye()
    m[row][col] = value
    return m


def _scaled_rotation(scale: float) -> list[list[float]]:
    m = _eye()
    for r in range(3):
        m[r][r] = scale
    return m


# a rigid rotation about z by 0.5 rad, placed off the origin: the base of the cases that must stay rigid
_C, _S = math.cos(0.5), math.sin(0.5)
ROTATED = [[_C, -_S, 0.0, 1.0], [_S, _C, 0.0, -2.0], [0.0, 0.0, 1.0, 3.0], [0.0, 0.0, 0.0, 1.0]]

BAD_POSES: list[tuple[str, object, str]] = [
    ("nan entry", _with(0, 3, math.nan), "is not finite"),
    ("infinite entry", _with(1, 1, math.inf), "is not finite"),
    ("3x3 rotation only", [row[:3] for row in _eye()[:3]], "got shape [3, 3]"),
    ("2x2", [[1.0, 0.0], [0.0, 1.0]], "got shape [2, 2]"),
    ("4x3 (transposed 3x4)", [row[:3] for row in _eye()], "got shape [4, 3]"),
    ("a batch of two poses", [_eye(), _eye()], "got shape [2, 4, 4]"),
    ("a scalar", 1.0, "got shape []"),
    ("ragged rows", [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]], "matrix of numbers"),
    ("text", [["a", "b", "c", "d"]] * 4, "matrix of numbers"),
    ("rotation scaled x2", _scaled_rotation(2.0), "not rigid"),
    ("rotation scaled 3% (beyond the tolerance)", _scaled_rotation(1.03), "not rigid"),
    ("sheared rotation", _with(0, 1, 0.5), "not rigid"),
    ("mirror (determinant -1)", _with(0, 0, -1.0), "not rigid"),
    ("last row 0.3 0 0 1", _with(3, 0, 0.3), "not rigid (last row"),
    ("last row 0 0 0 2", _with(3, 3, 2.0), "not rigid (last row"),
    ("last row all zero", _with(3, 3, 0.0), "need 0 0 0 1"),
]
