// Hash-grid encoding on the CPU: C++/OpenMP over raw pointers (see hashgrid_kernels.h).
//
// Forward: threads take chunks of points and loop over levels inside a chunk, so a chunk's output rows
// stay in cache; within a level, blocks of 64 points compute their corners first (vectorised), then
// gather. Backward into the table: each thread owns whole levels (levels are disjoint slices of
// the table) and walks all points in order, so there are no atomics, no races, and the result is the
// same for any number of threads.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "hashgrid_kernels.h"

namespace hashgrid {
namespace {

constexpr int64_t kChunk = 2048;
constexpr int kBlock = 64;

// Corner entries and weights of points [begin, begin + count) at one level, with the shared header
// math, in a loop simple enough for the compiler to vectorise (AVX-512 with -march=native: about 2x
// over a fused per-point loop). The gathers and scatters that follow read these small arrays.
inline void block_corners(const float* __restrict__ x, int64_t begin, int count, const Level& lv,
                          int64_t (*__restrict__ entry)[kBlock], float (*__restrict__ weight)[kBlock]) {
  for (int j = 0; j < count; ++j) {
    const Cell cell = make_cell(x + 3 * (begin + j), lv.scale);
    for (int c = 0; c < 8; ++c) {
      entry[c][j] = corner_entry(c, cell, lv);
      weight[c][j] = corner_weight(c, cell);
    }
  }
}

template <int F>
void forward_impl(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                  int n_levels, int n_threads) {
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  const int64_t row = static_cast<int64_t>(n_levels) * F;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    alignas(64) int64_t entry[8][kBlock];
    alignas(64) float weight[8][kBlock];
    const int64_t end = std::min(n, (chunk + 1) * kChunk);
    for (int l = 0; l < n_levels; ++l) {
      const Level lv = levels[l];
      for (int64_t b = chunk * kChunk; b < end; b += kBlock) {
        const int count = static_cast<int>(std::min<int64_t>(kBlock, end - b));
        block_corners(x, b, count, lv, entry, weight);
        for (int j = 0; j < count; ++j) {
          float acc[F];
          for (int f = 0; f < F; ++f) acc[f] = 0.0f;
          for (int c = 0; c < 8; ++c) {
            const float* e = params + entry[c][j] * F;
            for (int f = 0; f < F; ++f) acc[f] += weight[c][j] * e[f];
          }
          float* o = out + (b + j) * row + l * F;
          for (int f = 0; f < F; ++f) o[f] = acc[f];
        }
      }
    }
  }
}

template <int F>
void backward_params_impl(const float* x, const float* grad_out, float* grad_params, int64_t n,
                          const Level* levels, int n_levels, int n_threads) {
  // Largest levels first, so that dynamic scheduling balances the threads.
  std::vector<int> order(n_levels);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [levels](int a, int b) { return levels[a].size > levels[b].size; });
  const int64_t row = static_cast<int64_t>(n_levels) * F;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int k = 0; k < n_levels; ++k) {
    alignas(64) int64_t entry[8][kBlock];
    alignas(64) float weight[8][kBlock];
    const int l = order[k];
    const Level lv = levels[l];
    std::memset(grad_params + lv.offset * F, 0, sizeof(float) * lv.size * F);
    for (int64_t b = 0; b < n; b += kBlock) {
      const int count = static_cast<int>(std::min<int64_t>(kBlock, n - b));
      block_corners(x, b, count, lv, entry, weight);
      for (int j = 0; j < count; ++j) {
        const float* g = grad_out + (b + j) * row + l * F;
        for (int c = 0; c < 8; ++c) {
          float* e = grad_params + entry[c][j] * F;
          for (int f = 0; f < F; ++f) e[f] += weight[c][j] * g[f];
        }
      }
    }
  }
}

template <int F>
void backward_input_impl(const float* x, const float* grad_out, const float* params, float* grad_x,
                         int64_t n, const Level* levels, int n_levels, int n_threads) {
  const int64_t row = static_cast<int64_t>(n_levels) * F;
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t i = 0; i < n; ++i) {
    float dx[3] = {0.0f, 0.0f, 0.0f};
    for (int l = 0; l < n_levels; ++l) {
      input_grad_level<F>(x + 3 * i, grad_out + i * row + l * F, params, levels[l], dx);
    }
    for (int d = 0; d < 3; ++d) grad_x[3 * i + d] = dx[d];
  }
}

}  // namespace


void forward_cpu(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                 int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features, (forward_impl<F>(x, params, out, n, levels, n_levels, n_threads)), break);
}

void backward_params_cpu(const float* x, const float* grad_out, float* grad_params, int64_t n,
                         const Level* levels, int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features,
                (backward_params_impl<F>(x, grad_out, grad_params, n, levels, n_levels, n_threads)), break);
}

void backward_input_cpu(const float* x, const float* grad_out, const float* params, float* grad_x,
                        int64_t n, const Level* levels, int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features, (backward_input_impl<F>(x, grad_out, params, grad_x, n, levels, n_levels,
                                                    n_threads)), break);
}

}  // namespace hashgrid
