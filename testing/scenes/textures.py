"""Procedural textures: functions of surface points ``p [N, 3]`` and normals ``n [N, 3]`` giving albedo
``[N, 3]`` in [0, 1] (the :data:`testing.scenes.raycast.Texture` signature), pure numpy.

Smooth ones (:func:`normal_color`, :func:`stripes`, :func:`marble`) and detail-rich ones, whose content
sits near the pixel scale of a few-hundred-pixel view: :func:`checker` at a fine ``scale``, :func:`bars`
(thin lines) and :func:`glyphs` (rows of 5x7 bitmap characters with word gaps, like printed text). The
detail-rich ones read 2D coordinates from :func:`face_uv`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from testing.scenes.raycast import Texture

Color = Sequence[float]
_NOISE_TABLE = np.random.default_rng(7).random((3, 1 << 16))  # lattice values of the noise, per channel
# 5x7 bitmap characters, one string of 7 rows of 5 pixels each (1 = ink)
_FONT = {
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001", "E": "11111 10000 10000 11110 10000 10000 11111",
    "H": "10001 10001 10001 11111 10001 10001 10001", "K": "10001 10010 10100 11000 10100 10010 10001",
    "R": "11110 10001 10001 11110 10100 10010 10001", "T": "11111 00100 00100 00100 00100 00100 00100",
}
GLYPHS = np.array([[[c == "1" for c in row] for row in rows.split()] for rows in _FONT.values()])  # [G, 7, 5]


def _hash(*ints: np.ndarray) -> np.ndarray:
    """A spatial hash of integer arrays (the hash grid's primes), in [0, 65536)."""
    h = np.zeros(np.broadcast(*ints).shape, dtype=np.int64)
    for value, prime in zip(ints, (73856093, 19349663, 83492791, 2654435761)):
        h ^= np.asarray(value, dtype=np.int64) * prime
    return h & 0xFFFF


def constant(color: Color) -> Texture:
    """One color everywhere."""
    return lambda p, n: np.tile(np.asarray(color, dtype=np.float64), (len(p), 1))


def normal_color(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """The normal as a color, ``0.5 + 0.5 n``: every direction a different, smooth color."""
    return 0.5 + 0.5 * n


def checker(scale: float, odd: Color, even: Color) -> Texture:
    """A 3D checkerboard of cubes ``1 / scale`` wide: ``odd`` where the cell indices sum to an odd number."""

    def texture(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        checks = np.floor(p * scale).sum(-1) % 2
        return np.where(checks[:, None] > 0, np.asarray(odd), np.asarray(even))

    return texture


def stripes(freq: float, a: Color, b: Color) -> Texture:
    """Bands of latitude (on a sphere: ``sin(freq * n_z)`` > 0 is ``a``)."""
    return lambda p, n: np.where(np.sin(freq * n[:, 2:3]) > 0, np.asarray(a), np.asarray(b))


def _value_noise(p: np.ndarray, freq: float) -> np.ndarray:
    """``[N, 3]`` smooth noise in [0, 1] of points ``p [N, 3]`` (trilinear over a hashed lattice)."""
    q = p * freq
    i0 = np.floor(q).astype(np.int64)
    f = q - i0
    f = f * f * (3 - 2 * f)  # smoothstep: no visible lattice creases
    out = np.zeros(p.shape[:-1] + (3,))
    for corner in range(8):
        o = np.array([(corner >> 0) & 1, (corner >> 1) & 1, (corner >> 2) & 1])
        idx = i0 + o
        h = (idx[..., 0] * 73856093) ^ (idx[..., 1] * 19349663) ^ (idx[..., 2] * 83492791)
        w = np.prod(np.where(o > 0, f, 1 - f), axis=-1)
        out += w[..., None] * _NOISE_TABLE[:, h & 0xFFFF].transpose(*range(1, h.ndim + 1), 0)
    return out


def marble(p: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Marble-like bands of multi-octave value noise: sharp, irregular edges at every scale and no
    repeating pattern, so that SIFT features match unambiguously (plain smooth noise gave ~200 features
    per 400 px photo)."""
    weights = [0.6**k for k in range(5)]
    noise = sum(w * _value_noise(p, 2.0 ** (k + 1)) for k, w in enumerate(weights)) / sum(weights)
    bands = 0.5 + 0.5 * np.sin(2 * math.pi * 4.0 * noise)
    luminance = bands[..., :1]
    return np.clip(0.1 + 0.8 * (0.6 * luminance + 0.4 * bands), 0.0, 1.0)


def face_uv(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2D coordinates ``u, v [N]`` on a surface: ``p`` without the axis the normal is closest to (exact on
    a box face or an axis plane, a triplanar projection on a sphere), and that axis ``[N]``."""
    axis = np.abs(n).argmax(-1)
    rows = np.arange(len(p))
    u, v = p[rows, (axis + 1) % 3], p[rows, (axis + 2) % 3]
    return u, v, axis


def bars(period: float, width: float, ink: Color, under: Texture, both: bool = False) -> Texture:
    """Thin bars ``width`` wide every ``period`` along ``u`` of :func:`face_uv` (and ``v`` too when
    ``both``: a grid), in ``ink`` over the texture ``under``."""

    def texture(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        u, v, _ = face_uv(p, n)
        on = np.mod(u, period) < width
        if both:
            on |= np.mod(v, period) < width
        return np.where(on[:, None], np.asarray(ink), under(p, n))

    return texture


def glyphs(height: float, ink: Color, under: Texture, seed: int = 0, blanks: float = 0.2) -> Texture:
    """Lines of text-like 5x7 bitmap characters ``height`` tall (one font pixel is ``height / 9``: one
    pixel of margin around each character), in ``ink`` over ``under``.

    Each character cell shows a character picked by a hash of the cell (and the face's axis and ``seed``);
    a fraction ``blanks`` of the cells is left empty, so the lines break into words.
    """

    def texture(p: np.ndarray, n: np.ndarray) -> np.ndarray:
        u, v, axis = face_uv(p, n)
        px = height / 9
        col, row = np.floor(u / px).astype(np.int64), np.floor(v / px).astype(np.int64)
        cell_u, cell_v = col // 7, row // 9  # a cell: 5 columns + 2 of spacing, 7 rows + 2
        x, y = col - 7 * cell_u - 1, row - 9 * cell_v - 1
        inside = (x >= 0) & (x < 5) & (y >= 0) & (y < 7)
        h = _hash(cell_u, cell_v, axis, np.full_like(axis, seed))
        blank = h % 100 < 100 * blanks
        char = (h // 100) % len(GLYPHS)
        on = inside & ~blank & GLYPHS[char, 6 - np.clip(y, 0, 6), np.clip(x, 0, 4)]
        return np.where(on[:, None], np.asarray(ink), under(p, n))

    return texture
