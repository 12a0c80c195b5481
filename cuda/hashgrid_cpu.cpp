// Hash-grid encoding on the CPU: C++/OpenMP over raw pointers (see hashgrid_kernels.h).
//
// Forward: threads take chunks of points and loop over levels inside a chunk, so a chunk's output rows
// stay in cache. Backward into the table: each thread owns whole levels (levels are disjoint slices of
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

struct PlainAdd {
  inline void operator()(float* p, float v) const { *p += v; }
};

template <int F>
void forward_impl(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                  int n_levels, int n_threads) {
  const int64_t n_chunks = (n + kChunk - 1) / kChunk;
  const int64_t row = static_cast<int64_t>(n_levels) * F;
#pragma omp parallel for schedule(dynamic, 1) num_threads(n_threads)
  for (int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const int64_t end = std::min(n, (chunk + 1) * kChunk);
    for (int l = 0; l < n_levels; ++l) {
      const Level lv = levels[l];
      for (int64_t i = chunk * kChunk; i < end; ++i) {
        encode_level<F>(x + 3 * i, params, lv, out + i * row + l * F);
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
    const int l = order[k];
    const Level lv = levels[l];
    std::memset(grad_params + lv.offset * F, 0, sizeof(float) * lv.size * F);
    for (int64_t i = 0; i < n; ++i) {
      backward_level<F>(x + 3 * i, grad_out + i * row + l * F, lv, grad_params, PlainAdd{});
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

#define HG_DISPATCH_F(F_VALUE, CALL)  \
  switch (F_VALUE) {                  \
    case 1: { constexpr int F = 1; CALL; break; } \
    case 2: { constexpr int F = 2; CALL; break; } \
    case 4: { constexpr int F = 4; CALL; break; } \
    case 8: { constexpr int F = 8; CALL; break; } \
    default: break;                   \
  }

void forward_cpu(const float* x, const float* params, float* out, int64_t n, const Level* levels,
                 int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features, (forward_impl<F>(x, params, out, n, levels, n_levels, n_threads)));
}

void backward_params_cpu(const float* x, const float* grad_out, float* grad_params, int64_t n,
                         const Level* levels, int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features,
                (backward_params_impl<F>(x, grad_out, grad_params, n, levels, n_levels, n_threads)));
}

void backward_input_cpu(const float* x, const float* grad_out, const float* params, float* grad_x,
                        int64_t n, const Level* levels, int n_levels, int n_features, int n_threads) {
  HG_DISPATCH_F(n_features, (backward_input_impl<F>(x, grad_out, params, grad_x, n, levels, n_levels,
                                                    n_threads)));
}

}  // namespace hashgrid
