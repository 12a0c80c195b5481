"""The student with its ray encoding folded into matrix products, for a faster exported graph.

The student's input is ``[x, sin(2^j x), cos(2^j x)]`` of ``x_k = s + u_k v`` (K points per ray on its
normalised segment: start ``s``, span ``v``, ``u_k = (k + 1/2) / K``). Every ``x`` and every ``2^j x`` is
a linear function of the six numbers ``[s, v]``, and ``cos(z) = sin(z + pi/2)``, so the encoding and first
layer are

    y = [s, v] @ M + b_y                  # [N, 2 K 3 F]: all sine and cosine arguments
    h = relu(sin(y) @ B + [s, v] @ A + b)   # the first layer, its raw-x part folded into A

with constant ``M, b_y, A, B, b`` computed from the student in float64. In ONNX this is 2 Gemms, one Sin
and an Add instead of ~13 elementwise nodes and a 1008-wide Concat: the encoding dominates the run time
of the int8 graph on the CPU. The values equal the student's up to float32 rounding of the arguments
(about ``2^(F-1) * 1e-7`` rad); the export's parity check bounds the effect on the output.
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
    M: Tensor  # [6, 2 K 3 F]
    b_y: Tensor  # [2 K 3 F]
    A: Tensor  # [6, width]
    B: Tensor  # [2 K 3 F, width]
    b: Tensor  # [width]

    def __init__(self, student: R2LStudent):
        super().__init__()
        enc, first = student.encoder, cast(nn.Linear, student.head_in[0])
        K, F = enc.n_points, enc.n_freqs
        u = (torch.arange(K, dtype=torch.float64) + 0.5) / K  # [K]
        # x[k*3+i] = s_i + u_k v_i, as [s, v] @ M0 + b0
        M0 = torch.zeros(6, K * 3, dtype=torch.float64)
        for i in range(3):
            M0[i, i::3] = 1.0
            M0[3 + i, i::3] = u
        b0 = torch.zeros(K * 3, dtype=torch.float64)
        freqs = 2.0 ** torch.arange(F, dtype=torch.float64)
        Mf = (M0[:, :, None] * freqs).reshape(6, K * 3 * F)  # column (k*3+i)*F + j, as the encoder flattens
        bf = (b0[:, None] * freqs).reshape(-1)
        W = first.weight.detach().double()  # [width, K*3*(1+2F)]
        n_x = K * 3
        self.register_buffer("M", torch.cat([Mf, Mf], 1).float())  # [6, 2*K*3*F]
        self.register_buffer("b_y", torch.cat([bf, bf + math.pi / 2]).float())
        self.register_buffer("A", (M0 @ W[:, :n_x].T).float())  # [6, width]
        self.register_buffer("B", W[:, n_x:].T.contiguous().float())  # [2*K*3*F, width]
        self.register_buffer("b", (first.bias.detach().double() + b0 @ W[:, :n_x].T).float())
        self.encoder = copy.deepcopy(student.encoder)
        self.blocks = copy.deepcopy(student.blocks)
        self.head_out = copy.deepcopy(student.head_out)
        self.register_buffer("background", student.background.detach().clone())

    def forward(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """``rays_o, rays_d [N, 3]`` -> rgb ``[N, 3]`` (the student's eval-mode output)."""
        start, span, hit = self.encoder.segment(rays_o, rays_d)
        sv = torch.cat([start, span], dim=-1)  # [N, 6]
        y = sv @ self.M + self.b_y  # [N, 2*K*3*F]
        h = torch.relu(torch.sin(y) @ self.B + sv @ self.A + self.b)
        rgb = torch.sigmoid(self.head_out(self.blocks(h)))
        return torch.where(hit[:, None], rgb, self.background)
