"""The student with its ray encoding folded into matrix products, for a faster exported graph.

The student's input is ``[x, sin(2^j x), cos(2^j x)]`` of ``x_k = s + u_k v`` (K points per ray on its
normalised segment: start ``s``, span ``v``, ``u_k = (k + 1/2) / K``). Every ``x`` is a linear function
of the six numbers ``[s, v]``, and ``cos(z) = sin(z + pi/2)``, so the encoding and first layer are

    y = [s, v] @ M + b_y                   # [N, 2 K 3]: the arguments of sin(x) and cos(x)
    s_0, c_0 = split(sin(y))
    s_j, c_j = 2 s c, 1 - 2 s^2            # of octave j - 1: sin and cos of 2^j x, by double angles
    h = relu([s_0 .. s_F-1, c_0 .. c_F-1] @ B + [s, v] @ A + b)   # the raw-x part folded into A

with constant ``M, b_y, A, B, b`` computed from the student in float64. In ONNX this is 2 Gemms, one Sin
over ``2 K 3`` values per ray (not ``2 K 3 F``) and a few small Mul/Sub nodes instead of ~13 elementwise
nodes over the whole encoding and a 1008-wide Concat: the encoding dominates the run time of the int8
graph on the CPU. The double-angle steps double the float32 rounding error per octave, which is the
same ``2^(F-1) * 1e-7`` as rounding the argument ``2^(F-1) x`` of the student's own sine; the export's
parity check bounds the effect on the output.
"""

from __future__ import annotations

import copy
import math
from typing import cast

import torch
from torch import Tensor, nn

from student.model import R2LStudent


class FusedEncodingStudent(nn.Module):
    """``R2LStudent`` with the encoding folded into the first layer (same outputs, fewer graph nodes).

    Args:
        student: a trained student (its weights are copied, not shared).
    """

    background: Tensor  # [3]
    M: Tensor  # [6, 2 K 3]
    b_y: Tensor  # [2 K 3]
    A: Tensor  # [6, width]
    B: Tensor  # [2 K 3 F, width]
    b: Tensor  # [width]

    def __init__(self, student: R2LStudent):
        super().__init__()
        enc, first = student.encoder, cast(nn.Linear, student.head_in[0])
        K, F = enc.n_points, enc.n_freqs
        D = K * 3
        u = (torch.arange(K, dtype=torch.float64) + 0.5) / K  # [K]
        # x[k*3+i] = s_i + u_k v_i, as [s, v] @ M0
        M0 = torch.zeros(6, D, dtype=torch.float64)
        for i in range(3):
            M0[i, i::3] = 1.0
            M0[3 + i, i::3] = u
        W = first.weight.detach().double()  # [width, D * (1 + 2F)]: x, then sin, cos at column d*F + j
        sin_cols = [D + d * F + j for j in range(F) for d in range(D)]  # octave-major, as forward builds
        cos_cols = [c + D * F for c in sin_cols]
        self.n_freqs, self.D = F, D
        self.register_buffer("M", torch.cat([M0, M0], 1).float())  # [6, 2D]
        self.register_buffer("b_y", torch.cat([torch.zeros(D), torch.full((D,), math.pi / 2)]).float())
        self.register_buffer("A", (M0 @ W[:, :D].T).float())  # [6, width]
        self.register_buffer("B", W[:, sin_cols + cos_cols].T.contiguous().float())  # [2DF, width]
        self.register_buffer("b", first.bias.detach().float().clone())
        self.encoder = copy.deepcopy(student.encoder)
        self.blocks = copy.deepcopy(student.blocks)
        self.head_out = copy.deepcopy(student.head_out)
        self.register_buffer("background", student.background.detach().clone())

    def sines(self, sv: Tensor) -> Tensor:
        """``[N, 6]`` segments -> ``[N, 2 K 3 F]`` ``sin`` then ``cos`` of ``2^j x``, octave-major."""
        sc = torch.sin(sv @ self.M + self.b_y)  # [N, 2D]
        s, c = sc[:, : self.D], sc[:, self.D:]
        sins, coss = [s], [c]
        for _ in range(self.n_freqs - 1):
            s, c = 2.0 * s * c, 1.0 - 2.0 * s * s
            sins.append(s)
            coss.append(c)
        return torch.cat(sins + coss, dim=-1)

    def forward(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """``rays_o, rays_d [N, 3]`` -> rgb ``[N, 3]`` (the student's eval-mode output)."""
        start, span, hit = self.encoder.segment(rays_o, rays_d)
        hit = self.encoder.hits(start, span, hit)  # the empty-space grid, if the student has one
        sv = torch.cat([start, span], dim=-1)  # [N, 6]
        pre = sv @ self.A + self.b
        if self.n_freqs:
            pre = pre + self.sines(sv) @ self.B
        rgb = torch.sigmoid(self.head_out(self.blocks(torch.relu(pre))))
        return torch.where(hit[:, None], rgb, self.background)
