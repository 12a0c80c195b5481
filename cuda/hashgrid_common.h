// Multiresolution hash encoding: the per-point, per-level math shared by the CPU (C++/OpenMP) and
// CUDA implementations, so the two cannot drift. Plain C++ only (no torch, no CUDA runtime headers):
// every function is usable on host and device.
//
// The layout is tiny-cuda-nn's HashGrid and matches cuda/hashgrid_ref.py exactly:
//   p = x * scale + 0.5 (two float32 roundings, like PyTorch: no fused multiply-add),
//   corners floor(p) + {0,1}^3 (corner c has bit d = (c >> d) & 1),
//   weights prod_d (bit ? frac_d : 1 - frac_d) multiplied in the order d = 0, 1, 2,
//   entry = dense row-major index (dense level) or the xor-prime hash (uint32), modulo the level size.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define HG_HD __host__ __device__ __forceinline__
#else
#define HG_HD inline
#include <cmath>
#endif

namespace hashgrid {

constexpr uint32_t kPrime1 = 2654435761u;
constexpr uint32_t kPrime2 = 805459861u;
constexpr int kMaxLevels = 32;

// One level of the grid (built from HashGridSpec by the binding layer).
struct Level {
  float scale;        // s_l
  int32_t dense;      // 1: dense row-major index, 0: spatial hash
  int64_t resolution; // R_l
  int64_t size;       // T_l entries
  int64_t offset;     // first entry of the level in the flat table
};

// A point's cell within one level: integer base corner and fractional position.
struct Cell {
  int64_t base[3];
  float frac[3];
};

// a * b + c rounded twice (PyTorch computes x * scale and + 0.5 as two ops). Host code is compiled
// with -ffp-contract=off so the compiler does not fuse it either.
HG_HD float mul_add_rn(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(a, b), c);
#else
  return a * b + c;
#endif
}

HG_HD Cell make_cell(const float* x, float scale) {
  Cell cell;
  for (int d = 0; d < 3; ++d) {
    const float p = mul_add_rn(x[d], scale, 0.5f);
    const float f = floorf(p);
    cell.base[d] = static_cast<int64_t>(f);
    cell.frac[d] = p - f;
  }
  return cell;
}

// Entry index within the level of integer corner (i, j, k).
HG_HD int64_t grid_index(int64_t i, int64_t j, int64_t k, const Level& lv) {
  if (lv.dense) {
    int64_t idx = i + j * lv.resolution + k * lv.resolution * lv.resolution;
    if (static_cast<uint64_t>(idx) >= static_cast<uint64_t>(lv.size)) {  // rare: top faces, outside [0,1]
      idx %= lv.size;
      if (idx < 0) idx += lv.size;  // floor modulo, like torch.remainder
    }
    return idx;
  }
  const uint32_t h = static_cast<uint32_t>(i) ^ (static_cast<uint32_t>(j) * kPrime1) ^
                     (static_cast<uint32_t>(k) * kPrime2);
  // Hashed levels hold exactly 2^log2_hashmap_size entries (checked by the binding): mask, not modulo.
  return static_cast<int64_t>(h & static_cast<uint32_t>(lv.size - 1));
}

// Flat entry (level offset included) of corner c of a cell.
HG_HD int64_t corner_entry(int c, const Cell& cell, const Level& lv) {
  return lv.offset + grid_index(cell.base[0] + (c & 1), cell.base[1] + ((c >> 1) & 1),
                                cell.base[2] + ((c >> 2) & 1), lv);
}

// Trilinear weight of corner c.
HG_HD float corner_weight(int c, const Cell& cell) {
  const float w0 = (c & 1) ? cell.frac[0] : 1.0f - cell.frac[0];
  const float w1 = (c & 2) ? cell.frac[1] : 1.0f - cell.frac[1];
  const float w2 = (c & 4) ? cell.frac[2] : 1.0f - cell.frac[2];
  return w0 * w1 * w2;
}

// d(weight of corner c) / d(frac_d) for d = 0, 1, 2.
HG_HD void corner_weight_grad(int c, const Cell& cell, float dw[3]) {
  float w[3], s[3];
  for (int d = 0; d < 3; ++d) {
    const bool bit = (c >> d) & 1;
    w[d] = bit ? cell.frac[d] : 1.0f - cell.frac[d];
    s[d] = bit ? 1.0f : -1.0f;
  }
  dw[0] = s[0] * w[1] * w[2];
  dw[1] = s[1] * w[0] * w[2];
  dw[2] = s[2] * w[0] * w[1];
}

// Forward of one point at one level: out[f] = sum_c w_c table[entry_c][f].
template <int F>
HG_HD void encode_level(const float* x, const float* __restrict__ params, const Level& lv,
                        float* __restrict__ out) {
  const Cell cell = make_cell(x, lv.scale);
  float acc[F];
  for (int f = 0; f < F; ++f) acc[f] = 0.0f;
  for (int c = 0; c < 8; ++c) {
    const float w = corner_weight(c, cell);
    const float* entry = params + corner_entry(c, cell, lv) * F;
    for (int f = 0; f < F; ++f) acc[f] += w * entry[f];
  }
  for (int f = 0; f < F; ++f) out[f] = acc[f];
}

// Backward into the table of one point at one level: grad_params[entry_c][f] += w_c * grad[f].
// `add(ptr, value)` is atomicAdd on the GPU. (The CPU kernel runs the same corner functions over blocks
// of points, so that they vectorise, and adds plainly: each thread owns whole levels.)
template <int F, class Add>
HG_HD void backward_level(const float* x, const float* grad, const Level& lv, float* grad_params,
                          Add add) {
  const Cell cell = make_cell(x, lv.scale);
  for (int c = 0; c < 8; ++c) {
    const float w = corner_weight(c, cell);
    float* entry = grad_params + corner_entry(c, cell, lv) * F;
    for (int f = 0; f < F; ++f) add(entry + f, w * grad[f]);
  }
}

// Gradient with respect to the point of one level: dx[d] += scale * sum_c dw_c/dfrac_d <grad, entry_c>.
template <int F>
HG_HD void input_grad_level(const float* x, const float* grad, const float* __restrict__ params,
                            const Level& lv, float* dx) {
  const Cell cell = make_cell(x, lv.scale);
  float dfrac[3] = {0.0f, 0.0f, 0.0f};
  for (int c = 0; c < 8; ++c) {
    const float* entry = params + corner_entry(c, cell, lv) * F;
    float dot = 0.0f;
    for (int f = 0; f < F; ++f) dot += grad[f] * entry[f];
    float dw[3];
    corner_weight_grad(c, cell, dw);
    for (int d = 0; d < 3; ++d) dfrac[d] += dot * dw[d];
  }
  for (int d = 0; d < 3; ++d) dx[d] += dfrac[d] * lv.scale;
}

}  // namespace hashgrid

// Dispatch a runtime feature count onto a compile-time F (the supported set: 1, 2, 4, 8), shared by
// the CPU and CUDA implementations; ON_UNSUPPORTED runs for any other value.
#define HG_DISPATCH_F(F_VALUE, CALL, ON_UNSUPPORTED)     \
  switch (F_VALUE) {                                     \
    case 1: { constexpr int F = 1; CALL; break; }        \
    case 2: { constexpr int F = 2; CALL; break; }        \
    case 4: { constexpr int F = 4; CALL; break; }        \
    case 8: { constexpr int F = 8; CALL; break; }        \
    default: ON_UNSUPPORTED;                             \
  }
