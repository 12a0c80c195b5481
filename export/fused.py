"""The student with its ray encoding folded into matrix products, for a faster exported graph.

The student's input is ``[x, sin(2^j x), cos(2^j x)]`` of ``x = (o + t_k d - c) / h`` (K points per
ray, box centre ``c``, half extent ``h``). Every ``x`` and every ``2^j x`` is an affine function of the six
numbers ``[o, d]``, and ``cos(z) = sin(z + pi/2)``, so the encoding and first layer are

    y = [o, d] @ M + b_y                  # [N, 2 K 3 F]: all sine and cosine arguments
    h = relu(sin(y) @ B + [o, d] @ A + b)   # the first layer, its raw-x part folded into A

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

    M: Tensor  # [6, 2 K 3 F]
    b_y: Tensor  # [2 K 3 F]
    A: Tensor  # [6, width]
    B: Tensor  # [2 K 3 F, width]
    b: Tensor  # [width]

    def __init__(self, student: R2LStudent):
        super().__init__()
        enc, first = student.encoder, cast(nn.Linear, student.head_in[0])
        K, F = enc.n_points, enc.n_freqs
        center, half = cast(Tensor, enc.center).double(), cast(Tensor, enc.half_extent).double()
        t = enc.near + (enc.far - enc.near) * (torch.arange(K, dtype=torch.float64) + 0.5) / K  # [K]
        # x[k*3+i] = o_i / h_i + d_i t_k / h_i - c_i / h_i, as [o, d] @ M0 + b0
        M0 = torch.zeros(6, K * 3, dtype=torch.float64)
        for i in range(3):
            M0[i, i::3] = 1.0 / half[i]
            M0[3 + i, i::3] = t / half[i]
        b0 = (-center / half).repeat(K)  # [K*3]
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
        self.blocks = copy.deepcopy(student.blocks)
        self.head_out = copy.deepcopy(student.head_out)

    def forward(self, rays_o: Tensor, rays_d: Tensor) -> Tensor:
        """``rays_o, rays_d [N, 3]`` -> rgb ``[N, 3]`` (the student's eval-mode output)."""
        od = torch.cat([rays_o, rays_d], dim=-1)  # [N, 6]
        y = od @ self.M + self.b_y  # [N, 2*K*3*F]
        h = torch.relu(torch.sin(y) @ self.B + od @ self.A + self.b)
        return torch.sigmoid(self.head_out(self.blocks(h)))
